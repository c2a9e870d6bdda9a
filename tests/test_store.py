"""The store on real SQLite files: migrations, batches, retention, losses counted."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace

import sqlite_utils

from shadoweval.core.migrations import MIGRATIONS, migrate
from shadoweval.core.store import Store
from shadoweval.core.types import Exchange, Output, Usage, new_id


def _exchange(created_at: float | None = None) -> Exchange:
    return Exchange(id=new_id(), created_at=created_at or time.time(), route="/v1/chat/completions",
                    request={"model": "m", "messages": [{"role": "user", "content": "hi"}]}, tags={"route": "a"})


def _output(ex: Exchange, name: str = "production", **kw) -> Output:
    return Output(id=new_id(), exchange_id=ex.id, role="production" if name == "production" else "candidate",
                  name=name, model="gpt-4o", status=kw.pop("status", "ok"), started_at=ex.created_at, text="hello",
                  usage=Usage(3, 1, 4), latency_ms=kw.pop("latency_ms", 10.0), **kw)


def test_migrations_run_once_in_order():
    db = sqlite_utils.Database(memory=True)
    assert migrate(db) == [m.__name__ for m in MIGRATIONS]
    assert migrate(db) == []
    assert {"exchanges", "outputs", "feedback", "_migrations"} <= set(db.table_names())


def test_ids_sort_by_time():
    # by millisecond: within one the order is random (ids must not be guessable, tests/test_access.py)
    ids = [new_id() for _ in range(2000)]
    assert [i[:10] for i in ids] == sorted(i[:10] for i in ids)
    assert len(set(ids)) == 2000 and all(len(i) == 26 for i in ids)


def test_round_trip_and_stats(tmp_path):
    store = Store(tmp_path / "s.db", flush_interval_ms=5)
    store.start()
    try:
        exchanges = [_exchange() for _ in range(50)]
        for ex in exchanges:
            assert store.submit(ex)
            assert store.submit(_output(ex))
            assert store.submit(_output(ex, "cand", latency_ms=20.0, cost_usd=0.001))
        store.submit(lambda: [_output(exchanges[0], "late", status="timeout")])  # builders run in the writer
        assert store.flush()
        got_ex, outs, _ = store.get_exchange(exchanges[0].id)
        assert got_ex == replace(exchanges[0], created_at=got_ex.created_at)  # stored to the millisecond
        assert abs(got_ex.created_at - exchanges[0].created_at) < 0.001
        assert {o.name for o in outs} == {"production", "cand", "late"}
        n, rows = store.stats()
        assert n == 50
        by = {r.name: r for r in rows}
        assert by["cand"].outputs == 50 and abs(by["cand"].cost_usd - 0.05) < 1e-9
        assert by["late"].timeouts == 1 and by["production"].mean_latency_ms == 10.0
        assert store.status().written == 151
    finally:
        store.stop()


def test_retention_prunes_old_exchanges(tmp_path):
    store = Store(tmp_path / "s.db")
    store.start()
    old, new = _exchange(time.time() - 10 * 86400), _exchange()
    for ex in (old, new):
        store.submit(ex)
        store.submit(_output(ex))
    assert store.flush()
    assert store.prune(older_than_days=7) == 1
    assert store.exchange_ids() == [new.id]
    con = sqlite3.connect(store.path)
    assert con.execute("select count(*) from outputs").fetchone()[0] == 1
    store.stop()


def test_full_queue_drops_and_counts(tmp_path):
    store = Store(tmp_path / "s.db", queue_size=5)  # not started: nothing drains the queue
    accepted = sum(store.submit(_exchange()) for _ in range(8))
    assert accepted == 5 and store.status().lost == 3
    assert store.metrics.get("shadoweval_store_lost_total", reason="queue_full") == 3


def test_a_broken_builder_loses_one_record_not_the_batch(tmp_path):
    store = Store(tmp_path / "s.db")
    store.start()
    ex = _exchange()
    store.submit(ex)
    store.submit(lambda: 1 / 0)
    store.submit(_output(ex))
    assert store.flush()
    assert store.metrics.get("shadoweval_store_lost_total", reason="build_error") == 1
    assert len(store.get_exchange(ex.id)[1]) == 1
    store.stop()


def test_retention_runs_in_the_writer(tmp_path):
    store = Store(tmp_path / "s.db", retention_days=7)
    store.start()
    try:
        old, new = _exchange(time.time() - 30 * 86400), _exchange()
        store.submit(old)
        store.submit(new)
        assert store.flush() and store.flush()  # the second batch runs after the first's maintenance
        assert store.exchange_ids() == [new.id]
    finally:
        store.stop()


def test_two_processes_creating_the_same_store_do_not_collide(tmp_path):
    """The proxy and its background judge open a new store file at the same moment."""
    import subprocess
    import sys

    code = ("import sys, time; from shadoweval.core.store import Store; s = Store(sys.argv[1]); s.start(); "
            "ok = s.status().ok; s.stop(); sys.exit(0 if ok else 3)")
    for attempt in range(3):  # without the migration lock, about one process in seven failed ("database is locked")
        path = tmp_path / f"new{attempt}.db"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(path)]) for _ in range(5)]
        assert [p.wait(60) for p in procs] == [0] * 5
