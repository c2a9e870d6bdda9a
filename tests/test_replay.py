"""Replaying to candidates and serving recorded answers, end to end: real traffic through the proxy
to local mock candidates, an eval set built from it, `shadoweval replay` to a new candidate over
HTTP (resumable, capped), and `shadoweval replay-server` answering the official client."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from shadoweval.cli.mockllm import MockLLM, ThreadedServer, free_port
from shadoweval.core.store import Store

from .conftest import SHARED_DATA, running_proxy

BIN = Path(sys.executable).parent / "shadoweval"


def _requests(n: int) -> list[dict]:
    """Replay traffic: the shared MTRAG requests when present, else a small built-in set."""
    path = SHARED_DATA / "replay_rag_requests.jsonl"
    if path.exists():
        with path.open() as f:
            return [json.loads(line)["request"] for _, line in zip(range(n), f, strict=False)]
    return [{"model": "production", "messages": [
        {"role": "system", "content": f"Answer from the documents.\n\n[1] Fact number {i}."},
        {"role": "user", "content": f"What is fact {i}?"}]} for i in range(n)]


def _config(tmp_path: Path, db: Path, new_url: str) -> Path:
    cfg = tmp_path / "replay.toml"
    cfg.write_text(f"""
[store]
path = "{db}"

[judges]
embedder = "hashing"

[[candidates]]
name = "newcomer"
model = "gpt-4o"
base_url = "{new_url}/v1"
concurrency = 3
""")
    return cfg


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120)


def test_traffic_through_the_proxy_then_an_eval_set_replayed_to_a_new_candidate(tmp_path):
    requests = _requests(12)
    prod, shadow = MockLLM(name="prod"), MockLLM(name="shadow")
    newcomer = MockLLM(name="newcomer", answer=lambda r: "newcomer answers: " + r["messages"][-1]["content"][:40])
    with ThreadedServer(prod) as p, ThreadedServer(shadow) as s, ThreadedServer(newcomer) as n:
        with running_proxy(tmp_path, p.url, candidates=[{"name": "shadow", "model": "m", "base_url": s.url + "/v1"}]
                           ) as proxy:
            client = openai.OpenAI(base_url=proxy.url, api_key="k")
            for r in requests:
                client.chat.completions.create(**r)
            deadline = time.monotonic() + 20  # mirrored answers arrive in the background
            while len(shadow.requests) < len(requests) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proxy.store.flush()
            db = proxy.store.path
        cfg = _config(tmp_path, db, n.url)
        out = _run("evalset", "build", "rag", "--config", str(cfg), "--dedup", "0", "--json")
        assert out.returncode == 0, out.stderr
        built = json.loads(out.stdout)
        assert built["items"] == len({json.dumps(r["messages"], sort_keys=True) for r in requests})

        out = _run("replay", "rag", "--candidate", "newcomer", "--config", str(cfg), "--json")
        assert out.returncode == 0, out.stderr
        first = json.loads(out.stdout)
        assert first["sent"] == built["items"] and first["statuses"] == {"ok": built["items"]}
        assert len(newcomer.requests) == built["items"]
        again = json.loads(_run("replay", "rag", "--candidate", "newcomer", "--config", str(cfg), "--json").stdout)
        assert again["sent"] == 0 and again["already_answered"] == built["items"]  # resumable: nothing twice

    store = Store(db)
    pairs = store.pairs_to_grade(names=("newcomer",))
    assert len(pairs) == built["items"]  # the replayed answers pair with production's like live ones
    ex, outputs, _ = store.get_exchange(pairs[0].exchange_id)
    new = next(o for o in outputs if o.name == "newcomer")
    assert new.role == "candidate" and new.text.startswith("newcomer answers: ") and new.latency_ms > 0
    assert ex.request["messages"][-1]["content"][:40] in new.text


def test_replay_stops_at_the_spending_cap_and_restores_pruned_exchanges(tmp_path):
    requests = _requests(6)
    prod = MockLLM(name="prod")
    newcomer = MockLLM(name="newcomer")
    with ThreadedServer(prod) as p, ThreadedServer(newcomer) as n:
        with running_proxy(tmp_path, p.url) as proxy:
            client = openai.OpenAI(base_url=proxy.url, api_key="k")
            for r in requests:
                client.chat.completions.create(**r)
            assert proxy.store.flush()
            db = proxy.store.path
        cfg = _config(tmp_path, db, n.url)
        assert _run("evalset", "build", "rag", "--config", str(cfg), "--dedup", "0").returncode == 0
        # one request's estimated cost (gpt-4o prices) is above this cap: the first answer stops the run
        out = _run("replay", "rag", "--candidate", "newcomer", "--config", str(cfg), "--max-usd", "0.0000001",
                   "--concurrency", "1", "--json")
        capped = json.loads(out.stdout)
        assert capped["sent"] == 1 and "spending cap" in capped["stopped"] and capped["cost_usd"] > 0

        store = Store(db)
        store.start()
        assert store.prune(older_than_days=-1) == len(requests)  # retention took every exchange
        store.stop()
        out = _run("replay", "rag", "--candidate", "newcomer", "--config", str(cfg), "--json")
        restored = json.loads(out.stdout)
        assert restored["restored"] == len(requests) and restored["statuses"] == {"ok": len(requests)}
    store = Store(db)
    assert len(store.pairs_to_grade(names=("newcomer",))) == len(requests)  # production's answer came back too


def test_replay_server_answers_an_app_with_the_recorded_answers(tmp_path):
    requests = _requests(3)
    prod = MockLLM(name="prod")
    with ThreadedServer(prod) as p, running_proxy(tmp_path, p.url) as proxy:
        client = openai.OpenAI(base_url=proxy.url, api_key="k")
        recorded = [client.chat.completions.create(**r).choices[0].message.content for r in requests]
        assert proxy.store.flush()
        db = proxy.store.path
    cfg = _config(tmp_path, db, "http://127.0.0.1:9")
    assert _run("evalset", "build", "rag", "--config", str(cfg), "--dedup", "0").returncode == 0
    port = free_port()
    server = subprocess.Popen([BIN, "replay-server", "rag", "--config", str(cfg), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        app = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        deadline = time.monotonic() + 30
        while True:
            try:
                app.models.list()
                break
            except openai.APIConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"replay-server did not start: {server.stderr.read() if server.poll() else ''}")
                time.sleep(0.2)
        for r, want in zip(requests, recorded, strict=True):
            got = app.chat.completions.create(**{**r, "model": "my-test-model", "temperature": 0})
            assert got.choices[0].message.content == want  # production's answer: the target it fell back to
        with pytest.raises(openai.NotFoundError):
            app.chat.completions.create(model="m", messages=[{"role": "user", "content": "never asked"}])
    finally:
        server.terminate()
        server.wait(10)
