"""The judge framework: registered factories, recorded arguments, errors as values, idempotent runs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shadoweval import judges
from shadoweval.core.store import Store
from shadoweval.core.types import Exchange, Output, Usage, new_id
from shadoweval.judges.base import Subject, judge_safely, key_of, register, verdict
from shadoweval.judges.runner import plan, run_plan

BIN = Path(sys.executable).parent / "shadoweval"


def _exchange(request=None) -> Exchange:
    return Exchange(id=new_id(), created_at=time.time(), route="/v1/chat/completions",
                    request=request or {"model": "m", "messages": [{"role": "user", "content": "q"}]})


def _output(ex: Exchange, name: str, text: str | None = "An answer.", **kw) -> Output:
    return Output(id=new_id(), exchange_id=ex.id, role="production" if name == "production" else "candidate",
                  name=name, model="m", status=kw.pop("status", "ok"), started_at=ex.created_at, text=text,
                  usage=Usage(1, 1, 2), **kw)


def _check(ex, out, prod=None):
    return asyncio.run(judges.create("checks").judge(Subject(ex, out, prod)))


def test_checks_find_empty_refusal_and_invalid_json():
    ex = _exchange()
    assert _check(ex, _output(ex, "c", "")).label == "empty"
    refusal = _check(ex, _output(ex, "c", "I'm sorry, but I can't help with that request."))
    assert refusal.label == "refusal" and refusal.score == 0.0
    ok = _check(ex, _output(ex, "c", "Refunds take 5 days [1]."))
    assert ok.label == "ok" and ok.score == 1.0
    jx = _exchange({"model": "m", "messages": [], "response_format": {"type": "json_object"}})
    assert _check(jx, _output(jx, "c", '{"a": 1')).label == "invalid_json"
    good = _check(jx, _output(jx, "c", '{"a": 1}'))
    assert good.label == "ok" and good.evidence["json_valid"] is True


def test_checks_compare_with_production():
    ex = _exchange()
    call = {"id": "1", "type": "function", "function": {"name": "refund", "arguments": '{"id": 7}'}}
    other = {"id": "2", "type": "function", "function": {"name": "refund", "arguments": '{"id":7}'}}
    prod = _output(ex, "production", None, tool_calls=[call], latency_ms=100.0, cost_usd=0.002)
    same = _check(ex, _output(ex, "c", None, tool_calls=[other], latency_ms=250.0, cost_usd=0.0005), prod)
    assert same.label == "ok" and same.evidence["tool_calls_match"]  # same call, other spacing and id
    assert same.evidence["latency_delta_ms"] == 150.0 and same.evidence["cost_delta_usd"] == pytest.approx(-0.0015)
    differ = _check(ex, _output(ex, "c", "No tool needed."), prod)
    assert differ.label == "tool_calls_differ"
    long_prod = _output(ex, "production", "short")
    assert _check(ex, _output(ex, "c", "x" * 100), long_prod).label == "length"


def test_verdicts_record_name_version_and_arguments():
    ex = _exchange()
    j = judges.create("checks", max_length_ratio=5.0)
    v = asyncio.run(j.judge(Subject(ex, _output(ex, "c"))))
    assert (v.judge, v.version, v.args) == ("checks", "1", {"max_length_ratio": 5.0})
    assert v.judge_key == 'checks@1{"max_length_ratio":5.0}' == key_of(j)
    with pytest.raises(KeyError, match="no judge named"):
        judges.create("nope")


class Exploding:
    name, version, args = "exploding", "1", {}

    async def judge(self, s):
        raise RuntimeError("judge model returned garbage")


register("exploding")(Exploding)


class Fake:
    """A fake judge registered through the real registry: score = answer length / 100."""

    name, version = "fake", "1"

    def __init__(self, *, scale: float = 100.0):
        self.args = {"scale": scale}
        self.calls = 0

    async def judge(self, s):
        self.calls += 1
        return verdict(self, s, score=min(1.0, len(s.output.text or "") / self.args["scale"]))


register("fake")(Fake)


def test_errors_are_verdicts_not_exceptions():
    ex = _exchange()
    v = asyncio.run(judge_safely(judges.create("exploding"), Subject(ex, _output(ex, "c"))))
    assert v.error == "RuntimeError: judge model returned garbage" and v.score is None


def test_runner_is_idempotent_resumable_and_skips_errors(tmp_path):
    store = Store(tmp_path / "s.db", flush_interval_ms=5)
    store.start()
    try:
        for i in range(10):
            ex = _exchange()
            store.submit(ex)
            store.submit(_output(ex, "production", "p" * 50))
            store.submit(_output(ex, "cand", "c" * (10 * i)))
            store.submit(_output(ex, "broken", None, status="timeout"))  # no answer: nothing to judge
        assert store.flush()
        fake, boom = judges.create("fake"), judges.create("exploding")
        # interrupted after 5 outputs...
        first = asyncio.run(run_plan(store, plan(store, [fake], limit=5)))
        assert first[0].judged == 5
        # ...then resumed: only the rest is judged
        rest = asyncio.run(run_plan(store, plan(store, [fake, boom])))
        assert [(r.judged, r.errors) for r in rest] == [(15, 0), (20, 20)]
        assert fake.calls == 20
        assert asyncio.run(run_plan(store, plan(store, [fake, boom])))[0].judged == 0
        # a new argument is a new judge key: judged again
        assert sum(len(t) for _, t in plan(store, [judges.create("fake", scale=10.0)])) == 20
        summary = {(k.split("@")[0], m): (n, e, s) for k, m, n, e, s in store.verdict_summary()}
        assert summary[("fake", "production")] == (10, 0, 0.5)
        assert summary[("exploding", "cand")][1] == 10 and summary[("exploding", "cand")][2] is None
        _, outputs, _ = store.get_exchange(store.exchange_ids()[3])
        vs = store.verdicts(store.exchange_ids()[3])
        assert {v.output_id for v in vs} == {o.id for o in outputs if o.status == "ok"}
    finally:
        store.stop()


def test_a_judge_comparing_with_production_is_planned_on_other_outputs_only(tmp_path):
    store = Store(tmp_path / "s.db", flush_interval_ms=5)
    store.start()
    try:
        passage = "The Northwind R2 has a two-year warranty covering the battery and the motor."
        request = {"model": "m", "messages": [{"role": "user", "content": "What does the warranty cover?"}]}
        for text in ("The R2 has a ten-year warranty with free express shipping [1].",
                     "The R2 has a two-year warranty covering the battery and the motor [1]."):
            ex = Exchange(id=new_id(), created_at=time.time(), route="/v1/chat/completions", request=request,
                          contexts=[{"id": "1", "text": passage}])
            store.submit(ex)
            store.submit(_output(ex, "production", "The R2 has a two-year warranty for the battery and motor [1]."))
            store.submit(_output(ex, "cand", text))
        assert store.flush()
        pref = judges.create("offline-preference", embedder="hashing")
        work = plan(store, [pref])
        assert [o.name for _, todo in work for _, o, _ in todo] == ["cand", "cand"]  # production's own: skipped
        (result,) = asyncio.run(run_plan(store, work))
        assert (result.judged, result.errors) == (2, 0)
        labels = sorted(v.label for i in store.exchange_ids() for v in store.verdicts(i))
        assert labels == ["production", "tie"]  # the invented warranty loses; the close paraphrase ties
    finally:
        store.stop()


def test_judge_run_cli_on_the_demo(tmp_path):
    db = tmp_path / "demo.db"
    subprocess.run([str(BIN), "demo", "--db", str(db), "--questions", "4", "--no-judge"], check=True,
                   capture_output=True, timeout=120)
    out = subprocess.run([str(BIN), "judge", "run", "--db", str(db), "--judge", "checks", "--json"],
                         check=True, capture_output=True, text=True)
    data = json.loads(out.stdout)
    assert data["run"][0]["judged"] >= 12 and data["run"][0]["errors"] == 0
    assert {v["model"] for v in data["verdicts"]} >= {"production", "careful", "drifting"}
    again = json.loads(subprocess.run([str(BIN), "judge", "run", "--db", str(db), "--json", "--since", "1d",
                                       "--candidate", "careful"], check=True, capture_output=True, text=True).stdout)
    assert again["run"][0]["judged"] == 0
    bad = subprocess.run([str(BIN), "judge", "run", "--db", str(db), "--judge", "nope"], capture_output=True, text=True)
    assert bad.returncode != 0 and "no judge named" in bad.stderr
