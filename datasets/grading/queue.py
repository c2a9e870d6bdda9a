"""Filling the human grading queue: read the pairs not queued yet, let the sampling policies choose,
store what was chosen with the policy and probabilities that chose it.

The store's unique index on (candidate output, production output) makes queueing idempotent: a
pair is graded from one queue entry, however many times this runs. Which side is shown on the left
and how many evaluators grade a pair are drawn here once and stored, never re-drawn.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from shadoweval.core.store import Store
from shadoweval.core.types import GradingItem, PairToGrade, new_id

from .sampling import Pair, SamplingPlan, inclusion_probabilities, informativeness, select


def slice_of(pair: PairToGrade, keys: Sequence[str]) -> str:
    """The stratum a pair belongs to, e.g. "route=billing" or "route=billing,tenant=acme".

    Keys are read from the exchange's tags; `route` falls back to the API path when the app sent no
    route tag."""
    parts = []
    for key in keys:
        value = pair.tags.get(key)
        if value is None and key == "route":
            value = pair.route
        parts.append(f"{key}={'' if value is None else value}")
    return ",".join(parts) or "all"


def to_sampling_pair(pair: PairToGrade, keys: Sequence[str]) -> Pair:
    return Pair(
        exchange_id=pair.exchange_id,
        candidate_output_id=pair.candidate_output_id,
        production_output_id=pair.production_output_id,
        slice=slice_of(pair, keys),
        signals=informativeness(pair.candidate_verdicts, pair.production_verdicts, pair.feedback),
    )


@dataclass(frozen=True, slots=True)
class QueueResult:
    """What one `build_queue` run did."""

    batch: str
    eligible: int  # pairs not queued before
    items: list[GradingItem]  # queued by this run
    expected: float  # the expected number of pairs queued (the sum of inclusion probabilities)
    slices: dict[str, tuple[int, int]]  # slice -> (eligible pairs, queued)


def build_queue(store: Store, plan: SamplingPlan, *, since: float | None = None, names: tuple[str, ...] = (),
                slice_by: Sequence[str] = ("route",)) -> QueueResult:
    """Choose pairs for human grading and queue them (through the store's writer, then flushed).

    The store must be started."""
    pairs = [to_sampling_pair(p, slice_by) for p in store.pairs_to_grade(since=since, names=names)]
    selections = select(pairs, plan)
    batch = new_id()
    now = time.time()
    items = [GradingItem(
        id=new_id(), exchange_id=s.pair.exchange_id, candidate_output_id=s.pair.candidate_output_id,
        production_output_id=s.pair.production_output_id, left=s.left, policy=s.policy,
        probability=s.probability, inclusion_probability=s.inclusion_probability, evaluators=s.evaluators,
        slice=s.pair.slice, created_at=now, batch=batch,
    ) for s in selections]
    for item in items:
        if not store.submit(item):
            raise RuntimeError("the store's queue is full; nothing more can be queued for grading now")
    if not store.flush():
        raise RuntimeError("the store did not confirm the grading queue was written")
    # what was kept: a record can be lost (store unavailable), or a pair queued meanwhile by another run
    items = store.grading_items(batch=batch)
    slices: dict[str, tuple[int, int]] = {}
    for p in pairs:
        seen, queued = slices.get(p.slice, (0, 0))
        slices[p.slice] = (seen + 1, queued)
    for i in items:
        seen, queued = slices[i.slice]
        slices[i.slice] = (seen, queued + 1)
    expected = sum(inclusion_probabilities(pairs, plan).values()) if pairs else 0.0
    return QueueResult(batch=batch, eligible=len(pairs), items=items, expected=expected,
                       slices=dict(sorted(slices.items())))
