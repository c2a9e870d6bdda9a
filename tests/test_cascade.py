"""The cascade: offline judges on everything, the LLM tier on the share the policy selects."""

from __future__ import annotations

import asyncio
import time

import pytest

from shadoweval import judges
from shadoweval.core.store import Store
from shadoweval.core.types import Exchange, Feedback, Output, Verdict, new_id
from shadoweval.judges.base import register, verdict
from shadoweval.judges.cascade import CascadePolicy, risk_reasons, sampled, select
from shadoweval.judges.runner import run_cascade


def _v(output_id: str, judge: str, score: float, threshold: float = 0.5) -> Verdict:
    return Verdict(id=new_id(), output_id=output_id, exchange_id="e", judge=judge, version="1",
                   args={"threshold": threshold}, created_at=time.time(), score=score)


def _out(oid: str = "o1") -> Output:
    return Output(id=oid, exchange_id="e", role="candidate", name="c", model="m", status="ok", started_at=0.0,
                  text="An answer.")


def test_risk_reasons():
    o = _out()
    policy = CascadePolicy(risk_margin=0.1, gap=0.3)
    assert risk_reasons(o, [_v("o1", "grounded", 0.9)], policy=policy) == []
    assert risk_reasons(o, [_v("o1", "grounded", 0.55)], policy=policy) == ["near_threshold:grounded"]
    assert risk_reasons(o, [_v("o1", "grounded", 0.9), _v("o1", "citations", 0.1)], policy=policy) == \
        ["judges_disagree:citations"]
    assert risk_reasons(o, [_v("o1", "grounded", 0.9)], production=[_v("p", "grounded", 0.2)], policy=policy) \
        == ["gap_vs_production:grounded"]
    down = Feedback(id="f", exchange_id="e", created_at=0.0, rating=-1.0)
    assert risk_reasons(o, [_v("o1", "grounded", 0.9)], feedback=[down], policy=policy) == ["complaint"]
    # verdicts on other outputs, and errors, are not this output's risk
    err = Verdict(id="x", output_id="o1", exchange_id="e", judge="grounded", version="1", args={"threshold": 0.5},
                  created_at=0.0, score=0.5, error="boom")
    assert risk_reasons(o, [_v("other", "grounded", 0.5), err], policy=policy) == []
    # an answer that only says what the documents lack: the offline judges cannot tell a right
    # refusal from a wrong one, the LLM tier can
    from shadoweval.judges.text import ABSENT_REASON
    refusal = Verdict(id="r", output_id="o1", exchange_id="e", judge="grounded", version="1", args={},
                      created_at=0.0, error=f"could not judge: {ABSENT_REASON}")
    assert risk_reasons(o, [refusal], policy=policy) == ["refusal:grounded"]


def test_share_policies():
    o = _out()
    assert select(o, [], policy=CascadePolicy(share="all")) == ["all"]
    assert select(o, [_v("o1", "g", 0.5)], policy=CascadePolicy(share="none")) is None
    assert select(o, [_v("o1", "g", 0.95)], policy=CascadePolicy(share="risky")) is None
    ids = [new_id() for _ in range(4000)]
    share = sum(sampled(i, 0.25) for i in ids) / len(ids)
    assert 0.22 < share < 0.28
    assert [sampled(i, 0.25) for i in ids[:50]] == [sampled(i, 0.25) for i in ids[:50]]  # stable
    with pytest.raises(ValueError):
        CascadePolicy(share="some")


class ByLength:
    """Offline stand-in: score = answer length / 100, threshold 0.5."""

    name, version = "bylength", "1"

    def __init__(self):
        self.args = {"threshold": 0.5}

    async def judge(self, s):
        return verdict(self, s, score=min(1.0, len(s.output.text or "") / 100))


class CountingLLM:
    name, version, needs_production = "countingllm", "1", True
    calls: list[str] = []

    def __init__(self):
        self.args = {}

    async def judge(self, s):
        CountingLLM.calls.append(s.output.name)
        return verdict(self, s, score=1.0, cost_usd=0.01)


register("bylength")(ByLength)
register("countingllm")(CountingLLM)


def test_run_cascade_sends_only_risky_outputs_to_the_llm_tier(tmp_path):
    store = Store(tmp_path / "s.db", flush_interval_ms=5)
    store.start()
    try:
        lengths = {"clear": 95, "borderline": 52, "failing": 10}
        for name, n in lengths.items():
            ex = Exchange(id=new_id(), created_at=time.time(), route="/v1/chat/completions", request={})
            store.submit(ex)
            store.submit(Output(id=new_id(), exchange_id=ex.id, role="production", name="production", model="m",
                                status="ok", started_at=ex.created_at, text="p" * 90))
            store.submit(Output(id=new_id(), exchange_id=ex.id, role="candidate", name=name, model="m",
                                status="ok", started_at=ex.created_at, text="c" * n))
        assert store.flush()
        CountingLLM.calls = []
        phases = {}
        results = asyncio.run(run_cascade(
            store, [judges.create("bylength")], [judges.create("countingllm")],
            policy=CascadePolicy(share="risky", risk_margin=0.05, gap=0.5), planned=phases.__setitem__))
        # borderline: near the threshold; failing: 0.8 below production's score. Production's own
        # answers are never sent to a judge that compares with production.
        assert sorted(CountingLLM.calls) == ["borderline", "failing"]
        assert phases == {"offline": 6, "llm": 2}
        assert [r.judged for r in results] == [6, 2]
        # a second pass judges nothing again
        CountingLLM.calls = []
        again = asyncio.run(run_cascade(store, [judges.create("bylength")], [judges.create("countingllm")],
                                        policy=CascadePolicy(share="all")))
        assert [r.judged for r in again] == [0, 1] and CountingLLM.calls == ["clear"]
    finally:
        store.stop()
