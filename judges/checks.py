"""Deterministic checks: the failures that need no model to see.

Empty answers and refusals, invalid JSON when JSON was asked for, tool calls that differ from
production's, and the length, latency and cost of an answer relative to production's. Cheap and
exact, so they run on every output; their measurements are kept as evidence for reports.
"""

from __future__ import annotations

import json
import re
from typing import Any

from shadoweval.core.types import Output, Verdict

from .base import Subject, register, verdict

_REFUSAL = re.compile(
    r"^\s*(?:i'?m sorry,? but |sorry,? but |unfortunately,? )?(?:i|we) (?:can(?:no|')t|cannot|am unable to|'m unable to|"
    r"won'?t be able to|am not able to) (?:help|assist|provide|answer|comply|do that|share)|"
    r"^\s*as an ai(?: language model)?,? i (?:can(?:no|')t|cannot|don'?t)",
    re.IGNORECASE,
)


def wants_json(request: dict[str, Any] | None) -> bool:
    fmt = (request or {}).get("response_format") or (((request or {}).get("text") or {}).get("format"))
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


def _tool_signature(o: Output | None) -> list[tuple[str | None, Any]]:
    sig: list[tuple[str | None, Any]] = []
    for call in (o.tool_calls if o else None) or []:
        fn = call.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "null")
        except (TypeError, ValueError):
            args = fn.get("arguments")
        sig.append((fn.get("name"), args))
    return sig


@register("checks")
class DeterministicChecks:
    """Score 1 when no check fails, 0 otherwise; label = the first failing check or `ok`."""

    name = "checks"
    version = "1"

    def __init__(self, *, max_length_ratio: float = 3.0) -> None:
        self.args: dict[str, Any] = {"max_length_ratio": max_length_ratio}
        self.max_length_ratio = max_length_ratio

    async def judge(self, s: Subject) -> Verdict:
        o, p = s.output, s.production
        text = o.text or ""
        problems: list[str] = []
        evidence: dict[str, Any] = {"chars": len(text)}
        if not text.strip() and not o.tool_calls:
            problems.append("empty")
        if text and _REFUSAL.search(text[:300]):
            problems.append("refusal")
        if wants_json(s.exchange.request) and not o.tool_calls:
            try:
                json.loads(text)
                evidence["json_valid"] = True
            except ValueError:
                evidence["json_valid"] = False
                problems.append("invalid_json")
        if p is not None:
            mine, theirs = _tool_signature(o), _tool_signature(p)
            evidence["tool_calls_match"] = mine == theirs
            if mine != theirs:
                problems.append("tool_calls_differ")
                evidence["tool_calls"] = {"candidate": mine, "production": theirs}
            ref = len(p.text or "")
            if ref:
                ratio = len(text) / ref
                evidence["length_ratio"] = round(ratio, 3)
                if ratio > self.max_length_ratio or (ratio and ratio < 1 / self.max_length_ratio):
                    problems.append("length")
            if o.latency_ms is not None and p.latency_ms is not None:
                evidence["latency_delta_ms"] = round(o.latency_ms - p.latency_ms, 1)
            if o.cost_usd is not None and p.cost_usd is not None:
                evidence["cost_delta_usd"] = o.cost_usd - p.cost_usd
        evidence["failed"] = problems
        return verdict(
            self, s, score=0.0 if problems else 1.0, label=problems[0] if problems else "ok",
            explanation="; ".join(problems) or "no deterministic check failed", evidence=evidence,
        )
