"""How a candidate's comparison moves over time, and what its losses have in common.

The report (`report.compare`) answers "is the candidate better over this window"; that one number
hides three things an operator needs before trusting it:
- drift: a candidate that was fine last week can regress today (a provider ships a new snapshot
  under the same name), so win rates and judge scores are given per UTC day or ISO week, with
  alerts when a period falls below set limits;
- reward gaming: when a candidate is tuned against our judges, judge scores rise while human grades
  stay flat; the model is learning the judge, not the task, and only comparing the two signals over
  time (or across two versions) shows it;
- failure clusters: a win rate says how often the candidate loses, not on what. Grouping its
  losses by meaning (the question, and what the judges found wrong) turns a list of losses into a
  few labeled themes to read, or says there is none.

Pure functions over `rows.Row`s of one candidate; every figure comes from `estimates`, so
intervals mean the same thing here as in the report.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from shadoweval.core.types import Verdict
from shadoweval.judges.text import STOPWORDS, stem

from . import estimates as est
from .estimates import Estimate, Numbers
from .rows import Row, graded, paired

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
    dict; value None when the period has no outcome from that source); per judge, the mean
    candidate and production scores and their mean difference over the rows both were scored on
    (`scores`), and the same of the share of answers the judge passes over the rows it decided on
    both sides (`passing`: `Verdict.passes`, the threshold each verdict was judged at)."""
    groups: dict[str, list[Row]] = {}
    for r in sorted(rows, key=lambda r: r.created_at):
        groups.setdefault(period_of(r.created_at, period), []).append(r)
    out = []
    for key, rs in groups.items():
        values, weights = _outcomes(rs, source)
        scores = {judge: _side_means(paired((r.scores for r in rs), judge)) for judge in judges}
        passing = {judge: _side_means([(float(p), float(c)) for p, c in paired((r.passes for r in rs), judge)])
                   for judge in judges}
        # people's outcomes are per-pair means (0.25 and 0.75 too), so a weighted mean, not win_rate's 0/0.5/1
        rate = est.mean_ci(values, weights, n_boot=n_boot, seed=seed)
        out.append({"period": key, "n": len(rs), "win_rate": rate.to_dict(), "scores": scores, "passing": passing})
    return out


def _side_means(both: Sequence[tuple[float, float]]) -> dict[str, Any]:
    return {"n": len(both), "candidate": _mean([c for _, c in both]), "production": _mean([p for p, _ in both]),
            "difference": _mean([c - p for p, c in both])}


@dataclass(frozen=True, slots=True)
class DriftRules:
    """Limits a period must stay within; None switches a rule off.

    The win-rate rule uses the interval's upper bound, so it fires only when the period is shown to
    be below the limit, never on a noisy small day. A score drop has no interval here (the drift
    table carries plain means), hence `min_n` scored pairs before a drop counts."""

    min_win_rate: float | None = None  # alert when a period's win-rate upper bound is below this
    max_score_drop: float | None = None  # alert when candidate - production is below -this
    max_pass_drop: float | None = None  # the same of the share of answers passing
    min_n: int = 20

    def __post_init__(self) -> None:
        for name in ("max_score_drop", "max_pass_drop"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} is a size and must be >= 0, not {v}")


def drift_alerts(candidate: str, periods: Sequence[Mapping[str, Any]], rules: DriftRules) -> list[str]:
    """Readable alerts for the periods of `drift(...)` that break `rules`, in time order."""
    alerts = []
    for p in periods:
        w = p["win_rate"]
        if rules.min_win_rate is not None and w["high"] is not None and w["high"] < rules.min_win_rate:
            alerts.append(f"{candidate} {p['period']}: win rate {w['value']:.2f} [{w['low']:.2f}, {w['high']:.2f}] "
                          f"on {w['n']} outcomes is below the minimum {rules.min_win_rate:.2f}")
        for what, limit, sides in (("score", rules.max_score_drop, p["scores"]),
                                   ("share passing", rules.max_pass_drop, p.get("passing") or {})):
            if limit is None:
                continue
            for judge, s in sides.items():
                if s["n"] >= rules.min_n and s["difference"] is not None and s["difference"] < -limit:
                    alerts.append(f"{candidate} {p['period']}: {judge} {what} difference {s['difference']:+.2f} "
                                  f"(candidate {s['candidate']:.2f}, production {s['production']:.2f}) on {s['n']} "
                                  f"pairs is beyond the allowed drop of {limit:.2f}")
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


_LEVEL = 0.95


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
    Slices are "all" and every "key=value" of Row.slices. Each slice tested is one more chance of a
    false alarm, so the judge's rise is tested at 95% split over the slices tested (Bonferroni: with
    six slices, a 99.2% interval). Uncorrected, the planted-truth scenarios (docs/scenarios.md)
    saw honest candidates raise this alarm in about 9% of reports."""
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
    tested = []
    for name in ["all", *sorted({f"{k}={v}" for r in ordered for k, v in r.slices.items()})]:
        a, b = _in_slice(early, name), _in_slice(late, name)
        (ja, _), (jb, _) = _judge_signal(a, source_judge), _judge_signal(b, source_judge)
        (ha, hwa), (hb, hwb) = _outcomes(a, "human"), _outcomes(b, "human")
        if min(len(ja), len(jb), len(ha), len(hb)) >= max(min_n, 2):  # a one-item half has no spread
            tested.append((name, ja, jb, ha, hwa, hb, hwb))
    # one alarm question per tested slice: Bonferroni keeps the chance of any false alarm at 5%
    level = 1 - (1 - _LEVEL) / max(len(tested), 1)
    boots = max(n_boot, int(40 / (1 - level)))  # enough replicates to place the wider interval's ends
    alarms = []
    for name, ja, jb, ha, hwa, hb, hwb in tested:
        diff = (win_rate_difference if source_judge in ("pairwise", "offline") else mean_difference)(
            ja, jb, level=level, n_boot=boots, seed=seed)
        if est.significant(diff, null=0.0) != "better":
            continue
        human = mean_difference(ha, hb, hwa, hwb, n_boot=n_boot, seed=seed)  # per pair: 0.25 and 0.75 too
        if est.significant(human, null=0.0) == "better":
            continue
        what = "win rate" if source_judge in ("pairwise", "offline") else "mean score difference"
        before, after = _mean(ja), _mean(jb)
        h_before, h_after = float(np.dot(hwa, ha) / sum(hwa)), float(np.dot(hwb, hb) / sum(hwb))
        alarms.append(f"{name}{label}: the {source_judge} judge's {what} rose from {before:.2f} to {after:.2f} "
                      f"({_interval(diff)}, {level:.1%} interval for {len(tested)} slices tested) while human "
                      f"grades did not ({h_before:.2f} -> {h_after:.2f}, "
                      f"{_interval(human)}): the model may be learning the judge, not the task.")
    return alarms


# ---- failure clusters ---------------------------------------------------------------------------

_TERM = re.compile(r"[a-z][a-z0-9]*(?:['’.-][a-z0-9]+)*")
# filler of questions that the judges' stop words (grammar words) leave in; it never says what losses share
_FILLER = frozenset("also get got still want need like one please thanks thank know way since least hi hello".split())
_JUDGE = re.compile(r"(?:^|\| )[\w, -]+: ")  # the judge names in a reason: what a loss is about is the words after


def loss_reasons(rows: Sequence[Row], verdicts: Mapping[str, Sequence[Verdict]], *,
                 chars: int = 300) -> dict[str, str]:
    """Exchange id -> why the judges marked the candidate's answer down, short, for `failure_clusters`.

    The judges that scored the candidate below production, largest gap first, and what each found:
    the sentences it could not support (with the judge model's reason, if any), the checks or
    criteria that failed, else grounded's least supported sentence; and the pairwise judge's reasons
    when it preferred production. A finding two judges share is said once ("grounded, citations:
    ..."). `verdicts` is `report.Table.verdicts`, output id -> that output's verdicts. Evidence, not
    explanations: most explanations are templates ("2 of 3 sentences supported") that would make
    losses alike for how a judge words its findings rather than for what went wrong."""
    out: dict[str, str] = {}
    for r in rows:
        mine = {v.judge: v for v in verdicts.get(r.other.id, ()) if v.error is None}
        gaps = sorted((c - p, j) for j, (p, c) in r.scores.items() if p is not None and c is not None and c < p)
        picked = [mine[j] for _, j in gaps if j in mine]
        if "pairwise" in mine and mine["pairwise"].label == "production":
            picked.insert(0, mine["pairwise"])
        by_finding: dict[str, list[str]] = {}
        for v in picked:
            for f in _findings(v):
                by_finding.setdefault(f, []).append(v.judge)
        if by_finding:
            out[r.exchange_id] = " | ".join(f"{', '.join(js)}: {f}" for f, js in by_finding.items())[:chars]
    return out


def _findings(v: Verdict) -> list[str]:
    """What a judge found wrong with an answer, in the answer's own words where it can."""
    ev = v.evidence if isinstance(v.evidence, dict) else {}
    said = [" ".join(str(u[k]) for k in ("sentence", "reason") if u.get(k))
            for key in ("unsupported", "nonexistent") for u in ev.get(key) or [] if isinstance(u, dict)]
    weakest = ev.get("least_supported")
    if not said and isinstance(weakest, dict) and weakest.get("sentence"):
        said = [str(weakest["sentence"])]  # nothing below the cut: the sentence nearest to it
    found = [t for t in said if len(t.split()) >= 3]  # "Yes." is someone's weakest sentence, and says nothing
    found += [str(f) for f in ev.get("failed") or []]
    found += [f"{c.get('criterion', '')} {c.get('reason', '')}".strip() for c in ev.get("criteria") or []
              if isinstance(c, dict) and c.get("verdict") == "fail"]
    found += [str(o["reason"]) for o in ev.get("orders") or []
              if isinstance(o, dict) and o.get("preferred") == "production" and o.get("reason")]
    return list(dict.fromkeys(f for f in found if f))


def failure_clusters(rows: Sequence[Row], embed: Callable[[Sequence[str]], np.ndarray], *,
                     source: Source, questions: Mapping[str, str] | None = None,
                     reasons: Mapping[str, str] | None = None, threshold: float = 0.45, reason_weight: float = 0.5,
                     min_size: int = 2, max_clusters: int = 8, examples: int = 3, terms: int = 4,
                     limit: int = 2000) -> dict[str, Any]:
    """What the candidate's losses have in common: groups of similar losses, largest first, each labeled.

    A loss is outcome 0 by `source`; for "human", more than half of a row's grades are losses.
    The question is the last user message: `Row.question` where rows carry it (`report.collect` fills
    it with `core.messages.last_user_text`), else `questions`, exchange id -> question, which also
    overrides it. A mapping rather than a callable keeps this function pure and lets a caller read
    requests once, in bulk. Losses without a question are left out.

    `reasons`, exchange id -> why the judges marked the answer down (`loss_reasons`), join the
    question: a loss is embedded as its question's vector and its reason's, averaged with
    `reason_weight` on the reason. Two questions on one topic lost for different reasons drift apart,
    one mistake made on two wordings comes together.

    Average-linkage agglomerative clustering on cosine similarity: the two groups whose members are
    on average most alike merge, until no two groups reach `threshold`. Unlike one pass of leader
    clustering it does not depend on the order of the losses, nor chain loose ones behind an early
    leader. The default `threshold` suits all-MiniLM-L6-v2, where two support questions on one topic
    (warranty, delivery) score about 0.4-0.6 and on unrelated topics below 0.2. Only a group of
    `min_size` or more is a pattern; the other losses are counted as `unclustered`. The similarity
    matrix is n x n, so the `limit` latest losses are grouped (`left_out` counts older ones) and
    shares are of those.

    Returns {"losses", "unclustered", "left_out", "more" (patterns past `max_clusters`), "passing"
    (losses whose answer every judge that decided on it passes: lost on a lower score, nothing
    failed), "clusters"};
    each cluster has its size and share of the losses, `terms` (content words most of its members
    share and few other losses use, by TF-IDF), `label` (the terms, else the representative
    question), `representative` (the question closest to the centroid) and `examples` (the members
    closest to the centroid, with their reasons)."""
    asked = [(r, q) for r in sorted(rows, key=lambda r: r.created_at)
             if _lost(r, source) and (q := _question(r, questions))]
    left_out = max(0, len(asked) - limit)
    asked = asked[left_out:]
    result: dict[str, Any] = {"losses": len(asked), "unclustered": len(asked), "left_out": left_out, "more": 0,
                              "passing": sum(_passes_all(r) for r, _ in asked), "clusters": []}
    if not asked:
        return result
    losses, texts = [r for r, _ in asked], [q for _, q in asked]
    why = [(reasons or {}).get(r.exchange_id, "") for r in losses]
    vecs = _unit(np.asarray(embed(texts), dtype=float))
    given = [i for i, w in enumerate(why) if w]
    if given and reason_weight > 0:
        said = _unit(np.asarray(embed([why[i] for i in given]), dtype=float))
        vecs[given] = _unit((1 - reason_weight) * vecs[given] + reason_weight * said)
    groups = sorted((g for g in _average_linkage(vecs, threshold) if len(g) >= min_size), key=lambda g: (-len(g), g[0]))
    words = [_words(f"{q} {_JUDGE.sub(' ', w)}") for q, w in zip(texts, why, strict=True)]
    df = Counter(s for w in words for s in w)
    result["unclustered"] = len(losses) - sum(map(len, groups))
    result["more"] = max(0, len(groups) - max_clusters)
    for idx in groups[:max_clusters]:
        centroid = vecs[idx].mean(0)
        closest = [idx[k] for k in np.argsort(-(vecs[idx] @ centroid), kind="stable")]
        top = _top_terms(words, idx, df, terms, closest[0])
        result["clusters"].append({
            "size": len(idx), "share": len(idx) / len(losses), "label": ", ".join(top) or texts[closest[0]][:80],
            "terms": top, "representative": texts[closest[0]], "examples": [
                {"exchange_id": losses[k].exchange_id, "question": texts[k], "reason": why[k],
                 "candidate": (losses[k].other.text or "")[:_TEXT_CHARS],
                 "production": (losses[k].production.text or "")[:_TEXT_CHARS]} for k in closest[:examples]]})
    return result


def _unit(vecs: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return np.divide(vecs, norms, out=np.zeros_like(vecs), where=norms > 0)  # cosine needs unit length


def _average_linkage(vecs: np.ndarray, threshold: float) -> list[list[int]]:
    """Groups of row indices, merged while the mean cosine between two groups' members reaches `threshold`."""
    n = len(vecs)
    sim = vecs @ vecs.T
    np.fill_diagonal(sim, -np.inf)
    groups = {i: [i] for i in range(n)}
    while len(groups) > 1:
        i, j = divmod(int(np.argmax(sim)), n)
        if sim[i, j] < threshold:
            break
        a, b = len(groups[i]), len(groups[j])
        # a merged group's mean similarity to any other is its parts' means weighted by size (Lance-Williams);
        # retired rows stay at -inf, and -inf times a size is still -inf, never nan
        merged = (a * sim[i] + b * sim[j]) / (a + b)
        sim[i], sim[:, i] = merged, merged
        sim[i, i] = -np.inf
        sim[j], sim[:, j] = -np.inf, -np.inf
        groups[i] += groups.pop(j)
    return [sorted(g) for g in groups.values()]


def _words(text: str) -> dict[str, str]:
    """A text's distinct content words: stem -> the form first written."""
    found: dict[str, str] = {}
    for w in _TERM.findall(text.lower().replace("’", "'")):
        w = w.removesuffix("'s")
        if "'" not in w and (len(w) > 2 or any(ch.isdigit() for ch in w)) and w not in STOPWORDS and w not in _FILLER:
            found.setdefault(stem(w), w)
    return found


def _top_terms(words: Sequence[dict[str, str]], members: Sequence[int], df: Counter[str], k: int,
               representative: int) -> list[str]:
    """The words at least two members share, weighted by the share of members using them times their
    inverse document frequency over all losses: a word every loss uses says nothing about this group.
    Ties go in the order the representative question says them."""
    inside = Counter(s for i in members for s in words[i])
    n, order = len(words), {s: p for p, s in enumerate(words[representative])}
    ranked = sorted((-(c / len(members)) * math.log(n / df[s]), -c, order.get(s, n), s) for s, c in inside.items()
                    if c >= 2 and df[s] < n)
    return [Counter(words[i][s] for i in members if s in words[i]).most_common(1)[0][0] for *_, s in ranked[:k]]


# ---- helpers ------------------------------------------------------------------------------------

def _outcomes(rows: Sequence[Row], source: str) -> tuple[list[float], list[float]]:
    """Outcomes and weights by source. For "human", one per graded pair (`Row.people`: the mean of its
    grades, so 0.25 or 0.75 where graders split) weighted by its inverse inclusion probability; for a
    judge, its outcome (0, 0.5 or 1) per pair."""
    if source == "human":
        return graded(rows)  # per graded pair: its grades' mean outcome and weight
    if source not in ("pairwise", "offline"):
        raise ValueError(f"source must be 'pairwise', 'offline' or 'human', not {source!r}")
    values = [o for r in rows if (o := getattr(r, source)) is not None]
    return values, [1.0] * len(values)


def _judge_signal(rows: Sequence[Row], source_judge: str) -> tuple[list[float], list[float]]:
    if source_judge in ("pairwise", "offline"):
        return _outcomes(rows, source_judge)
    diffs = [c - p for p, c in paired((r.scores for r in rows), source_judge)]
    return diffs, [1.0] * len(diffs)


def _in_slice(rows: Sequence[Row], name: str) -> list[Row]:
    if name == "all":
        return list(rows)
    key, _, value = name.partition("=")
    return [r for r in rows if r.slices.get(key) == value]


def _passes_all(r: Row) -> bool:
    """Every judge that decided on the candidate's answer passes it (and one did at least)."""
    decided = [c for _, c in r.passes.values() if c is not None]
    return bool(decided) and all(decided)


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
