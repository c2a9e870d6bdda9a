"""Estimates with intervals, so a comparison report never calls a win that is within noise.

A report compares a candidate with production on real traffic. Every figure it prints carries an
interval and the count behind it, and a difference only counts when its interval clears the null
widened by the noise floor: how much production disagrees with a second call of itself. Pure
functions over plain Python or numpy inputs; everything random takes a seed, so the same inputs
always give the same figures.

Decisions, made once here so every caller gets the same figures:
- Outcomes are the candidate's: 1 win, 0.5 tie, 0 loss. A tie is half a win everywhere.
- Weights are inverse inclusion probabilities, as `sampling` records them. Point estimates are then
  Hajek (ratio) means, sum(w*y) / sum(w), which undo a deliberately skewed sample; the bootstrap
  resamples units and each unit carries its weight with it.
- Bootstrap intervals are percentile intervals with Efron's order-statistic definition (numpy's
  "inverted_cdf": the ceil(B*alpha)-th replicate), which stays defined when replicates are infinite.
  `ppi_mean` and `noise_floor` use the normal approximation instead: their variance has a closed form.
- No data gives an Estimate whose value and bounds are None, never 0 and never an exception.

`stats` builds the model fits (Bradley-Terry, length control) on this module and re-exports it, so
a report imports everything from `shadoweval.datasets.report.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

Numbers = Sequence[float] | np.ndarray
Verdict = Literal["better", "worse", "within noise"]

OUTCOMES = (0.0, 0.5, 1.0)
_NORMAL = NormalDist()
_CELLS = 2_000_000  # resample indices drawn per batch: bounds memory (~16 MB) whatever the sample size


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate, its interval at `level`, and the count behind it (bounds None when n == 0)."""

    value: float | None
    low: float | None
    high: float | None
    n: int
    level: float = 0.95

    def excludes(self, x: float) -> bool:
        """True when the interval lies entirely above x or entirely below it; touching x is not enough."""
        if self.low is None or self.high is None:
            return False
        return self.low > x or self.high < x

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def z_for(p: float) -> float:
    """The standard normal quantile at probability p: z_for(0.975) == 1.95996...

    A two-sided interval at `level` uses z_for(0.5 + level / 2)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be strictly between 0 and 1, not {p}")
    return _NORMAL.inv_cdf(p)


# ---- validation and the bootstrap ----------------------------------------------------------------

def vector(values: Numbers, name: str) -> np.ndarray:
    y = np.asarray(values, dtype=float)
    if y.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, not of shape {y.shape}")
    if not np.isfinite(y).all():
        raise ValueError(f"{name} must be finite; drop what could not be scored before passing it")
    return y


def outcome_vector(outcomes: Numbers) -> np.ndarray:
    y = vector(outcomes, "outcomes")
    if not np.isin(y, OUTCOMES).all():
        raise ValueError("outcomes must be 1 (candidate wins), 0.5 (tie) or 0 (candidate loses)")
    return y


def weight_vector(weights: Numbers | None, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = vector(weights, "weights")
    if len(w) != n:
        raise ValueError(f"weights has {len(w)} entries for {n} values")
    if (w <= 0).any():
        raise ValueError("weights are inverse inclusion probabilities and must be > 0")
    return w


def check_level(level: float, n_boot: int | None = None) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be strictly between 0 and 1, not {level}")
    if n_boot is not None and n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, not {n_boot}")


def bootstrap(stat: Callable[[np.ndarray], np.ndarray], n: int, n_boot: int, seed: int) -> np.ndarray:
    """n_boot replicates of `stat`, which maps a (B, n) array of resampled unit indices to B values.

    Batched so one numpy call does many replicates without the index array outgrowing memory."""
    rng = np.random.default_rng(seed)
    per = max(1, _CELLS // max(n, 1))
    out = []
    for start in range(0, n_boot, per):
        out.append(stat(rng.integers(0, n, size=(min(per, n_boot - start), n))))
    return np.concatenate(out)


def percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    alpha = 1 - level
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2], method="inverted_cdf")
    return float(low), float(high)


# ---- means and win rates -------------------------------------------------------------------------

def mean_ci(values: Numbers, weights: Numbers | None = None, *, level: float = 0.95, n_boot: int = 2000,
            seed: int = 0) -> Estimate:
    """The (Hajek-weighted, when weights are given) mean of any score, with a bootstrap interval."""
    y = vector(values, "values")
    w = weight_vector(weights, len(y))
    check_level(level, n_boot)
    if len(y) == 0:
        return Estimate(None, None, None, 0, level)
    value = float(np.dot(w, y) / w.sum())
    replicates = bootstrap(lambda idx: (w[idx] * y[idx]).sum(1) / w[idx].sum(1), len(y), n_boot, seed)
    return Estimate(value, *percentile_interval(replicates, level), len(y), level)


def win_rate(outcomes: Numbers, weights: Numbers | None = None, *, level: float = 0.95, n_boot: int = 2000,
             seed: int = 0) -> Estimate:
    """The candidate's win rate against production, ties as half a win, with a bootstrap interval."""
    return mean_ci(outcome_vector(outcomes), weights, level=level, n_boot=n_boot, seed=seed)


def win_tie_loss(outcomes: Numbers) -> dict[str, int | float | None]:
    """Counts of the candidate's wins, ties and losses, and their shares (None when there are none)."""
    y = outcome_vector(outcomes)
    n = len(y)
    counts = {"wins": int((y == 1).sum()), "ties": int((y == 0.5).sum()), "losses": int((y == 0).sum())}
    shares = {"win_share": counts["wins"], "tie_share": counts["ties"], "loss_share": counts["losses"]}
    return {"n": n, **counts, **{k: (v / n if n else None) for k, v in shares.items()}}


def paired_difference(a: Numbers, b: Numbers, weights: Numbers | None = None, *, level: float = 0.95,
                      n_boot: int = 2000, seed: int = 0) -> Estimate:
    """The mean of a_i - b_i (candidate minus production, paired per exchange), bootstrapped by exchange.

    Pairing matters: both answers share the exchange's difficulty, which cancels in the difference, so
    this interval is much narrower than comparing two independent means."""
    x, y = vector(a, "a"), vector(b, "b")
    if len(x) != len(y):
        raise ValueError(f"a and b must be paired per exchange, but have {len(x)} and {len(y)} entries")
    return mean_ci(x - y, weights, level=level, n_boot=n_boot, seed=seed)


# ---- prediction-powered inference ----------------------------------------------------------------

def ppi_mean(y_labeled: Numbers, f_labeled: Numbers, f_unlabeled: Numbers, weights: Numbers | None = None,
             *, level: float = 0.95, power: float | None = None) -> Estimate:
    """The mean of a human label over all traffic, from a few human grades and many judge scores.

    Prediction-powered inference (Angelopoulos et al. 2023, Science 382:669), power-tuned (PPI++,
    Angelopoulos, Duchi and Zrnic 2023): the judge's mean over the N judged exchanges, weighted by
    lambda, corrected by the mean of (label - lambda * judge) on the n labeled ones,

        theta = lambda * mean(f_unlabeled) + mean(y_labeled - lambda * f_labeled)
        var   = lambda^2 var(f) / N + var(r) / n + 2 lambda cov(f, r) / N,   r = y - lambda f

    with a normal interval theta +- z * sqrt(var). `f_unlabeled` is every judged exchange, the
    labeled ones included (as the report passes them): the last term is the covariance that overlap
    gives the two means (without it the interval is too wide at lambda 1 and too narrow below it).
    Any lambda leaves the estimate unbiased (a biased judge shifts both terms equally); `power` fixes
    it, and by default it is `ppi_power`'s, the one with the least variance: near 1 for a judge that
    tracks the labels, near 0 for one that does not, so a poor judge can no longer make the interval
    wider than the labels alone would. Weights (inverse inclusion probabilities of the labeled
    exchanges) make the correction a Hajek mean, with its linearised variance n/(n-1) * sum(w^2 (r -
    r_bar)^2) / sum(w)^2, which equals var(r)/n when the weights are equal. `n` in the result is the
    number of labels; fewer than two labels or judge scores give a value without bounds (lambda 1:
    nothing to tune it on), none of either gives None. scripts/check_ppi_coverage.py measures the
    coverage."""
    y, f, fu = vector(y_labeled, "y_labeled"), vector(f_labeled, "f_labeled"), vector(f_unlabeled, "f_unlabeled")
    if len(y) != len(f):
        raise ValueError(f"y_labeled and f_labeled must be paired, but have {len(y)} and {len(f)} entries")
    w = weight_vector(weights, len(y))
    check_level(level)
    n, big_n = len(y), len(fu)
    if n == 0 or big_n == 0:
        return Estimate(None, None, None, n, level)
    lam = ppi_power(y, f, fu, w) if power is None else float(power)
    r = y - lam * f
    rectifier = float(np.dot(w, r) / w.sum())
    value = lam * float(fu.mean()) + rectifier
    if n < 2 or big_n < 2:
        return Estimate(value, None, None, n, level)
    var_r = n / (n - 1) * float(np.sum(w**2 * (r - rectifier) ** 2)) / float(w.sum()) ** 2
    # the graded pairs are among the N judged, so the two means covary: + 2 lambda Cov(f, r) / N
    overlap = 2 * lam * _weighted_cov(f, r, w) / big_n
    half = z_for(0.5 + level / 2) * math.sqrt(max(0.0, lam**2 * float(fu.var(ddof=1)) / big_n + var_r + overlap))
    return Estimate(value, value - half, value + half, n, level)


def _weighted_cov(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    n = len(a)
    wn = w / w.sum()
    return float(np.dot(wn, (a - np.dot(wn, a)) * (b - np.dot(wn, b)))) * n / (n - 1)


def ppi_power(y_labeled: Numbers, f_labeled: Numbers, f_unlabeled: Numbers, weights: Numbers | None = None) -> float:
    """PPI++'s lambda for a mean: the weight on the judge that minimises `ppi_mean`'s variance. With the
    labeled exchanges among the N judged ones that is Cov(y, f) / Var(f), the regression estimator's
    coefficient (covariance over the labeled exchanges, weighted as the correction is; the judge's
    variance over all N), clipped to [0, 1]. 1 with fewer than two labels or judge scores (nothing to
    tune on: plain PPI), 0 when the judge's scores do not vary."""
    y, f, fu = vector(y_labeled, "y_labeled"), vector(f_labeled, "f_labeled"), vector(f_unlabeled, "f_unlabeled")
    n, big_n = len(y), len(fu)
    if n < 2 or big_n < 2 or len(f) != n:
        return 1.0
    var_f = float(fu.var(ddof=1))
    if var_f <= 0:
        return 0.0
    return float(min(1.0, max(0.0, _weighted_cov(y, f, weight_vector(weights, n)) / var_f)))


# ---- the noise floor -----------------------------------------------------------------------------

def noise_floor(twin_outcomes: Numbers, *, level: float = 0.95) -> float:
    """How far from 0.5 a win rate must be before it is more than production disagreeing with itself.

    twin_outcomes are the judge's verdicts on production against a second call of production (1, 0.5
    or 0). With m their mean and h the normal half-width z * sd / sqrt(n) (sd with ddof=1), the floor
    is max(|m - 0.5| + h, h) = |m - 0.5| + h: the largest deviation from 0.5 self-disagreement is
    consistent with. One twin outcome gives h = 0.5 (the widest an outcome allows), since a single
    draw says nothing about spread; no twin outcomes give 0.0, leaving the candidate's own interval
    to decide."""
    y = outcome_vector(twin_outcomes)
    check_level(level)
    if len(y) == 0:
        return 0.0
    mean = float(y.mean())
    half = 0.5 if len(y) == 1 else z_for(0.5 + level / 2) * float(y.std(ddof=1)) / math.sqrt(len(y))
    return max(abs(mean - 0.5) + half, half)


def significant(estimate: Estimate, *, null: float = 0.5, floor: float = 0.0) -> Verdict:
    """"better" or "worse" only when the interval lies entirely beyond null +- floor; else "within noise".

    An estimate without bounds (no data) is within noise: nothing was shown."""
    if floor < 0:
        raise ValueError(f"floor must be >= 0, not {floor}")
    if estimate.low is None or estimate.high is None:
        return "within noise"
    if estimate.low > null + floor:
        return "better"
    if estimate.high < null - floor:
        return "worse"
    return "within noise"



def p_value(estimate: Estimate | dict[str, Any], *, null: float) -> float | None:
    """The two-sided p-value of `estimate` against `null`, reading its interval as a normal one
    (standard error = width / (2 z)) and the ratio against Student's t with n - 1 degrees of freedom;
    None without bounds. A zero-width interval away from the null gives 0. The t tail matters on a
    small slice: on 40 pairs a normal tail made about twice as many p-values below 0.002 as it should
    (tests/test_slice_correction.py). Approximate for a skewed bootstrap interval, so callers that
    need it to agree with the interval (the report's slices) also require the interval's call."""
    from scipy.stats import t as student  # here, not at import: the report's other paths do not need scipy

    e = estimate if isinstance(estimate, dict) else estimate.to_dict()
    value, low, high, n = e.get("value"), e.get("low"), e.get("high"), e.get("n") or 0
    if value is None or low is None or high is None:
        return None
    se = (high - low) / (2 * z_for(0.5 + e.get("level", 0.95) / 2))
    if se <= 0:
        return 0.0 if value != null else 1.0
    return min(1.0, 2 * float(student.sf(abs(value - null) / se, df=max(n - 1, 1))))


def benjamini_hochberg(p_values: Sequence[float], *, q: float = 0.05) -> list[bool]:
    """Which of several hypotheses to reject with the false discovery rate kept at `q` (Benjamini and
    Hochberg 1995, step-up): the k smallest p-values, k the largest rank with p_(k) <= k q / m. When
    every hypothesis is true this keeps the chance of any rejection at q, as Bonferroni does, while
    losing less power when some are false. It holds for independent tests and for positively
    dependent ones (Benjamini and Yekutieli 2001), such as overlapping slices of the same traffic."""
    if not 0 < q < 1:
        raise ValueError(f"q must be strictly between 0 and 1, not {q}")
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    k = max((rank for rank, i in enumerate(order, 1) if p_values[i] <= rank * q / m), default=0)
    rejected = [False] * m
    for i in order[:k]:
        rejected[i] = True
    return rejected


# ---- evidence planning ---------------------------------------------------------------------------

def units_needed(sd: float, delta: float, *, level: float = 0.95, power: float = 0.8) -> int | None:
    """How many units (graded or judged pairs) a mean needs before a two-sided test at `level` tells a
    difference of `delta` from none with probability `power`, given a per-unit standard deviation
    `sd`: ceil(((z_{1-alpha/2} + z_power) * sd / delta)^2). None when delta is not > 0; 0 when
    there is no spread at all."""
    check_level(level)
    if not 0 < power < 1:
        raise ValueError(f"power must be strictly between 0 and 1, not {power}")
    if delta <= 0 or not math.isfinite(sd):
        return None
    z = z_for(0.5 + level / 2) + z_for(power)
    return math.ceil((z * max(sd, 0.0) / delta) ** 2)


def ppi_labels_needed(var_residual: float, var_judge: float, judged: int, delta: float, *, level: float = 0.95,
                      power: float = 0.8) -> int | None:
    """Human labels a prediction-powered mean needs for the same test as `units_needed`, with the judge
    on `judged` pairs: its variance is var_judge / judged + var_residual / n, so
    n = var_residual / ((delta / z)^2 - var_judge / judged). None when the judged pairs alone are too
    few for that precision (judge more pairs first) or delta is not > 0."""
    check_level(level)
    if delta <= 0 or judged < 1:
        return None
    z = z_for(0.5 + level / 2) + z_for(power)
    room = (delta / z) ** 2 - max(var_judge, 0.0) / judged
    if room <= 0:
        return None
    return math.ceil(max(var_residual, 0.0) / room)
