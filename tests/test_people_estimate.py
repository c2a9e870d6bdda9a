"""People's win rate when some pairs are graded more than once (the queue's doubled pairs, an imported
file with several annotators' votes): the graded pair, not the grade, is the unit it samples."""

from __future__ import annotations

import numpy as np
import pytest

from shadoweval.core.settings import GateSettings, ReportSettings
from shadoweval.core.types import Output
from shadoweval.datasets.report.build import Row, win_rates
from shadoweval.datasets.report.gate import plan
from shadoweval.datasets.report.text import format_report
from shadoweval.datasets.report.trends import drift, reward_gaming

OUTCOMES = np.array([0.0, 0.5, 1.0])


def _row(i: int, grades: tuple[float, ...], *, judge: float | None = None, weight: float = 1.0,
         t: float | None = None, route: str = "billing") -> Row:
    o = Output(id=f"o{i}", exchange_id=f"e{i}", role="candidate", name="cand", model="m", status="ok",
               started_at=0.0, text="a")
    p = Output(id=f"p{i}", exchange_id=f"e{i}", role="production", name="production", model="m", status="ok",
               started_at=0.0, text="b")
    return Row(f"e{i}", float(i if t is None else t), "q", {"route": route}, p, o, {}, judge, None,
               tuple((g, weight) for g in grades))


def test_a_pair_graded_three_times_counts_once():
    rows = [_row(0, (1.0, 1.0, 1.0)), _row(1, (0.0,)), _row(2, (1.0, 0.0)), _row(3, ())]
    wins, source = win_rates(rows, ReportSettings(bootstrap=200, min_graded=1), {}, {})
    human = wins["human"]
    # per pair: 1, 0 and 0.5 -> 0.5 (per grade it was 4 wins of 6, 0.67)
    assert source == "human" and human["value"] == pytest.approx(0.5)
    assert human["n"] == 3 and human["grades"] == 6
    assert (human["wins"], human["ties"], human["losses"]) == (4, 0, 2)  # the grades themselves
    assert human["sd"] == pytest.approx(0.5)  # of the pairs' outcomes, for evidence planning
    # the plan counts graded pairs, the unit the interval samples
    entry = {"candidate": "cand", "pairs": 4, "win_rate": wins, "decided_by": source}
    assert plan(entry, GateSettings())["graded"] == 3


def test_weights_are_per_pair():
    # a pair sampled with probability 0.1 stands for ten pairs, however many people graded it
    rows = [_row(0, (1.0, 1.0), weight=10.0), _row(1, (0.0,), weight=1.0)]
    wins, _ = win_rates(rows, ReportSettings(bootstrap=200, min_graded=1), {}, {})
    assert wins["human"]["value"] == pytest.approx(10 / 11)


def test_the_stated_interval_matches_the_spread_when_every_pair_has_three_grades():
    """Three graders per pair: counting grades as independent made the interval about 30% too narrow
    (it covered 84% for a stated 95%: scripts/check_ppi_coverage.py)."""
    rng = np.random.default_rng(3)
    settings = ReportSettings(bootstrap=300, min_graded=1)
    values, halves = [], []
    for _ in range(300):
        truth = rng.choice(OUTCOMES, size=80, p=[0.4, 0.2, 0.4])
        rows = []
        for i, t in enumerate(truth):
            shift = rng.integers(1, 3, 3)
            other = OUTCOMES[(np.searchsorted(OUTCOMES, t) + shift) % 3]
            grades = np.where(rng.random(3) < 0.8, t, other)
            rows.append(_row(i, tuple(float(g) for g in grades)))
        h = win_rates(rows, settings, {}, {})[0]["human"]
        values.append(h["value"])
        halves.append((h["high"] - h["low"]) / 2 / 1.959964)
    assert np.mean(halves) == pytest.approx(np.std(values), rel=0.12)


def test_drift_and_the_rising_alarm_read_pairs_graded_twice():
    # every pair graded twice, the graders split on half of them: 0.5 per split pair, no crash on it
    rows = [_row(i, (1.0, 0.0) if i % 2 else (1.0, 1.0), judge=1.0, t=i * 3600.0) for i in range(40)]
    (period,) = drift(rows, period="week", source="human")
    assert period["win_rate"]["n"] == 40 and period["win_rate"]["value"] == pytest.approx(0.75)
    assert reward_gaming(rows, source_judge="pairwise") == []  # the judge did not rise: nothing to say


def test_the_text_report_says_how_many_grades_lie_behind_the_graded_pairs():
    rows = [_row(i, (1.0, 0.0, 1.0)) for i in range(5)]
    wins, source = win_rates(rows, ReportSettings(bootstrap=200, min_graded=1), {}, {})
    entry = {"candidate": "cand", "pairs": 5, "win_rate": wins, "decided_by": source, "call": wins[source]["call"],
             "scores": {}, "ops": {}, "flags": [], "slices": {}}
    text = format_report({"candidates": [entry], "alerts": []})
    assert "n=5 (15 grades)" in text


def test_people_decide_when_every_judged_pair_is_graded():
    """Labeled data imported whole: every judged pair is graded, so the judge's mean over them adds
    nothing, and people's own estimate also reads the graded pairs no judge decided on."""
    settings = ReportSettings(bootstrap=200, min_graded=5)
    rng = np.random.default_rng(4)
    whole = [_row(i, (float(rng.random() < 0.5),), judge=float(rng.random() < 0.5) if i % 5 else None)
             for i in range(60)]
    wins, source = win_rates(whole, settings, {}, {})
    assert source == "human" and wins["ppi"]["judged"] == wins["ppi"]["labeled"] == 48 and wins["human"]["n"] == 60
    entry = {"candidate": "cand", "pairs": 60, "win_rate": wins, "decided_by": source}
    p = plan(entry, GateSettings())
    # people's spread decides how many more, and none of them exist yet
    assert p["graded"] == 60 and p["more_graded"] > 200 and p["more_traffic"] == p["more_graded"]
    assert "from traffic yet to come (every pair so far is graded)" in p["text"]
    # a sample graded out of more judged traffic: the judge covers pairs people did not grade
    sampled = whole + [_row(100 + i, (), judge=float(rng.random() < 0.5)) for i in range(100)]
    wins, source = win_rates(sampled, settings, {}, {})
    assert source == "ppi" and wins["ppi"]["judged"] == 148
    entry = {"candidate": "cand", "pairs": 160, "win_rate": wins, "decided_by": source}
    p = plan(entry, GateSettings())
    assert p["more_traffic"] == p["more_graded"] - (148 - 60)
    assert f"(about {p['more_traffic']} of them from traffic yet to come)" in p["text"]
