"""Storage: exchanges, outputs, feedback, verdicts, grades and eval sets in one SQLite file.

The store's modules (this one, `store_grading.py`, `store_evalsets.py`, `store_rows.py`) are the
only ones with SQL or rows; everything else gets and gives project types.

One writer thread owns the write connection. Everything else hands it records through a bounded
queue with a non-blocking `submit()`: the request path never waits for SQLite, and when the queue
is full, the disk is full or the file is locked or read-only, records are dropped, counted in
`shadoweval_store_lost_total` and logged, never raised. The writer commits in batches (one
transaction per batch) so that thousands of exchanges a second cost little. Redaction happens
here, in the writer thread, so nothing reaches the file unredacted (the passages found in a
request included). WAL lets the CLI, the UI and the judges read while the proxy writes.

Reads that list by time break ties by rowid, the order records were written: ids sort by
millisecond only (random within one, so that nobody can guess another's).
"""

from __future__ import annotations

import fcntl
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

from .journal import ACCEPTED, SETTLED, Journal
from .metrics import Metrics, standard_metrics
from .migrations import migrate
from .redact import Redactor
from .settings import is_postgres_url
from .store_evalsets import EvalSetReads, evalset_rows
from .store_grading import GradingReads, StoreUnavailable
from .store_rows import (
    bool_in,
    exchange_from,
    feedback_from,
    from_iso,
    from_json,
    in_chunks,
    iso,
    output_from,
    to_json,
    verdict_from,
)
from .types import (
    CandidateStats,
    ContextsFound,
    EvalSet,
    Exchange,
    Feedback,
    Grade,
    GradingItem,
    JudgeLease,
    Lease,
    Output,
    ReportRun,
    Verdict,
    new_id,
)

if TYPE_CHECKING:
    from . import pg

log = logging.getLogger("shadoweval.store")

__all__ = ["Store", "StoreStatus", "StoreUnavailable", "connect", "iso"]

Record = (Exchange | Output | Feedback | Verdict | ContextsFound | GradingItem | Grade | Lease | JudgeLease | EvalSet
          | ReportRun)
# A builder is called in the writer thread: parsing and shaping raw captures happens there, off
# the event loop.
Item = Record | Callable[[], Iterable[Record]]

_STOP = object()
_LOSING_S = 10.0  # the store reports itself not ok for this long after it lost a record
_REOPEN_FIRST, _REOPEN_LAST = 0.1, 1.0  # seconds between attempts to reach PostgreSQL again


@dataclass(frozen=True, slots=True)
class _Flush:
    """Set once everything queued before it has been committed (or lost)."""

    done: threading.Event


@dataclass(frozen=True, slots=True)
class _Durable:
    """A record whose submitter waits for its commit (`[store] durability = "strict"`): `done` is
    called in the writer thread with True once committed, False once lost."""

    item: Any
    done: Callable[[bool], None]


class _CountingQueue(queue.Queue[tuple[float, Any]]):
    """A queue that counts the records put into it in the crash journal. `_put` runs under the
    queue's own lock, so the count is exact without another lock or a system call."""

    counts: memoryview

    def _put(self, item: tuple[float, Any]) -> None:
        self.queue.append(item)
        if type(item[1]) is not _Flush and item[1] is not _STOP:
            self.counts[ACCEPTED] += 1


def connect(path: str | Path, *, readonly: bool = False) -> sqlite_utils.Database:
    """A connection set up the way every reader and the writer want it."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    else:
        conn = sqlite3.connect(str(path), check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 2000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
    return sqlite_utils.Database(conn)


@dataclass(frozen=True, slots=True)
class StoreStatus:
    ok: bool
    queue_depth: int
    written: int
    lost: int  # records not kept since this process started, crashes of earlier runs found at start included
    last_error: str | None
    lag_s: float  # age of the oldest record still waiting, 0 when the queue is empty
    lost_by_reason: dict[str, int] = field(default_factory=dict)  # crash, queue_full, locked, ...


class Store(GradingReads, EvalSetReads):
    def __init__(
        self,
        path: str | Path,
        *,
        journal: str | Path | None = None,
        queue_size: int = 50_000,
        batch_size: int = 1000,
        flush_interval_ms: int = 100,
        retention_days: float = 0,
        redactor: Redactor | None = None,
        metrics: Metrics | None = None,
        recover: bool = False,
        max_capture_bytes: int = 0,
    ) -> None:
        """`recover`: on start, count what crashed runs on this database lost (the proxy's store
        does; a CLI's or the judges' would only race it). `max_capture_bytes`: longest stored text
        (request strings, answer text) in UTF-8 bytes, 0 for no limit.

        `path` is a SQLite file or a PostgreSQL URL (`postgresql://...`). `journal`: with PostgreSQL,
        the local file whose folder keeps this machine's crash journal (default: the temp folder)."""
        self.url = str(path) if is_postgres_url(str(path)) else None
        # what a failing database raises. psycopg (core/pg.py) loads only for a store on PostgreSQL:
        # loaded, its many objects make every garbage collection of the writer's young records slower
        # (bench_store's capture: 25 -> 33 us/exchange)
        self._errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        if self.url is not None:
            from . import pg

            self._errors += (pg.Error,)
        self.path = Path(path) if self.url is None else Path(journal or _default_journal(self.url))
        self._pool: pg.Pool | None = None
        self.batch_size = batch_size
        self.flush_interval = flush_interval_ms / 1000
        self.retention_days = retention_days
        self.redactor = redactor or Redactor(emails=False, card_numbers=False, phone_numbers=False)
        self.metrics = metrics or standard_metrics()
        self.recover = recover
        self.max_capture_bytes = max_capture_bytes
        self._run_id = new_id()  # this process's row set in `counters`, and its crash journal
        self._journal = Journal(self.path, self._run_id)
        self._queue = _CountingQueue(maxsize=queue_size)
        self._queue.counts = self._journal.counts
        self._thread: threading.Thread | None = None
        self._db: sqlite_utils.Database | None = None
        self._written = 0
        self._lost = 0
        self._lost_by_reason: dict[str, int] = {}
        self._last_loss = float("-inf")  # monotonic time of the latest loss (crashes of earlier runs aside)
        self._last_error: str | None = None
        self._oldest_pending = 0.0
        self._next_retention = 0.0
        self._next_counters = 0.0
        self._next_open_attempt = 0.0
        self._reopen_delay = _REOPEN_FIRST

    @property
    def location(self) -> str:
        """Where the records go, for logs and messages: the file, or the URL without its password."""
        if self.url is None:
            return str(self.path)
        from .pg import safe_url

        return safe_url(self.url)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._open()
            if self._journal.open():
                self._queue.counts = self._journal.counts
            if self.recover:
                crashed = self._journal.claim_dead()
                if crashed:
                    self._lose(crashed, "crash")
                    log.error("an earlier run died before storing records it had answered",
                              extra={"lost": crashed, "reason": "crash"})
                    self._save_counters()
            self._thread = threading.Thread(target=self._run, name="shadoweval-store-writer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (within `timeout`), then close."""
        if self._thread is None:
            return
        try:
            self._queue.put((time.monotonic(), _STOP), timeout=timeout)
        except queue.Full:
            pass
        self._thread.join(timeout)
        ended = not self._thread.is_alive()
        self._thread = None
        counts = self._journal.counts
        if ended and counts[ACCEPTED] > counts[SETTLED]:
            # submitted after the stop or past the timeout: lost on the way out, and said so
            self._lose(counts[ACCEPTED] - counts[SETTLED], "shutdown")
            counts[SETTLED] = counts[ACCEPTED]
            self._save_counters()
        # a writer still running past the timeout leaves its file: the next start counts the rest
        self._journal.close(clean=ended)
        if self._db is not None:
            self._db.conn.close()
            self._db = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def flush(self, timeout: float = 10.0) -> bool:
        """Block until everything submitted so far is written (tests, CLI, shutdown)."""
        done = threading.Event()
        if not self.submit(_Flush(done)):
            return False
        return done.wait(timeout)

    # -- the non-blocking entry point ------------------------------------------------------------

    def submit(self, item: Item | _Flush | _Durable) -> bool:
        try:
            self._queue.put_nowait((time.monotonic(), item))
            return True
        except queue.Full:
            self._lose(1, "queue_full")
            return False

    def submit_durable(self, item: Item, done: Callable[[bool], None]) -> bool:
        """Like `submit`, and `done(committed)` is called from the writer thread once the record
        is committed (True) or lost (False). The writer commits at once rather than waiting out
        the flush interval. False, without calling `done`, when the queue is full."""
        return self.submit(_Durable(item, done))

    def status(self) -> StoreStatus:
        now = time.monotonic()
        pending = self._queue.qsize()
        lag = now - self._oldest_pending if pending and self._oldest_pending else 0.0
        return StoreStatus(
            # not ok while records are being lost (a loss in the last 10 s), not only while broken
            ok=self._db is not None and self._last_error is None and now - self._last_loss > _LOSING_S,
            queue_depth=pending,
            written=self._written,
            lost=self._lost,
            last_error=self._last_error,
            lag_s=lag,
            lost_by_reason=dict(self._lost_by_reason),
        )

    # -- writer thread ---------------------------------------------------------------------------

    def _lose(self, n: int, reason: str) -> None:
        self._lost += n
        self._lost_by_reason[reason] = self._lost_by_reason.get(reason, 0) + n
        if reason != "crash":  # an earlier run's crash is history, not this store losing records now
            self._last_loss = time.monotonic()
        self.metrics.inc("shadoweval_store_lost_total", n, reason=reason)

    def _open(self) -> None:
        if self.url is not None:
            self._open_postgres()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # another process (the background judge, a CLI) may be setting up or migrating the same
            # new file: one at a time (switching to WAL included), the second finds the work done. The
            # lock is a file of its own: closing any descriptor of the database file would drop the
            # POSIX locks SQLite holds on it ("disk I/O error" in the other connections of this process).
            with open(self.path.with_name(self.path.name + ".migrate-lock"), "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                db = connect(self.path)
                migrate(db)
            self._db = db
            self._last_error = None
        except (sqlite3.Error, OSError) as exc:
            self._db = None
            self._last_error = f"cannot open {self.path}: {exc}"
            self._next_open_attempt = time.monotonic() + 5.0
            log.error("store unavailable", extra={"path": str(self.path), "error": str(exc)})

    def _open_postgres(self) -> None:
        from . import pg

        assert self.url is not None
        try:
            db = pg.Database(self.url)
            with db.migrate_lock():  # replicas starting together: one migrates, the others find it done
                migrate(db)  # type: ignore[arg-type]  # pg.Database speaks the part of sqlite_utils' API used
            self._db = db  # type: ignore[assignment]
            self._last_error = None
            self._reopen_delay = _REOPEN_FIRST
        except pg.Error as exc:
            self._db = None
            self._last_error = f"cannot open {pg.safe_url(self.url)}: {exc}"
            self._reopen_later()
            log.error("store unavailable", extra={"path": pg.safe_url(self.url), "error": str(exc)})

    def _reopen_later(self) -> None:
        """A refused connection costs next to nothing, so the writer tries again soon: 0.1 s after a
        failure, doubling up to a second, so that writing resumes within that of the server's return."""
        self._next_open_attempt = time.monotonic() + self._reopen_delay
        self._reopen_delay = min(self._reopen_delay * 2, _REOPEN_LAST)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._maintenance()
                continue
            batch = [first]
            deadline = time.monotonic() + self.flush_interval
            # someone waits on a flush (a grader's lease, a CLI, a strict response): commit now rather
            # than at the deadline, with whatever else is queued already
            while len(batch) < self.batch_size and not isinstance(batch[-1][1], _Flush | _Durable):
                timeout = deadline - time.monotonic()
                try:
                    batch.append(self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            self._oldest_pending = self._peek_oldest()
            items = []
            for _, item in batch:
                if item is _STOP:
                    stopping = True
                else:
                    items.append(item)
            self._write(items)
            # settled: committed or counted as lost; what a crash takes is accepted minus this
            self._journal.counts[SETTLED] += sum(type(item) is not _Flush for item in items)
            self._maintenance()
        self._save_counters()

    def _peek_oldest(self) -> float:
        with self._queue.mutex:
            return self._queue.queue[0][0] if self._queue.queue else 0.0

    def _write(self, items: list[Any]) -> None:
        records: list[Record] = []
        flushes: list[threading.Event] = []
        waiters: list[Callable[[bool], None]] = []
        for item in items:
            if type(item) is _Durable:
                waiters.append(item.done)
                item = item.item
            if isinstance(item, (Exchange, Output, Feedback, Verdict, ContextsFound, GradingItem, Grade, Lease, JudgeLease, EvalSet,
                                 ReportRun)):
                records.append(item)
            elif isinstance(item, _Flush):
                flushes.append(item.done)
            else:
                try:
                    records.extend(item())
                except Exception:  # a capture that cannot be shaped is a lost record, not a crash
                    log.exception("could not build a record")
                    self._lose(1, "build_error")
        committed = False
        try:
            if records:
                committed = self._commit(records)
        finally:
            for done in flushes:
                done.set()
            for waiter in waiters:
                try:
                    waiter(committed)
                except Exception:  # a waiter whose loop has closed: nothing left to tell
                    log.debug("durable waiter failed", exc_info=True)

    def _commit(self, records: list[Record]) -> bool:
        if self._db is None and time.monotonic() >= self._next_open_attempt:
            self._open()
        if self._db is None:
            self._lose(len(records), "unavailable")
            return False
        rows: dict[str, list[dict[str, Any]]] = {"exchanges": [], "outputs": [], "feedback": [], "verdicts": [],
                                                 "grading_items": [], "grades": [], "report_runs": []}
        found: list[tuple[str, str]] = []
        leases: list[Lease] = []
        claims: list[JudgeLease] = []
        evalsets: list[EvalSet] = []
        for r in records:
            if isinstance(r, Lease):
                leases.append(r)
            elif isinstance(r, JudgeLease):
                claims.append(r)
            elif isinstance(r, EvalSet):
                evalsets.append(r)
            elif isinstance(r, ReportRun):
                rows["report_runs"].append({"id": r.id, "created_at": iso(r.created_at),
                                            "alerts_json": to_json([list(a) for a in r.alerts])})
            elif isinstance(r, ContextsFound):
                # found in the stored (already redacted) request: nothing left to redact
                found.append((to_json(r.contexts) or "[]", r.exchange_id))
            elif isinstance(r, Exchange):
                rows["exchanges"].append(self._exchange_row(r))
            elif isinstance(r, Output):
                rows["outputs"].append(self._output_row(r))
            elif isinstance(r, Verdict):
                rows["verdicts"].append(self._verdict_row(r))
            elif isinstance(r, GradingItem):
                rows["grading_items"].append(self._grading_item_row(r))
            elif isinstance(r, Grade):
                rows["grades"].append(self._grade_row(r))
            else:
                rows["feedback"].append(self._feedback_row(r))
        try:
            with self._db.conn:
                for table, table_rows in rows.items():
                    if table_rows:
                        # one prepared statement per table: insert_all would re-read the schema per batch
                        cols = list(table_rows[0])
                        # a pair already queued stays as it was: re-queueing is a no-op
                        verb = "insert or ignore" if table == "grading_items" else "insert or replace"
                        sql = (f"{verb} into {table} ({', '.join(f'[{c}]' for c in cols)}) "
                               f"values ({', '.join('?' * len(cols))})")
                        self._db.conn.executemany(sql, [tuple(r.values()) for r in table_rows])
                if found:
                    self._db.conn.executemany(
                        "update exchanges set contexts_json = ? where id = ? and contexts_json is null", found)
                if rows["grades"]:
                    # the winner comes from the side the grader was shown on the left, as queued
                    self._db.conn.executemany(
                        """update grades set winner = (
                               select case grades.preference when 'tie' then 'tie' when 'left' then i."left"
                                      when 'right' then case i."left" when 'production' then 'candidate'
                                                        else 'production' end end
                               from grading_items i where i.id = grades.item_id)
                           where id = ? and preference is not null""",
                        [(r["id"],) for r in rows["grades"]])
                    # a grade ends its grader's hold on the item
                    self._db.conn.executemany("delete from grading_leases where item_id = ? and evaluator = ?",
                                              [(r["item_id"], r["evaluator"]) for r in rows["grades"]])
                for lease in leases:
                    self._grant(self._db.conn, lease)
                for claim in claims:
                    self._claim(self._db.conn, claim)
                for es in evalsets:
                    self._save_evalset(self._db.conn, es)
        except self._errors as exc:
            reason = _reason(exc)
            self._lose(len(records), reason)
            if self.url is not None and self._db is not None and self._db.conn.broken:  # type: ignore[attr-defined]
                # the server went away: reconnect at a next batch, soon (a restart), then less often
                self._db = None
                self._reopen_later()
            if self._last_error != str(exc):
                log.error("store write failed", extra={"reason": reason, "error": str(exc), "lost": len(records)})
            self._last_error = str(exc)
            return False
        self._last_error = None
        self._written += len(records)
        for table, table_rows in rows.items():
            if table_rows:
                self.metrics.inc("shadoweval_store_written_total", len(table_rows), kind=table)
        return True

    def _save_evalset(self, conn: sqlite3.Connection, es: EvalSet) -> None:
        """A version is immutable: one whose id (name and content) is stored already is left as it
        is; a new one takes the next version number of its name."""
        if self.url is not None:  # replicas numbering versions of one name: one at a time
            conn.execute("select pg_advisory_xact_lock(hashtext(?))", ("evalset:" + es.name,))
        head, items = evalset_rows(es)
        # one statement reads the next number and writes it, so that two processes writing one
        # SQLite file cannot both take it; a version already stored is left as it is
        inserted = conn.execute(
            """insert into evalsets (id, name, version, created_at, manifest_json, items)
               select ?, ?, coalesce(max(version), 0) + 1, ?, ?, ? from evalsets where name = ?
               having not exists (select 1 from evalsets where id = ?)""",
            (head["id"], head["name"], head["created_at"], head["manifest_json"], head["items"], es.name, es.id),
        ).rowcount
        if not inserted:
            return
        if items:
            cols = list(items[0])
            conn.executemany(f"insert into evalset_items ({', '.join(cols)}) values ({', '.join('?' * len(cols))})",
                             [tuple(r.values()) for r in items])

    def _grant(self, conn: sqlite3.Connection, lease: Lease) -> None:
        """Grant (or renew) a lease only while the item has room: its grades plus other graders'
        live leases stay below its number of evaluators. Atomic on SQLite because a write
        transaction holds the file; on PostgreSQL, where several replicas' writers grant leases, the
        item's row is locked first, so the second grant counts the first."""
        now = time.time()
        if self.url is not None:
            conn.execute("select 1 from grading_items where id = ? for update", (lease.item_id,))
        conn.execute(
            """insert or replace into grading_leases (item_id, evaluator, expires_at)
               select ?1, ?2, ?3 from grading_items i where i.id = ?1
                 and (select count(*) from grades g where g.item_id = i.id and g.skipped = 0 and g.evaluator != ?2)
                   + (select count(*) from grading_leases l where l.item_id = i.id and l.evaluator != ?2
                                                             and l.expires_at > ?4) < i.evaluators""",
            (lease.item_id, lease.evaluator, lease.expires_at, now))
        conn.execute("delete from grading_leases where expires_at <= ?", (now,))

    def _claim(self, conn: sqlite3.Connection, claim: JudgeLease) -> None:
        """Each output goes to this worker unless another holds a live claim on it: one upsert whose
        condition the database checks under the row's lock, so two workers racing for an output on
        PostgreSQL (or two processes on one SQLite file) cannot both get it."""
        now = time.time()
        conn.executemany(
            """insert into judge_leases (output_id, judge_key, worker, expires_at) values (?, ?, ?, ?)
               on conflict (output_id, judge_key) do update set worker = excluded.worker,
                   expires_at = excluded.expires_at
               where judge_leases.worker = excluded.worker or judge_leases.expires_at <= ?""",
            [(o, claim.judge_key, claim.worker, claim.expires_at, now) for o in claim.output_ids])

    def claim_outputs(self, judge_key: str, output_ids: Iterable[str], worker: str, *, lease_s: float = 900.0,
                      ) -> set[str]:
        """Claim outputs to judge under `judge_key` for `worker` (one id per judge process); return
        the ones it holds now. Goes through the writer like every write, then reads the outcome."""
        ids = tuple(dict.fromkeys(output_ids))
        if not ids:
            return set()
        if not self.submit(JudgeLease(ids, judge_key, worker, time.time() + lease_s)) or not self.flush(30.0):
            raise StoreUnavailable("the store did not confirm the judge lease")
        held: set[str] = set()
        db = self._reader()
        try:
            for chunk, marks in in_chunks(list(ids)):
                held.update(r[0] for r in db.execute(
                    f"select output_id from judge_leases where judge_key = ? and worker = ? and expires_at > ? "
                    f"and output_id in ({marks})", [judge_key, worker, time.time(), *chunk]))
        finally:
            db.conn.close()
        return held

    def _exchange_row(self, e: Exchange) -> dict[str, Any]:
        request = self.redactor.json(e.request) if e.request is not None else None
        model = e.request.get("model") if isinstance(e.request, dict) else None
        truncated = e.truncated
        if self.max_capture_bytes and request is not None and e.request_bytes and e.request_bytes > self.max_capture_bytes:
            request, cut = _clip_strings(request, self.max_capture_bytes)
            truncated = truncated or cut
        return {
            "id": e.id,
            "created_at": iso(e.created_at),
            "route": e.route,
            "model": model if isinstance(model, str) else None,
            "request_json": to_json(request),
            "tags_json": to_json(e.tags),
            "stream": int(e.stream),
            "status": e.status,
            "http_status": e.http_status,
            "contexts_json": to_json(self._redact_contexts(e.contexts, request)) if e.contexts else None,
            "owner": e.owner,
            "truncated": int(truncated),
            "request_bytes": e.request_bytes if truncated else None,
        }

    def _redact_contexts(self, contexts: list[dict[str, Any]], request: Any) -> list[dict[str, Any]]:
        """Passages redacted like the request. Most are verbatim pieces of the request, which was
        just redacted: a piece found as is in the redacted request holds nothing to redact and
        skips a second pass (the redactor's scans cost about as much as finding the passages)."""
        stored = "\x00".join(_strings(request))
        return [{k: self.redactor.text(v) if isinstance(v, str) and v not in stored else v for k, v in p.items()}
                for p in contexts]

    def _output_row(self, o: Output) -> dict[str, Any]:
        text, truncated, size = o.text, o.truncated, o.original_bytes
        if text and self.max_capture_bytes and len(text) * 4 > self.max_capture_bytes:
            clipped = _clip(text, self.max_capture_bytes)
            if clipped is not text:
                text, truncated, size = clipped, True, size or len(text.encode())
        return {
            "id": o.id,
            "exchange_id": o.exchange_id,
            "role": o.role,
            "name": o.name,
            "model": o.model,
            "status": o.status,
            "created_at": iso(o.started_at),
            "stream": int(o.stream),
            "text": self.redactor.text(text) if text else text,
            "tool_calls_json": to_json(self.redactor.json(o.tool_calls)) if o.tool_calls else None,
            "finish_reason": o.finish_reason,
            "prompt_tokens": o.usage.prompt_tokens,
            "completion_tokens": o.usage.completion_tokens,
            "total_tokens": o.usage.total_tokens,
            "latency_ms": o.latency_ms,
            "ttft_ms": o.ttft_ms,
            "http_status": o.http_status,
            "error": o.error,
            "cost_usd": o.cost_usd,
            "truncated": int(truncated),
            "original_bytes": size if truncated else None,
        }

    def _verdict_row(self, v: Verdict) -> dict[str, Any]:
        return {
            "id": v.id,
            "output_id": v.output_id,
            "exchange_id": v.exchange_id,
            "judge": v.judge,
            "version": v.version,
            "args_json": to_json(v.args),
            "judge_key": v.judge_key,
            "created_at": iso(v.created_at),
            "score": v.score,
            "label": v.label,
            "explanation": v.explanation,
            "evidence_json": to_json(v.evidence),
            "cost_usd": v.cost_usd,
            "error": v.error,
        }

    def _grading_item_row(self, i: GradingItem) -> dict[str, Any]:
        return {
            "id": i.id,
            "exchange_id": i.exchange_id,
            "candidate_output_id": i.candidate_output_id,
            "production_output_id": i.production_output_id,
            "left": i.left,
            "policy": i.policy,
            "probability": i.probability,
            "inclusion_probability": i.inclusion_probability,
            "evaluators": i.evaluators,
            "slice": i.slice,
            "created_at": iso(i.created_at),
            "batch": i.batch,
        }

    def _grade_row(self, g: Grade) -> dict[str, Any]:
        return {
            "id": g.id,
            "item_id": g.item_id,
            "evaluator": g.evaluator,
            "created_at": iso(g.created_at),
            "preference": g.preference,
            "winner": g.winner,  # replaced from the item's left side in the same transaction
            "grounded_left": g.left_labels.grounded,
            "citations_correct_left": bool_in(g.left_labels.citations_correct),
            "meets_intent_left": bool_in(g.left_labels.meets_intent),
            "grounded_right": g.right_labels.grounded,
            "citations_correct_right": bool_in(g.right_labels.citations_correct),
            "meets_intent_right": bool_in(g.right_labels.meets_intent),
            "note": self.redactor.text(g.note) if g.note else g.note,
            "keep": int(g.keep),
            "corrected_answer": self.redactor.text(g.corrected_answer) if g.corrected_answer else g.corrected_answer,
            "seconds": g.seconds,
            "skipped": int(g.skipped),
        }

    def _feedback_row(self, f: Feedback) -> dict[str, Any]:
        return {
            "id": f.id,
            "exchange_id": f.exchange_id,
            "created_at": iso(f.created_at),
            "rating": f.rating,
            "comment": self.redactor.text(f.comment) if f.comment else f.comment,
            "source": f.source,
        }

    def _maintenance(self) -> None:
        now = time.monotonic()
        if now >= self._next_counters:
            self._next_counters = now + 5.0
            self._save_counters()
        if not self.retention_days or self._db is None or now < self._next_retention:
            return
        self._next_retention = now + 3600
        try:
            self.prune(older_than_days=self.retention_days, db=self._db)
        except self._errors as exc:
            log.error("retention failed", extra={"error": str(exc)})

    def _save_counters(self) -> None:
        if self._db is None:
            return
        stamp = iso(time.time())
        rows = [{"run_id": self._run_id, "name": name, "labels_json": to_json(labels), "value": value,
                 "updated_at": stamp} for name, labels, value in self.metrics.snapshot()]
        if not rows:
            return
        try:
            with self._db.conn:
                self._db.table("counters").insert_all(rows, replace=True)
        except self._errors as exc:  # counted elsewhere already; saving them is best effort
            log.debug("could not save counters", extra={"error": str(exc)})

    # -- reads and maintenance (any thread; each uses its own connection) ----------------------

    def _reader(self) -> sqlite_utils.Database:
        if self.url is None:
            return connect(self.path)
        from . import pg

        if self._pool is None:
            self._pool = pg.Pool(self.url)
        try:
            return self._pool.database()  # type: ignore[return-value]  # the same calls, on PostgreSQL
        except pg.Error as exc:
            raise StoreUnavailable(f"cannot reach {self.location}: {' '.join(str(exc).split())}") from None

    def prune(self, *, older_than_days: float, db: sqlite_utils.Database | None = None) -> int:
        """Delete exchanges (with their outputs, feedback and ungraded grading items) older than the
        cutoff; return how many."""
        own = db is None
        db = db or self._reader()
        cutoff = iso(time.time() - older_than_days * 86400)
        try:
            with db.conn:
                ids = "select id from exchanges where created_at < ?"
                db.execute(f"delete from outputs where exchange_id in ({ids})", [cutoff])
                db.execute(f"delete from feedback where exchange_id in ({ids})", [cutoff])
                if "grading_items" in db.table_names():
                    # nothing left to grade; items already graded stay with their grades
                    db.execute(f"""delete from grading_items where exchange_id in ({ids})
                                   and not exists (select 1 from grades g where g.item_id = grading_items.id)""",
                               [cutoff])
                if "grading_leases" in db.table_names():
                    db.execute("delete from grading_leases where item_id not in (select id from grading_items)")
                if "judge_leases" in db.table_names():
                    db.execute("delete from judge_leases where expires_at < ?", [time.time()])
                n = db.execute("delete from exchanges where created_at < ?", [cutoff]).rowcount
        finally:
            if own:
                db.conn.close()
        return n

    def exchange_exists(self, exchange_id: str, *, owner: str | None = None) -> bool:
        """`owner`, when given, must match the stored one: another key's exchange does not exist."""
        db = self._reader()
        try:
            where, params = _owned(exchange_id, owner)
            return db.execute(f"select 1 from exchanges where {where}", params).fetchone() is not None
        finally:
            db.conn.close()

    def get_exchange(self, exchange_id: str, *, owner: str | None = None,
                     ) -> tuple[Exchange, list[Output], list[Feedback]] | None:
        """The exchange with its outputs and feedback; with `owner`, only if that key sent it."""
        db = self._reader()
        try:
            rows = list(db["exchanges"].rows_where(*_owned(exchange_id, owner)))
            if not rows:
                return None
            ex = exchange_from(rows[0])
            outputs = [output_from(r) for r in db["outputs"].rows_where("exchange_id = ?", [exchange_id], order_by="created_at")]
            feedback = [feedback_from(r) for r in db["feedback"].rows_where("exchange_id = ?", [exchange_id], order_by="created_at")]
            return ex, outputs, feedback
        finally:
            db.conn.close()

    def outputs_to_judge(
        self, judge_key: str, *, since: float | None = None, names: tuple[str, ...] = (), limit: int | None = None,
        worker: str | None = None,
    ) -> list[tuple[Exchange, Output, Output | None]]:
        """Answered outputs with no verdict under `judge_key` yet, oldest first, each with its exchange
        and production's output for the same exchange (None when there is none or it is production's)."""
        db = self._reader()
        try:
            where = ["o.status = 'ok'", "not exists (select 1 from verdicts v where v.output_id = o.id and v.judge_key = ?)"]
            params: list[Any] = [judge_key]
            if worker is not None:  # outputs another judge worker is on right now are theirs
                where.append("not exists (select 1 from judge_leases l where l.output_id = o.id and l.judge_key = ? "
                             "and l.worker != ? and l.expires_at > ?)")
                params += [judge_key, worker, time.time()]
            if since is not None:
                where.append("o.created_at >= ?")
                params.append(iso(since))
            if names:
                where.append(f"o.name in ({', '.join('?' * len(names))})")
                params.extend(names)
            sql = (f"select o.* from outputs o where {' and '.join(where)} order by o.created_at, o.rowid"
                   + (f" limit {int(limit)}" if limit else ""))
            outputs = [output_from(r) for r in db.query(sql, params)]
            ex_ids = sorted({o.exchange_id for o in outputs})
            exchanges: dict[str, Exchange] = {}
            productions: dict[str, Output] = {}
            for chunk, marks in in_chunks(ex_ids):
                exchanges.update((r["id"], exchange_from(r)) for r in db["exchanges"].rows_where(f"id in ({marks})", chunk))
                productions.update((r["exchange_id"], output_from(r)) for r in db["outputs"].rows_where(
                    f"exchange_id in ({marks}) and role = 'production'", chunk))
            out: list[tuple[Exchange, Output, Output | None]] = [
                (exchanges[o.exchange_id], o, productions.get(o.exchange_id) if o.role != "production" else None)
                for o in outputs if o.exchange_id in exchanges
            ]
            return out
        finally:
            db.conn.close()

    def verdicts(self, exchange_id: str) -> list[Verdict]:
        db = self._reader()
        try:
            return [verdict_from(r) for r in db["verdicts"].rows_where("exchange_id = ?", [exchange_id], order_by="created_at")]
        finally:
            db.conn.close()

    def judge_spend_since(self, since: float) -> float:
        """What judge verdicts created since `since` cost, in USD (the LLM tier's daily budget)."""
        db = self._reader()
        try:
            row = db.execute("select coalesce(sum(cost_usd), 0) from verdicts where created_at >= ?",
                             [iso(since)]).fetchone()
            return float(row[0])
        finally:
            db.conn.close()

    def verdict_summary(self) -> list[tuple[str, str, int, int, float | None]]:
        """Per judge key and output name: verdicts, errors, mean score."""
        db = self._reader()
        try:
            return [tuple(r) for r in db.execute(
                """select v.judge_key, o.name, count(*), sum(case when v.error is not null then 1 else 0 end),
                          avg(case when v.error is null then v.score end)
                   from verdicts v join outputs o on o.id = v.output_id
                   group by v.judge_key, o.name, o.role order by v.judge_key, o.role != 'production', o.name"""
            ).fetchall()]
        finally:
            db.conn.close()

    def exchange_ids(self, *, limit: int | None = None) -> list[str]:
        db = self._reader()
        try:
            sql = "select id from exchanges order by created_at, rowid" + (f" limit {int(limit)}" if limit else "")
            return [r[0] for r in db.execute(sql).fetchall()]
        finally:
            db.conn.close()

    def spend_since(self, name: str, since: float) -> tuple[int, float]:
        """Requests and estimated USD a candidate used since a time: budgets survive restarts."""
        db = self._reader()
        try:
            row = db.execute(
                "select count(*), coalesce(sum(cost_usd), 0) from outputs where name = ? and created_at >= ?",
                [name, iso(since)],
            ).fetchone()
            return int(row[0]), float(row[1])
        finally:
            db.conn.close()

    def latest_report_run(self) -> ReportRun | None:
        """The alerts of the most recent `shadoweval report` on this store, if any ran."""
        db = self._reader()
        try:
            if "report_runs" not in db.table_names():
                return None
            row = db.execute("select id, created_at, alerts_json from report_runs order by created_at desc limit 1"
                             ).fetchone()
            return None if row is None else ReportRun(row[0], from_iso(row[1]),
                                                      tuple(tuple(a) for a in from_json(row[2]) or []))
        finally:
            db.conn.close()

    def counters(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Counters saved by every run of the proxy on this store, summed: {(name, labels): value}."""
        db = self._reader()
        try:
            if "counters" not in db.table_names():
                return {}
            rows = db.execute("select name, labels_json, sum(value) from counters group by name, labels_json")
            return {(name, tuple(sorted((from_json(labels) or {}).items()))): value for name, labels, value in rows}
        finally:
            db.conn.close()

    def stats(self) -> tuple[int, list[CandidateStats]]:
        """Number of exchanges, and per model: outputs by status, latency, cost."""
        db = self._reader()
        try:
            n = db.execute("select count(*) from exchanges").fetchone()[0]
            rows = db.execute(
                """select name, role, count(*),
                          sum(case when status = 'ok' then 1 else 0 end), sum(case when status = 'error' then 1 else 0 end),
                          sum(case when status = 'timeout' then 1 else 0 end),
                          sum(case when status = 'cancelled' then 1 else 0 end), avg(case when status = 'ok' then latency_ms end),
                          coalesce(sum(cost_usd), 0),
                          sum(case when status = 'partial' then 1 else 0 end)
                   from outputs group by name, role order by role != 'production', name"""
            ).fetchall()
            out = []
            for name, role, total, ok, err, to, canc, mean, cost, partial in rows:
                lat = [r[0] for r in db.execute(
                    "select latency_ms from outputs where name = ? and status = 'ok' and latency_ms is not null order by latency_ms",
                    [name],
                ).fetchall()]
                p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else None
                out.append(CandidateStats(name, role, total, ok or 0, err or 0, to or 0, canc or 0, mean, p95, cost,
                                          partial or 0))
            return n, out
        finally:
            db.conn.close()


def _owned(exchange_id: str, owner: str | None) -> tuple[str, list[str]]:
    """The where clause for one exchange, restricted to `owner` when given (NULL owners never match)."""
    return ("id = ?", [exchange_id]) if owner is None else ("id = ? and owner = ?", [exchange_id, owner])


def _clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes (never mid-character); `text` itself when it fits."""
    if len(text) * 4 <= limit:
        return text
    data = text.encode()
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def _clip_strings(value: Any, limit: int) -> tuple[Any, bool]:
    """A JSON-like value with every string longer than `limit` bytes cut, and whether any was."""
    if isinstance(value, str):
        clipped = _clip(value, limit)
        return clipped, clipped is not value
    if isinstance(value, dict):
        out, cut = {}, False
        for k, v in value.items():
            out[k], c = _clip_strings(v, limit)
            cut = cut or c
        return out, cut
    if isinstance(value, list):
        items = [_clip_strings(v, limit) for v in value]
        return [v for v, _ in items], any(c for _, c in items)
    return value, False


def _strings(value: Any) -> Iterable[str]:
    """Every string value in a JSON-like value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _default_journal(url: str) -> Path:
    import hashlib
    import tempfile

    from .pg import safe_url

    return Path(tempfile.gettempdir()) / f"shadoweval-{hashlib.sha256(safe_url(url).encode()).hexdigest()[:12]}.pg"


def _reason(exc: Exception) -> str:
    if not isinstance(exc, sqlite3.Error):  # PostgreSQL's (psycopg, loaded since the store uses it)
        from .pg import OperationalError

        return "unavailable" if isinstance(exc, OperationalError) else "postgres_error"
    msg = str(exc).lower()
    if "locked" in msg or "busy" in msg:
        return "locked"
    if "readonly" in msg or "read-only" in msg:
        return "readonly"
    if "full" in msg:
        return "disk_full"
    return "sqlite_error"
