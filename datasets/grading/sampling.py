"""Choosing which production/candidate pairs humans grade, with probabilities a report can undo.

Human grades are scarce, so they go where they teach the most (informative pairs: a judge near its
threshold, a pairwise order flip, judges that disagree, a large production-candidate gap, an
end-user complaint), while a uniform share keeps estimates unbiased and a stratified share makes
sure every slice (route, tag) is seen. Each policy draws by Poisson sampling (an independent coin
per pair), so every pair's chance under every policy is known exactly; a queued pair records the
policy that chose it and its overall inclusion probability, which is what Horvitz-Thompson
reweighting needs to turn a deliberately skewed sample back into population estimates.

Pure logic: no storage, no I/O. The same pairs and seed always give the same selection, whatever
order the pairs come in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Literal

import numpy as np

from shadoweval.core.types import Feedback, Verdict

Policy = Literal["uniform", "stratified", "informative"]
Side = Literal["production", "candidate"]

POLICIES: tuple[Policy, ...] = ("uniform", "stratified", "informative")
SIGNALS = ("near_threshold", "flipped", "disagree", "gap", "complaint")


@dataclass(frozen=True, slots=True)
class Pair:
    """A pair a human could grade; `signals` (each 0..1) say how informative a grade would be."""

    exchange_id: str
    candidate_output_id: str
    production_output_id: str
    slice: str  # e.g. "route=billing"; the stratum the stratified policy covers
    signals: dict[str, float] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.exchange_id, self.candidate_output_id, self.production_output_id)


@dataclass(frozen=True, slots=True)
class SamplingPlan:
    """How many pairs to queue (in expectation) and how the budget is shared between policies."""

    n: int
    _: KW_ONLY
    seed: int
    shares: dict[str, float] = field(
        default_factory=lambda: {"uniform": 0.3, "stratified": 0.3, "informative": 0.4})
    double_rate: float = 0.1  # share of queued pairs graded by several evaluators (inter-rater agreement)
    double_evaluators: int = 2  # how many evaluators those pairs go to
    floor: float = 0.05  # informative weight every pair gets, so none has probability zero

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"n must be >= 0, not {self.n}")
        unknown = set(self.shares) - set(POLICIES)
        if unknown:
            raise ValueError(f"unknown policies {sorted(unknown)}; known: {', '.join(POLICIES)}")
        if any(s < 0 for s in self.shares.values()) or abs(sum(self.shares.values()) - 1) > 1e-9:
            raise ValueError(f"shares must be >= 0 and sum to 1, not {self.shares}")
        if not 0 <= self.double_rate <= 1:
            raise ValueError(f"double_rate must be within 0..1, not {self.double_rate}")
        if self.double_evaluators < 2:
            raise ValueError(f"double_evaluators must be >= 2, not {self.double_evaluators}")
        if self.floor <= 0:
            raise ValueError(f"floor must be > 0, not {self.floor}")


@dataclass(frozen=True, slots=True)
class Selection:
    """A queued pair: who chose it, with what chance, which side is shown left, how many graders."""

    pair: Pair
    policy: Policy  # the first policy that drew it, in the order uniform, stratified, informative
    probability: float  # that policy's inclusion probability for this pair
    inclusion_probability: float  # the chance the pair was queued at all, under any policy
    left: Side
    evaluators: int


# ---- signals ------------------------------------------------------------------------------------

def informativeness(candidate: Iterable[Verdict], production: Iterable[Verdict] = (),
                    feedback: Iterable[Feedback] = (), *, margin: float = 0.1) -> dict[str, float]:
    """The signals (each 0..1) of one pair, read from its verdicts the way judges/cascade.py does.

    near_threshold: 1 - |score - threshold| / margin, clipped, the closest judge on either side;
    flipped: a pairwise verdict whose two orders disagreed; disagree: thresholded judges that pass
    and fail the same output; gap: the largest |candidate - production| score of the same judge;
    complaint: a negative end-user rating or any comment. Verdicts with an error are skipped."""
    cand = [v for v in candidate if v.error is None]
    prod = [v for v in production if v.error is None]
    near = 0.0
    for v in cand + prod:
        t = v.threshold
        if v.score is not None and t is not None:
            near = max(near, 1 - abs(v.score - t) / margin if margin > 0 else float(v.score == t))
    flipped = any(isinstance(v.evidence, dict) and v.evidence.get("flipped") is True for v in cand)
    disagree = False
    for side in (cand, prod):
        outcomes = {v.passes for v in side if v.passes is not None}
        disagree = disagree or len(outcomes) > 1
    theirs = {v.judge: v.score for v in prod if v.score is not None}
    gap = max((abs(v.score - theirs[v.judge]) for v in cand if v.score is not None and v.judge in theirs),
              default=0.0)
    complaint = any(f.is_complaint for f in feedback)
    return {"near_threshold": _clip(near), "flipped": float(flipped), "disagree": float(disagree),
            "gap": _clip(gap), "complaint": float(complaint)}


def _clip(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


# ---- inclusion probabilities --------------------------------------------------------------------

def _uniform(count: int, budget: float) -> np.ndarray:
    return np.full(count, min(1.0, budget / count) if count else 0.0)


def _stratified(slices: Sequence[str], budget: float) -> np.ndarray:
    """Equal budget per slice; a slice too small to use its part takes everything and the rest
    is shared equally by the slices that have more pairs (water-filling)."""
    sizes: dict[str, int] = {}
    for s in slices:
        sizes[s] = sizes.get(s, 0) + 1
    alloc: dict[str, float] = {}
    open_ = dict(sizes)
    left = budget
    while open_:
        each = left / len(open_)
        full = {s: c for s, c in open_.items() if c <= each}
        if not full:
            alloc.update({s: each for s in open_})
            break
        for s, c in full.items():
            alloc[s] = c
            left -= c
            del open_[s]
    return np.array([alloc[s] / sizes[s] for s in slices], dtype=float)


def _proportional(weights: np.ndarray, budget: float) -> np.ndarray:
    """π ∝ weight with Σπ = budget, capping at 1 and handing the excess to the rest."""
    if budget >= len(weights):
        return np.ones(len(weights))
    capped = np.zeros(len(weights), dtype=bool)
    while True:
        rest = budget - capped.sum()
        pi = np.where(capped, 1.0, rest * weights / weights[~capped].sum())
        over = (pi > 1.0) & ~capped
        if not over.any():
            return np.minimum(pi, 1.0)
        capped |= over


def _sorted(pairs: Iterable[Pair]) -> list[Pair]:
    out = sorted(pairs, key=lambda p: p.key)
    for a, b in zip(out, out[1:], strict=False):
        if a.key == b.key:
            raise ValueError(f"pair {a.key} appears twice")
    return out


def policy_probabilities(pairs: Iterable[Pair], plan: SamplingPlan) -> tuple[list[Pair], dict[Policy, np.ndarray]]:
    """The pairs in canonical order and each policy's exact inclusion probability for each.

    A pair two policies could both draw is queued once, so budgets summing to `plan.n` would
    queue fewer than n pairs; the budgets are scaled up together (bisection) until the expected
    number of distinct pairs queued is n, or every pair when there are no more than n."""
    ordered = _sorted(pairs)
    count = len(ordered)
    target = min(plan.n, count)

    def expected(scale: float) -> tuple[float, dict[Policy, np.ndarray]]:
        probs = _policy_probabilities(ordered, plan, plan.n * scale)
        return float((1 - np.prod([1 - pi for pi in probs.values()], axis=0)).sum()), probs

    low, high = 1.0, 1.0
    total, probs = expected(high)
    if total >= target - 1e-9:
        return ordered, probs
    while total < target - 1e-9 and high < 1e6:
        low, high = high, high * 2
        total, probs = expected(high)
    for _ in range(40):
        mid = (low + high) / 2
        total_mid, probs_mid = expected(mid)
        if total_mid < target:
            low = mid
        else:
            high, probs = mid, probs_mid
    return ordered, probs


def _policy_probabilities(ordered: Sequence[Pair], plan: SamplingPlan, n: float) -> dict[Policy, np.ndarray]:
    count = len(ordered)
    out: dict[Policy, np.ndarray] = {}
    for policy in POLICIES:
        budget = n * plan.shares.get(policy, 0.0)
        if policy == "uniform":
            out[policy] = _uniform(count, budget)
        elif policy == "stratified":
            out[policy] = _stratified([p.slice for p in ordered], budget)
        else:
            weights = np.array([sum(_clip(x) for x in p.signals.values()) + plan.floor for p in ordered])
            out[policy] = _proportional(weights, budget)
    return out


def inclusion_probabilities(pairs: Iterable[Pair], plan: SamplingPlan) -> dict[tuple[str, str, str], float]:
    """Each pair's chance of being queued at all, by `Pair.key`."""
    ordered, probs = policy_probabilities(pairs, plan)
    overall = 1 - np.prod([1 - pi for pi in probs.values()], axis=0)
    return {p.key: float(x) for p, x in zip(ordered, overall, strict=True)}


# ---- drawing ------------------------------------------------------------------------------------

def select(pairs: Iterable[Pair], plan: SamplingPlan) -> list[Selection]:
    """Draw each policy independently (Poisson sampling) and queue every pair drawn at least once."""
    ordered, probs = policy_probabilities(pairs, plan)
    count = len(ordered)

    # One stream per purpose, so that changing one share does not reshuffle the others' coins.
    def coins(stream: int) -> np.ndarray:
        return np.random.default_rng([plan.seed, stream]).random(count)

    drawn = {policy: coins(i) < probs[policy] for i, policy in enumerate(POLICIES)}
    left_production = coins(len(POLICIES)) < 0.5
    doubled = coins(len(POLICIES) + 1) < plan.double_rate
    overall = 1 - np.prod([1 - probs[p] for p in POLICIES], axis=0)
    out: list[Selection] = []
    for i, pair in enumerate(ordered):
        chosen = next((p for p in POLICIES if drawn[p][i]), None)
        if chosen is None:
            continue
        out.append(Selection(pair=pair, policy=chosen, probability=float(probs[chosen][i]),
                             inclusion_probability=float(overall[i]),
                             left="production" if left_production[i] else "candidate",
                             evaluators=plan.double_evaluators if doubled[i] else 1))
    return out


def horvitz_thompson_mean(values: Sequence[float], inclusion_probabilities: Sequence[float],
                          population_size: int) -> float:
    """The population mean estimated from a sample: Σ value/π over the sample, divided by N.

    Unbiased for any design where every unit has π > 0; an empty sample estimates 0."""
    if len(values) != len(inclusion_probabilities):
        raise ValueError("values and inclusion_probabilities must have the same length")
    if population_size <= 0:
        raise ValueError(f"population_size must be > 0, not {population_size}")
    pi = np.asarray(inclusion_probabilities, dtype=float)
    if pi.size and (pi.min() <= 0 or pi.max() > 1):
        raise ValueError("inclusion probabilities must be within (0, 1]")
    return float(np.sum(np.asarray(values, dtype=float) / pi) / population_size) if pi.size else 0.0
