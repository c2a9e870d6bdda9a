"""The command line as a user runs it: `shadoweval serve` in its own process, `stats`, `demo`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import psycopg

from shadoweval.cli.mockllm import MockLLM, ThreadedServer, free_port
from shadoweval.core.store import Store

BIN = Path(sys.executable).parent / "shadoweval"


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("serve did not become healthy")


def test_serve_forwards_mirrors_and_drains_on_sigterm(tmp_path):
    prod, slow = MockLLM(name="prod"), MockLLM(name="slow-cand", latency_s=1.0)
    with ThreadedServer(prod) as ps, ThreadedServer(slow) as cs:
        cfg = tmp_path / "shadoweval.toml"
        cfg.write_text(f"""
[production]
base_url = "{ps.url}/v1"
[server]
log_format = "json"
[[candidates]]
name = "slow"
model = "slow-model"
base_url = "{cs.url}/v1"
concurrency = 2
""")
        port, db = free_port(), tmp_path / "serve.db"
        env = {**os.environ, "SHADOWEVAL_SERVER_LOG_LEVEL": "info"}
        proc = subprocess.Popen([str(BIN), "serve", "--config", str(cfg), "--port", str(port), "--db", str(db)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, proc)
            client = openai.OpenAI(base_url=url + "/v1", api_key="sk-secret-client-key")
            for i in range(4):
                r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
                assert r.choices[0].message.content == f"prod says: q{i}"
            # the slow candidate is still working: SIGTERM must let it finish (drain), then flush
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0
        logs = [json.loads(line) for line in err.decode().splitlines() if line.startswith("{")]
        assert any(entry["event"] == "proxy ready" for entry in logs)
        assert b"sk-secret-client-key" not in err
    n, rows = Store(db).stats()
    assert n == 4
    by = {r.name: r for r in rows}
    assert by["production"].ok == 4 and by["slow"].ok == 4  # drained, not dropped

    out = subprocess.run([str(BIN), "stats", "--db", str(db), "--json"], capture_output=True, check=True)
    data = json.loads(out.stdout)
    assert data["exchanges"] == 4 and {m["name"] for m in data["models"]} == {"production", "slow"}
    assert data["mirror_dropped"] == {} and data["store_lost"] == {}
    text = subprocess.run([str(BIN), "stats", "--db", str(db)], capture_output=True, check=True, text=True).stdout
    assert "4 exchanges" in text and "slow" in text and "mirror drops (not sent to a candidate): none" in text


def test_stats_shows_drops_saved_by_the_proxy(tmp_path, production):
    """Drops happen in the running proxy; the store saves its counters so stats can show them later."""
    from .conftest import running_proxy

    _, prod = production
    slow = MockLLM(name="slow", latency_s=1.0)
    with ThreadedServer(slow) as cs:
        cands = [{"name": "slow", "model": "s", "base_url": cs.url + "/v1", "concurrency": 1, "daily_requests": 2}]
        with running_proxy(tmp_path, prod.url, candidates=cands, mirror={"queue_size": 1}) as proxy:
            client = openai.OpenAI(base_url=proxy.url, api_key="k")
            for i in range(5):
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
            db = proxy.store.path
    data = json.loads(subprocess.run([str(BIN), "stats", "--db", str(db), "--json"], capture_output=True,
                                     check=True).stdout)
    assert data["mirror_dropped"] == {"slow": {"budget": 3}}
    text = subprocess.run([str(BIN), "stats", "--db", str(db)], capture_output=True, check=True, text=True).stdout
    assert "slow 3 (budget)" in text


def test_serve_rejects_bad_config_clearly(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[[candidates]]\nname = 'x'\n")
    out = subprocess.run([str(BIN), "serve", "--config", str(cfg)], capture_output=True, text=True)
    assert out.returncode != 0 and "candidates.0.model" in out.stderr


def test_stats_without_store(tmp_path):
    out = subprocess.run([str(BIN), "stats", "--db", str(tmp_path / "none.db")], capture_output=True, text=True)
    assert out.returncode != 0 and "no store" in out.stderr


def test_demo_runs_and_captures(tmp_path):
    db = tmp_path / "demo.db"
    out = subprocess.run([str(BIN), "demo", "--db", str(db), "--questions", "6"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "captured 6 exchanges" in out.stdout
    # the offline judges ran on every answer and their summary names each model
    assert "judging every answer offline" in out.stdout
    table = out.stdout.split("judged in", 1)[1]
    assert all(f"\n  {m} " in table for m in ("production", "careful", "drifting"))
    n, rows = Store(db).stats()
    by = {r.name: r for r in rows}
    assert n == 6 and by["careful"].ok == 6 and by["drifting"].ok == 6 and by["production"].ok == 6
    # the careful candidate is slower than the drifting one, as scripted
    assert by["careful"].mean_latency_ms > by["drifting"].mean_latency_ms
    # drifting's losses (it strays from its documents by design), and how many lost on a lower score alone
    found = re.search(r"\n  drifting .*\n +(\d+) loss(?:es)?, (\d+) of them answers every judge passes", out.stdout)
    assert found, out.stdout
    assert int(found[1]) >= 1 and 0 <= int(found[2]) <= int(found[1])


def test_demo_runs_into_postgres_and_never_overwrites_it(postgres_url: str, tmp_path):
    """`shadoweval demo --db postgresql://...`: the same demo into an empty database (judged, with its
    report); a second run refuses a database that holds traffic instead of deleting anything."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([str(BIN), "demo", "--db", postgres_url, "--questions", "6"], capture_output=True,
                         text=True, timeout=180, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert "captured 6 exchanges" in out.stdout and "compared with production" in out.stdout
    assert (tmp_path / "shadoweval-demo-report.html").exists()
    assert not list(tmp_path.glob("*.db"))  # nothing written to a local SQLite file
    n, rows = Store(postgres_url).stats()
    by = {r.name: r for r in rows}
    assert n == 6 and by["careful"].ok == 6 and by["drifting"].ok == 6 and by["production"].ok == 6
    with psycopg.connect(postgres_url) as conn:
        judged = conn.execute("select count(distinct output_id) from verdicts where judge = 'grounded'").fetchone()
    assert judged is not None and judged[0] >= 18  # every answer of the three models (and the twin's)
    again = subprocess.run([str(BIN), "demo", "--db", postgres_url, "--questions", "2", "--no-judge"],
                           capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert again.returncode != 0 and "needs an empty database" in again.stderr and "6 exchanges" in again.stderr
    assert Store(postgres_url).stats()[0] == 6


def test_proxy_does_not_import_heavy_or_judge_modules():
    code = ("import sys, shadoweval.proxy.app, shadoweval.cli.main; "
            "bad = [m for m in ('litellm', 'torch', 'sentence_transformers', 'shadoweval.judges', 'shadoweval.datasets', 'nh3') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
