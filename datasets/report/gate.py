"""The switch decision: one rule, chosen by the team in `[gate]`, drives the report's headline and
`shadoweval gate --candidate NAME` alike, and is stated in words wherever a verdict is printed.

Two rules:
- `not-worse` (non-inferiority, the default): the candidate passes when the 95% interval of its win
  rate against production lies above 0.5 - `margin`, i.e. a drop larger than the margin is ruled
  out, and no judged score is significantly below production's by more than `score_margin`. The
  common reason to shadow a candidate is that it is cheaper or faster: one exactly as good as
  production must be able to pass, and under a superiority test it never would.
- `better` (superiority): the interval must lie above 0.5 (and above production's noise floor).

Whatever the rule, a candidate fails when a slice is significantly worse beyond `slice_regression`,
when the win rate rests on a judge below the reliability bar (or never checked against people),
when an alarm says the judges and people disagree about it, or when latency, cost or errors exceed
their limits. A decision without evidence is neither pass nor fail: `cannot_decide` says what is
missing, and `plan` says how many more graded (or judged) pairs would let the rule decide.
"""

from __future__ import annotations

import math
from typing import Any

from shadoweval.core.settings import GateSettings

from . import stats

SOURCES = {"human": "human grades", "ppi": "judge verdicts corrected by human grades (prediction-powered)",
           "pairwise": "the pairwise LLM judge", "offline": "the offline judges' preference"}
POWER = 0.8


def rule_in_words(policy: GateSettings) -> str:
    """The rule as the report and the gate print it."""
    limits = (f"no slice significantly worse by more than {policy.slice_regression:g}, "
              f"p95 latency at most {policy.max_latency_ratio:g}x production's, mean cost at most "
              f"{policy.max_cost_ratio:g}x, errors at most {policy.max_error_rate_increase:.1%} above production's"
              + (", judges checked against people" if policy.require_reliable_judges else "")
              + ", and no judge-versus-people alarm")
    if policy.mode == "better":
        return ("better (superiority): passes if the 95% interval of the win rate against production lies wholly "
                f"above 0.5 (beyond production's noise floor), with {limits}")
    judged = ("no judge's share of answers passing" if policy.score_metric == "share_passing"
              else "no judged score")
    return (f"not-worse (non-inferiority, margin {policy.margin:g}): passes if the 95% interval of the win rate "
            f"against production lies wholly above {0.5 - policy.margin:.3g} (a drop of more than "
            f"{100 * policy.margin:.0f} points is ruled out), {judged} is significantly below production's by "
            f"more than {policy.score_margin:g}, with {limits}")


def _judged(sc: dict[str, Any], policy: GateSettings) -> tuple[str, dict[str, Any] | None]:
    """What the gate reads of one judge's entry in a score table: its mean score, or its share passing."""
    if policy.score_metric == "share_passing":
        return "share passing", sc.get("pass_rate")
    return "score", sc


def decide(entry: dict[str, Any], policy: GateSettings, *, min_graded: int = 30) -> dict[str, Any]:
    """The decision on one candidate of the report (an entry of its `candidates`).

    Returns {mode, rule, pass, cannot_decide, reasons, estimate, plan}: `pass` is None when the
    evidence cannot decide (no pairs, no win rate, nothing graded while the rule needs people);
    `reasons` say why it failed, each starting with its kind ("quality:", "score <judge>:",
    "slice <name>:", "judges:", "alarm:", "latency:", "cost:", "errors:")."""
    source = entry.get("decided_by") or ""  # "": no source, and so no win rate below
    win = (entry.get("win_rate") or {}).get(source) if source else None
    out: dict[str, Any] = {"mode": policy.mode, "rule": rule_in_words(policy), "pass": None, "cannot_decide": None,
                           "reasons": [], "estimate": None, "plan": None}
    if not entry.get("pairs"):
        out["cannot_decide"] = (f"no pairs: {entry.get('candidate')!r} answered none of the stored exchanges "
                                "production answered (is the name right, and has traffic been mirrored to it?)")
        return out
    if win is None or win.get("value") is None or win.get("low") is None:
        out["cannot_decide"] = ("no win rate: nothing compared this candidate with production yet "
                                "(run `shadoweval judge run`, or queue and grade pairs)")
        return out
    out["estimate"] = {"source": source, "described": SOURCES.get(source, source),
                       **{k: win.get(k) for k in ("value", "low", "high", "n", "level")}}
    graded = (entry.get("win_rate") or {}).get("human", {}).get("n", 0)
    unchecked = (policy.require_reliable_judges and source in ("pairwise", "offline")
                 and win.get("reliable") is not True)
    reasons = out["reasons"]
    reasons += _quality(entry, win, source, policy)
    if unchecked:
        if win.get("reliable") is None and not graded:
            out["cannot_decide"] = (f"no graded pairs: the decision would rest on {SOURCES.get(source, source)}, "
                                    "which nobody has checked against people")
        else:
            reasons.append(f"judges: the decision rests on {SOURCES.get(source, source)}, which is "
                           + ("below the reliability bar" if win.get("reliable") is False else
                              "not yet checked against enough human grades")
                           + " (grade pairs, then see `shadoweval agreement`)")
    reasons += _scores(entry, policy)
    reasons += _slices(entry, source, policy)
    reasons += [f"alarm: {m}" for m in entry.get("reward_gaming") or []]
    reasons += _ops(entry.get("ops") or {}, policy)
    out["plan"] = plan(entry, policy, min_graded=min_graded)
    if out["cannot_decide"] and not any(not r.startswith("quality:") for r in reasons):
        return out  # nothing but missing evidence: say so rather than fail
    out["cannot_decide"] = None
    out["pass"] = not reasons
    return out


def reasons_to_fail(report: dict[str, Any], policy: GateSettings) -> list[str]:
    """Why the candidate of `report` must not be switched to (empty: it may), by `decide`'s rule;
    missing evidence is a reason too."""
    d = decide(report, policy)
    return d["reasons"] or ([d["cannot_decide"]] if d["cannot_decide"] else [])


def _quality(entry: dict[str, Any], win: dict[str, Any], source: str, policy: GateSettings) -> list[str]:
    shown = f"the {source} win rate is {win['value']:.3f} [{win['low']:.3f}, {win['high']:.3f}] on {win['n']}"
    if policy.mode == "better":
        if win.get("call") != "better":
            return [f"quality: {shown}; it is not shown better than production (the interval must lie wholly "
                    "above 0.5 and production's noise floor)"]
        return []
    floor = 0.5 - policy.margin
    if win["low"] <= floor:
        return [f"quality: {shown}; a drop of more than {100 * policy.margin:.0f} points is not ruled out "
                f"(the interval must lie wholly above {floor:.3f})"]
    return []


def _scores(entry: dict[str, Any], policy: GateSettings) -> list[str]:
    out = []
    for judge, entry_sc in (entry.get("scores") or {}).items():
        what, sc = _judged(entry_sc, policy)
        d = (sc or {}).get("difference") or {}
        if sc and d.get("high") is not None and sc.get("call") == "worse" and d["high"] < -policy.score_margin:
            out.append(f"score {judge}: {what} {d['value']:+.3f} [{d['low']:.3f}, {d['high']:.3f}] against production "
                       f"on {d['n']} pairs, significantly lower by more than {policy.score_margin:g}")
    return out


def _slices(entry: dict[str, Any], source: str | None, policy: GateSettings) -> list[str]:
    out = []
    for name, s in (entry.get("slices") or {}).items():
        if not s.get("checked"):  # fewer than [report] min_pairs: the report does not flag it either
            continue
        sw = s["win_rate"].get(source) if source else None
        if sw and sw["call"] == "worse" and sw["value"] < 0.5 - policy.slice_regression:
            out.append(f"slice {name}: {source} win rate {sw['value']:.3f} [{sw['low']:.3f}, {sw['high']:.3f}] "
                       f"on {s['pairs']} pairs")
        for judge, entry_sc in s["scores"].items():
            what, sc = _judged(entry_sc, policy)
            if not sc:
                continue
            d = sc["difference"]
            if sc["call"] == "worse" and d["value"] < -policy.slice_regression:
                out.append(f"slice {name}: {judge} {what} drops by {-d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]")
    return out


def _ops(ops: dict[str, Any], policy: GateSettings) -> list[str]:
    out = []
    lat = ops.get("latency_p95_ms", {})
    if lat.get("ratio") is not None and lat["ratio"] > policy.max_latency_ratio:
        out.append(f"latency: p95 {lat['candidate']:.0f} ms is {lat['ratio']:.2f}x production's "
                   f"{lat['production']:.0f} ms (limit {policy.max_latency_ratio:g}x)")
    cost = ops.get("cost_mean_usd", {})
    if cost.get("ratio") is not None and cost["ratio"] > policy.max_cost_ratio:
        out.append(f"cost: ${cost['candidate']:.6f} per answer is {cost['ratio']:.2f}x production's "
                   f"(limit {policy.max_cost_ratio:g}x)")
    err = ops.get("error_rate", {})
    if err.get("delta") is not None and err["delta"] > policy.max_error_rate_increase:
        out.append(f"errors: {err['candidate']:.1%} of requests failed against production's {err['production']:.1%} "
                   f"(limit +{policy.max_error_rate_increase:.1%})")
    return out


# ---- evidence planning ---------------------------------------------------------------------------

def effect_size(policy: GateSettings) -> float:
    """The difference the rule must be able to tell from none: the margin under not-worse, a 5-point
    gain under better (or the margin, when one is set)."""
    return policy.margin if policy.mode == "not-worse" and policy.margin > 0 else max(policy.margin, 0.05)


def plan(entry: dict[str, Any], policy: GateSettings, *, min_graded: int = 30) -> dict[str, Any] | None:
    """How many more graded pairs (or judged pairs) would let the rule tell a difference of
    `effect_size` from none at 95% with 80% power, from the spread observed so far.

    Returns {more_graded, more_judged, more_traffic, graded, judged, delta, text} or None when nothing
    was measured yet; `more_traffic`: how many of the pairs to grade do not exist yet (every pair
    there is, or every judged one for the prediction-powered estimate, would be graded first). The
    per-pair spread is the decided estimate's (human grades: their graded pairs' outcomes;
    prediction-powered: the judge's error against people, plus the judge's own spread over the judged
    pairs); with too few outcomes to measure it, the widest spread a tie-free outcome has (0.5)."""
    wins = entry.get("win_rate") or {}
    delta = effect_size(policy)
    size = f"{100 * delta:.0f}-point {'drop' if policy.mode == 'not-worse' else 'gain'}"
    human = wins.get("human")
    # the prediction-powered plan only when that estimate decides: people's own may, when every judged pair is graded
    ppi = wins.get("ppi") if entry.get("decided_by") == "ppi" else None
    judge = wins.get("pairwise") or wins.get("offline")
    graded = (human or {}).get("n", 0)
    judged = (judge or {}).get("n", 0)
    out: dict[str, Any] = {"graded": graded, "judged": judged, "delta": delta, "more_graded": None,
                           "more_judged": None, "more_traffic": None, "text": None}
    need_people = policy.require_reliable_judges and judge is not None and judge.get("reliable") is not True
    tail = f" to tell a {size} from no change at 95% (80% power), from the spread seen so far"
    if ppi and ppi.get("var_residual") is not None and ppi.get("var_judge") is not None:
        n = stats.ppi_labels_needed(ppi["var_residual"], ppi["var_judge"], ppi["judged"], delta)
        if n is None:  # the judged pairs alone are too few for that precision: more of both
            out["more_judged"] = max(0, (stats.units_needed(math.sqrt(ppi["var_judge"]), delta) or 0) - judged)
            n = stats.units_needed(math.sqrt(ppi["var_residual"] + ppi["var_judge"]), delta) or 0
        out["more_graded"] = max(0, n - graded)
    elif human and graded >= 2 and human.get("sd") is not None:
        out["more_graded"] = max(0, (stats.units_needed(max(human["sd"], 0.1), delta) or 0) - graded)
    elif judge and not need_people:
        sd = judge["sd"] if judge.get("sd") is not None and judged >= 2 else 0.5
        out["more_judged"] = max(0, (stats.units_needed(max(sd, 0.1), delta) or 0) - judged)
    elif judge:  # an unchecked judge: people first, then the prediction-powered estimate can be planned
        out["more_graded"] = max(0, min_graded - graded)
        tail = (" to check the judge against people; the report then says how many more the rule needs"
                if out["more_graded"] else tail)
    else:  # nothing judged, nothing graded: labels alone at the widest spread
        out["more_graded"] = max(0, (stats.units_needed(0.5, delta) or 0) - graded)
    if need_people and graded < min_graded:
        out["more_graded"] = max(out["more_graded"] or 0, min_graded - graded)
    # pairs there are left to grade: the judged ones for the prediction-powered estimate, else any pair
    room = max(0, (judged if ppi else entry.get("pairs") or judged) - graded)
    if out["more_graded"] and out["more_graded"] > room:
        out["more_traffic"] = out["more_graded"] - room
    parts = [f"grade about {out['more_graded']} more pairs"] if out["more_graded"] else []
    if out["more_traffic"]:
        parts[0] += (", from traffic yet to come (every pair so far is graded)" if not room else
                     f" (about {out['more_traffic']} of them from traffic yet to come)")
    parts += [f"judge about {out['more_judged']} more pairs"] if out["more_judged"] else []
    counts = f" ({graded} graded, {judged} judged)"
    out["text"] = (" and ".join(parts) + tail + counts if parts else
                   f"the pairs so far suffice to tell a {size} from no change at 95% (80% power){counts}")
    return out
