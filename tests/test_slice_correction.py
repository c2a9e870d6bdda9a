"""Slices' calls corrected for their number: with no real difference anywhere, a report with many
slices no longer calls one better or worse by chance in most runs, and a real one-slice regression
is still flagged."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student

from shadoweval.core.settings import ReportSettings
from shadoweval.datasets.report import stats
from shadoweval.datasets.report.build import slice_table
from shadoweval.datasets.report.text import format_report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from check_slice_calls import calls as _calls  # noqa: E402  the script's synthetic pairs, the figures in the docs
from check_slice_calls import rows as _rows  # noqa: E402


def test_benjamini_hochberg_by_hand():
    # the textbook example: thresholds k * 0.05 / 8; p_(2) = 0.008 <= 0.0125 is the last under its line
    p = [0.041, 0.001, 0.205, 0.008, 0.039, 0.06, 0.042, 0.074]
    assert stats.benjamini_hochberg(p, q=0.05) == [False, True, False, True, False, False, False, False]
    # step-up: a p-value above its own line is kept when a later one is under its line
    assert stats.benjamini_hochberg([0.03, 0.04], q=0.05) == [True, True]
    assert stats.benjamini_hochberg([0.01, 0.04, 0.03, 0.2], q=0.05) == [True, False, False, False]
    assert stats.benjamini_hochberg([], q=0.05) == []
    with pytest.raises(ValueError, match="q must be strictly between 0 and 1"):
        stats.benjamini_hochberg([0.5], q=0)


def test_p_value_reads_the_interval_as_a_normal_one_with_a_t_tail():
    z = stats.z_for(0.975)
    e = stats.Estimate(0.4, 0.4 - 0.05 * z, 0.4 + 0.05 * z, 100)  # standard error 0.05: 2 of them from 0.5
    assert stats.p_value(e, null=0.5) == pytest.approx(2 * student.sf(2.0, df=99))
    assert 0.045 < stats.p_value(e, null=0.5) < 0.05  # near the normal's 0.0455, a little heavier
    small = stats.Estimate(0.4, 0.4 - 0.05 * z, 0.4 + 0.05 * z, 5)
    assert stats.p_value(small, null=0.5) == pytest.approx(2 * student.sf(2.0, df=4))  # about 0.116
    assert stats.p_value(e.to_dict(), null=0.4) == pytest.approx(1.0)
    assert stats.p_value(stats.Estimate(1.0, 1.0, 1.0, 30), null=0.5) == 0.0  # every outcome a win
    assert stats.p_value(stats.Estimate(None, None, None, 0), null=0.5) is None


def test_an_honest_candidate_is_rarely_called_different_on_any_of_ten_slices():
    rng = np.random.default_rng(7)
    settings = ReportSettings(bootstrap=200)
    any_call = {0.05: 0, 0.0: 0}
    runs = 60
    for _ in range(runs):
        rows = _rows(rng, 10, 40)
        for q in any_call:
            out, flags, tests = slice_table(rows, settings.model_copy(update={"slice_fdr": q}), {}, {}, "pairwise")
            assert tests["tests"] == 30  # per slice: the win rate, grounded's score and its share passing
            any_call[q] += any(c != "within noise" for c in _calls(out))
    # thirty calls at 95% each: most honest reports called something; corrected, about one in twenty
    assert any_call[0.0] / runs > 0.5
    assert any_call[0.05] / runs <= 0.12


def test_a_real_regression_in_one_slice_is_still_flagged_and_the_report_says_it_was_corrected():
    rng = np.random.default_rng(8)
    rows = _rows(rng, 8, 60, bad=0.2)  # planted in slice r00
    out, flags, tests = slice_table(rows, ReportSettings(bootstrap=300), {}, {}, "pairwise")
    assert [f.split(":")[0] for f in flags] == ["route=r00"]
    assert tests == {"tests": 24, "method": "Benjamini-Hochberg", "fdr": 0.05, "not_kept": tests["not_kept"]}
    entry = {"candidate": "cand", "pairs": len(rows), "call": "within noise", "decided_by": "pairwise",
             "win_rate": {}, "scores": {}, "ops": {}, "flags": flags, "slices": out, "slice_tests": tests}
    text = format_report({"candidates": [entry], "alerts": []})
    assert "slices worse than production (24 calls, corrected for their number: false discovery rate 5%):" in text
    assert "! route=r00: worse by pairwise win rate" in text


def test_a_call_the_correction_does_not_keep_is_shown_as_made_alone():
    # one slice just past its 95% interval among many flat ones: called alone, not kept once corrected
    rng = np.random.default_rng(9)
    for _ in range(40):
        rows = _rows(rng, 10, 40)
        raw, _, _ = slice_table(rows, ReportSettings(bootstrap=200, slice_fdr=0.0), {}, {}, "pairwise")
        out, flags, tests = slice_table(rows, ReportSettings(bootstrap=200), {}, {}, "pairwise")
        if tests["not_kept"]:
            break
    else:
        pytest.fail("no honest run had a call the correction dropped")
    assert tests["not_kept"] == sum(c != "within noise" for c in _calls(raw)) - sum(
        c != "within noise" for c in _calls(out))
    entry = {"candidate": "cand", "pairs": len(rows), "call": "within noise", "decided_by": "pairwise",
             "win_rate": {}, "scores": {}, "ops": {}, "flags": flags, "slices": out, "slice_tests": tests}
    assert "     called alone, not once corrected: route=r" in format_report({"candidates": [entry], "alerts": []})


def test_the_text_report_counts_the_slices_it_could_not_check():
    rng = np.random.default_rng(10)
    rows = _rows(rng, 3, 30) + _rows(rng, 1, 5)[:5]  # three checked slices; a fourth of 5 pairs (r00 again: 35)
    rows += [r for r in _rows(np.random.default_rng(11), 5, 4) if r.slices["route"] == "r04"]  # r04: 4 pairs
    out, flags, tests = slice_table(rows, ReportSettings(bootstrap=200), {}, {}, "pairwise")
    assert [name for name, s in out.items() if not s["checked"]] == ["route=r04"]
    entry = {"candidate": "cand", "pairs": len(rows), "call": "within noise", "decided_by": "pairwise",
             "win_rate": {}, "scores": {}, "ops": {}, "flags": [], "slices": out, "slice_tests": tests}
    text = format_report({"candidates": [entry], "alerts": []})
    assert "   slices: 3 checked (1 with too few pairs to check), none significantly worse (9 calls" in text
