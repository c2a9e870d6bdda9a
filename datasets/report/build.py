"""The comparison report: is a candidate better for our users than production, where is it worse,
and how sure are we.

Each candidate is compared with production on the exchanges both answered. Three sources can say
which answer was better, and the report names the one a decision rests on:
- people (grades, reweighted by the sampling probabilities: Hajek estimates over all pairs);
- the pairwise LLM judge, or, without an LLM tier, the offline preference (the candidate's mean
  offline judge score against production's, within a margin a tie);
- both at once, prediction-powered: the judge on every pair, people correcting its bias.
Differences no larger than production's disagreement with itself (its twin) are reported as
"within noise", never as wins or losses; a judge people disagree with is marked unreliable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np

from shadoweval.core.messages import last_user_text
from shadoweval.core.settings import GateSettings, ReportSettings
from shadoweval.core.types import ExchangeBundle, Output, Verdict
from shadoweval.datasets.report.agreement import BinaryAgreement, agreement, with_offline_preference
from shadoweval.judges.preference import offline_preference

from . import stats
from .rows import Row, graded, paired

_OUTCOME = {"candidate": 1.0, "tie": 0.5, "production": 0.0}


@dataclass(slots=True)
class Table:
    """Rows per model, from the bundles of a window."""

    rows: dict[str, list[Row]] = field(default_factory=dict)  # candidate (or "production-twin") -> rows
    outputs: dict[str, list[Output]] = field(default_factory=dict)  # every output per model name
    production_by_exchange: dict[str, Output] = field(default_factory=dict)
    verdicts: dict[str, list[Verdict]] = field(default_factory=dict)
    items: list[Any] = field(default_factory=list)
    grades: list[Any] = field(default_factory=list)


def collect(bundles: Iterable[ExchangeBundle], settings: ReportSettings) -> Table:
    t = Table()
    for b in bundles:
        prod = next((o for o in b.outputs if o.role == "production"), None)
        if prod is not None:
            t.production_by_exchange[b.exchange.id] = prod
        for o in b.outputs:
            t.outputs.setdefault(o.name, []).append(o)
        by_output: dict[str, dict[str, Verdict]] = {}
        for v in sorted(b.verdicts, key=lambda v: v.created_at):
            if v.error is None:
                by_output.setdefault(v.output_id, {})[v.judge] = v
                t.verdicts.setdefault(v.output_id, []).append(v)
        grades_of: dict[str, list[tuple[float, float]]] = {}
        for item, grade in b.graded:
            t.items.append(item)
            t.grades.append(grade)
            if item.candidate_output_id is not None and grade.winner in _OUTCOME:
                grades_of.setdefault(item.candidate_output_id, []).append(
                    (_OUTCOME[grade.winner], 1.0 / max(item.inclusion_probability, 1e-9)))
        if prod is None or prod.status != "ok":
            continue
        slices = {k: str(b.exchange.tags.get(k) or (b.exchange.route if k == "route" else "")) for k in
                  settings.slice_by}
        for o in b.outputs:
            if o.role not in ("candidate", "twin") or o.status != "ok":
                continue
            mine, theirs = by_output.get(o.id, {}), by_output.get(prod.id, {})
            scores = {j: (_score(theirs.get(j)), _score(mine.get(j))) for j in settings.judges
                      if j in mine or j in theirs}
            passes = {j: (_passes(theirs.get(j)), _passes(mine.get(j))) for j in scores}
            pw = mine.get("pairwise")
            t.rows.setdefault(o.name, []).append(Row(
                exchange_id=b.exchange.id, created_at=b.exchange.created_at,
                question=last_user_text(b.exchange.request or {}), slices=slices, production=prod,
                other=o, scores=scores, pairwise=_OUTCOME.get(pw.label or "") if pw else None,
                offline=offline_preference(scores.values(), settings.preference_margin),
                human=tuple(grades_of.get(o.id, ())), passes=passes,
            ))
    return t


def compare(table: Table, candidate: str, settings: ReportSettings, *, floors: dict[str, float],
            reliability: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Everything the report says about one candidate against production, given the noise floors of
    the twin and the judges' reliability (the same for every candidate, so computed once)."""
    rows = table.rows.get(candidate, [])
    out: dict[str, Any] = {"candidate": candidate, "pairs": len(rows)}
    out["win_rate"], out["decided_by"] = win_rates(rows, settings, floors, reliability, seed=seed)
    decided = out["win_rate"].get(out["decided_by"]) if out["decided_by"] else None
    source = _judge_source(rows)
    pick, picked = _outcomes(rows, source)
    out["length_controlled"] = stats.length_controlled_win_rate(
        picked, [len(r.other.text or "") - len(r.production.text or "") for r in pick],
        n_boot=settings.bootstrap, seed=seed).to_dict() if len(pick) >= 10 else None
    out["scores"] = score_table(rows, settings, floors, reliability, seed=seed)
    out["ops"] = ops(table, candidate)
    out["slices"], out["flags"], out["slice_tests"] = slice_table(rows, settings, floors, reliability,
                                                                  out["decided_by"], seed=seed)
    out["call"] = decided["call"] if decided else "not enough data"
    return out


def win_rates(rows: Sequence[Row], settings: ReportSettings, floors: dict[str, float],
              reliability: dict[str, Any], *, seed: int = 0) -> tuple[dict[str, Any], str | None]:
    """Win rate by each source there is, and which one a decision should rest on."""
    out: dict[str, Any] = {}
    for source in ("pairwise", "offline"):
        _, xs = _outcomes(rows, source)
        if xs:
            est = stats.win_rate(xs, n_boot=settings.bootstrap, seed=seed)
            judge = "pairwise" if source == "pairwise" else "offline-preference"
            out[source] = _called(est, floors.get(source, 0.0), xs,
                                  reliable=reliability.get(judge, {}).get("reliable"))
    people, weights = graded(rows)  # per graded pair, its grades averaged: pairs are what was sampled
    if people:
        est = stats.mean_ci(people, weights, n_boot=settings.bootstrap, seed=seed)
        votes = [o for r in rows for o, _ in r.human]
        out["human"] = _called(est, floors.get("pairwise", 0.0), votes, reliable=True, per_pair=people)
    judge_source = "pairwise" if "pairwise" in out else "offline" if "offline" in out else None
    if people and judge_source:
        labeled, f_l = _outcomes([r for r in rows if r.human], judge_source)
        if labeled:
            y, w = graded(labeled)  # w: the sample's skew undone
            _, f_u = _outcomes(rows, judge_source)
            lam = stats.ppi_power(y, f_l, f_u, w)  # how far the judge is leaned on (PPI++): 0 = people alone
            out["ppi"] = _called(stats.ppi_mean(y, f_l, f_u, w, power=lam), floors.get(judge_source, 0.0), f_u,
                                 reliable=True)
            out["ppi"]["judge"] = judge_source
            out["ppi"]["judge_weight"] = lam
            # what evidence planning needs: the (weighted) judge's spread over all pairs, the error's over the graded
            out["ppi"]["judged"], out["ppi"]["labeled"] = len(f_u), len(labeled)
            out["ppi"]["var_judge"] = lam**2 * float(np.var(f_u, ddof=1)) if len(f_u) > 1 else None
            residual = np.asarray(y) - lam * np.asarray(f_l)
            out["ppi"]["var_residual"] = float(np.var(residual, ddof=1)) if len(residual) > 1 else None
    # every judged pair graded (labeled data imported whole): the judge's mean adds nothing the grades
    # do not say, and people's own estimate reads every graded pair, judged or not
    everything_graded = "ppi" in out and out["ppi"]["judged"] == out["ppi"]["labeled"]
    for source in ("human", "ppi") if everything_graded else ("ppi", "human"):
        if source in out and out[source]["n"] >= 1 and (source == "ppi" or out[source]["n"] >= settings.min_graded):
            return out, source
    return out, judge_source


def _called(est: stats.Estimate, floor: float, outcomes: Sequence[float], *, reliable: bool | None,
            per_pair: Sequence[float] | None = None) -> dict[str, Any]:
    """An estimate with its call, its wins/ties/losses (`outcomes`: one per judged pair, or per grade)
    and the per-pair spread evidence planning reads. Given `per_pair` (people's outcome per graded
    pair), `n` counts those pairs and `grades` the grades behind them."""
    body = est.to_dict()
    body.update(stats.win_tie_loss(outcomes))
    units = outcomes if per_pair is None else per_pair
    if per_pair is not None:
        body["grades"], body["n"] = len(outcomes), len(per_pair)
    body["call"] = stats.significant(est, null=0.5, floor=floor)
    body["reliable"] = reliable
    body["sd"] = float(np.std(units, ddof=1)) if len(units) > 1 else None  # per pair: evidence planning
    return body


def score_table(rows: Sequence[Row], settings: ReportSettings, floors: dict[str, float],
                reliability: dict[str, Any], *, seed: int = 0) -> dict[str, Any]:
    out = {}
    for judge in settings.judges:
        both = paired((r.scores for r in rows), judge)
        if not both:
            continue
        out[judge] = {**_side_by_side(both, settings, floors.get(f"score:{judge}", 0.0), seed=seed),
                      "reliable": reliability.get(judge, {}).get("reliable")}
        decided = _as_shares(paired((r.passes for r in rows), judge))
        if decided:
            out[judge]["pass_rate"] = _side_by_side(decided, settings, floors.get(f"pass:{judge}", 0.0), seed=seed)
    return out


def _side_by_side(both: Sequence[tuple[float, float]], settings: ReportSettings, floor: float, *,
                  seed: int) -> dict[str, Any]:
    """Production's and the other's means over paired values, the paired difference and its call."""
    prod, cand = [p for p, _ in both], [c for _, c in both]
    diff = stats.paired_difference(cand, prod, n_boot=settings.bootstrap, seed=seed)
    return {"production": stats.mean_ci(prod, n_boot=settings.bootstrap, seed=seed).to_dict(),
            "candidate": stats.mean_ci(cand, n_boot=settings.bootstrap, seed=seed).to_dict(),
            "difference": diff.to_dict(), "call": stats.significant(diff, null=0.0, floor=floor)}


def _as_shares(decided: Sequence[tuple[bool, bool]]) -> list[tuple[float, float]]:
    """Pass / fail decisions as 1.0 / 0.0, so that their mean is the share passing."""
    return [(float(p), float(c)) for p, c in decided]


def slice_table(rows: Sequence[Row], settings: ReportSettings, floors: dict[str, float], reliability: dict[str, Any],
                decided_by: str | None, *, seed: int = 0) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """Every metric per slice; flags for slices significantly worse, even when the whole is better; and
    how the slices' calls were corrected for their number.

    Each checked slice asks several questions (the decided win rate, each judge's score and share
    passing), and at 95% each, twenty of them would call one slice better or worse by chance alone.
    So the calls the report flags and the gate reads are kept only when they survive the
    Benjamini-Hochberg procedure over all of them at `[report] slice_fdr` (0: each slice tested alone):
    a call that does not is "within noise", with `uncorrected_call` saying what it was."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        for k, v in r.slices.items():
            groups.setdefault(f"{k}={v}", []).append(r)
    out: dict[str, Any] = {}
    deciding: dict[str, str] = {}  # checked slice -> the win rate source its flag reads
    tests: list[tuple[dict[str, Any], dict[str, Any], float]] = []  # (holds the call, its estimate, the null)
    small = settings.model_copy(update={"bootstrap": max(200, settings.bootstrap // 2)})
    for name, rs in sorted(groups.items()):
        wins, _ = win_rates(rs, small, floors, reliability, seed=seed)
        scores = score_table(rs, small, floors, reliability, seed=seed)
        out[name] = {"pairs": len(rs), "checked": len(rs) >= settings.min_pairs, "win_rate": wins, "scores": scores}
        if len(rs) < settings.min_pairs:  # shown, never flagged: too few pairs to tell
            continue
        source = decided_by if decided_by in wins else next(iter(wins), None)
        if source:
            deciding[name] = source
            tests.append((wins[source], wins[source], 0.5))
        for s in scores.values():
            tests += [(s, s["difference"], 0.0)] + ([(s["pass_rate"], s["pass_rate"]["difference"], 0.0)]
                                                   if "pass_rate" in s else [])
    correction = _correct_calls(tests, settings.slice_fdr)
    flags = []
    for name, sl in out.items():
        if not sl["checked"]:
            continue
        source = deciding.get(name)
        if source and sl["win_rate"][source]["call"] == "worse":
            w = sl["win_rate"][source]
            flags.append(f"{name}: worse by {source} win rate {w['value']:.2f} [{w['low']:.2f}, {w['high']:.2f}] "
                         f"on {sl['pairs']} pairs")
        for judge, s in sl["scores"].items():
            if s["call"] == "worse":
                d = s["difference"]
                flags.append(f"{name}: {judge} lower by {-d['value']:.2f} [{d['low']:.2f}, {d['high']:.2f}] "
                             f"on {d['n']} pairs")
    return out, flags, correction


def _correct_calls(tests: Sequence[tuple[dict[str, Any], dict[str, Any], float]], q: float) -> dict[str, Any]:
    """Benjamini-Hochberg over the slices' calls: a "better" or "worse" call stands only when its test
    is among those rejected at false discovery rate q (and its 95% interval made the call, as before);
    one that does not becomes "within noise", keeping `uncorrected_call`. q 0: no correction."""
    summary: dict[str, Any] = {"tests": len(tests), "method": "Benjamini-Hochberg" if q else None,
                               "fdr": q or None, "not_kept": 0}
    if not q or not tests:
        return summary
    p = [stats.p_value(est, null=null) for _, est, null in tests]
    kept = stats.benjamini_hochberg([1.0 if v is None else v for v in p], q=q)
    for (holder, _, _), keep in zip(tests, kept, strict=True):
        if holder["call"] in ("better", "worse") and not keep:
            holder["uncorrected_call"], holder["call"] = holder["call"], "within noise"
            summary["not_kept"] += 1
    return summary


def noise_floors(twin: Sequence[Row], settings: ReportSettings) -> dict[str, float]:
    """How far production disagrees with itself: the smallest difference worth reporting, per source."""
    floors: dict[str, float] = {}
    for source in ("pairwise", "offline"):
        _, xs = _outcomes(twin, source)
        if len(xs) >= 5:
            floors[source] = stats.noise_floor(xs)
    for judge in settings.judges:
        for key, both in ((f"score:{judge}", paired((r.scores for r in twin), judge)),
                          (f"pass:{judge}", _as_shares(paired((r.passes for r in twin), judge)))):
            if len(both) >= 5:
                d = stats.paired_difference([c for _, c in both], [p for p, _ in both], n_boot=300)
                floors[key] = max(abs(d.value or 0.0), ((d.high or 0) - (d.low or 0)) / 2)
    return floors


def judge_reliability(table: Table, settings: ReportSettings) -> dict[str, Any]:
    """Each judge's agreement with people: `reliable` True when its kappa reaches the bar on at least
    `min_graded` graded observations, False when it falls short there, None on fewer (or no kappa):
    not checked yet, which is not the same as failing the check. `ece`: how far its scores, read as
    probabilities, are from how often people said yes (binary judges)."""
    if not table.grades:
        return {}
    report = agreement(table.items, table.grades, with_offline_preference(
        table.items, table.verdicts, judges=settings.judges, margin=settings.preference_margin))
    out = {}
    for j in report.judges:
        m = j.overall
        kappa = m.kappa
        out[j.judge] = {"n": m.n, "kappa": kappa, "accuracy": m.accuracy,
                        "ece": m.ece if isinstance(m, BinaryAgreement) else None,
                        "reliable": None if m.n < settings.min_graded or kappa is None
                        else kappa >= settings.min_kappa}
    return out


def ops(table: Table, candidate: str) -> dict[str, Any]:
    """Latency, time to first token, cost and errors: the candidate against production on the same
    exchanges (those the candidate was sent)."""
    cand = table.outputs.get(candidate, [])
    prod = [table.production_by_exchange[o.exchange_id] for o in cand if o.exchange_id in table.production_by_exchange]
    out = {}
    for name, fn in (("latency_p50_ms", lambda os: _pct([o.latency_ms for o in os if o.status == "ok"], 50)),
                     ("latency_p95_ms", lambda os: _pct([o.latency_ms for o in os if o.status == "ok"], 95)),
                     ("ttft_p50_ms", lambda os: _pct([o.ttft_ms for o in os if o.status == "ok"], 50)),
                     ("cost_mean_usd", lambda os: _mean([o.cost_usd for o in os if o.status == "ok"])),
                     ("error_rate", lambda os: (sum(o.status != "ok" for o in os) / len(os)) if os else None)):
        p, c = fn(prod), fn(cand)
        out[name] = {"production": p, "candidate": c,
                     "delta": None if p is None or c is None else c - p,
                     "ratio": None if not p or c is None else c / p}
    return out


def models_table(table: Table, settings: ReportSettings, *, seed: int = 0) -> dict[str, Any] | None:
    """Bradley-Terry ratings when more than two models are compared (production and 2+ candidates)."""
    names = [n for n in table.rows if n != "production-twin"]
    if len(names) < 2:
        return None
    comparisons = []
    for name in names:
        for r in table.rows[name]:
            o = r.pairwise if r.pairwise is not None else r.offline
            if o is not None:
                comparisons.append((name, "production", o))
    if not comparisons:
        return None
    return {m: e.to_dict() for m, e in stats.bradley_terry(comparisons, anchor="production",
                                                           n_boot=max(200, settings.bootstrap // 2), seed=seed).items()}


def _judge_source(rows: Sequence[Row]) -> Literal["pairwise", "offline"]:
    """The judge that says which answer won: the pairwise LLM judge where it ran, else the offline
    preference."""
    return "pairwise" if any(r.pairwise is not None for r in rows) else "offline"


def _outcome(r: Row, source: str) -> float | None:
    return r.pairwise if source == "pairwise" else r.offline


def _outcomes(rows: Iterable[Row], source: str) -> tuple[list[Row], list[float]]:
    """The rows with an outcome by `source`, and those outcomes, in order."""
    found = [(r, o) for r in rows if (o := _outcome(r, source)) is not None]
    return [r for r, _ in found], [o for _, o in found]


def _score(v: Verdict | None) -> float | None:
    return None if v is None else v.score


def _passes(v: Verdict | None) -> bool | None:
    return None if v is None else v.passes


def _pct(xs: Sequence[float | None], q: float) -> float | None:
    vals = [x for x in xs if x is not None]
    return float(np.percentile(vals, q)) if vals else None


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return float(np.mean(vals)) if vals else None


def judge_bias(rows: Sequence[Row], source: str, *, margin: float, min_n: int = 15, seed: int = 0) -> list[str]:
    """The judge favours the candidate more than people do, on the very pairs people graded: the
    paired difference judge outcome - people's mean outcome has an interval wholly above `margin`.
    A candidate that learned to please the judge, not the users, shows here before any trend does."""
    both = [(o, graded_pair[0]) for r in rows if (graded_pair := r.people()) is not None
            and (o := _outcome(r, source)) is not None]
    if len(both) < max(min_n, 2):
        return []
    judge, people = [j for j, _ in both], [p for _, p in both]
    d = stats.paired_difference(judge, people, n_boot=500, seed=seed)
    if d.low is None or d.low <= margin:
        return []
    return [f"the {source} judge favours the candidate more than people do on the same {len(both)} graded pairs: "
            f"judge win rate {np.mean(judge):.2f}, people {np.mean(people):.2f} (difference {d.value:+.2f} "
            f"[{d.low:+.2f}, {d.high:+.2f}], beyond the {margin:g} allowed): the candidate may please the judge, "
            "not the users"]


def build_report(bundles: Iterable[ExchangeBundle], settings: ReportSettings, *, candidates: Sequence[str] = (),
                 embed: Callable[[Sequence[str]], np.ndarray] | None = None, seed: int = 0,
                 policy: GateSettings | None = None) -> dict[str, Any]:
    """The whole report: each candidate against production (with its drift, reward-gaming alarms and,
    given an embedder, the clusters of its losses), models rated together, noise floors, judge
    reliability, and every alert in one list."""
    from .gate import decide
    from .trends import DriftRules, Period, drift, drift_alerts, failure_clusters, loss_reasons, reward_gaming

    table = collect(bundles, settings)
    names = list(candidates) or sorted(n for n in table.rows if n != "production-twin")
    times = [r.created_at for rs in table.rows.values() for r in rs]
    rules = DriftRules(min_win_rate=settings.alert_min_win_rate or None,
                       max_score_drop=settings.alert_max_score_drop or None,
                       max_pass_drop=settings.alert_max_pass_drop or None)
    floors = noise_floors(table.rows.get("production-twin", []), settings)
    reliability = judge_reliability(table, settings)
    entries, alerts, gaming = [], [], []
    for name in names:
        entry = compare(table, name, settings, floors=floors, reliability=reliability, seed=seed)
        rows = table.rows.get(name, [])
        judge_source = _judge_source(rows)
        source = entry["decided_by"] if entry["decided_by"] in ("pairwise", "offline", "human") else judge_source
        judged = [j for j in settings.judges if any(j in r.scores for r in rows)]
        # [report] drift_period is validated to be day or week
        entry["drift"] = drift(rows, period=cast(Period, settings.drift_period), source=source, judges=judged,
                               n_boot=300, seed=seed) if rows else []
        entry["alerts"] = drift_alerts(name, entry["drift"], rules)
        entry["reward_gaming"] = [f"{name}: {m}" for split in ("time", "model")
                                  for m in reward_gaming(rows, source_judge=judge_source, split=split, seed=seed)]
        entry["reward_gaming"] += [f"{name}: {m}" for m in judge_bias(rows, judge_source, margin=settings.judge_bias_margin,
                                                                       seed=seed)]
        entry["failure_clusters"] = (failure_clusters(rows, embed, source=source,
                                                      reasons=loss_reasons(rows, table.verdicts))
                                     if embed is not None and rows else None)
        entry["decision"] = decide(entry, policy or GateSettings(), min_graded=settings.min_graded)
        alerts += entry["alerts"]
        gaming += entry["reward_gaming"]
        entries.append(entry)
    return {
        "window": {"first": min(times), "last": max(times)} if times else None,
        "candidates": entries,
        "known_candidates": sorted(n for n in table.rows if n != "production-twin"),
        "models": models_table(table, settings, seed=seed),
        "noise_floor": floors,
        "twin_pairs": len(table.rows.get("production-twin", [])),
        "judges": reliability,
        "alerts": alerts,
        "reward_gaming": gaming,
    }
