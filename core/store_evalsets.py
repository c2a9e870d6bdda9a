"""The store's reads for eval sets: the traffic they are built from (exchange bundles) and the
versions already built.

Part of the store (the store's modules are the only ones with SQL); `Store` inherits these methods.
An eval set is written by the store's writer thread like every other record, which also numbers its
version, so two builds of one name at once cannot both take the same number.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from .store_rows import (
    exchange_from,
    feedback_from,
    from_iso,
    from_json,
    grade_from,
    grading_item_from,
    in_chunks,
    iso,
    output_from,
    to_json,
    verdict_from,
)
from .types import EvalItem, EvalSet, ExchangeBundle

if TYPE_CHECKING:
    import sqlite_utils

_REF = re.compile(r"^(?P<name>.+?)(?:@(?P<version>\d+))?$")


class EvalSetReads:
    """Mixed into `Store`, which provides these:"""

    _reader: Callable[[], sqlite_utils.Database]

    def exchange_bundles(self, *, since: float | None = None, until: float | None = None,
                         chunk: int = 500) -> Iterator[ExchangeBundle]:
        """Stored exchanges oldest first, each with its outputs, verdicts, feedback and grades,
        read `chunk` exchanges at a time so that large stores stream."""
        where, params = ["1 = 1"], []
        if since is not None:
            where.append("created_at >= ?")
            params.append(iso(since))
        if until is not None:
            where.append("created_at < ?")
            params.append(iso(until))
        db = self._reader()
        try:
            ids = [r[0] for r in db.execute(
                f"select id from exchanges where {' and '.join(where)} order by created_at, rowid", params)]
        finally:
            db.conn.close()
        for start in range(0, len(ids), chunk):
            yield from self._bundles(ids[start:start + chunk])

    def _bundles(self, ids: list[str]) -> list[ExchangeBundle]:
        db = self._reader()
        try:
            marks = ", ".join("?" * len(ids))
            exchanges = [exchange_from(r) for r in db["exchanges"].rows_where(
                f"id in ({marks})", ids, order_by="created_at, rowid")]
            per: dict[str, dict[str, list[Any]]] = {i: {"o": [], "v": [], "f": [], "g": []} for i in ids}
            for r in db["outputs"].rows_where(f"exchange_id in ({marks})", ids, order_by="created_at, rowid"):
                per[r["exchange_id"]]["o"].append(output_from(r))
            for r in db["verdicts"].rows_where(f"exchange_id in ({marks})", ids, order_by="created_at"):
                per[r["exchange_id"]]["v"].append(verdict_from(r))
            for r in db["feedback"].rows_where(f"exchange_id in ({marks})", ids, order_by="created_at"):
                per[r["exchange_id"]]["f"].append(feedback_from(r))
            items = {r["id"]: grading_item_from(r) for r in db["grading_items"].rows_where(
                f"exchange_id in ({marks})", ids)}
            for chunk, item_marks in in_chunks(sorted(items)):
                for r in db["grades"].rows_where(f"item_id in ({item_marks}) and skipped = 0", chunk,
                                                 order_by="created_at"):
                    item = items[r["item_id"]]
                    per[item.exchange_id]["g"].append((item, grade_from(r)))
            return [ExchangeBundle(e, tuple(per[e.id]["o"]), tuple(per[e.id]["v"]), tuple(per[e.id]["f"]),
                                   tuple(per[e.id]["g"])) for e in exchanges]
        finally:
            db.conn.close()

    def answered_by(self, name: str, exchange_ids: list[str]) -> set[str]:
        """The exchanges among these that model `name` has answered (status ok): a replay skips them."""
        db = self._reader()
        try:
            found: set[str] = set()
            for chunk, marks in in_chunks(sorted(set(exchange_ids))):
                found.update(r[0] for r in db.execute(
                    f"select exchange_id from outputs where name = ? and status = 'ok' and exchange_id in ({marks})",
                    [name, *chunk]))
            return found
        finally:
            db.conn.close()

    def evalsets(self, name: str | None = None) -> list[EvalSet]:
        """Every version built (without items), by name then version."""
        db = self._reader()
        try:
            where, params = ("name = ?", [name]) if name else (None, [])
            return [_evalset_from(r) for r in db["evalsets"].rows_where(where, params, order_by="name, version")]
        finally:
            db.conn.close()

    def evalset(self, ref: str) -> EvalSet | None:
        """One version with its items: `NAME` (the latest), `NAME@VERSION` or its id."""
        db = self._reader()
        try:
            rows = list(db["evalsets"].rows_where("id = ?", [ref]))
            if not rows:
                m = _REF.match(ref)
                if m is None:
                    return None
                if m["version"]:
                    rows = list(db["evalsets"].rows_where("name = ? and version = ?", [m["name"], int(m["version"])]))
                else:
                    rows = list(db["evalsets"].rows_where("name = ?", [m["name"]], order_by="version desc", limit=1))
            if not rows:
                return None
            items = tuple(_evalitem_from(r) for r in db["evalset_items"].rows_where(
                "evalset_id = ?", [rows[0]["id"]], order_by="position"))
            return _evalset_from(rows[0], items)
        finally:
            db.conn.close()


def evalset_rows(es: EvalSet) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The rows that store a version (its number is given by the writer, from what is stored)."""
    head = {"id": es.id, "name": es.name, "version": es.version, "created_at": iso(es.created_at),
            "manifest_json": to_json(es.manifest), "items": len(es.items)}
    items = [{"evalset_id": es.id, "position": i, "key": it.key, "exchange_id": it.exchange_id,
              "request_json": to_json(it.request), "target": it.target, "target_source": it.target_source,
              "contexts_json": to_json(it.contexts), "outputs_json": to_json(it.outputs),
              "labels_json": to_json(it.labels), "meta_json": to_json(it.meta)} for i, it in enumerate(es.items)]
    return head, items


def _evalset_from(row: dict[str, Any], items: tuple[EvalItem, ...] = ()) -> EvalSet:
    return EvalSet(id=row["id"], name=row["name"], version=row["version"], created_at=from_iso(row["created_at"]),
                   manifest=from_json(row["manifest_json"]) or {}, items=items)


def _evalitem_from(row: dict[str, Any]) -> EvalItem:
    return EvalItem(key=row["key"], request=from_json(row["request_json"]) or {}, target=row["target"],
                    target_source=row["target_source"], contexts=from_json(row["contexts_json"]),
                    outputs=from_json(row["outputs_json"]) or {}, labels=from_json(row["labels_json"]) or {},
                    meta=from_json(row["meta_json"]) or {}, exchange_id=row["exchange_id"])
