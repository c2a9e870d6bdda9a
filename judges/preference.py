"""The offline preference: which of two answers the offline judges score higher, with no LLM.

It is what the report's win rate rests on when there is no LLM tier and no grade yet (`offline`):
the candidate wins an exchange when its mean offline score beats production's by more than a
margin, loses when it trails by more, and ties otherwise. `offline_preference` is that rule, the
one definition the report and this judge share; the judge exists so that the rule itself can be
checked against people's preferences, as any judge is: `shadoweval calibrate --judge
offline-preference --label preference` on a file of human-labeled pairs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from shadoweval.core.types import Verdict, new_id

from .base import EMBEDDING_JUDGES, Judge, Subject, create, production_to_compare, register, verdict

DEFAULT_MARGIN = 0.05  # `[report] preference_margin`'s default
_SCORE = {"candidate": 1.0, "production": 0.0, "tie": 0.5}
_LABELS = {score: label for label, score in _SCORE.items()}


def offline_preference(scores: Iterable[tuple[float | None, float | None]], margin: float) -> float | None:
    """1.0 when the candidate wins, 0.0 when production does, 0.5 for a tie, None with nothing to compare:
    the mean of (candidate - production) over the judges that scored both, against `margin`.
    `scores` holds one (production's, the candidate's) score per judge."""
    gaps = [c - p for p, c in scores if p is not None and c is not None]
    if not gaps:
        return None
    gap = float(np.mean(gaps))
    return 1.0 if gap > margin else 0.0 if gap < -margin else 0.5


def derived_verdicts(pairs: Iterable[tuple[str, str, str]], verdicts: Mapping[str, Sequence[Verdict]], *,
                     judges: Sequence[str], margin: float = DEFAULT_MARGIN) -> dict[str, Verdict]:
    """The offline preference on each (exchange id, production's output id, the candidate's output id),
    read from the verdicts stored on both outputs (`verdicts`: output id -> verdicts; per judge the
    latest without an error, as the report reads them): the outcome the report's offline win rate
    counts, as an `offline-preference` verdict on the candidate's output, keyed by that output's id,
    so that people's winners can check it as they check the pairwise judge. Pairs with no judge
    scored on both sides get none."""
    out = {}
    now = time.time()
    for exchange_id, production_id, candidate_id in pairs:
        theirs, mine = _latest(verdicts.get(production_id, ())), _latest(verdicts.get(candidate_id, ()))
        outcome = offline_preference(((_score(theirs.get(j)), _score(mine.get(j))) for j in judges), margin)
        if outcome is None:
            continue
        label = _LABELS[outcome]
        out[candidate_id] = Verdict(id=new_id(), output_id=candidate_id, exchange_id=exchange_id,
                                    judge=OfflinePreference.name, version=OfflinePreference.version,
                                    args={"judges": list(judges), "margin": margin, "from": "stored verdicts"},
                                    created_at=now, score=_SCORE[label], label=label)
    return out


def _latest(vs: Sequence[Verdict]) -> dict[str, Verdict]:
    return {v.judge: v for v in sorted(vs, key=lambda v: v.created_at) if v.error is None}


def _score(v: Verdict | None) -> float | None:
    return None if v is None else v.score


@register("offline-preference")
class OfflinePreference:
    """Production's answer against a candidate's by the offline judges' scores (the report's `offline` source)."""

    name = "offline-preference"
    version = "1"
    needs_production = True

    def __init__(self, *, judges: Sequence[str] | str = ("grounded", "citations"), margin: float = DEFAULT_MARGIN,
                 embedder: str = "minilm", model: str | None = None) -> None:
        names = [n.strip() for n in judges.split(",")] if isinstance(judges, str) else list(judges)
        if not names or not all(names):
            raise ValueError("judges must name at least one offline judge")
        if not 0 <= margin < 1:
            raise ValueError(f"margin must be in [0, 1), not {margin}")
        if "offline-preference" in names:
            raise ValueError("offline-preference cannot read itself")
        self.margin = float(margin)
        # the support model's path (`model`, for maintainers) and the embedder go to the judges that read them
        extra = {"embedder": embedder, **({"model": model} if model else {})}
        self.judges: list[Judge] = [create(n, **(extra if n in EMBEDDING_JUDGES else {})) for n in names]
        self.args: dict[str, Any] = {"judges": names, "margin": self.margin, **extra}

    async def judge(self, s: Subject) -> Verdict:
        prod = production_to_compare(s)
        if isinstance(prod, str):
            return verdict(self, s, error=prod)
        per_judge: dict[str, dict[str, Any]] = {}
        pairs = []
        for j in self.judges:
            mine = await j.judge(Subject(s.exchange, s.output, prod))
            theirs = await j.judge(Subject(s.exchange, prod))
            pairs.append((theirs.score, mine.score))
            # a side without a score says why (citations: "the answer cites no source")
            per_judge[j.name] = {side: v.score if v.score is not None else f"not scored: {v.error or v.explanation}"
                                 for side, v in (("production", theirs), ("candidate", mine))}
        outcome = offline_preference(pairs, self.margin)
        evidence = {"scores": per_judge, "margin": self.margin}
        if outcome is None:
            return verdict(self, s, error="no offline judge scored both answers", evidence=evidence)
        label = _LABELS[outcome]
        gaps = [c - p for p, c in pairs if p is not None and c is not None]
        gap = float(np.mean(gaps))
        explanation = (f"mean offline score {gap:+.3f} against production over {len(gaps)} judge"
                       f"{'s' if len(gaps) > 1 else ''}: "
                       + (f"{label} preferred (beyond the margin {self.margin:g})" if label != "tie"
                          else f"tie (within the margin {self.margin:g})"))
        return verdict(self, s, score=_SCORE[label], label=label, explanation=explanation,
                       evidence={**evidence, "gap": round(gap, 4)})
