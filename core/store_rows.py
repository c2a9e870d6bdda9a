"""Rows to project types and back: the store's column conventions (ISO times, JSON columns, 0/1
booleans) in one place, shared by the store's modules."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from .types import AnswerLabels, Exchange, Feedback, Grade, GradingItem, Output, Usage, Verdict


def iso(ts: float) -> str:
    """Unix seconds -> ISO 8601 UTC with milliseconds, e.g. 2026-11-23T10:41:00.123Z."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def from_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def to_json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def from_json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def in_chunks(ids: list[str], size: int = 500) -> Iterator[tuple[list[str], str]]:
    """`ids` in slices for `in (...)` clauses, each with its placeholders: SQLite caps parameters."""
    for start in range(0, len(ids), size):
        chunk = ids[start:start + size]
        yield chunk, ", ".join("?" * len(chunk))


def exchange_from(row: dict[str, Any]) -> Exchange:
    return Exchange(
        id=row["id"],
        created_at=from_iso(row["created_at"]),
        route=row["route"],
        request=from_json(row["request_json"]),
        tags=from_json(row["tags_json"]) or {},
        stream=bool(row["stream"]),
        status=row["status"],
        http_status=row["http_status"],
        contexts=from_json(row.get("contexts_json")),  # .get: a reader may open a store not yet migrated
        owner=row.get("owner"),
        truncated=bool(row.get("truncated")),
        request_bytes=row.get("request_bytes"),
    )


def output_from(row: dict[str, Any]) -> Output:
    return Output(
        id=row["id"],
        exchange_id=row["exchange_id"],
        role=row["role"],
        name=row["name"],
        model=row["model"],
        status=row["status"],
        started_at=from_iso(row["created_at"]),
        text=row["text"],
        tool_calls=from_json(row["tool_calls_json"]),
        finish_reason=row["finish_reason"],
        usage=Usage(row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]),
        latency_ms=row["latency_ms"],
        ttft_ms=row["ttft_ms"],
        http_status=row["http_status"],
        error=row["error"],
        cost_usd=row["cost_usd"],
        stream=bool(row["stream"]),
        truncated=bool(row.get("truncated")),  # .get: a reader may open a store not yet migrated
        original_bytes=row.get("original_bytes"),
    )


def feedback_from(row: dict[str, Any]) -> Feedback:
    return Feedback(
        id=row["id"],
        exchange_id=row["exchange_id"],
        created_at=from_iso(row["created_at"]),
        rating=row["rating"],
        comment=row["comment"],
        source=row["source"],
    )


def verdict_from(row: dict[str, Any]) -> Verdict:
    return Verdict(
        id=row["id"],
        output_id=row["output_id"],
        exchange_id=row["exchange_id"],
        judge=row["judge"],
        version=row["version"],
        args=from_json(row["args_json"]) or {},
        created_at=from_iso(row["created_at"]),
        score=row["score"],
        label=row["label"],
        explanation=row["explanation"] or "",
        evidence=from_json(row["evidence_json"]),
        cost_usd=row["cost_usd"] or 0.0,
        error=row["error"],
    )


def bool_in(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _bool_out(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def grading_item_from(row: dict[str, Any]) -> GradingItem:
    return GradingItem(
        id=row["id"],
        exchange_id=row["exchange_id"],
        candidate_output_id=row["candidate_output_id"],
        production_output_id=row["production_output_id"],
        left=row["left"],
        policy=row["policy"],
        probability=row["probability"],
        inclusion_probability=row["inclusion_probability"],
        evaluators=row["evaluators"],
        slice=row["slice"],
        created_at=from_iso(row["created_at"]),
        batch=row["batch"],
    )


def grade_from(row: dict[str, Any]) -> Grade:
    return Grade(
        id=row["id"],
        item_id=row["item_id"],
        evaluator=row["evaluator"],
        created_at=from_iso(row["created_at"]),
        preference=row["preference"],
        winner=row["winner"],
        left_labels=AnswerLabels(row["grounded_left"], _bool_out(row["citations_correct_left"]),
                                 _bool_out(row["meets_intent_left"])),
        right_labels=AnswerLabels(row["grounded_right"], _bool_out(row["citations_correct_right"]),
                                  _bool_out(row["meets_intent_right"])),
        note=row["note"] or "",
        keep=bool(row["keep"]),
        corrected_answer=row["corrected_answer"],
        seconds=row["seconds"],
        skipped=bool(row["skipped"]),
    )
