"""The report's unit of comparison, `Row`, on its own so that report.py and trends.py can both import
it without importing each other."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from shadoweval.core.types import Output

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Row:
    """One exchange answered by production and one other model (a candidate or the twin)."""

    exchange_id: str
    created_at: float
    question: str  # the last user turn: what failure clusters group by
    slices: dict[str, str]
    production: Output
    other: Output
    scores: dict[str, tuple[float | None, float | None]]  # judge -> (production's, the other's)
    pairwise: float | None  # the pairwise judge's outcome for the other model
    offline: float | None  # the offline preference's outcome
    human: tuple[tuple[float, float], ...]  # (outcome, weight = 1 / inclusion probability) per grade
    # judge -> (production's, the other's) decision (`Verdict.passes`: the score against the threshold, a failing label fails)
    passes: dict[str, tuple[bool | None, bool | None]] = field(default_factory=dict)


def paired(sides: Iterable[Mapping[str, tuple[T | None, T | None]]], judge: str) -> list[tuple[T, T]]:
    """(production's, the other's) values of `judge` (a row's `scores` or `passes`), where both have one."""
    return [(p, c) for side in sides for p, c in [side.get(judge, (None, None))] if p is not None and c is not None]
