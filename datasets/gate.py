"""The switch decision for CI pipelines: `shadoweval gate --candidate NAME` fails, and says why,
unless the candidate is safe to switch to.

It fails when the quality interval does not exclude a regression, when a slice regresses beyond the
threshold, when the win rate rests on a judge below the reliability bar (or never checked against
people), or when latency, cost or errors exceed their limits. Missing evidence fails too: a gate
that passes for lack of data would wave anything through.
"""

from __future__ import annotations

from typing import Any

from shadoweval.proxy.settings import GateSettings


def reasons_to_fail(report: dict[str, Any], policy: GateSettings) -> list[str]:
    """Why the candidate of `report` (one entry of the report's candidates) must not be switched to."""
    out: list[str] = []
    source = report.get("decided_by")
    win = report.get("win_rate", {}).get(source) if source else None
    if win is None or win.get("value") is None:
        return ["no win rate: nothing compared this candidate with production (judge the pairs or grade them)"]
    floor = 0.5 - policy.regression_margin
    if win["low"] < floor:
        out.append(f"quality: the {source} win rate is {win['value']:.3f} [{win['low']:.3f}, {win['high']:.3f}] "
                   f"on {win['n']}; its interval does not exclude a regression (it must lie above {floor:.3f})")
    if policy.require_reliable_judges and source in ("pairwise", "offline") and win.get("reliable") is not True:
        state = "below the reliability bar" if win.get("reliable") is False else "not checked against human grades"
        out.append(f"judges: the decision rests on the {source} judge, which is {state} "
                   "(grade pairs, then see `shadoweval agreement`)")
    for name, s in report.get("slices", {}).items():
        if not s.get("checked"):  # fewer than [report] min_pairs: the report does not flag it either
            continue
        sw = s["win_rate"].get(source) if source else None
        if sw and sw["call"] == "worse" and sw["value"] < 0.5 - policy.slice_regression:
            out.append(f"slice {name}: {source} win rate {sw['value']:.3f} [{sw['low']:.3f}, {sw['high']:.3f}] "
                       f"on {s['pairs']} pairs")
        for judge, sc in s["scores"].items():
            d = sc["difference"]
            if sc["call"] == "worse" and d["value"] < -policy.slice_regression:
                out.append(f"slice {name}: {judge} drops by {-d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]")
    ops = report.get("ops", {})
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
