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

    def people(self) -> tuple[float, float] | None:
        """People's verdict on this pair: the mean of its grades' outcomes (a pair two graders split on
        is 0.5 or 0.75, not two outcomes) and the mean of their weights; None when nobody graded it.

        The pair, not the grade, is the unit every estimate from grades samples: a pair's grades share
        its answers, so two grades of one pair are not two independent observations."""
        if not self.human:
            return None
        return (sum(o for o, _ in self.human) / len(self.human), sum(w for _, w in self.human) / len(self.human))


def graded(rows: Iterable[Row]) -> tuple[list[float], list[float]]:
    """People's outcome and weight per graded pair (`Row.people`), in order; ungraded rows left out."""
    found = [p for r in rows if (p := r.people()) is not None]
    return [o for o, _ in found], [w for _, w in found]


def paired(sides: Iterable[Mapping[str, tuple[T | None, T | None]]], judge: str) -> list[tuple[T, T]]:
    """(production's, the other's) values of `judge` (a row's `scores` or `passes`), where both have one."""
    return [(p, c) for side in sides for p, c in [side.get(judge, (None, None))] if p is not None and c is not None]
