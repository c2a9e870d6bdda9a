"""The store's reads for human grading: pairs to queue, the queue, leases, grades, progress.

Part of the store (the store's modules are the only ones with SQL); `Store` inherits these methods.
Writes still go through the store's single writer thread: a lease is a record it grants or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .errors import ShadowevalError
from .store_rows import feedback_from, from_json, grade_from, grading_item_from, in_chunks, iso, verdict_from
from .types import Feedback, Grade, GradingItem, GradingProgress, Lease, PairToGrade, Verdict

if TYPE_CHECKING:
    import sqlite_utils


class StoreUnavailable(ShadowevalError, RuntimeError):
    """The store could not do what was asked right now (its writer is down or overloaded)."""


class GradingReads:
    """Mixed into `Store`, which provides these:"""

    _reader: Callable[[], sqlite_utils.Database]
    submit: Callable[[Any], bool]
    flush: Callable[..., bool]


    def pairs_to_grade(self, *, since: float | None = None, names: tuple[str, ...] = ()) -> list[PairToGrade]:
        """Answered candidate (or twin) outputs paired with production's answer to the same exchange
        that are not queued for grading yet, oldest first, with what the sampling policies read."""
        db = self._reader()
        try:
            where = ["c.status = 'ok'", "c.role in ('candidate', 'twin')", "p.role = 'production'",
                     "p.status = 'ok'", "not exists (select 1 from grading_items g where "
                     "g.candidate_output_id = c.id and g.production_output_id = p.id)"]
            params: list[Any] = []
            if since is not None:
                where.append("c.created_at >= ?")
                params.append(iso(since))
            if names:
                where.append(f"c.name in ({', '.join('?' * len(names))})")
                params.extend(names)
            rows = db.execute(
                f"""select c.exchange_id, c.id, c.name, p.id from outputs c
                    join outputs p on p.exchange_id = c.exchange_id
                    where {' and '.join(where)} order by c.created_at, c.rowid, p.rowid""", params).fetchall()
            ex_ids = sorted({r[0] for r in rows})
            out_ids = sorted({r[1] for r in rows} | {r[3] for r in rows})
            exchanges: dict[str, tuple[str, dict[str, str]]] = {}
            feedback: dict[str, list[Feedback]] = {}
            for chunk, marks in in_chunks(ex_ids):
                for ex_id, route, tags in db.execute(
                        f"select id, route, tags_json from exchanges where id in ({marks})", chunk):
                    exchanges[ex_id] = (route, from_json(tags) or {})
                for r in db["feedback"].rows_where(f"exchange_id in ({marks})", chunk, order_by="created_at"):
                    feedback.setdefault(r["exchange_id"], []).append(feedback_from(r))
            verdicts = self.verdicts_on(out_ids)
            return [PairToGrade(
                exchange_id=ex_id, candidate_output_id=cand, candidate_name=name, production_output_id=prod,
                route=exchanges[ex_id][0], tags=exchanges[ex_id][1],
                candidate_verdicts=tuple(verdicts.get(cand, ())), production_verdicts=tuple(verdicts.get(prod, ())),
                feedback=tuple(feedback.get(ex_id, ())),
            ) for ex_id, cand, name, prod in rows if ex_id in exchanges]
        finally:
            db.conn.close()

    def grading_items(self, *, batch: str | None = None) -> list[GradingItem]:
        db = self._reader()
        try:
            where, params = ("batch = ?", [batch]) if batch is not None else (None, [])
            return [grading_item_from(r) for r in db["grading_items"].rows_where(where, params, order_by="rowid")]
        finally:
            db.conn.close()

    def next_item(self, evaluator: str, *, lease_s: float = 600.0, exclude: tuple[str, ...] = ()) -> GradingItem | None:
        """Hold and return the item `evaluator` should grade next, or None when nothing is left.

        The item they already hold comes first (a reloaded page shows the same pair); otherwise the
        oldest item that still needs a grade, that they have neither graded nor skipped, and that
        other graders' live leases do not fill. The lease goes through the writer, which grants it
        only while the item has room, so two graders never take the last place on an item.
        `exclude` leaves out items (e.g. the one just shown)."""
        for _ in range(5):  # a few tries: another grader may take a candidate item first
            candidates = self._free_items(evaluator, exclude)
            if not candidates:
                return None
            for item in candidates:
                if not self.submit(Lease(item.id, evaluator, time.time() + lease_s)) or not self.flush(5.0):
                    raise StoreUnavailable("the store did not confirm the lease")
                if self._holds(item.id, evaluator):
                    return item
        return None

    def release(self, item_id: str, evaluator: str) -> None:
        """Give an item back before the lease ends (an expired lease is never granted)."""
        self.submit(Lease(item_id, evaluator, 0.0))

    def _free_items(self, evaluator: str, exclude: tuple[str, ...]) -> list[GradingItem]:
        db = self._reader()
        try:
            now = time.time()
            rows = list(db.query(
                f"""select i.*, exists (select 1 from grading_leases l where l.item_id = i.id and l.evaluator = ?1
                                        and l.expires_at > ?2) as held
                   from grading_items i
                   where (select count(*) from grades g where g.item_id = i.id and g.skipped = 0)
                       + (select count(*) from grading_leases l where l.item_id = i.id and l.evaluator != ?1
                                                                 and l.expires_at > ?2) < i.evaluators
                     and not exists (select 1 from grades g where g.item_id = i.id and g.evaluator = ?1)
                     {f"and i.id not in ({', '.join('?' * len(exclude))})" if exclude else ""}
                   order by held desc, i.created_at, i.rowid limit 3""", [evaluator, now, *exclude]))
            return [grading_item_from({k: v for k, v in r.items() if k != "held"}) for r in rows]
        finally:
            db.conn.close()

    def _holds(self, item_id: str, evaluator: str) -> bool:
        db = self._reader()
        try:
            return db.execute("select 1 from grading_leases where item_id = ? and evaluator = ? and expires_at > ?",
                              [item_id, evaluator, time.time()]).fetchone() is not None
        finally:
            db.conn.close()

    def grading_item(self, item_id: str) -> GradingItem | None:
        db = self._reader()
        try:
            rows = list(db["grading_items"].rows_where("id = ?", [item_id]))
            return grading_item_from(rows[0]) if rows else None
        finally:
            db.conn.close()

    def grades(self, item_id: str | None = None) -> list[Grade]:
        db = self._reader()
        try:
            where, params = ("item_id = ?", [item_id]) if item_id is not None else (None, [])
            return [grade_from(r) for r in db["grades"].rows_where(where, params, order_by="created_at, rowid")]
        finally:
            db.conn.close()

    def verdicts_on(self, output_ids: Iterable[str]) -> dict[str, list[Verdict]]:
        """Every verdict on these outputs, by output id, oldest first (the agreement report's input)."""
        db = self._reader()
        try:
            found: dict[str, list[Verdict]] = {}
            for chunk, marks in in_chunks(sorted(set(output_ids))):
                for r in db["verdicts"].rows_where(f"output_id in ({marks})", chunk, order_by="created_at"):
                    found.setdefault(r["output_id"], []).append(verdict_from(r))
            return found
        finally:
            db.conn.close()

    def tag_values(self, key: str) -> set[str]:
        """Every value the tag `key` has on stored exchanges (e.g. which imported records are in)."""
        db = self._reader()
        try:
            return {r[0] for r in db.execute(
                "select distinct json_extract(tags_json, '$.' || json_quote(?)) from exchanges "
                "where json_extract(tags_json, '$.' || json_quote(?)) is not null", [key, key])}
        finally:
            db.conn.close()

    def grading_progress(self) -> GradingProgress:
        db = self._reader()
        try:
            queued, done = db.execute(
                """select count(*), coalesce(sum(case when (select count(*) from grades g
                                                  where g.item_id = i.id and g.skipped = 0) >= i.evaluators then 1 else 0 end), 0)
                   from grading_items i""").fetchone()
            given: dict[str, int] = {}
            skipped: dict[str, int] = {}
            for evaluator, skip, n in db.execute(
                    "select evaluator, skipped, count(*) from grades group by evaluator, skipped order by evaluator"):
                (skipped if skip else given)[evaluator] = n
            return GradingProgress(queued=queued, fully_graded=done, grades_by_evaluator=given,
                                   skipped_by_evaluator=skipped)
        finally:
            db.conn.close()
