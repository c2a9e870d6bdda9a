"""The statistics a comparison report needs, in one place: estimates with intervals, and model fits.

The plain estimates (win rates, means, paired differences, prediction-powered means, the noise
floor) live in `estimates` and are re-exported here. This module adds the two fits a report needs
beyond a mean: Bradley-Terry ratings, when more than two models meet, and a length-controlled win
rate, because LLM judges prefer longer answers and a candidate can "win" by being verbose. Both are
pure numpy, deterministic given a seed, and bootstrapped so their intervals come from the same
resampling of the same units as every other figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from shadoweval.datasets.report.estimates import (
    OUTCOMES,
    Estimate,
    Numbers,
    Verdict,
    benjamini_hochberg,
    bootstrap,
    check_level,
    mean_ci,
    noise_floor,
    outcome_vector,
    p_value,
    paired_difference,
    percentile_interval,
    ppi_labels_needed,
    ppi_mean,
    ppi_power,
    significant,
    units_needed,
    vector,
    weight_vector,
    win_rate,
    win_tie_loss,
    z_for,
)

__all__ = ["OUTCOMES", "Estimate", "Verdict", "benjamini_hochberg", "bradley_terry", "length_controlled_win_rate",
           "mean_ci", "noise_floor", "p_value", "paired_difference", "ppi_labels_needed", "ppi_mean", "ppi_power", "significant",
           "units_needed", "win_rate", "win_tie_loss", "z_for"]

ANCHOR_RATING = 1000.0
_ELO = 400 / math.log(10)  # rating points per unit of natural log-strength: 400 * log10(strength)
_RIDGE = 1e-4  # L2 penalty, in units of one observation: it only bites on separable data (all wins)


# ---- Bradley-Terry -------------------------------------------------------------------------------

def bradley_terry(comparisons: Iterable[tuple[str, str, float]], *, anchor: str | None = None,
                  prior: float = 0.5, level: float = 0.95, n_boot: int = 500,
                  seed: int = 0) -> dict[str, Estimate]:
    """Elo-like ratings from pairwise comparisons (model_a, model_b, outcome for a: 1, 0.5 or 0).

    P(i beats j) = p_i / (p_i + p_j). The strengths are the maximum-likelihood estimate found by
    Hunter's (2004) MM algorithm, p_i <- W_i / sum_j n_ij / (p_i + p_j), with W_i the wins of i (a
    tie is half a win to each side) and n_ij the comparisons between i and j. Ratings are
    1000 + 400 * log10(p_i / p_anchor); the anchor (default: the first model seen) is 1000 exactly,
    with a zero-width interval, and the other intervals are percentile bootstraps over resampled
    comparisons. Models come back in first-seen order; `n` is each model's number of comparisons.

    A model that always wins (or always loses) has no finite MLE, so every pair of models gets
    `prior` pseudo-comparisons that are ties (0.5 by default: a quarter win to each side). That
    pulls ratings toward each other by a fraction of one game, negligible once a pair has met tens
    of times. prior=0 gives the textbook MLE, which exists only when no group of models is
    unbeaten by the rest (Hunter's Assumption 1): ValueError otherwise, and if any bootstrap
    resample lacks a finite MLE every interval is unbounded, since that resample has no rating."""
    if prior < 0:
        raise ValueError(f"prior must be >= 0, not {prior}")
    check_level(level, n_boot)
    models: dict[str, int] = {}
    rows: list[tuple[int, int, float]] = []
    for a, b, outcome in comparisons:
        if a == b:
            raise ValueError(f"a model cannot be compared with itself: {a!r}")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome for {a!r} against {b!r} must be 1, 0.5 or 0, not {outcome!r}")
        rows.append((models.setdefault(a, len(models)), models.setdefault(b, len(models)), float(outcome)))
    if not models:
        return {}
    if anchor is None:
        anchor = next(iter(models))
    elif anchor not in models:
        raise ValueError(f"anchor {anchor!r} is not among the compared models {sorted(models)}")
    # Resampling m comparisons with replacement is a multinomial draw over the distinct
    # (a, b, outcome) cells, so the bootstrap costs the same for ten comparisons or a million.
    cells, counts = np.unique(np.array(rows), axis=0, return_counts=True)
    k = len(models)
    beats = np.zeros((len(cells), k * k))  # each cell's contribution to the "i beat j" matrix
    i, j, o = cells[:, 0].astype(int), cells[:, 1].astype(int), cells[:, 2]
    beats[np.arange(len(cells)), i * k + j] = o
    beats[np.arange(len(cells)), j * k + i] = 1 - o

    def ratings(cell_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ratings (B, k) for each row of cell counts, and which rows have a finite MLE."""
        beat = (cell_counts @ beats).reshape(-1, k, k) + prior / 2 * (1 - np.eye(k))
        ok = np.ones(len(beat), bool) if prior > 0 else _strongly_connected(beat > 0)
        out = np.full((len(beat), k), np.nan)
        if ok.any():
            log_p = _mm_log_strengths(beat[ok])
            out[ok] = ANCHOR_RATING + _ELO * (log_p - log_p[:, [models[anchor]]])
        return out, ok

    point, ok = ratings(counts[None, :].astype(float))
    if not ok[0]:
        raise ValueError("with prior=0 some group of models is never beaten by the rest, so the MLE is "
                         "infinite; use prior > 0")
    rng = np.random.default_rng(seed)
    replicates, ok = ratings(rng.multinomial(len(rows), counts / len(rows), size=n_boot).astype(float))
    games = np.bincount(np.array([r[:2] for r in rows]).ravel(), minlength=k)
    result = {}
    for name, m in models.items():
        if name == anchor:
            low = high = ANCHOR_RATING
        elif ok.all():
            low, high = percentile_interval(replicates[:, m], level)
        else:
            low, high = -math.inf, math.inf
        result[name] = Estimate(float(point[0, m]), low, high, int(games[m]), level)
    return result


def _mm_log_strengths(beat: np.ndarray, *, tol: float = 1e-12, max_iter: int = 100_000) -> np.ndarray:
    """Log-strengths (B, k) maximising the Bradley-Terry likelihood of each (k, k) "i beat j" matrix.

    MM increases the likelihood at every step and converges linearly, so iterate until the largest
    change in a log-strength is below tol; strengths are rescaled to geometric mean 1 each step,
    because only their ratios are identified."""
    wins = beat.sum(2)
    games = beat + beat.transpose(0, 2, 1)
    log_p = np.zeros(wins.shape)
    for _ in range(max_iter):
        p = np.exp(log_p)
        new = np.log(wins / (games / (p[:, :, None] + p[:, None, :])).sum(2))
        new -= new.mean(1, keepdims=True)
        done = np.abs(new - log_p).max() < tol
        log_p = new
        if done:
            break
    return log_p


def _strongly_connected(edges: np.ndarray) -> np.ndarray:
    """For each (k, k) boolean "i beat j at least half a game" matrix, whether every model reaches
    every other along wins: Hunter's condition for a finite MLE without a prior."""
    k = edges.shape[1]
    reach = edges | np.eye(k, dtype=bool)
    for _ in range(max(1, math.ceil(math.log2(k)))):  # squaring doubles the path length covered
        reach = (reach.astype(float) @ reach.astype(float)) > 0
    return np.asarray(reach.all(axis=(1, 2)))


# ---- length-controlled win rate ------------------------------------------------------------------

def length_controlled_win_rate(outcomes: Numbers, length_diffs: Numbers, weights: Numbers | None = None, *,
                               level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> Estimate:
    """The win rate the candidate would have if its answers were as long as production's.

    The AlpacaEval-LC idea (Dubois et al. 2024) with length as the only covariate: fit

        logit P(candidate preferred) = b0 + b1 * tanh(diff / std(diff))

    where diff = len(candidate) - len(production) in characters, then report sigmoid(b0), the
    predicted win rate at zero length difference. tanh keeps one very long answer from steering the
    fit. Ties count 0.5 through a fractional-outcome (quasi-likelihood) logistic fit by IRLS, with a
    tiny L2 ridge so that one-sided data (all wins) gives a rate near 1 instead of diverging. Weights
    (inverse inclusion probabilities) weight the fit. The interval is a percentile bootstrap that
    refits, std(diff) included, on every resample. When every diff is equal the feature is 0 and the
    result is close to the plain win rate."""
    y = outcome_vector(outcomes)
    d = vector(length_diffs, "length_diffs")
    if len(d) != len(y):
        raise ValueError(f"outcomes has {len(y)} entries but length_diffs has {len(d)}")
    w = weight_vector(weights, len(y))
    check_level(level, n_boot)
    if len(y) == 0:
        return Estimate(None, None, None, 0, level)
    w = w / w.mean()  # so the ridge is measured in observations whatever scale the weights have

    def stat(idx: np.ndarray) -> np.ndarray:
        return _sigmoid(_logistic_intercepts(y[idx], d[idx], w[idx]))

    value = float(stat(np.arange(len(y))[None, :])[0])
    replicates = bootstrap(stat, len(y), n_boot, seed)
    return Estimate(value, *percentile_interval(replicates, level), len(y), level)


def _logistic_intercepts(y: np.ndarray, diff: np.ndarray, c: np.ndarray, *, max_iter: int = 100) -> np.ndarray:
    """b0 of the ridge-penalised fractional logistic fit of each row of (B, n) outcomes on
    tanh(diff / std(diff)), with case weights c. Newton steps (IRLS) with the 2x2 system solved in
    closed form, so all B fits advance together."""
    total = c.sum(1, keepdims=True)
    centred = diff - (c * diff).sum(1, keepdims=True) / total
    sd = np.sqrt((c * centred**2).sum(1, keepdims=True) / total)
    x = np.tanh(np.divide(diff, sd, out=np.zeros_like(diff), where=sd > 0))
    b0, b1 = np.zeros(len(y)), np.zeros(len(y))
    for _ in range(max_iter):
        mu = _sigmoid(b0[:, None] + b1[:, None] * x)
        r, v = c * (y - mu), c * mu * (1 - mu)
        g0, g1 = r.sum(1) - _RIDGE * b0, (r * x).sum(1) - _RIDGE * b1
        h00, h01, h11 = v.sum(1) + _RIDGE, (v * x).sum(1), (v * x * x).sum(1) + _RIDGE
        det = h00 * h11 - h01**2
        s0, s1 = (h11 * g0 - h01 * g1) / det, (h00 * g1 - h01 * g0) / det
        b0, b1 = b0 + s0, b1 + s1
        if max(np.abs(s0).max(), np.abs(s1).max()) < 1e-10:
            break
    return b0


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(z / 2))  # the tanh form never overflows, unlike 1 / (1 + exp(-z))
