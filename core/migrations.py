"""The store's schema, as append-only migrations.

A migration that has shipped is never edited: a change to the schema is a new function at the end
of MIGRATIONS. Each runs once, in order, inside a transaction, and is recorded in `_migrations`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlite_utils


def m001_create_exchanges(db: sqlite_utils.Database) -> None:
    db.table("exchanges").create(
        {
            "id": str,
            "created_at": str,  # ISO 8601 UTC with milliseconds, sorts as text
            "route": str,
            "model": str,  # the model the app asked production for
            "request_json": str,
            "tags_json": str,
            "stream": int,
            "status": str,  # ok | error | cancelled
            "http_status": int,
        },
        pk="id",
    )
    db.table("exchanges").create_index(["created_at"])
    db.table("outputs").create(
        {
            "id": str,
            "exchange_id": str,
            "role": str,  # production | candidate | twin
            "name": str,
            "model": str,
            "status": str,  # ok | error | timeout | cancelled
            "created_at": str,
            "stream": int,
            "text": str,
            "tool_calls_json": str,
            "finish_reason": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "total_tokens": int,
            "latency_ms": float,
            "ttft_ms": float,
            "http_status": int,
            "error": str,
            "cost_usd": float,
        },
        pk="id",
    )
    db.table("outputs").create_index(["exchange_id"])
    db.table("outputs").create_index(["name", "created_at"])
    db.table("feedback").create(
        {
            "id": str,
            "exchange_id": str,
            "created_at": str,
            "rating": float,
            "comment": str,
            "source": str,
        },
        pk="id",
    )
    db.table("feedback").create_index(["exchange_id"])


def m002_create_counters(db: sqlite_utils.Database) -> None:
    # The running proxy's counters (drops, losses, errors), saved by the writer every few seconds,
    # one row per process run, so that `shadoweval stats` can show them after the fact.
    db.table("counters").create(
        {"run_id": str, "name": str, "labels_json": str, "value": float, "updated_at": str},
        pk=("run_id", "name", "labels_json"),
    )


def m003_create_verdicts(db: sqlite_utils.Database) -> None:
    db.table("verdicts").create(
        {
            "id": str,
            "output_id": str,
            "exchange_id": str,
            "judge": str,
            "version": str,
            "args_json": str,
            "judge_key": str,  # name@version{args}: one verdict per output and key
            "created_at": str,
            "score": float,
            "label": str,
            "explanation": str,
            "evidence_json": str,
            "cost_usd": float,
            "error": str,
        },
        pk="id",
    )
    db.table("verdicts").create_index(["output_id", "judge_key"], unique=True)
    db.table("verdicts").create_index(["exchange_id"])


def m004_add_exchange_contexts(db: sqlite_utils.Database) -> None:
    # The retrieved passages found in the request (core/context.py), as a JSON list of
    # {id, title, text, source}; NULL when none were found or for rows stored before this.
    db.table("exchanges").add_column("contexts_json", str)


def m005_create_grading(db: sqlite_utils.Database) -> None:
    # The human grading queue (datasets/grading/queue.py): which pair, which policy chose it and with what
    # chance (for reweighting), which side is shown left, how many graders; then their grades.
    db.table("grading_items").create(
        {
            "id": str,
            "exchange_id": str,
            "candidate_output_id": str,
            "production_output_id": str,
            "left": str,  # production | candidate
            "policy": str,  # uniform | stratified | informative
            "probability": float,
            "inclusion_probability": float,
            "evaluators": int,
            "slice": str,
            "created_at": str,
            "batch": str,
        },
        pk="id",
    )
    # a pair is queued once, whatever the batch
    db.table("grading_items").create_index(["candidate_output_id", "production_output_id"], unique=True)
    db.table("grading_items").create_index(["exchange_id"])
    db.table("grades").create(
        {
            "id": str,
            "item_id": str,
            "evaluator": str,
            "created_at": str,
            "preference": str,  # left | right | tie, as the grader saw the pair
            "winner": str,  # production | candidate | tie, resolved from the item's left side
            "grounded": str,  # yes | partly | no
            "citations_correct": int,
            "meets_intent": int,
            "note": str,
            "keep": int,
            "corrected_answer": str,
            "seconds": float,
            "skipped": int,
        },
        pk="id",
    )
    db.table("grades").create_index(["item_id", "evaluator"])


def m006_grade_labels_per_answer_and_leases(db: sqlite_utils.Database) -> None:
    # Graders label each answer of a pair (grounded, citations, intent), not the pair: one set of
    # columns per side as shown, resolved to outputs through the item's `left`. A person grades an
    # item once (grading again replaces). Leases keep concurrent graders off the same item.
    db.table("grades").transform(
        rename={"grounded": "grounded_left", "citations_correct": "citations_correct_left",
                "meets_intent": "meets_intent_left"},
    )
    db.table("grades").add_column("grounded_right", str)
    db.table("grades").add_column("citations_correct_right", int)
    db.table("grades").add_column("meets_intent_right", int)
    # keep each person's latest grade of an item before the index makes them unique
    db.execute("""delete from grades where rowid not in (
                      select max(rowid) from grades group by item_id, evaluator)""")
    for index in db.table("grades").indexes:
        if index.columns == ["item_id", "evaluator"]:
            db.execute(f"drop index [{index.name}]")
    db.table("grades").create_index(["item_id", "evaluator"], unique=True)
    db.table("grading_leases").create({"item_id": str, "evaluator": str, "expires_at": float},
                                pk=("item_id", "evaluator"))


def m007_create_evalsets(db: sqlite_utils.Database) -> None:
    # Eval sets (datasets/evalsets/build.py): immutable versions, each identified by the hash of its name
    # and content, with a manifest; their items copy what they need, so a version outlives the
    # traffic it came from (retention never touches it).
    db.table("evalsets").create(
        {"id": str, "name": str, "version": int, "created_at": str, "manifest_json": str, "items": int}, pk="id")
    db.table("evalsets").create_index(["name", "version"], unique=True)
    db.table("evalset_items").create(
        {
            "evalset_id": str,
            "position": int,
            "key": str,
            "exchange_id": str,
            "request_json": str,
            "target": str,
            "target_source": str,
            "contexts_json": str,
            "outputs_json": str,
            "labels_json": str,
            "meta_json": str,
        },
        pk=("evalset_id", "position"),
    )
    db.table("evalset_items").create_index(["key"])


def m008_create_report_runs(db: sqlite_utils.Database) -> None:
    # The alerts each `shadoweval report` raised (drift, reward gaming), so the proxy's /metrics can
    # show the latest run's.
    db.table("report_runs").create({"id": str, "created_at": str, "alerts_json": str}, pk="id")
    db.table("report_runs").create_index(["created_at"])


def m009_add_exchange_owner(db: sqlite_utils.Database) -> None:
    # Which proxy key sent the exchange, as a non-reversible key id (types.key_id), so that
    # /shadoweval/exchanges and /shadoweval/feedback answer only that key (and admin keys). NULL
    # without proxy keys and for rows stored before this: with keys configured, admins only.
    db.table("exchanges").add_column("owner", str)


def m010_add_capture_truncation(db: sqlite_utils.Database) -> None:
    # [store] max_capture_bytes: a stored text cut at the limit is flagged, with the full size kept
    db.table("exchanges").add_column("truncated", int)
    db.table("exchanges").add_column("request_bytes", int)
    db.table("outputs").add_column("truncated", int)
    db.table("outputs").add_column("original_bytes", int)


def m011_create_judge_leases(db: sqlite_utils.Database) -> None:
    # Which judge worker holds which output for a judge key, until when (types.JudgeLease): workers
    # of several replicas share the work without judging an output twice.
    db.table("judge_leases").create({"output_id": str, "judge_key": str, "worker": str, "expires_at": float},
                                    pk=("output_id", "judge_key"))


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    m001_create_exchanges,
    m002_create_counters,
    m003_create_verdicts,
    m004_add_exchange_contexts,
    m005_create_grading,
    m006_grade_labels_per_answer_and_leases,
    m007_create_evalsets,
    m008_create_report_runs,
    m009_add_exchange_owner,
    m010_add_capture_truncation,
    m011_create_judge_leases,
]


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply the migrations this database has not seen yet; return their names."""
    if "_migrations" not in db.table_names():
        db.table("_migrations").create({"name": str, "applied_at": str}, pk="name")
    done = {row["name"] for row in db.table("_migrations").rows}
    applied = []
    for fn in MIGRATIONS:
        if fn.__name__ in done:
            continue
        with db.conn:
            fn(db)
            db.table("_migrations").insert(
                {"name": fn.__name__, "applied_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            )
        applied.append(fn.__name__)
    return applied
