"""How a candidate's comparison moves over time, and what its losses have in common.

The report (`report.compare`) answers "is the candidate better over this window"; that one number
hides three things an operator needs before trusting it:
- drift: a candidate that was fine last week can regress today (a provider ships a new snapshot
  under the same name), so win rates and judge scores are given per UTC day or ISO week, with
  alerts when a period falls below set limits;
- reward gaming: when a candidate is tuned against our judges, judge scores rise while human grades
  stay flat; the model is learning the judge, not the task, and only comparing the two signals over
  time (or across two versions) shows it;
- failure clusters: a win rate says how often the candidate loses, not on what. Grouping the
  questions it lost on by meaning turns a list of losses into a few themes to read.

Pure functions over `report.Row`s of one candidate; every figure comes from `estimates`, so
intervals mean the same thing here as in the report.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from . import estimates as est
from .estimates import Estimate, Numbers
from .report import Row

Period = Literal["day", "week"]
Source = Literal["pairwise", "offline", "human"]
Split = Literal["time", "model"]
_TEXT_CHARS = 300  # enough of an answer to see what went wrong without flooding a report


# ---- drift --------------------------------------------------------------------------------------

def period_of(created_at: float, period: Period) -> str:
    """The UTC day ("2026-11-20") or ISO week ("2026-W47") a unix time falls in; both sort as text
    in time order, so periods need no separate sort key."""
    d = datetime.fromtimestamp(created_at, UTC)
    if period == "day":
        return d.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = d.isocalendar()  # the ISO year, not the calendar one: 2026-12-31 is 2026-W53
        return f"{year}-W{week:02d}"
    raise ValueError(f"period must be 'day' or 'week', not {period!r}")


def drift(rows: Sequence[Row], *, period: Period = "day", source: Source, judges: Sequence[str] = (),
          n_boot: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    """One entry per period that has rows, in time order: the win rate by `source` (an Estimate
    dict; value None when the period has no outcome from that source) and, per judge, the mean
    candidate and production scores and their mean difference over the rows both were scored on."""
    groups: dict[str, list[Row]] = {}
    for r in sorted(rows, key=lambda r: r.created_at):
        groups.setdefault(period_of(r.created_at, period), []).append(r)
    out = []
    for key, rs in groups.items():
        values, weights = _outcomes(rs, source)
        scores = {}
        for judge in judges:
            both = _score_pairs(rs, judge)
            scores[judge] = {"n": len(both),
                             "candidate": _mean([c for _, c in both]),
                             "production": _mean([p for p, _ in both]),
                             "difference": _mean([c - p for p, c in both])}
        rate = est.win_rate(values, weights, n_boot=n_boot, seed=seed)
        out.append({"period": key, "n": len(rs), "win_rate": rate.to_dict(), "scores": scores})
    return out


@dataclass(frozen=True, slots=True)
class DriftRules:
    """Limits a period must stay within; None switches a rule off.

    The win-rate rule uses the interval's upper bound, so it fires only when the period is shown to
    be below the limit, never on a noisy small day. A score drop has no interval here (the drift
    table carries plain means), hence `min_n` scored pairs before a drop counts."""

    min_win_rate: float | None = None  # alert when a period's win-rate upper bound is below this
    max_score_drop: float | None = None  # alert when candidate - production is below -this
    min_n: int = 20

    def __post_init__(self) -> None:
        if self.max_score_drop is not None and self.max_score_drop < 0:
            raise ValueError(f"max_score_drop is a size and must be >= 0, not {self.max_score_drop}")


def drift_alerts(candidate: str, periods: Sequence[Mapping[str, Any]], rules: DriftRules) -> list[str]:
    """Readable alerts for the periods of `drift(...)` that break `rules`, in time order."""
    alerts = []
    for p in periods:
        w = p["win_rate"]
        if rules.min_win_rate is not None and w["high"] is not None and w["high"] < rules.min_win_rate:
            alerts.append(f"{candidate} {p['period']}: win rate {w['value']:.2f} [{w['low']:.2f}, {w['high']:.2f}] "
                          f"on {w['n']} outcomes is below the minimum {rules.min_win_rate:.2f}")
        if rules.max_score_drop is None:
            continue
        for judge, s in p["scores"].items():
            if s["n"] >= rules.min_n and s["difference"] is not None and s["difference"] < -rules.max_score_drop:
                alerts.append(f"{candidate} {p['period']}: {judge} score difference {s['difference']:+.2f} "
                              f"(candidate {s['candidate']:.2f}, production {s['production']:.2f}) on {s['n']} "
                              f"pairs is beyond the allowed drop of {rules.max_score_drop:.2f}")
    return alerts


# ---- reward gaming ------------------------------------------------------------------------------

def mean_difference(before: Numbers, after: Numbers, before_weights: Numbers | None = None,
                    after_weights: Numbers | None = None, *, level: float = 0.95, n_boot: int = 300,
                    seed: int = 0) -> Estimate:
    """after - before for two independent samples (Hajek means), with a percentile bootstrap interval.

    Unlike `paired_difference` the samples share no units, so each is resampled on its own (with
    its own seed, or the two draws would be correlated) and the replicates are subtracted. `n` is
    the smaller sample: the one that limits what the difference can show. Either sample empty gives
    an Estimate of None."""
    a, b = est.vector(before, "before"), est.vector(after, "after")
    wa, wb = est.weight_vector(before_weights, len(a)), est.weight_vector(after_weights, len(b))
    est.check_level(level, n_boot)
    if len(a) == 0 or len(b) == 0:
        return Estimate(None, None, None, 0, level)

    def means(y: np.ndarray, w: np.ndarray, s: int) -> np.ndarray:
        return est.bootstrap(lambda idx: (w[idx] * y[idx]).sum(1) / w[idx].sum(1), len(y), n_boot, s)

    value = float(np.dot(wb, b) / wb.sum() - np.dot(wa, a) / wa.sum())
    replicates = means(b, wb, seed + 1) - means(a, wa, seed)
    return Estimate(value, *est.percentile_interval(replicates, level), min(len(a), len(b)), level)


def win_rate_difference(before: Numbers, after: Numbers, before_weights: Numbers | None = None,
                        after_weights: Numbers | None = None, *, level: float = 0.95, n_boot: int = 300,
                        seed: int = 0) -> Estimate:
    """The change in win rate (after - before) between two independent sets of outcomes."""
    return mean_difference(est.outcome_vector(before), est.outcome_vector(after), before_weights, after_weights,
                           level=level, n_boot=n_boot, seed=seed)


def reward_gaming(rows: Sequence[Row], *, source_judge: str = "offline", split: Split = "time",
                  n_boot: int = 300, seed: int = 0, min_n: int = 15) -> list[str]:
    """Slices where the judge signal improved significantly while human grades did not.

    The rows are split into an earlier and a later group: by time, the first and second half of the
    rows in time order (equal counts, so neither half is starved by uneven traffic); by model, the
    rows of the oldest version (the `other.model` of the earliest row) against those of the newest
    (of the latest row), versions in between ignored. The judge signal is the win rate of
    `source_judge` ("pairwise" or "offline") or, for any other name, the mean candidate-minus-
    production score difference of that judge; the human signal is the weighted human win rate.

    The rule: the judge improved when the bootstrap interval of its later-minus-earlier difference
    lies entirely above 0. Non-overlapping intervals would be a stricter test than intended (two
    intervals can overlap while their difference is clearly non-zero). Humans "did not" improve when
    their difference's interval reaches 0 or below. A slice is only judged with at least `min_n`
    human grades and `min_n` judge outcomes in each group: with fewer, flat human grades say nothing.
    Slices are "all" and every "key=value" of Row.slices."""
    ordered = sorted(rows, key=lambda r: r.created_at)
    if split == "time":
        half = len(ordered) // 2
        early, late, label = ordered[:half], ordered[half:], ""
    elif split == "model":
        if not ordered or ordered[0].other.model == ordered[-1].other.model:
            return []
        old, new = ordered[0].other.model, ordered[-1].other.model
        early = [r for r in ordered if r.other.model == old]
        late = [r for r in ordered if r.other.model == new]
        label = f" ({old} -> {new})"
    else:
        raise ValueError(f"split must be 'time' or 'model', not {split!r}")
    alarms = []
    for name in ["all", *sorted({f"{k}={v}" for r in ordered for k, v in r.slices.items()})]:
        a, b = _in_slice(early, name), _in_slice(late, name)
        (ja, _), (jb, _) = _judge_signal(a, source_judge), _judge_signal(b, source_judge)
        (ha, hwa), (hb, hwb) = _outcomes(a, "human"), _outcomes(b, "human")
        if min(len(ja), len(jb), len(ha), len(hb)) < max(min_n, 2):  # a one-item half has no spread
            continue
        diff = (win_rate_difference if source_judge in ("pairwise", "offline") else mean_difference)(
            ja, jb, n_boot=n_boot, seed=seed)
        if est.significant(diff, null=0.0) != "better":
            continue
        human = win_rate_difference(ha, hb, hwa, hwb, n_boot=n_boot, seed=seed)
        if est.significant(human, null=0.0) == "better":
            continue
        what = "win rate" if source_judge in ("pairwise", "offline") else "mean score difference"
        before, after = _mean(ja), _mean(jb)
        h_before, h_after = float(np.dot(hwa, ha) / sum(hwa)), float(np.dot(hwb, hb) / sum(hwb))
        alarms.append(f"{name}{label}: the {source_judge} judge's {what} rose from {before:.2f} to {after:.2f} "
                      f"({_interval(diff)}) while human grades did not ({h_before:.2f} -> {h_after:.2f}, "
                      f"{_interval(human)}): the model may be learning the judge, not the task.")
    return alarms


# ---- failure clusters ---------------------------------------------------------------------------

def failure_clusters(rows: Sequence[Row], embed: Callable[[Sequence[str]], np.ndarray], *,
                     source: Source, questions: Mapping[str, str] | None = None, threshold: float = 0.75,
                     max_clusters: int = 8, examples: int = 3) -> list[dict[str, Any]]:
    """The questions the candidate lost on, grouped by meaning, largest group first.

    A loss is outcome 0 by `source`; for "human", more than half of a row's grades are losses.
    The question is the last user message: `Row.question` where rows carry it (`report.collect` fills
    it with `proxy.capture.last_user_text`), else `questions`, exchange id -> question, which also
    overrides it. A mapping rather than a callable keeps this function pure and lets a caller read
    requests once, in bulk. Losses without a question are left out; shares are of those clustered.

    Leader clustering: in time order each question joins the nearest leader if that one is within
    `threshold` cosine, else leads a new cluster. One pass and no cluster count to choose, which suits a
    few hundred losses. Examples are the members closest to the cluster's centroid."""
    asked = [(r, q) for r in sorted(rows, key=lambda r: r.created_at)
             if _lost(r, source) and (q := _question(r, questions))]
    if not asked:
        return []
    losses, texts = [r for r, _ in asked], [q for _, q in asked]
    vecs = np.asarray(embed(texts), dtype=float)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    vecs = np.divide(vecs, norms, out=np.zeros_like(vecs), where=norms > 0)  # cosine needs unit length
    leaders: list[int] = []
    members: list[list[int]] = []
    for i, v in enumerate(vecs):
        sims = vecs[leaders] @ v if leaders else np.zeros(0)
        if len(sims) and sims.max() >= threshold:
            members[int(np.argmax(sims))].append(i)
        else:
            leaders.append(i)
            members.append([i])
    clusters = []
    for idx in sorted(members, key=lambda m: (-len(m), m[0]))[:max_clusters]:
        centroid = vecs[idx].mean(0)
        closest = [idx[k] for k in np.argsort(-(vecs[idx] @ centroid), kind="stable")[:examples]]
        clusters.append({"size": len(idx), "share": len(idx) / len(losses), "examples": [
            {"exchange_id": losses[k].exchange_id, "question": texts[k],
             "candidate": (losses[k].other.text or "")[:_TEXT_CHARS],
             "production": (losses[k].production.text or "")[:_TEXT_CHARS]} for k in closest]})
    return clusters


# ---- helpers ------------------------------------------------------------------------------------

def _outcomes(rows: Sequence[Row], source: str) -> tuple[list[float], list[float]]:
    """Outcomes and weights by source; human grades carry their inverse inclusion probabilities."""
    if source == "human":
        grades = [g for r in rows for g in r.human]
        return [o for o, _ in grades], [w for _, w in grades]
    if source not in ("pairwise", "offline"):
        raise ValueError(f"source must be 'pairwise', 'offline' or 'human', not {source!r}")
    values = [o for r in rows if (o := getattr(r, source)) is not None]
    return values, [1.0] * len(values)


def _judge_signal(rows: Sequence[Row], source_judge: str) -> tuple[list[float], list[float]]:
    if source_judge in ("pairwise", "offline"):
        return _outcomes(rows, source_judge)
    diffs = [c - p for p, c in _score_pairs(rows, source_judge)]
    return diffs, [1.0] * len(diffs)


def _score_pairs(rows: Sequence[Row], judge: str) -> list[tuple[float, float]]:
    """(production, candidate) scores of `judge` on the rows where both answers were scored."""
    return [(p, c) for r in rows if judge in r.scores for p, c in [r.scores[judge]]
            if p is not None and c is not None]


def _in_slice(rows: Sequence[Row], name: str) -> list[Row]:
    if name == "all":
        return list(rows)
    key, _, value = name.partition("=")
    return [r for r in rows if r.slices.get(key) == value]


def _lost(r: Row, source: Source) -> bool:
    if source == "human":
        return bool(r.human) and sum(o == 0 for o, _ in r.human) > len(r.human) / 2
    return _outcomes([r], source)[0] == [0.0]


def _question(r: Row, questions: Mapping[str, str] | None) -> str:
    if questions is not None and r.exchange_id in questions:
        return questions[r.exchange_id]
    return getattr(r, "question", None) or ""  # getattr: rows built before Row carried the question


def _mean(xs: Sequence[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _interval(e: Estimate) -> str:
    return f"{e.value:+.2f} [{e.low:.2f}, {e.high:.2f}]"  # only called once significance showed bounds
