"""The LLM judges end to end: a scripted judge model over HTTP on 127.0.0.1, reached through litellm."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shadoweval import judges
from shadoweval.cli.mockllm import ThreadedServer
from shadoweval.core.store import Store
from shadoweval.core.types import Exchange, Output, Usage, new_id
from shadoweval.judges.base import Subject
from shadoweval.judges.intent import intent_for
from shadoweval.judges.llm import Budget, JudgeModel, extract_json, question
from shadoweval.judges.runner import plan, run_plan
from shadoweval.proxy.pricing import cost_usd

from .mock_judge import MockJudge, between, numbered, prompt_of

MODEL = "openai/gpt-4o-mini"  # priced in litellm's bundled table, so calls cost something
SECRET = "sk-judge-secret-123"
CALL = cost_usd(MODEL, Usage(1000, 100))  # what one mock call costs
PASSAGES = [
    {"id": "kb-refunds", "title": "Refunds", "text": "Refunds are paid within 5 business days."},
    {"id": "kb-warranty", "title": "Warranty", "text": "Mowers carry a 3-year warranty.",
     "url": "https://kb.example.com/warranty"},
]


@pytest.fixture
def mock() -> Iterator[tuple[MockJudge, str]]:
    judge = MockJudge()
    with ThreadedServer(judge) as server:
        yield judge, server.url + "/v1"


def _llm(api_base: str, **kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "api_base": api_base, "api_key": SECRET, "api_key_env": "JUDGE_KEY",
            "timeout_s": 10.0, **kw}


def _subject(answer: str, *, production: str | None = None, contexts: list[dict[str, Any]] | None = PASSAGES,
             question: str = "How do refunds work?", tags: dict[str, str] | None = None) -> Subject:
    ex = Exchange(id=new_id(), created_at=time.time(), route="/v1/chat/completions", tags=tags or {},
                  request={"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."},
                                                           {"role": "user", "content": question}]},
                  contexts=contexts)
    out = Output(id=new_id(), exchange_id=ex.id, role="candidate", name="drifting", model="gpt-4o-mini",
                 status="ok", started_at=ex.created_at, text=answer)
    prod = None if production is None else Output(
        id=new_id(), exchange_id=ex.id, role="production", name="production", model="gpt-4o", status="ok",
        started_at=ex.created_at, text=production)
    return Subject(ex, out, prod)


def _run(judge: Any, subject: Subject) -> Any:
    return asyncio.run(judge.judge(subject))


# --- what the scripted judge model answers ---------------------------------------------------------


def grounded_reply(messages: list[dict[str, Any]]) -> str:
    """Sentences mentioning the moon are unsupported, "Thanks" ones are no claim; fenced, with prose."""
    rows = []
    for i, text, _ in numbered(prompt_of(messages), "Sentences of the answer:\n"):
        v = "unsupported" if "moon" in text else "not_a_claim" if text.startswith("Thanks") else "supported"
        rows.append({"id": i, "verdict": v, "reason": f"checked {i}"})
    return "Here is my assessment:\n```json\n" + json.dumps({"sentences": rows}) + "\n```\nHope this helps!"


def citations_reply(messages: list[dict[str, Any]]) -> str:
    rows = []
    for i, text, cites in numbered(prompt_of(messages), "passages it cites:\n"):
        rows.append({"id": i, "claim": not text.startswith("Thanks"), "supported": bool(cites) and "moon" not in text,
                     "citations": {c: "full" if k == 0 else "none" for k, c in enumerate(cites)}, "reason": "ok"})
    return json.dumps({"sentences": rows})


def intent_reply(messages: list[dict[str, Any]]) -> str:
    prompt = prompt_of(messages)
    answer = between(prompt, "answer")
    criteria = numbered(prompt, "Then rule on each criterion:\n")
    rows = [{"id": i, "verdict": "n/a" if "legal" in text else "fail" if "refund" in text and "guarantee" in answer
             else "pass", "reason": "because"} for i, text, _ in criteria]
    return json.dumps({"addresses_request": "weather" not in between(prompt, "request"), "reason": "r",
                       "criteria": rows})


def prefers_marked(messages: list[dict[str, Any]]) -> str:
    """A consistent judge: the answer containing BETTER wins, wherever it is shown."""
    prompt = prompt_of(messages)
    a, b = between(prompt, "answer_a"), between(prompt, "answer_b")
    return json.dumps({"reason": "one is better", "winner": "A" if "BETTER" in a else "B" if "BETTER" in b else "tie"})


# --- the question and the reply --------------------------------------------------------------------


def test_the_question_is_the_last_user_message():
    ex = _subject("x").exchange
    assert question(ex) == "How do refunds work?"
    responses = Exchange(id="e", created_at=0.0, route="/v1/responses", request={"input": [
        {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "input_text", "text": "Where is my"}, {"type": "input_text",
                                                                                     "text": "invoice?"}]}]})
    assert question(responses) == "Where is my invoice?"
    assert question(Exchange(id="e", created_at=0.0, route="/v1/responses", request={"input": "Hi"})) == "Hi"


def test_extract_json_from_fences_and_prose():
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('Sure!\n```json\n{"a": {"b": "}"}}\n```\nmore {"c": 2}') == {"a": {"b": "}"}}
    assert extract_json('prefix {not json} then {"x": [1, 2]} suffix') == {"x": [1, 2]}
    with pytest.raises(ValueError, match="no JSON object"):
        extract_json("I think the answer is fine.")


# --- the judge model -------------------------------------------------------------------------------


def test_grounded_llm_end_to_end_through_litellm(mock):
    judge_mock, base = mock
    judge_mock.reply = grounded_reply
    j = judges.create("grounded-llm", **_llm(base), threshold=0.7)
    v = _run(j, _subject("Refunds are paid in 5 days [1]. The moon refunds twice. Mowers have a 3-year "
                         "warranty [2]. Thanks for asking!"))
    assert v.error is None and v.score == pytest.approx(2 / 3) and v.label == "ungrounded"
    assert v.evidence["unsupported"] == [{"sentence": "The moon refunds twice.", "reason": "checked 2"}]
    assert v.evidence["claims"] == 3 and v.evidence["sentences"] == 4
    assert v.cost_usd == pytest.approx(CALL) and CALL > 0
    sent = judge_mock.requests[0]
    assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0
    assert sent["response_format"] == {"type": "json_object"} and "JSON" in sent["messages"][0]["content"]
    assert "[2] Warranty\nMowers carry a 3-year warranty." in prompt_of(sent["messages"])
    assert judge_mock.headers[0]["authorization"] == f"Bearer {SECRET}"
    # the key is used, never recorded
    assert v.args == {"model": MODEL, "temperature": 0.0, "api_base": base, "api_key_env": "JUDGE_KEY",
                      "threshold": 0.7}
    assert SECRET not in json.dumps([v.args, v.evidence, v.explanation, repr(j.llm)])


def test_malformed_replies_are_retried_then_give_up_with_cost(mock):
    judge_mock, base = mock
    judge_mock.reply = lambda messages: "I think the answer is fine."
    v = _run(judges.create("grounded-llm", **_llm(base, max_retries=2)), _subject("Refunds take 5 days."))
    assert v.error == "malformed judge reply after 3 attempts: no JSON object in the reply"
    assert v.score is None and v.cost_usd == pytest.approx(3 * CALL)
    assert len(judge_mock.requests) == 3
    retry = judge_mock.requests[1]["messages"]
    assert retry[2] == {"role": "assistant", "content": "I think the answer is fine."}
    assert "could not be used: no JSON object" in retry[3]["content"]

    # a reply missing a sentence, then a good one: judged, both calls paid for
    judge_mock.requests.clear()
    replies = iter(['{"sentences": [{"id": 1, "verdict": "supported"}]}', None])
    judge_mock.reply = lambda messages: next(replies) or grounded_reply(messages)
    v = _run(judges.create("grounded-llm", **_llm(base)), _subject("Refunds take 5 days. Paid by card."))
    assert v.error is None and v.score == 1.0 and v.evidence["judge_calls"] == 2
    assert v.cost_usd == pytest.approx(2 * CALL)
    assert "no entry for sentence(s) 2" in judge_mock.requests[1]["messages"][3]["content"]


def test_a_hanging_judge_model_times_out(mock):
    judge_mock, base = mock
    judge_mock.behaviour = "hang"
    t0 = time.monotonic()
    v = _run(judges.create("grounded-llm", **_llm(base, timeout_s=0.5)), _subject("Refunds take 5 days."))
    assert time.monotonic() - t0 < 2.0
    assert v.error == "judge model timed out after 0.5s" and v.score is None
    assert len(judge_mock.requests) == 1  # a timeout is not retried


def test_a_failing_judge_model_is_an_error_verdict(mock):
    judge_mock, base = mock
    judge_mock.behaviour = "error500"
    v = _run(judges.create("grounded-llm", **_llm(base)), _subject("Refunds take 5 days."))
    assert v.error.startswith("judge model failed (HTTP 500): ") and "judge failed on purpose" in v.error
    assert len(judge_mock.requests) == 1 and v.cost_usd == 0.0


def test_budget_stops_calls_once_spent(mock):
    judge_mock, base = mock
    judge_mock.reply = grounded_reply
    budget = Budget(max_usd=2.5 * CALL)  # the third call starts below the limit and crosses it
    shared = JudgeModel(**_llm(base), concurrency=1, budget=budget)
    grounded = judges.create("grounded-llm", judge_model=shared)
    intent = judges.create("intent", judge_model=shared, intents=[{"intent": "answers refund questions"}])
    judge_mock.reply = lambda m: (intent_reply if "<request>" in prompt_of(m) else grounded_reply)(m)

    async def main() -> list[Any]:
        subjects = [_subject(f"Refunds take {i} days.") for i in range(4)]
        return await asyncio.gather(*(j.judge(s) for s in subjects for j in (grounded, intent)))

    verdicts = asyncio.run(main())
    assert len(judge_mock.requests) == 3 == budget.calls  # no call after the budget ran out
    ok = [v for v in verdicts if v.error is None]
    stopped = [v for v in verdicts if v.error]
    assert len(ok) == 3 and all(v.cost_usd == pytest.approx(CALL) for v in ok)
    assert len(stopped) == 5 and all(v.cost_usd == 0.0 for v in stopped)
    spent = f"{3 * CALL:.6f}".rstrip("0")
    assert {v.error for v in stopped} == {f"budget exhausted: spent ${spent} of ${2.5 * CALL:.6f}".rstrip("0")}


def test_a_budget_cannot_be_kept_without_prices(mock):
    judge_mock, base = mock
    judge_mock.reply = grounded_reply
    j = judges.create("grounded-llm", **_llm(base, model="openai/our-own-judge", max_usd=1.0))
    first, second = (_run(j, _subject("Refunds take 5 days.")) for _ in range(2))
    assert first.error is None and first.cost_usd == 0.0
    assert second.error == "budget cannot be kept: no price known for openai/our-own-judge"
    assert len(judge_mock.requests) == 1


def test_concurrency_is_capped(mock):
    judge_mock, base = mock
    judge_mock.reply, judge_mock.latency_s = grounded_reply, 0.05
    j = judges.create("grounded-llm", **_llm(base, concurrency=2))

    async def main() -> list[Any]:
        return await asyncio.gather(*(j.judge(_subject(f"Refunds take {i} days.")) for i in range(6)))

    assert all(v.score == 1.0 for v in asyncio.run(main()))
    assert len(judge_mock.requests) == 6 and judge_mock.in_flight_max == 2


def test_what_cannot_be_judged_makes_no_call(mock):
    judge_mock, base = mock
    assert _run(judges.create("grounded-llm", **_llm(base)), _subject("x.", contexts=None)).error == "no context found"
    assert _run(judges.create("citations-llm", **_llm(base)), _subject("x [1].", contexts=[])).error == \
        "no context found"
    unconfigured = _run(judges.create("grounded-llm"), _subject("Refunds take 5 days."))
    assert unconfigured.error.startswith("no judge model configured")
    pair = judges.create("pairwise", **_llm(base))
    assert _run(pair, _subject("x.")).error == "no production output to compare with"
    s = _subject("x.", production="y.")
    own = Subject(s.exchange, s.production, None)  # production's own output
    assert _run(pair, own).error == "no production output to compare with"
    assert judge_mock.requests == []


# --- citations -------------------------------------------------------------------------------------


def test_citations_llm_recall_precision_and_problems(mock):
    judge_mock, base = mock
    judge_mock.reply = citations_reply
    j = judges.create("citations-llm", **_llm(base))
    answer = ("Refunds are paid in 5 days [1]. Mowers have a 3-year warranty [2][1]. The moon refunds twice [7]. "
              "Shipping is free. Thanks for asking!")
    v = _run(j, _subject(answer))
    ev = v.evidence
    assert (ev["claims"], ev["citations"], ev["recall"], ev["precision"]) == (4, 4, 0.5, 0.5)
    assert v.score == pytest.approx(0.5) and v.label == "unknown_source" and v.cost_usd == pytest.approx(CALL)
    problems = {(p["type"], p["sentence"], str(p.get("ref"))) for p in ev["problems"]}
    assert problems == {
        ("unknown_source", "The moon refunds twice [7].", "[7]"),
        ("irrelevant_citation", "Mowers have a 3-year warranty [2][1].", "kb-refunds"),
        ("missing_citation", "Shipping is free.", "None"),
    }
    prompt = prompt_of(judge_mock.requests[0]["messages"])
    assert "2. Mowers have a 3-year warranty.  [cites: 2, 1]" in prompt  # markers become passage numbers
    assert "3. The moon refunds twice.  [cites: none]" in prompt

    # an answer that cites nothing is judged only where citing is expected
    judge_mock.requests.clear()
    assert _run(j, _subject("Refunds are paid in 5 days.")).error == "the answer cites nothing"
    assert judge_mock.requests == []
    v = _run(j, _subject("Refunds are paid in 5 days.", production="Refunds are paid in 5 days [1]."))
    assert v.score == 0.0 and v.label == "missing_citation"


# --- intent ----------------------------------------------------------------------------------------

INTENTS = [
    {"name": "billing", "intent": "Answers billing questions for Acme customers.", "routes": ["billing"],
     "tags": {"tenant": "acme"}, "criteria": ["Never promises refunds.", "Sends legal questions to a human."]},
    {"name": "api-v1", "intent": "Answers anything.", "routes": ["/v1/*"]},
]


def test_intent_routing():
    ex = lambda **tags: _subject("x", tags=tags).exchange  # noqa: E731
    j = judges.create("intent", intents=INTENTS)
    assert intent_for(j.intents, ex(route="billing", tenant="acme"))["name"] == "billing"
    assert intent_for(j.intents, ex(route="billing", tenant="other"))["name"] == "api-v1"  # by API path
    assert intent_for(j.intents[:1], ex(route="shipping", tenant="acme")) is None
    assert intent_for([{**INTENTS[0], "routes": [], "tags": {}}], ex())["name"] == "billing"  # empty matches all
    assert j.args["intents"][1] == {"name": "api-v1", "intent": "Answers anything.", "criteria": [],
                                    "routes": ["/v1/*"], "tags": {}}
    with pytest.raises(ValueError, match="unknown key"):
        judges.create("intent", intents=[{"intent": "x", "criterias": []}])
    with pytest.raises(ValueError, match="needs an `intent`"):
        judges.create("intent", intents=[{"criteria": ["x"]}])


def test_intent_rubric_end_to_end(mock):
    judge_mock, base = mock
    judge_mock.reply = intent_reply
    j = judges.create("intent", **_llm(base), intents=INTENTS[:1])
    tags = {"route": "billing", "tenant": "acme"}
    good = _run(j, _subject("Your invoice is on the billing page.", tags=tags))
    assert (good.score, good.label) == (1.0, "aligned")
    assert [c["verdict"] for c in good.evidence["criteria"]] == ["pass", "n/a"]
    bad = _run(j, _subject("We guarantee a refund for you.", tags=tags))
    assert (bad.score, bad.label) == (0.0, "misaligned") and "Never promises refunds." in bad.explanation
    off = _run(j, _subject("It is sunny.", question="What is the weather?", tags=tags))
    assert (off.score, off.label) == (0.0, "off_topic") and off.evidence["addresses_request"] is False
    assert all(v.cost_usd == pytest.approx(CALL) for v in (good, bad, off))
    assert "Answers billing questions for Acme customers." in prompt_of(judge_mock.requests[0]["messages"])
    unrouted = _run(j, _subject("x", tags={"route": "shipping"}))
    assert unrouted.error == "no intent configured for this route" and len(judge_mock.requests) == 3


# --- pairwise --------------------------------------------------------------------------------------


def test_pairwise_position_bias_is_a_flipped_tie(mock):
    judge_mock, base = mock
    judge_mock.reply = lambda messages: '{"reason": "the first one", "winner": "A"}'
    judge_mock.latency_s = 0.05
    v = _run(judges.create("pairwise", **_llm(base)), _subject("Candidate answer, longer.", production="Prod."))
    assert (v.label, v.score) == ("tie", 0.5) and v.evidence["flipped"] is True
    assert [o["preferred"] for o in v.evidence["orders"]] == ["production", "candidate"]
    assert v.evidence["length_diff"] == len("Candidate answer, longer.") - len("Prod.")
    assert v.cost_usd == pytest.approx(2 * CALL) and judge_mock.in_flight_max == 2  # both orders at once
    prompts = [prompt_of(r["messages"]) for r in judge_mock.requests]
    assert all("Answer A:" in p and "Answer B:" in p for p in prompts)
    assert not any(name in p for p in prompts for name in ("production", "candidate", "drifting", "gpt-4o"))
    assert {between(p, "answer_a") for p in prompts} == {"Prod.", "Candidate answer, longer."}


def test_pairwise_consistent_preference_wins_both_orders(mock):
    judge_mock, base = mock
    judge_mock.reply = prefers_marked
    j = judges.create("pairwise", **_llm(base))
    cand = _run(j, _subject("A BETTER answer.", production="An answer."))
    assert (cand.label, cand.score, cand.evidence["flipped"]) == ("candidate", 1.0, False)
    assert [o["winner"] for o in cand.evidence["orders"]] == ["B", "A"]
    prod = _run(j, _subject("An answer.", production="A BETTER answer."))
    assert (prod.label, prod.score, prod.evidence["flipped"]) == ("production", 0.0, False)
    tie = _run(j, _subject("Same.", production="Same."))
    assert (tie.label, tie.score, tie.evidence["flipped"]) == ("tie", 0.5, False)


# --- through the runner and the store ----------------------------------------------------------------


def test_run_plan_stores_llm_verdicts_with_cost(mock, tmp_path):
    judge_mock, base = mock
    judge_mock.reply = lambda m: (intent_reply if "<request>" in prompt_of(m) and "<answer_a>" not in prompt_of(m)
                                  else prefers_marked)(m)
    store = Store(tmp_path / "s.db", flush_interval_ms=5)
    store.start()
    try:
        for i in range(3):
            s = _subject(f"A BETTER answer {i}." if i else "Worse.", production="Production answer.",
                         tags={"route": "billing", "tenant": "acme"})
            store.submit(s.exchange)
            store.submit(s.production)
            store.submit(s.output)
        assert store.flush()
        shared = JudgeModel(**_llm(base))
        chosen = [judges.create("pairwise", judge_model=shared),
                  judges.create("intent", judge_model=shared, intents=INTENTS[:1])]
        results = asyncio.run(run_plan(store, plan(store, chosen)))
        # pairwise has nothing to compare production's own outputs with: not planned on them; intent judges all six
        assert [(r.judged, r.errors) for r in results] == [(3, 0), (6, 0)]
        assert len(judge_mock.requests) == 3 * 2 + 6
        summary = {(k.split("@")[0], m): (n, e, score) for k, m, n, e, score in store.verdict_summary()}
        assert summary[("pairwise", "drifting")] == (3, 0, pytest.approx((0.5 + 1 + 1) / 3))  # a tie, two wins
        assert summary[("intent", "production")] == (3, 0, 1.0)
        stored = [v for eid in store.exchange_ids() for v in store.verdicts(eid)]
        assert len(stored) == 9 and not [v for v in stored if v.judge == "pairwise" and v.error]
        judged = [v for v in stored if v.error is None]
        assert all(v.cost_usd > 0 for v in judged)
        assert sum(v.cost_usd for v in judged) == pytest.approx(12 * CALL)
        assert all("api_key" not in v.args and v.args["api_key_env"] == "JUDGE_KEY" for v in stored)
        assert not any(SECRET in json.dumps([v.args, v.evidence, v.error]) for v in stored)
        assert asyncio.run(run_plan(store, plan(store, chosen)))[0].judged == 0  # nothing left to judge
    finally:
        store.stop()


def test_calibrate_measures_the_llm_tier_against_labels(mock, tmp_path, monkeypatch):
    """`shadoweval calibrate` on the LLM tier: the scripted judge model over HTTP, through litellm, against
    labeled records; the figures, the calibration and the key kept out of the output."""
    from click.testing import CliRunner

    from shadoweval.cli.main import main

    judge, base = mock
    judge.reply = grounded_reply
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    # (answer, human label): the judge model flags sentences about the moon; the last label disagrees with it
    rows = [("Refunds are paid within 5 business days.", True), ("Mowers carry a 3-year warranty.", True),
            ("Refunds are paid on the moon.", False), ("Refunds take 5 days. The moon pays them.", False),
            ("Thanks for asking! Refunds are paid within 5 business days.", True),
            ("Mowers carry a moon warranty.", True)]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps({
        "id": f"r{i}", "request": {"model": "m", "messages": [{"role": "user", "content": "How do refunds work?"}]},
        "contexts": PASSAGES, "response": answer, "labels": {"grounded": label}}) + "\n"
        for i, (answer, label) in enumerate(rows)))
    result = CliRunner().invoke(main, [
        "calibrate", "--labels", str(path), "--judge", "grounded-llm", "--label", "grounded", "--json",
        "--arg", f"model={MODEL}", "--arg", f"api_base={base}", "--arg", "api_key_env=JUDGE_KEY"],
        catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    # scores 1, 1, 0, 0.5, 1, 0 at the judge's own threshold 0.8: five of six agree with people
    assert (data["n"], data["errors"], data["threshold"], data["threshold_source"]) == (6, 0, 0.8, "judge")
    assert (data["tp"], data["fp"], data["tn"], data["fn"]) == (3, 0, 2, 1) and data["accuracy"] == 5 / 6
    assert data["calibration"]["bins"] == [
        {"low": 0.0, "high": 0.1, "n": 2, "mean_score": 0.0, "positive_rate": 0.5},
        {"low": 0.5, "high": 0.6, "n": 1, "mean_score": 0.5, "positive_rate": 0.0},
        {"low": 0.9, "high": 1.0, "n": 3, "mean_score": 1.0, "positive_rate": 1.0}]
    assert data["calibration"]["ece"] == pytest.approx(2 / 6 * 0.5 + 1 / 6 * 0.5)
    assert len(judge.requests) == 6 and SECRET not in result.output
    assert all(h.get("authorization") == f"Bearer {SECRET}" for h in judge.headers)
    # the variable named is not set: a clear error before any call
    monkeypatch.delenv("JUDGE_KEY")
    unset = CliRunner().invoke(main, [
        "calibrate", "--labels", str(path), "--judge", "grounded-llm", "--label", "grounded",
        "--arg", f"model={MODEL}", "--arg", f"api_base={base}", "--arg", "api_key_env=JUDGE_KEY"])
    assert unset.exit_code == 2 and "the environment variable JUDGE_KEY is not set" in unset.output
    assert len(judge.requests) == 6
