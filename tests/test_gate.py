"""The switch decision: each rule on constructed report entries, at its boundary; evidence planning
against a simulation; the judge-versus-people alarm; the gate's exit codes on bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from shadoweval.core.settings import GateSettings
from shadoweval.core.store import Store
from shadoweval.core.types import Output
from shadoweval.datasets.report import stats
from shadoweval.datasets.report.build import Row, judge_bias
from shadoweval.datasets.report.gate import decide, plan, rule_in_words

BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "shadoweval"


def _win(value: float, low: float, high: float, n: int = 200, *, call: str = "within noise",
         reliable: bool | None = True, sd: float = 0.4) -> dict:
    return {"value": value, "low": low, "high": high, "n": n, "level": 0.95, "call": call, "reliable": reliable,
            "wins": 0, "ties": 0, "losses": 0, "sd": sd}


def _entry(win: dict, *, source: str = "human", scores: dict | None = None, slices: dict | None = None,
           ops: dict | None = None, gaming: list[str] | None = None) -> dict:
    return {"candidate": "cand", "pairs": win["n"], "decided_by": source, "win_rate": {source: win},
            "scores": scores or {}, "slices": slices or {}, "ops": ops or {}, "reward_gaming": gaming or []}


NOT_WORSE = GateSettings(mode="not-worse", margin=0.05)
BETTER = GateSettings(mode="better")


def test_not_worse_passes_an_equal_candidate_just_inside_the_margin_and_fails_just_outside():
    inside = decide(_entry(_win(0.50, 0.451, 0.549)), NOT_WORSE)
    assert inside["pass"] is True and inside["reasons"] == []
    on_edge = decide(_entry(_win(0.50, 0.450, 0.550)), NOT_WORSE)  # the interval must lie wholly above
    assert on_edge["pass"] is False and on_edge["reasons"][0].startswith("quality:")
    assert "a drop of more than 5 points is not ruled out" in on_edge["reasons"][0]
    # the same equal candidate never passes a superiority test
    assert decide(_entry(_win(0.50, 0.451, 0.549)), BETTER)["pass"] is False


def test_better_needs_the_interval_wholly_above_a_half():
    assert decide(_entry(_win(0.58, 0.51, 0.65, call="better")), BETTER)["pass"] is True
    touching = decide(_entry(_win(0.57, 0.50, 0.64, call="within noise")), BETTER)
    assert touching["pass"] is False and "not shown better" in touching["reasons"][0]


def test_the_rule_is_stated_in_words():
    assert rule_in_words(NOT_WORSE).startswith("not-worse (non-inferiority, margin 0.05): passes if the 95% interval")
    assert "above 0.45" in rule_in_words(NOT_WORSE)
    assert rule_in_words(BETTER).startswith("better (superiority): passes if")


def test_a_judged_score_significantly_lower_by_more_than_the_margin_fails_not_worse():
    def score(low: float, high: float) -> dict:
        return {"grounded": {"difference": {"value": (low + high) / 2, "low": low, "high": high, "n": 300},
                             "call": "worse" if high < 0 else "within noise"}}

    ok = decide(_entry(_win(0.52, 0.47, 0.57), scores=score(-0.09, -0.049)), NOT_WORSE)
    assert ok["pass"] is True  # significantly lower, but not by more than 0.05
    bad = decide(_entry(_win(0.52, 0.47, 0.57), scores=score(-0.12, -0.051)), NOT_WORSE)
    assert bad["pass"] is False and bad["reasons"] == [bad["reasons"][0]]
    assert bad["reasons"][0].startswith("score grounded:")


def test_the_gate_can_read_each_judge_s_share_passing_instead_of_its_mean():
    """A candidate whose mean score drops (its probabilities run lower) while as many of its answers pass, and
    one whose mean holds while fewer pass: `score_metric` says which of the two the gate reads."""
    def est(low: float, high: float, call: str) -> dict:
        return {"difference": {"value": (low + high) / 2, "low": low, "high": high, "n": 300}, "call": call}

    lower_mean = {"grounded": {**est(-0.12, -0.06, "worse"), "pass_rate": est(-0.04, 0.04, "within noise")}}
    fewer_pass = {"grounded": {**est(-0.03, 0.03, "within noise"), "pass_rate": est(-0.15, -0.07, "worse")}}
    by_share = GateSettings(mode="not-worse", margin=0.05, score_metric="share_passing")
    win = _win(0.52, 0.47, 0.57)
    assert decide(_entry(win, scores=lower_mean), NOT_WORSE)["reasons"][0].startswith("score grounded: score -0.090")
    assert decide(_entry(win, scores=lower_mean), by_share)["pass"] is True
    assert decide(_entry(win, scores=fewer_pass), NOT_WORSE)["pass"] is True
    failed = decide(_entry(win, scores=fewer_pass), by_share)
    assert failed["reasons"] == ["score grounded: share passing -0.110 [-0.150, -0.070] against production on 300 "
                                 "pairs, significantly lower by more than 0.05"]
    assert "no judge's share of answers passing is significantly below" in failed["rule"]
    # per slice too; a judge without a share passing (no threshold) is not read by it
    slices = {"route=billing": {"checked": True, "pairs": 60, "win_rate": {"human": _win(0.5, 0.4, 0.6, 60)},
                                "scores": {"grounded": {**est(-0.02, 0.02, "within noise"),
                                                        "pass_rate": est(-0.3, -0.15, "worse")},
                                           "intent": est(-0.5, -0.3, "worse")}}}
    assert decide(_entry(win, slices=slices), by_share)["reasons"] == [
        "slice route=billing: grounded share passing drops by 0.225 [-0.300, -0.150]"]
    assert decide(_entry(win, slices=slices), NOT_WORSE)["reasons"] == [
        "slice route=billing: intent score drops by 0.400 [-0.500, -0.300]"]
    with pytest.raises(ValueError, match="score_metric"):
        GateSettings(score_metric="median")


def test_slices_alarms_and_operations_fail_any_rule():
    slices = {"route=billing": {"checked": True, "pairs": 60, "scores": {},
                                "win_rate": {"human": _win(0.3, 0.2, 0.4, 60, call="worse")}}}
    d = decide(_entry(_win(0.55, 0.50, 0.60), slices=slices), NOT_WORSE)
    assert d["pass"] is False and d["reasons"][0].startswith("slice route=billing:")
    d = decide(_entry(_win(0.55, 0.50, 0.60), gaming=["cand: the pairwise judge favours..."]), NOT_WORSE)
    assert d["reasons"] == ["alarm: cand: the pairwise judge favours..."]
    ops = {"cost_mean_usd": {"production": 0.01, "candidate": 0.03, "ratio": 3.0, "delta": 0.02}}
    d = decide(_entry(_win(0.55, 0.50, 0.60), ops=ops), NOT_WORSE)
    assert d["pass"] is False and d["reasons"][0].startswith("cost:")


def test_missing_evidence_is_neither_pass_nor_fail():
    none = decide({"candidate": "x", "pairs": 0, "win_rate": {}, "decided_by": None}, NOT_WORSE)
    assert none["pass"] is None and "no pairs" in none["cannot_decide"]
    judge_only = _entry(_win(0.6, 0.55, 0.65, reliable=None), source="pairwise")
    d = decide(judge_only, NOT_WORSE)
    assert d["pass"] is None and "no graded pairs" in d["cannot_decide"]
    assert d["plan"]["more_graded"] == 30 and "check the judge against people" in d["plan"]["text"]
    # without the reliability requirement, the judge alone decides
    assert decide(judge_only, GateSettings(require_reliable_judges=False))["pass"] is True
    # a judge people disagree with fails, it does not wait
    d = decide(_entry(_win(0.6, 0.55, 0.65, reliable=False), source="pairwise"), NOT_WORSE)
    assert d["pass"] is False and d["reasons"][0].startswith("judges:")


def test_evidence_plan_matches_a_simulation_of_the_rule():
    """The plan says how many graded pairs tell a 5-point drop from no change with 80% power. Grading
    that many, a candidate with no change passes not-worse about 80% of the time, and one truly 5
    points worse passes at most about 2.5% of the time (the lower end of a 95% interval)."""
    rng = np.random.default_rng(0)

    def grades(mean: float, n: int) -> np.ndarray:  # 30% ties; wins make up the rest of the mean
        p_win = (mean - 0.15) / 0.7
        return rng.choice([1.0, 0.5, 0.0], size=n, p=[p_win * 0.7, 0.3, (1 - p_win) * 0.7])

    pilot = grades(0.5, 60)
    p = plan(_entry(_win(float(pilot.mean()), 0.3, 0.7, 60, sd=float(pilot.std(ddof=1)))), NOT_WORSE)
    assert p["more_graded"] > 0
    # the pilot is every pair there is: the rest must come from traffic yet to come
    assert (f"grade about {p['more_graded']} more pairs, from traffic yet to come (every pair so far is graded) "
            "to tell a 5-point drop from no change") in p["text"]
    need = 60 + p["more_graded"]
    passed = {0.5: 0, 0.45: 0}
    for k in range(200):
        for truth in passed:
            est = stats.win_rate(grades(truth, need), n_boot=300, seed=k)
            passed[truth] += bool(decide(_entry(_win(est.value, est.low, est.high, need)), NOT_WORSE)["pass"])
    assert 0.68 <= passed[0.5] / 200 <= 0.92, (need, passed)  # 80% power, give or take the pilot's spread
    assert passed[0.45] / 200 <= 0.06, (need, passed)


def test_ppi_plan_counts_labels_with_the_judge_on_every_pair():
    # a judge that tracks people closely: few labels are needed once many pairs are judged
    n = stats.ppi_labels_needed(var_residual=0.02, var_judge=0.2, judged=5000, delta=0.05)
    assert n == pytest.approx(0.02 / ((0.05 / 2.8016) ** 2 - 0.2 / 5000), rel=0.02)
    assert stats.ppi_labels_needed(0.02, 0.2, judged=100, delta=0.05) is None  # judge more pairs first
    assert stats.units_needed(0.5, 0.05) == 785


def _row(i: int, judge: float, human: float) -> Row:
    o = Output(id=f"o{i}", exchange_id=f"e{i}", role="candidate", name="cand", model="m", status="ok",
               started_at=0.0, text="a")
    p = Output(id=f"p{i}", exchange_id=f"e{i}", role="production", name="production", model="m", status="ok",
               started_at=0.0, text="b")
    return Row(f"e{i}", float(i), "q", {}, p, o, {}, judge, None, ((human, 1.0),))


def test_judge_bias_alarm_fires_when_the_judge_likes_what_people_do_not():
    rng = np.random.default_rng(1)
    gamed = [_row(i, float(rng.random() < 0.8), float(rng.random() < 0.35)) for i in range(120)]
    (alarm,) = judge_bias(gamed, "pairwise", margin=0.1)
    assert "favours the candidate more than people do on the same 120 graded pairs" in alarm
    fair = [_row(i, float(t if rng.random() < 0.85 else 1 - t), float(t if rng.random() < 0.8 else 1 - t))
            for i in range(200) for t in [float(rng.random() < 0.5)]]
    assert judge_bias(fair, "pairwise", margin=0.1) == []
    assert judge_bias(gamed[:10], "pairwise", margin=0.1) == []  # too few graded pairs to say


def test_gate_answers_bad_input_with_a_message_and_exit_code_3(tmp_path):
    missing = subprocess.run([BIN, "gate", "--candidate", "nobody", "--db", str(tmp_path / "none.db")],
                             capture_output=True, text=True)
    assert missing.returncode == 3 and "CANNOT DECIDE" in missing.stdout and "Traceback" not in missing.stderr
    assert not (tmp_path / "none.db").exists()  # asking never creates a store
    empty = tmp_path / "empty.db"
    store = Store(empty)
    store.start()
    store.stop()
    assert empty.exists()
    out = subprocess.run([BIN, "gate", "--candidate", "nobody", "--db", str(empty), "--json"],
                         capture_output=True, text=True)
    body = json.loads(out.stdout)
    assert out.returncode == 3 and body["pass"] is None and "no pairs" in body["cannot_decide"]
    # an invalid policy is a usage error (2), never "the candidate fails" (1)
    for text in ('[gate]\nscore_metric = "median"\n', '[gate]\nmode = "bogus"\n', "[gate\n"):
        bad = tmp_path / "policy.toml"
        bad.write_text(text)
        out = subprocess.run([BIN, "gate", "--candidate", "nobody", "--db", str(empty), "--policy", str(bad)],
                             capture_output=True, text=True)
        assert out.returncode == 2 and "policy.toml" in out.stderr and "Traceback" not in out.stderr, text
