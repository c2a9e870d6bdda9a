"""Two proxy replicas on one PostgreSQL database, as docs/replicas.md runs them: the official openai
client sends round robin to both (streamed and not), a candidate is mirrored from each, and the
commands read one store with every exchange in it, once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import openai
import psycopg
import pytest

from shadoweval.cli.mockllm import MockLLM, ThreadedServer

from .conftest import running_proxy

MESSAGES = [{"role": "user", "content": "Where is my invoice?"}]


def _cli(*args: str) -> dict:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "shadoweval.cli", *args], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_two_replicas_share_one_postgres_store(production, postgres_url: str, tmp_path: Path):
    _, prod = production
    with ThreadedServer(MockLLM(name="cand-model")) as cand:
        candidates = [{"name": "cand", "model": "cand-model", "base_url": cand.url + "/v1"}]
        store = {"url": postgres_url, "flush_interval_ms": 10}
        with running_proxy(tmp_path / "a", prod.url, candidates=candidates, store=store) as a, \
                running_proxy(tmp_path / "b", prod.url, candidates=candidates, store=store) as b:
            ids = []
            for i in range(40):
                client = openai.OpenAI(base_url=(a, b)[i % 2].url, api_key="sk-app")
                if i % 4 < 2:
                    raw = client.chat.completions.with_raw_response.create(model="prod-model", messages=MESSAGES)
                    ids.append(raw.headers["x-shadoweval-exchange-id"])
                else:
                    with client.chat.completions.with_streaming_response.create(
                            model="prod-model", messages=MESSAGES, stream=True) as stream:
                        ids.append(stream.headers["x-shadoweval-exchange-id"])
                        assert "".join(stream.iter_lines())
            for proxy in (a, b):
                assert proxy.store.flush() and proxy.store.status().lost == 0
            # the candidates answer in the background: wait until both replicas' mirrors are stored
            deadline = time.monotonic() + 20
            while True:
                a.store.flush()
                b.store.flush()
                with psycopg.connect(postgres_url) as conn:
                    (n_cand,) = conn.execute("select count(*) from outputs where role = 'candidate'").fetchone()
                if n_cand >= 40 or time.monotonic() > deadline:
                    break
                time.sleep(0.1)

    with psycopg.connect(postgres_url) as conn:
        stored = [r[0] for r in conn.execute("select id from exchanges")]
        per_role = dict(conn.execute("select role, count(*) from outputs group by role").fetchall())
    assert sorted(stored) == sorted(ids) and len(set(stored)) == 40  # every answered exchange, once
    assert per_role == {"production": 40, "candidate": 40}

    # the commands read the one store: stats, the grading queue, an eval set
    stats = _cli("stats", "--db", postgres_url, "--json")
    assert stats["exchanges"] == 40
    by = {m["name"]: m for m in stats["models"]}
    assert by["cand"]["outputs"] == 40 and by["production"]["ok"] == 40
    # -n is the expected number queued (each pair drawn with its inclusion probability), not a count:
    # asking for more than there are gives every pair probability 1, so exactly the 40 are queued
    queued = _cli("grade", "queue", "--db", postgres_url, "-n", "1000", "--json")["queued"]
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("select count(*) from grading_items").fetchone() == (queued,) and queued == 40
    built = _cli("evalset", "build", "invoices", "--db", postgres_url, "--json")
    assert built["items"] >= 1


def test_serve_on_postgres_judges_in_the_background_into_the_same_database(postgres_url: str, tmp_path: Path):
    # `serve --db postgresql://...` starts its background judge as a child process: the child must
    # judge the PostgreSQL store (it is handed the URL in its environment), not a local SQLite file
    import socket

    with ThreadedServer(MockLLM(name="prod-model")) as prod:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = tmp_path / "c.toml"
        config.write_text(f'[production]\nbase_url = "{prod.url}/v1"\n[store]\nflush_interval_ms = 20\n'
                          f'[judges]\ninterval_s = 1\n')
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
        serve = subprocess.Popen([sys.executable, "-m", "shadoweval.cli", "serve", "--config", str(config),
                                  "--port", str(port), "--db", postgres_url], env=env, cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-app")
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.chat.completions.create(model="prod-model", messages=MESSAGES)
                    break
                except openai.APIConnectionError:
                    assert time.monotonic() < deadline and serve.poll() is None
                    time.sleep(0.2)
            judged = 0
            while not judged and time.monotonic() < deadline + 60:
                time.sleep(0.5)
                with psycopg.connect(postgres_url) as conn:
                    (judged,) = conn.execute("select count(*) from verdicts").fetchone()
        finally:
            serve.terminate()
            serve.wait(30)
    assert judged > 0
    assert not list(tmp_path.glob("*.db"))  # nothing went to a SQLite file beside it


@pytest.mark.parametrize("front", ["round robin in the app", "nginx"])
def test_the_replicas_page_example_runs(postgres_url: str, front: str):
    """scripts/replicas_example.py, the docs' example run for real: two `shadoweval serve` processes,
    the demo's app through nginx (where installed) or alternating itself, every request stored once."""
    argv = [sys.executable, str(Path(__file__).resolve().parent.parent / "scripts" / "replicas_example.py"),
            "--db", postgres_url, "-n", "9"]
    if front == "nginx":
        if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
            pytest.skip("nginx is not installed (apt-get install nginx); the round-robin variant ran instead")
    else:
        argv.append("--no-nginx")
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ("nginx on 127.0.0.1" in proc.stdout) == (front == "nginx")
    assert "ok   every answered request stored exactly once (9 sent, 9 stored, 9 distinct)" in proc.stdout
    assert "ok   both replicas took a share" in proc.stdout
    assert "FAIL" not in proc.stdout
