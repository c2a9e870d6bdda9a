"""Judges from configuration: the cascade's judges, the daily budget, and judging in the background of serve."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from shadoweval.cli.mockllm import MockLLM, ThreadedServer, free_port
from shadoweval.core.settings import load_settings
from shadoweval.core.store import Store
from shadoweval.core.types import Exchange, Output, Verdict, new_id
from shadoweval.judges.config import build, midnight_utc

BIN = Path(sys.executable).parent / "shadoweval"
RAG_SYSTEM = ("Answer using only the documents below and cite them as [n].\n\nDocuments:\n"
              "[1] The Northwind R2 has a two-year warranty covering the battery and the motor.\n\n"
              "[2] Express shipping costs 12 euros and takes two business days.")


def test_build_defaults_offline_only(tmp_path):
    c = build(load_settings(None, env={}))
    assert [j.name for j in c.offline] == ["checks", "grounded", "citations"]
    assert c.llm == [] and all("no judge model configured" in s for s in c.skipped)
    assert c.policy.share == "risky"
    only = build(load_settings(None, env={}), only=["checks"])
    assert [j.name for j in only.offline] == ["checks"] and only.llm == []


def test_build_llm_tier_shares_one_model_and_the_days_budget(tmp_path):
    store = Store(tmp_path / "s.db", flush_interval_ms=5)
    store.start()
    try:
        ex = Exchange(id=new_id(), created_at=time.time(), route="/v1/chat/completions", request={})
        out = Output(id=new_id(), exchange_id=ex.id, role="candidate", name="c", model="m", status="ok",
                     started_at=ex.created_at, text="x")
        spent_yesterday = Verdict(id=new_id(), output_id=out.id, exchange_id=ex.id, judge="pairwise", version="1",
                                  args={}, created_at=midnight_utc() - 60, cost_usd=3.0)
        spent_today = Verdict(id=new_id(), output_id=out.id, exchange_id=ex.id, judge="grounded-llm", version="1",
                              args={}, created_at=time.time(), cost_usd=1.5)
        for r in (ex, out, spent_yesterday, spent_today):
            store.submit(r)
        assert store.flush()
        settings = load_settings(None, env={"JUDGE_KEY": "sk-judge-secret"}, overrides={
            "judges": {"llm_model": "openai/gpt-4o-mini", "llm_api_key_env": "JUDGE_KEY", "llm_daily_usd": 2.0,
                       "llm_share": "sample", "llm_sample_rate": 0.2},
            "intents": [{"name": "support", "intent": "Answers Northwind support questions.",
                         "criteria": ["never promises refunds"]}],
        })
        c = build(settings, store=store)
        assert [j.name for j in c.llm] == ["grounded-llm", "citations-llm", "intent", "pairwise"]
        models = {id(j.llm) for j in c.llm}
        assert len(models) == 1
        model = c.llm[0].llm
        assert model.budget.max_usd == 0.5  # 2.0 a day, 1.5 spent today (yesterday's 3.0 does not count)
        assert "sk-judge-secret" not in json.dumps([j.args for j in c.llm])
        assert c.policy.share == "sample" and c.policy.sample_rate == 0.2
        no_intents = build(load_settings(None, env={}, overrides={"judges": {"llm_model": "openai/gpt-4o-mini"}}))
        assert "intent" not in [j.name for j in no_intents.llm]
        assert any(s.startswith("intent:") for s in no_intents.skipped)
    finally:
        store.stop()


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_serve_judges_new_outputs_in_the_background(tmp_path):
    prod = MockLLM(name="prod")
    with ThreadedServer(prod) as ps:
        cfg = tmp_path / "shadoweval.toml"
        cfg.write_text(f"""
[production]
base_url = "{ps.url}/v1"
[judges]
embedder = "hashing"
interval_s = 0.3
""")
        port, db = free_port(), tmp_path / "serve.db"
        proc = subprocess.Popen([str(BIN), "serve", "--config", str(cfg), "--port", str(port), "--db", str(db)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ))
        try:
            url = f"http://127.0.0.1:{port}"
            assert _wait(lambda: _healthy(url), 20), proc.stderr.read1().decode() if proc.poll() is not None else ""
            client = openai.OpenAI(base_url=url + "/v1", api_key="k")
            r = client.chat.completions.with_raw_response.create(model="m", messages=[
                {"role": "system", "content": RAG_SYSTEM}, {"role": "user", "content": "Tell me the warranty's length."}])
            ex_id = r.headers["x-shadoweval-exchange-id"]
            store = Store(db)
            assert _wait(lambda: store.exchange_exists(ex_id) and
                         {v.judge for v in store.verdicts(ex_id)} >= {"checks", "grounded", "citations"}, 60)
            verdicts = {v.judge: v for v in store.verdicts(ex_id)}
            assert verdicts["checks"].label == "ok"
            # the mock answers "prod says: <the question>", which the documents do not support (a statement:
            # an echoed question would be no claim at all, and get "could not judge")
            assert verdicts["grounded"].error is None and verdicts["grounded"].label == "ungrounded"
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err.decode()[-2000:]
        children = subprocess.run(["pgrep", "-f", f"judge run --follow --db {db}"], capture_output=True, text=True)
        assert children.stdout.strip() == ""  # the judging child stopped with the proxy


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_judge_run_with_an_llm_tier_from_the_configuration(tmp_path):
    """The user's path: a store, a config naming a judge model, `shadoweval judge run`."""
    from .mock_judge import MockJudge, between, prompt_of

    db = tmp_path / "demo.db"
    subprocess.run([str(BIN), "demo", "--db", str(db), "--questions", "4", "--no-judge"], check=True,
                   capture_output=True, timeout=120)

    def longer(messages):  # a consistent judge: the longer answer wins, whichever side it is on
        p = prompt_of(messages)
        a, b = between(p, "answer_a"), between(p, "answer_b")
        winner = "tie" if len(a) == len(b) else "A" if len(a) > len(b) else "B"  # the twin's answers are equal
        return json.dumps({"reason": "more complete", "winner": winner})

    judge = MockJudge(reply=longer)
    with ThreadedServer(judge) as js:
        cfg = tmp_path / "judges.toml"
        cfg.write_text(f"""
[judges]
embedder = "hashing"
llm = ["pairwise"]
llm_model = "openai/gpt-4o-mini"
llm_api_base = "{js.url}/v1"
llm_api_key_env = "JUDGE_KEY"
llm_share = "all"
llm_concurrency = 1
llm_daily_usd = 0.002
""")
        env = {**os.environ, "JUDGE_KEY": "sk-judge-test-key"}
        out = subprocess.run([str(BIN), "judge", "run", "--config", str(cfg), "--db", str(db), "--json"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    run = {r["judge"].split("@")[0]: r for r in json.loads(out.stdout)["run"]}
    assert set(run) == {"checks", "grounded", "citations", "pairwise"}
    store = Store(db)
    verdicts = [v for eid in store.exchange_ids() for v in store.verdicts(eid) if v.judge == "pairwise"]
    outputs = {o.id: o for eid in store.exchange_ids() for o in store.get_exchange(eid)[1]}
    # every answer but production's own was compared with production's, none of production's
    assert {v.output_id for v in verdicts} == {o.id for o in outputs.values() if o.role != "production"}
    done = [v for v in verdicts if v.error is None]
    stopped = [v for v in verdicts if v.error and v.error.startswith("budget exhausted")]
    assert done and stopped and len(done) + len(stopped) == len(verdicts)
    for v in done:  # both orders asked, both agree (the mock is consistent), cost of two calls
        assert v.evidence["flipped"] is False
        o = outputs[v.output_id]
        assert v.label == ("tie" if o.role == "twin" else "candidate" if v.evidence["length_diff"] > 0 else "production")
        assert v.cost_usd == pytest.approx(done[0].cost_usd, rel=1e-6) and v.cost_usd > 0
    assert len(judge.requests) == 2 * len(done)  # no call was made once the budget was spent
    assert sum(v.cost_usd for v in verdicts) <= 0.002 + done[0].cost_usd
    assert all(v.args["api_key_env"] == "JUDGE_KEY" for v in verdicts)
    assert "sk-judge-test-key" not in db.read_bytes().decode("latin-1")
    assert all(h.get("authorization") == "Bearer sk-judge-test-key" for h in judge.headers)
