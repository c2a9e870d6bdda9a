"""The scenario suite's table: over many seeds, how often the gate decided right, and the alarms.

A run of a scenario is one of: passed (right when the scenario should pass), failed for the right
reason (the reason kind the scenario plants: `quality:` or `slice route=billing:`), passed wrongly,
failed wrongly (a scenario that should pass) or for another reason, or undecided (the gate's exit 3).
Targets are the issue's, plus one of our own for the drift alarm.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from scenario_world import SCENARIOS

Runs = Sequence[dict[str, Any]]  # one scenario's results, one per seed


@dataclass(frozen=True, slots=True)
class Target:
    label: str
    rate: Callable[[Runs], float]
    at_least: float | None = None
    at_most: float | None = None

    def met(self, runs: Runs) -> bool:
        r = self.rate(runs)
        return (self.at_least is None or r >= self.at_least) and (self.at_most is None or r <= self.at_most)


def _share(pred: Callable[[dict[str, Any]], bool]) -> Callable[[Runs], float]:
    return lambda runs: sum(map(pred, runs)) / len(runs) if runs else 0.0


passed = _share(lambda r: r["verdict"] == "pass")
wrong_pass = _share(lambda r: r["outcome"] == "wrong pass")
named_billing = _share(lambda r: any(k == "slice route=billing" for k in r["kinds"]))
drift_alarm = _share(lambda r: r["alarms"]["drift"])
gaming_alarm = _share(lambda r: r["alarms"]["reward_gaming"])

TARGETS: dict[str, list[Target]] = {
    "equal-cheaper": [Target("passes (not-worse) >= 80%", passed, at_least=0.8),
                      Target("reward-gaming alarm <= 5%", gaming_alarm, at_most=0.05)],
    "clearly-better": [Target("passes >= 80%", passed, at_least=0.8)],
    "worse": [Target("wrong passes <= 5%", wrong_pass, at_most=0.05)],
    "slice-regression": [Target("wrong passes <= 5%", wrong_pass, at_most=0.05),
                         Target("billing named >= 80%", named_billing, at_least=0.8)],
    "drift": [Target("wrong passes <= 5%", wrong_pass, at_most=0.05),
              Target("drift alarm >= 80% (ours)", drift_alarm, at_least=0.8)],
    "reward-gaming": [Target("wrong passes <= 5%", wrong_pass, at_most=0.05),
                      Target("alarm >= 80%", gaming_alarm, at_least=0.8)],
    "judge-pleaser": [Target("alarm >= 80%", gaming_alarm, at_least=0.8)],
}


def by_scenario(results: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for res in results:
        for name, r in res["scenarios"].items():
            out.setdefault(name, []).append(r)
    return {k: out[k] for k in SCENARIOS if k in out}


def _count(runs: Runs, pred: Callable[[dict[str, Any]], bool]) -> int:
    return sum(1 for r in runs if pred(r))


def _kinds(runs: Runs) -> str:
    """The reason kinds of the given failures, counted: "quality 3, latency 1"."""
    seen: dict[str, int] = {}
    for r in runs:
        for k in r["kinds"]:
            k = re.sub(r"^slice .*", "slice", k) if not k.startswith("slice route=billing") else k
            seen[k] = seen.get(k, 0) + 1
    return ", ".join(f"{k} {n}" for k, n in sorted(seen.items(), key=lambda kv: -kv[1]))


def rows(results: Sequence[dict[str, Any]]) -> list[list[str]]:
    out = []
    for name, runs in by_scenario(results).items():
        s, n = SCENARIOS[name], len(runs)
        should = "pass" if s.expect == "pass" else f"fail ({s.expect.rstrip(':')})"
        right = _count(runs, lambda r: r["outcome"] == "right" and r["verdict"] == "fail")
        wrong_fail = [r for r in runs if r["outcome"] in ("wrong fail", "wrong reason")]
        wrong = [f"passed {_count(runs, lambda r: r['outcome'] == 'wrong pass')}"] if s.expect != "pass" else []
        wrong.append(f"failed {len(wrong_fail)}" + (f" ({_kinds(wrong_fail)})" if wrong_fail else ""))
        undecided = _count(runs, lambda r: r["verdict"] == "undecided")
        if undecided:
            wrong.append(f"undecided {undecided}")
        alarms = (f"drift {_count(runs, lambda r: r['alarms']['drift'])}, gaming "
                  f"{_count(runs, lambda r: r['alarms']['reward_gaming'])} (rising "
                  f"{_count(runs, lambda r: r['alarms'].get('gaming_rise', False))}, judge > people "
                  f"{_count(runs, lambda r: r['alarms'].get('gaming_judge_vs_people', False))})")
        truth = sum(r["truth"] for r in runs) / n
        targets = "; ".join(f"{t.label}: {'met' if t.met(runs) else 'NOT met'} ({t.rate(runs):.0%})"
                            for t in TARGETS.get(name, []))
        out.append([name, f"{truth:.2f}", s.mode, should, str(n), str(_count(runs, lambda r: r["verdict"] == "pass")),
                    str(right) if s.expect != "pass" else "-", ", ".join(wrong), alarms, targets])
    return out


HEADER = ["scenario", "true win rate", "gate mode", "should", "runs", "passed", "failed, right reason",
          "wrong", "alarms fired", "targets"]


def markdown(results: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(results)]
    return "\n".join(lines)


def _median(xs: Sequence[float]) -> float | None:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def details(results: Sequence[dict[str, Any]]) -> str:
    """A line per scenario: the decided estimate over seeds, and what the gate's plan asks for."""
    out = []
    for name, runs in by_scenario(results).items():
        wins = [r["win_rate"] for r in runs if r["win_rate"].get("low") is not None]
        if not wins:
            out.append(f"- {name}: no estimate")
            continue
        values = [w["value"] for w in wins]
        more = _median([r["more_graded"] for r in runs if r.get("more_graded") is not None])
        sources = ", ".join(sorted({r["decided_by"] or "-" for r in runs}))
        out.append(f"- {name}: decided by {sources}; win rate median {_median(values):.3f} (range {min(values):.3f}"
                   f"-{max(values):.3f}), interval half-width median {_median([(w['high'] - w['low']) / 2 for w in wins]):.3f}; "
                   f"pairs queued for grading {min(r['queued'] for r in runs)}-{max(r['queued'] for r in runs)}"
                   + (f"; the gate's plan asks for a median {more:.0f} more graded pairs" if more is not None else ""))
    return "\n".join(out)
