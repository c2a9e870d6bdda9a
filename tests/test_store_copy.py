"""`shadoweval store copy`: the demo's SQLite store into PostgreSQL, and every reading command then
says the same thing about both (stats, report, gate, agreement, the grading queue, eval sets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from shadoweval.cli.demo.run import run_demo
from shadoweval.core.store import Store
from shadoweval.core.types import Grade


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "shadoweval.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert not check or proc.returncode == 0, proc.stderr
    return proc


def _json(*args: str) -> dict:
    proc = _run(*args, "--json", check=False)
    assert proc.returncode in (0, 1, 3), proc.stderr  # the gate exits 1 on a failing candidate
    return json.loads(proc.stdout)


def _without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("demo") / "demo.db"
    assert run_demo(db, limit=12, out=lambda *_: None) == 0
    return db


def test_copy_is_complete_idempotent_and_reads_the_same(demo_store: Path, postgres_url: str, tmp_path: Path):
    # a grade, so that grading items and grades are copied too
    _run("grade", "queue", "--db", str(demo_store), "-n", "6", "--seed", "3")
    store = Store(demo_store)
    store.start()
    item = store.grading_items()[0]
    store.submit(Grade("g-1", item.id, "ann", 1.0, preference="left"))
    assert store.flush()
    store.stop()

    first = _run("store", "copy", "--from", str(demo_store), "--to", postgres_url)
    lines = {line.split()[0]: " ".join(line.split()[1:]) for line in first.stdout.splitlines()}
    assert lines["exchanges"] == "12 rows: 12 copied, 0 already there"
    assert "exchanges: 12 / 12" in first.stderr  # progress, on stderr
    with psycopg.connect(postgres_url) as conn:
        counts = {t: conn.execute(f"select count(*) from {t}").fetchone()[0]
                  for t in ("exchanges", "outputs", "verdicts", "grading_items", "grades", "counters")}
    import sqlite3

    src = sqlite3.connect(demo_store)
    want = {t: src.execute(f"select count(*) from {t}").fetchone()[0] for t in counts}
    src.close()
    assert counts == want and counts["exchanges"] == 12 and counts["grades"] == 1

    again = _run("store", "copy", "--from", str(demo_store), "--to", postgres_url)  # idempotent
    assert all(" 0 copied" in line for line in again.stdout.splitlines()), again.stdout

    # every reading command says the same about both
    for args in (("stats",), ("report",), ("agreement",), ("gate", "--candidate", "careful")):
        lite, pg = _json(*args, "--db", str(demo_store)), _json(*args, "--db", postgres_url)
        assert _without(lite, "generated_at") == _without(pg, "generated_at"), args
    q_lite = _json("grade", "queue", "--db", str(demo_store), "-n", "4", "--seed", "9")
    q_pg = _json("grade", "queue", "--db", postgres_url, "-n", "4", "--seed", "9")
    assert _without(q_lite, "batch") == _without(q_pg, "batch")
    es_lite, es_pg = (_json("evalset", "build", "support", "--db", db) for db in (str(demo_store), postgres_url))
    assert es_lite["id"] == es_pg["id"] and es_lite["items"] == es_pg["items"] == 12
    out = {}
    for name, db in (("lite", str(demo_store)), ("pg", postgres_url)):
        out[name] = tmp_path / f"{name}.jsonl"
        _run("evalset", "export", "support@1", "--db", db, "--format", "inspect", "--out", str(out[name]))
    assert out["lite"].read_bytes() == out["pg"].read_bytes()


def test_copy_says_what_is_wrong(tmp_path: Path):
    bad = _run("store", "copy", "--from", str(tmp_path / "none.db"), "--to", "postgresql://127.0.0.1:1/x", check=False)
    assert bad.returncode == 1 and "no store at" in bad.stderr
    bad = _run("store", "copy", "--from", str(tmp_path / "none.db"), "--to", str(tmp_path / "x.db"), check=False)
    assert bad.returncode == 1 and "postgresql://" in bad.stderr
    bad = _run("store", "copy", "--from", "a.db", "--to", "$SHADOWEVAL_NO_SUCH_VAR", check=False)
    assert bad.returncode == 1 and "SHADOWEVAL_NO_SUCH_VAR is not set" in bad.stderr


def test_an_unreachable_database_is_one_clear_line_without_the_password():
    for args in (("stats",), ("report",), ("grade", "queue", "-n", "3")):
        bad = _run(*args, "--db", "postgresql://app:s3cret@127.0.0.1:1/x", check=False)
        assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
        assert "cannot reach postgresql://app:***@127.0.0.1:1/x" in bad.stderr and "s3cret" not in bad.stderr
