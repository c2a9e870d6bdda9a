"""The store on both engines, the same tests: a SQLite file and a PostgreSQL database (a fresh one
per test on the throwaway cluster scripts/test starts; skipped with a message when there is none).
Then what only PostgreSQL has: several replicas on one database, and the database going away."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from shadoweval.core.migrations import MIGRATIONS
from shadoweval.core.pg import safe_url, translate
from shadoweval.core.store import Store
from shadoweval.core.types import (
    AnswerLabels,
    EvalItem,
    EvalSet,
    Exchange,
    Feedback,
    Grade,
    GradingItem,
    Output,
    Usage,
    Verdict,
    new_id,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "s.db")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(target: str):
    s = Store(target, flush_interval_ms=5)
    s.start()
    yield s
    s.stop()


def _exchange(created_at: float | None = None, **tags: str) -> Exchange:
    return Exchange(id=new_id(), created_at=created_at or time.time(), route="/v1/chat/completions",
                    request={"model": "m", "messages": [{"role": "user", "content": "what costs 5% more?"}]},
                    tags=tags or {"route": "a"})


def _output(ex: Exchange, name: str = "production", **kw) -> Output:
    return Output(id=new_id(), exchange_id=ex.id, role="production" if name == "production" else "candidate",
                  name=name, model="gpt-4o", status=kw.pop("status", "ok"), started_at=ex.created_at, text="hello",
                  usage=Usage(3, 1, 4), latency_ms=kw.pop("latency_ms", 10.0), **kw)


def _pair(store: Store, **tags: str) -> tuple[Exchange, Output, Output]:
    ex = _exchange(**tags)
    prod, cand = _output(ex), _output(ex, "cand", latency_ms=20.0, cost_usd=0.001)
    for r in (ex, prod, cand):
        assert store.submit(r)
    return ex, prod, cand


def _item(ex: Exchange, prod: Output, cand: Output, evaluators: int = 1) -> GradingItem:
    return GradingItem(id=new_id(), exchange_id=ex.id, candidate_output_id=cand.id, production_output_id=prod.id,
                       left="candidate", policy="uniform", probability=0.5, inclusion_probability=0.5,
                       evaluators=evaluators, slice="route=a", created_at=time.time(), batch="b1")


def test_round_trip_stats_and_retention(store: Store):
    pairs = [_pair(store) for _ in range(30)]
    old = _exchange(time.time() - 10 * 86400)
    store.submit(old)
    store.submit(_output(old))
    store.submit(Feedback(new_id(), pairs[0][0].id, time.time(), rating=-1.0, comment="wrong"))
    store.submit(lambda: [_output(pairs[0][0], "late", status="timeout")])  # builders run in the writer
    assert store.flush()
    got, outs, feedback = store.get_exchange(pairs[0][0].id)
    assert got.request == pairs[0][0].request and got.tags == {"route": "a"}
    assert {o.name for o in outs} == {"production", "cand", "late"} and feedback[0].comment == "wrong"
    n, rows = store.stats()
    by = {r.name: r for r in rows}
    assert n == 31 and by["cand"].outputs == 30 and by["cand"].cost_usd == pytest.approx(0.03)
    assert by["late"].timeouts == 1 and by["production"].mean_latency_ms == 10.0
    assert store.exchange_ids()[0] == old.id  # oldest first
    assert store.prune(older_than_days=7) == 1
    assert old.id not in store.exchange_ids() and store.get_exchange(old.id) is None
    assert store.spend_since("cand", 0) == (30, pytest.approx(0.03))
    assert store.status().lost == 0


def test_one_verdict_per_output_and_judge_key(store: Store):
    ex, prod, cand = _pair(store)
    assert store.flush()
    assert {o.id for _, o, _ in store.outputs_to_judge("grounded@1")} == {prod.id, cand.id}
    for score in (0.2, 0.9):  # judged twice (a retry): the later verdict replaces the earlier
        store.submit(Verdict(new_id(), cand.id, ex.id, "grounded", "1", {}, time.time(), score=score))
    assert store.flush()
    (v,) = store.verdicts(ex.id)
    assert v.score == 0.9
    assert [o.id for _, o, _ in store.outputs_to_judge("grounded@1")] == [prod.id]
    assert store.verdict_summary() == [("grounded@1", "cand", 1, 0, 0.9)]


def test_grading_leases_grades_and_progress(store: Store):
    ex, prod, cand = _pair(store, route="billing")
    assert store.flush()
    assert [p.candidate_output_id for p in store.pairs_to_grade()] == [cand.id]
    item = _item(ex, prod, cand)
    store.submit(item)
    store.submit(item)  # queued twice: a pair is queued once
    assert store.flush()
    assert store.pairs_to_grade() == [] and [i.id for i in store.grading_items()] == [item.id]
    assert store.next_item("ann").id == item.id  # type: ignore[union-attr]
    assert store.next_item("bob") is None  # one evaluator: ann's lease fills it
    for pref in ("left", "right"):  # ann grades, then changes her mind: one grade, the latest
        store.submit(Grade(new_id(), item.id, "ann", time.time(), preference=pref,
                           left_labels=AnswerLabels(grounded="yes")))
    assert store.flush()
    (g,) = store.grades(item.id)
    assert g.preference == "right" and g.winner == "production"  # the candidate was shown left
    progress = store.grading_progress()
    assert progress.queued == 1 and progress.fully_graded == 1 and progress.grades_by_evaluator == {"ann": 1}
    assert store.next_item("bob") is None
    assert store.tag_values("route") == {"billing"}


def test_eval_set_versions(store: Store):
    ex, prod, _ = _pair(store)
    items = (EvalItem(key="k1", request=ex.request or {}, target="hello", target_source="production",
                      exchange_id=ex.id),)
    first = EvalSet("es-1", "smoke", 0, time.time(), {"filters": {}}, items)
    store.submit(first)
    store.submit(first)  # the same content again: the same version
    store.submit(EvalSet("es-2", "smoke", 0, time.time(), {"filters": {}}, items[:0]))
    assert store.flush()
    assert [(e.ref, len(e.items)) for e in store.evalsets("smoke")] == [("smoke@1", 0), ("smoke@2", 0)]
    assert store.evalset("smoke@1").items[0].target == "hello"  # type: ignore[union-attr]
    assert len(list(store.exchange_bundles())) == 1


def test_the_translation_keeps_the_store_sql_meaning():
    t = translate("select ?1, ?2 from grading_items i where i.id in (?, ?) and i.batch = ?1")
    assert t.sql == "select %(p1)s, %(p2)s from grading_items i where i.id in (%(p3)s, %(p4)s) and i.batch = %(p1)s"
    t = translate("insert or replace into grades ([id], [item_id], [evaluator]) values (?, ?, ?)",
                  {"grades": ["item_id", "evaluator"]})
    assert t.sql.endswith('on conflict ("item_id", "evaluator") do update set "id" = excluded."id"')
    assert translate("select 1 where x like '5%'").sql == "select 1 where x like '5%%'"
    assert translate("insert or ignore into grading_items (id) values (?)").sql.endswith("on conflict do nothing")
    assert safe_url("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"


# -- PostgreSQL only -------------------------------------------------------------------------------


def test_a_batch_through_copy_writes_what_row_by_row_writes(postgres_url: str):
    """Batches of COPY_FROM_ROWS rows and more go through COPY and one insert ... select: same rows,
    same order (rowid), same conflict rule, as one statement per row."""
    from shadoweval.core.pg import COPY_FROM_ROWS, Database

    n = COPY_FROM_ROWS * 2
    rows = [(f"k{i % n}", i, b"\x00\xff" if i % 3 else None, i % 2 == 0) for i in range(n + 5)]  # 5 replace earlier ones
    results = []
    for batch in (rows, "row by row"):
        db = Database(postgres_url)
        db.conn.raw.execute("drop table if exists t; create table t (rowid bigint generated by default as identity, "
                            "id text primary key, v bigint, b bytea, flag bigint)")
        with db.conn:
            if batch == "row by row":
                for r in rows:
                    db.conn.executemany("insert or replace into t ([id], [v], [b], [flag]) values (?, ?, ?, ?)", [r])
                db.conn.executemany("insert or ignore into t (id, v) values (?, ?)", [(f"k{i}", -1) for i in range(n + 3)])
            else:
                affected = db.conn.executemany("insert or replace into t ([id], [v], [b], [flag]) values (?, ?, ?, ?)",
                                               batch)
                assert affected == n
                staged = db.conn.raw.execute("select count(*) from pg_class where relkind = 'r' and relpersistence = 't' "
                                             "and relname like '\\_in\\_t\\_%'").fetchone()
                assert staged == (1,)  # it went through COPY
                db.conn.executemany("insert or ignore into t (id, v) values (?, ?)", [(f"k{i}", -1) for i in range(n + 3)])
        # outside a transaction (autocommit), and twice on one connection: the staging table is emptied
        assert db.conn.executemany("insert or ignore into t (id, v) values (?, ?)",
                                   [(f"z{i}", i) for i in range(COPY_FROM_ROWS)]) == COPY_FROM_ROWS
        assert db.conn.executemany("insert or ignore into t (id, v) values (?, ?)",
                                   [(f"z{i}", i) for i in range(COPY_FROM_ROWS)]) == 0
        results.append([tuple(r.values()) for r in db.query("select id, v, b, flag from t order by rowid")])
        db.conn.close()
    copied, one_by_one = results
    assert copied == one_by_one
    # k0 came first and was replaced by row n: its place, row n's values; k{n} was only inserted-or-ignored
    assert copied[0] == ("k0", n, b"\x00\xff" if n % 3 else None, 1 if n % 2 == 0 else 0)
    assert copied[n] == (f"k{n}", -1, None, None)
    assert len(copied) == n + 3 + COPY_FROM_ROWS


def test_a_rolled_back_batch_does_not_break_the_next_copy(postgres_url: str):
    """The staging table made inside a transaction that rolls back is gone: the next batch makes it again."""
    from shadoweval.core.pg import COPY_FROM_ROWS, Database

    db = Database(postgres_url)
    db.conn.raw.execute("create table t (rowid bigint generated by default as identity, id text primary key, v bigint)")
    batch = [(f"k{i}", i) for i in range(COPY_FROM_ROWS)]
    with pytest.raises(RuntimeError), db.conn:
        db.conn.executemany("insert or replace into t (id, v) values (?, ?)", batch)
        raise RuntimeError("the rest of the batch failed")
    assert db.conn.raw.execute("select count(*) from t").fetchone() == (0,)
    with db.conn:
        assert db.conn.executemany("insert or replace into t (id, v) values (?, ?)", batch) == COPY_FROM_ROWS
    assert db.conn.raw.execute("select count(*) from t").fetchone() == (COPY_FROM_ROWS,)
    db.conn.close()


def test_a_staging_table_gone_behind_the_writer_costs_one_batch(postgres_url: str):
    """What a batch landing on another server session meets (a transaction-pooling PgBouncer, which
    docs/replicas.md says is not supported): the staging table this connection made is not there.
    That batch fails (the store counts it lost); the next one makes the table again and is written."""
    from shadoweval.core.pg import COPY_FROM_ROWS, Database

    db = Database(postgres_url)
    db.conn.raw.execute("create table t (rowid bigint generated by default as identity, id text primary key, v bigint)")
    sql = "insert or replace into t (id, v) values (?, ?)"
    with db.conn:
        db.conn.executemany(sql, [(f"a{i}", i) for i in range(COPY_FROM_ROWS)])
    staged = [r[0] for r in db.conn.raw.execute("select relname from pg_class where relkind = 'r' and "
                                                "relpersistence = 't' and relname like '\\_in\\_t\\_%'")]
    assert len(staged) == 1  # it went through COPY
    db.conn.raw.execute(f"drop table {staged[0]}")  # as on another server session
    with pytest.raises(psycopg.errors.UndefinedTable), db.conn:
        db.conn.executemany(sql, [(f"b{i}", i) for i in range(COPY_FROM_ROWS)])
    with db.conn:
        assert db.conn.executemany(sql, [(f"c{i}", i) for i in range(COPY_FROM_ROWS)]) == COPY_FROM_ROWS
    assert db.conn.raw.execute("select count(*), count(*) filter (where id like 'b%') from t").fetchone() == \
        (2 * COPY_FROM_ROWS, 0)
    db.conn.close()


def test_two_replicas_store_every_exchange_exactly_once(postgres_url: str):
    # two writers (two proxies' stores) start together on one new database: one migrates, both write
    stores = [Store(postgres_url, flush_interval_ms=5, batch_size=200) for _ in range(2)]
    starters = [threading.Thread(target=s.start) for s in stores]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    sent: list[list[str]] = [[], []]

    def send(i: int) -> None:
        for _ in range(1500):
            ex = _exchange()
            sent[i].append(ex.id)
            while not stores[i].submit(ex):
                time.sleep(0.001)
            stores[i].submit(_output(ex))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        assert s.flush(30)
        assert s.status().lost == 0
        s.stop()
    with psycopg.connect(postgres_url) as conn:
        ids = [r[0] for r in conn.execute("select id from exchanges")]
        migrations = conn.execute("select count(*) from _migrations").fetchone()
        outputs = conn.execute("select count(*), count(distinct exchange_id) from outputs").fetchone()
    assert len(ids) == len(set(ids)) == 3000 and set(ids) == set(sent[0]) | set(sent[1])
    assert outputs == (3000, 3000)
    assert migrations == (len(MIGRATIONS),)


def _bin() -> str:
    found = shutil.which("initdb")
    if found:
        return str(Path(os.path.realpath(found)).parent)
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not dirs:
        pytest.skip("PostgreSQL is not installed here (scripts/postgres installs it when run as root)")
    return dirs[-1]


def _as_owner(*cmd: str) -> None:
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *cmd], check=True, cwd="/", capture_output=True, timeout=60)


def test_a_database_outage_loses_counted_records_and_writing_resumes(tmp_path: Path):
    if not os.environ.get("SHADOWEVAL_TEST_POSTGRES"):
        pytest.skip("PostgreSQL tests need SHADOWEVAL_TEST_POSTGRES (scripts/test starts a throwaway cluster): not set")
    import tempfile

    pg_dir = Path(tempfile.mkdtemp(prefix="shadoweval-pg-outage-"))
    pg_dir.chmod(0o755)
    cluster = pg_dir / "c"
    start = subprocess.run([str(ROOT / "scripts" / "postgres"), "start", str(cluster)], capture_output=True, text=True,
                           timeout=120)
    assert start.returncode == 0, start.stderr
    url, port, data = start.stdout.strip(), (cluster / "port").read_text().strip(), str(cluster / "data")
    bin_dir = _bin()
    store = Store(url, flush_interval_ms=5, journal=tmp_path / "journal.db")
    try:
        store.start()
        before = [_exchange() for _ in range(20)]
        for ex in before:
            store.submit(ex)
        assert store.flush() and store.status().lost == 0

        _as_owner(f"{bin_dir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop")
        during = [_exchange() for _ in range(7)]
        for ex in during:  # the proxy never waits on the database: the writer counts the loss
            assert store.submit(ex)
        store.flush(10)
        status = store.status()
        assert status.lost == 7 and status.lost_by_reason == {"unavailable": 7} and not status.ok
        assert status.last_error and "***" not in status.last_error  # no password in this URL to hide

        _as_owner(f"{bin_dir}/pg_ctl", "-D", data, "-l", str(cluster / "log"), "-w", "-o",
                  f"-p {port} -k {cluster} -c listen_addresses=127.0.0.1", "start")
        # writing resumes by itself: the writer reconnects at a batch after the server is back
        probes, deadline = [], time.monotonic() + 20
        while not probes or probes[-1].id not in store.exchange_ids():
            assert time.monotonic() < deadline, store.status()
            probes.append(_exchange())
            store.submit(probes[-1])
            store.flush(5)
            time.sleep(0.2)
        after = [_exchange() for _ in range(5)]
        for ex in after:
            store.submit(ex)
        assert store.flush()
        ids = set(store.exchange_ids())
        assert {e.id for e in before + after} <= ids and not {e.id for e in during} & ids
        lost_probes = len([e for e in probes if e.id not in ids])
        assert store.status().lost == 7 + lost_probes and store.status().last_error is None
    finally:
        store.stop()
        subprocess.run([str(ROOT / "scripts" / "postgres"), "stop", str(cluster)], capture_output=True, timeout=60)
        shutil.rmtree(pg_dir, ignore_errors=True)


class _CountingJudge:
    """Records every output it is asked to judge; slow enough that two workers overlap."""

    name, version, args = "count", "1", {}  # noqa: RUF012

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    async def judge(self, subject):  # noqa: ANN001, ANN201
        import asyncio

        from shadoweval.judges.base import verdict

        self.calls.append(subject.output.id)
        await asyncio.sleep(0.002)
        return verdict(self, subject, score=1.0)


def test_two_judge_workers_never_judge_an_output_twice(target: str):
    # two judging processes (e.g. one per replica) on one store: every output judged once in all
    import asyncio

    from shadoweval.judges.runner import plan, run_plan

    seed = Store(target, flush_interval_ms=5)
    seed.start()
    for _ in range(150):
        _pair(seed)
    assert seed.flush()
    seed.stop()
    calls: list[str] = []

    def work(worker: str) -> None:
        store = Store(target, flush_interval_ms=5)
        store.start()
        try:
            judge = _CountingJudge(calls)
            asyncio.run(run_plan(store, plan(store, [judge], worker=worker), concurrency=4, worker=worker))
        finally:
            store.stop()

    threads = [threading.Thread(target=work, args=(w,)) for w in ("replica-a", "replica-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == len(set(calls)) == 300  # all 300 outputs, none twice
    check = Store(target)
    assert check.outputs_to_judge("count@1") == []
    assert sum(n for _, _, n, _, _ in check.verdict_summary()) == 300


def test_two_replicas_never_overfill_a_grading_item(target: str):
    # each replica's writer grants leases: an item with one place goes to one grader, not two
    seed = Store(target, flush_interval_ms=5)
    seed.start()
    items = []
    for _ in range(15):
        items.append(_item(*_pair(seed)))
        seed.submit(items[-1])
    assert seed.flush()
    seed.stop()
    stores = [Store(target, flush_interval_ms=1) for _ in range(2)]
    for s in stores:
        s.start()
    got: dict[str, list[str]] = {}
    barrier = threading.Barrier(4)

    def grader(name: str, store: Store) -> None:
        barrier.wait()
        while (item := store.next_item(name, lease_s=60)) is not None:
            got.setdefault(item.id, []).append(name)
            store.submit(Grade(new_id(), item.id, name, time.time(), preference="tie"))
            store.flush()

    threads = [threading.Thread(target=grader, args=(f"g{i}", stores[i % 2])) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.stop()
    assert sorted(got) == sorted(i.id for i in items)
    assert all(len(names) == 1 for names in got.values()), got


def test_two_replicas_number_eval_set_versions_without_a_clash(target: str):
    stores = [Store(target, flush_interval_ms=1) for _ in range(2)]
    for s in stores:
        s.start()
    barrier = threading.Barrier(2)

    def build(i: int) -> None:
        barrier.wait()
        for k in range(10):
            stores[i].submit(EvalSet(f"es-{i}-{k}", "nightly", 0, time.time(), {"k": k}))
            stores[i].flush()

    threads = [threading.Thread(target=build, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [s.status().lost for s in stores] == [0, 0]
    assert sorted(e.version for e in stores[0].evalsets("nightly")) == list(range(1, 21))
    for s in stores:
        s.stop()
