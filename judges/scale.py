"""A team's rescaling of an offline judge's scores, so that they read as probabilities of its own labels.

The support model's probabilities are calibrated to a balanced mix of its training sources. On
traffic where most answers are grounded they run low (`mtrag_responses.jsonl`: mean score 0.49
against 86% grounded, ECE 0.37), so a report's "grounded 0.44" looks like a failing model. Platt
scaling (Platt 1999) fixes the scale without retraining: p' = sigmoid(slope * logit(p) + intercept),
fitted by logistic regression of the team's labels on the score's logit. The slope is kept above 0,
so the map is increasing: it never reorders answers, and the judges move their threshold through
the same map, so a rescaling alone passes and fails the same answers (`[judges] thresholds` stays
on the support model's own scale, as `shadoweval calibrate` prints it). Margins on scores (the
offline preference's, the gate's `score_margin`, the cascade's `risk_margin`) read the new scale.

`fit_scale` fits one; `cross_fitted` says what it is worth on records it was not fitted on (k-fold),
which is what `shadoweval calibrate` prints before suggesting `[judges] calibration = { grounded =
[slope, intercept] }`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .metrics import Calibration, calibration

_EPS = 1e-6  # scores are clipped to [eps, 1 - eps] before their logit
MIN_RECORDS = 20  # fewer labeled scores than this (or one class missing): no scale is fitted


@dataclass(frozen=True, slots=True)
class Scale:
    """p -> sigmoid(slope * logit(p) + intercept); slope > 0."""

    slope: float
    intercept: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slope) and math.isfinite(self.intercept)):
            raise ValueError(f"a scale needs finite numbers, not [{self.slope}, {self.intercept}]")
        if self.slope <= 0:
            raise ValueError(f"a scale's slope must be > 0 (it must keep the scores' order), not {self.slope}")

    @classmethod
    def of(cls, pair: Sequence[float] | None) -> Scale | None:
        """[slope, intercept] -> Scale; None -> None (no rescaling)."""
        if pair is None:
            return None
        if isinstance(pair, str | bytes) or len(pair) != 2:
            raise ValueError(f"a scale is [slope, intercept], not {pair!r}")
        return cls(float(pair[0]), float(pair[1]))

    def __call__(self, p: float) -> float:
        z = self.slope * _logit(p) + self.intercept
        return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))

    def as_list(self) -> list[float]:
        return [round(self.slope, 4), round(self.intercept, 4)]


def _logit(p: float) -> float:
    """The score's logit, clipped to [eps, 1 - eps] first: the one reading of a score, for the map and its fit."""
    q = min(max(float(p), _EPS), 1 - _EPS)
    return math.log(q / (1 - q))


def fit_scale(scores: Sequence[float], labels: Sequence[bool]) -> Scale | None:
    """Platt scaling of `scores` (0..1) to `labels`: None with fewer than MIN_RECORDS, one class only,
    or a fit whose slope is not positive (scores that do not rank the labels at all)."""
    y = np.asarray(labels, dtype=float)
    if len(y) < MIN_RECORDS or y.min() == y.max():
        return None
    from sklearn.linear_model import LogisticRegression  # here: the judges' hot path never needs sklearn

    fit = LogisticRegression(C=100.0, max_iter=1000).fit(np.array([[_logit(v)] for v in scores]), y)
    slope, intercept = float(fit.coef_[0][0]), float(fit.intercept_[0])
    return Scale(slope, intercept) if slope > 0 else None


@dataclass(frozen=True, slots=True)
class CrossFitted:
    """The scale fitted on every record, and the scores' calibration before and after rescaling, the
    latter measured on each record by a scale fitted without its fold."""

    scale: Scale
    folds: int
    before: Calibration
    after: Calibration

    def as_dict(self) -> dict[str, object]:
        return {"scale": self.scale.as_list(), "folds": self.folds, "before": self.before.as_dict(),
                "after": self.after.as_dict()}


def cross_fitted(scores: Sequence[float], labels: Sequence[bool], *, folds: int = 5, seed: int = 0) -> CrossFitted | None:
    """`fit_scale` on all records, and its worth out of sample: each fold's scores rescaled by a scale
    fitted on the other folds. None when no scale can be fitted (on all records or on some fold)."""
    whole = fit_scale(scores, labels)
    if whole is None:
        return None
    s, y = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    order = np.random.default_rng(seed).permutation(len(s))
    rescaled = np.empty(len(s))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        part = fit_scale(s[train].tolist(), y[train].tolist())
        if part is None:
            return None
        rescaled[test] = [part(v) for v in s[test]]
    before, after = calibration(s.tolist(), y.tolist()), calibration(rescaled.tolist(), y.tolist())
    if before is None or after is None:
        return None
    return CrossFitted(whole, folds, before, after)
