"""The HTML report: one self-contained page with no script and nothing loaded from elsewhere, every
string from traffic escaped, a chart per section, and optional sections that appear only when present.

The report dicts are built here in the shape `build_report` returns (trimmed from a real demo run),
so these tests need no store and no statistics. The failure clusters are checked in the text report too."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from shadoweval.datasets.report.html import render_html, write_html
from shadoweval.datasets.report.svg import Bar, bar_chart, time_series
from shadoweval.datasets.report.text import format_report

XSS = "<script>alert(1)</script>"


def _est(value: float, low: float, high: float, n: int = 38) -> dict[str, Any]:
    return {"value": value, "low": low, "high": high, "n": n, "level": 0.95}


def _win(value: float, low: float, high: float, call: str, n: int = 38) -> dict[str, Any]:
    return {**_est(value, low, high, n), "wins": 4, "ties": 19, "losses": 15, "win_share": 0.1,
            "tie_share": 0.5, "loss_share": 0.4, "call": call, "reliable": None}


def _score(prod: float, cand: float, call: str) -> dict[str, Any]:
    return {"production": _est(prod, prod - 0.05, prod + 0.05), "candidate": _est(cand, cand - 0.05, cand + 0.05),
            "difference": _est(cand - prod, cand - prod - 0.03, cand - prod + 0.03), "call": call, "reliable": None}


def _candidate(name: str, call: str, value: float, slices: dict[str, tuple[float, bool]]) -> dict[str, Any]:
    return {
        "candidate": name, "pairs": 38, "decided_by": "offline", "call": call,
        "win_rate": {"offline": _win(value, value - 0.1, value + 0.1, call)},
        "length_controlled": _est(0.45, 0.27, 0.62),
        "scores": {"grounded": _score(0.80, 0.78, "within noise"), "citations": _score(0.82, 0.70, "worse")},
        "ops": {"latency_p95_ms": {"production": 344.3, "candidate": 806.8, "delta": 462.4, "ratio": 2.34},
                "error_rate": {"production": 0.0, "candidate": 0.0, "delta": 0.0, "ratio": None}},
        "slices": {s: {"pairs": 25, "checked": checked, "win_rate": {"offline": _win(v, v - 0.2, v + 0.2, "worse", 25)},
                       "scores": {"grounded": _score(0.8, 0.7, "worse")}} for s, (v, checked) in slices.items()},
        "flags": [f"{s}: worse by offline win rate {v:.2f}" for s, (v, checked) in slices.items()
                  if checked and v < 0.3],
    }


@pytest.fixture
def report() -> dict[str, Any]:
    return {
        "window": {"first": 1795453097.029, "last": 1795453103.465},
        "candidates": [
            _candidate("careful", "worse", 0.36, {"route=billing": (0.42, True), f"route={XSS}": (0.21, True)}),
            _candidate("bold", "better", 0.64, {"route=billing": (0.6, True), "route=rare": (0.2, False)}),
            _candidate("twin", "within noise", 0.5, {}),
        ],
        "models": {"production": _est(1000.0, 1000.0, 1000.0, 76), "careful": _est(896.1, 817.0, 972.4)},
        "noise_floor": {"offline": 0.02, "score:grounded": 0.01},
        "twin_pairs": 8,
        "judges": {},
    }


class Page(HTMLParser):
    """Collects what the checks need: tags with their attributes, and the decoded text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def svgs(self, kind: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == "svg" and kind in (a.get("class") or "").split()]


def test_page_is_self_contained(report: dict[str, Any]) -> None:
    page = Page(render_html(report))
    assert not [t for t, _ in page.tags if t in ("script", "iframe", "object", "embed", "link", "img")]
    for tag, attrs in page.tags:
        for name in ("src", "href", "xlink:href", "action"):
            value = attrs.get(name)
            assert value is None or value.startswith("#"), (tag, name, value)
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)  # no inline handlers either
        assert "style" not in attrs, tag  # the page's CSP pins the one style block by hash; attributes would break
    csp = [a["content"] for t, a in page.tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and csp[0].startswith("default-src 'none'")


def test_header_shows_each_verdict_with_its_colour(report: dict[str, Any]) -> None:
    page = Page(render_html(report, title="nightly & weekly"))
    cards = [a["class"] for t, a in page.tags if t == "div" and (a.get("class") or "").startswith("verdict ")]
    assert cards == ["verdict worse", "verdict better", "verdict noise"]
    text = " ".join(page.text)
    for call in ("worse", "better", "within noise"):
        assert call in text
    assert "decided by offline judges' preference" in text
    assert "nightly & weekly" in text  # the title is escaped and decodes back to itself


def test_one_slice_chart_per_candidate_with_slices(report: dict[str, Any]) -> None:
    out = render_html(report)
    assert len(Page(out).svgs("slices")) == 2  # "twin" has no slices: no empty chart
    assert out.count('stroke-dasharray="4 3"') >= 2  # each slice chart draws the 0.5 line
    assert "0.5 = tie" in out


def test_flagged_slice_is_highlighted_and_unchecked_one_faint() -> None:
    svg = bar_chart([Bar("a", 0.2, 0.1, 0.3, mark=True), Bar("b", 0.6, 0.5, 0.7), Bar("c", 0.5, dim=True)],
                    domain=(0.0, 1.0), base=0.0, ref=0.5, kind="slices")
    rects = [a for t, a in Page(svg).tags if t == "rect"]
    assert [r["fill"] for r in rects] == ["#cf222e", "#54aeff", "#54aeff"]
    assert [r["opacity"] for r in rects] == ["0.85", "0.85", "0.35"]
    assert svg.count("<path") == 2  # whiskers only where there is an interval


def test_strings_from_traffic_are_escaped(report: dict[str, Any]) -> None:
    report["candidates"][0]["scores"][XSS] = _score(0.5, 0.5, "within noise")
    report["alerts"] = [f"latency alert {XSS}"]
    example = {"question": XSS, "candidate": "<u>x</u>", "production": "&"}
    report["failure_clusters"] = [{"size": 3, "examples": [example]}]
    out = render_html(report)
    assert "<script" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert not [t for t, _ in Page(out).tags if t in ("script", "u")]
    assert f"route={XSS}" in " ".join(Page(out).text)  # shown to the reader as the text it was


def test_drift_draws_a_time_series(report: dict[str, Any]) -> None:
    assert not Page(render_html(report)).svgs("timeseries")
    report["candidates"][0]["drift"] = [
        {"period": f"2026-11-{d}", "n": 12, "win_rate": _est(0.4 + d / 100, 0.3, 0.6, 12), "scores": {"grounded": 0.8}}
        for d in range(20, 24)] + [{"period": "2026-11-24", "n": 0, "win_rate": {"value": None}, "scores": {}}]
    out = render_html(report)
    page = Page(out)
    assert len(page.svgs("timeseries")) == 1
    assert len([t for t, _ in page.tags if t == "circle"]) == 4  # the period without a value is left out
    assert "2026-11-24" in " ".join(page.text)  # but still listed in the table


def test_drift_scores_as_trends_gives_them(report: dict[str, Any]) -> None:
    judge = {"n": 12, "candidate": 0.71, "production": 0.8, "difference": -0.09}
    report["candidates"][1]["drift"] = [{"period": "2026-W47", "n": 12, "win_rate": _est(0.6, 0.4, 0.8, 12),
                                         "scores": {"grounded": judge}}]
    text = " ".join(Page(render_html(report)).text)
    assert "0.71 vs 0.80 (-0.09)" in text


def _two_periods() -> list[dict[str, Any]]:
    judge = {"n": 12, "candidate": 0.71, "production": 0.8, "difference": -0.09}
    return [{"period": f"2026-11-2{d}", "n": 12, "win_rate": _est(0.6, 0.4, 0.8, 12), "scores": {"grounded": judge},
             "passing": {"grounded": {"n": 12, "candidate": 0.5 + d / 10, "production": 0.75, "difference": d / 10 - 0.25},
                         "citations": {"n": 0, "candidate": None, "production": None, "difference": None}}}
            for d in (0, 1)]


def test_drift_share_passing_column(report: dict[str, Any]) -> None:
    report["candidates"][0]["drift"] = _two_periods()
    text = Page(render_html(report)).text
    assert "grounded: share passing" in text and "citations: share passing" not in text  # never decided: no column
    at = max(i for i, t in enumerate(text) if t == "2026-11-21")  # the table's row, after the chart's axis
    assert text[at:at + 5] == ["2026-11-21", "12", "0.600 [0.400, 0.800]", "0.71 vs 0.80 (-0.09)", "0.60 vs 0.75 (-0.15)"]


def test_text_report_over_time_only_with_several_periods(report: dict[str, Any]) -> None:
    report["candidates"][0]["drift"] = _two_periods()[:1]
    assert "over time" not in format_report(report)  # one period is the comparison itself
    report["candidates"][0]["drift"] = _two_periods()
    lines = format_report(report).splitlines()
    at = lines.index("   over time (candidate vs production, plain means per period):")
    assert lines[at + 1:at + 3] == [
        "     2026-11-20    12 pairs  win rate 0.60 [0.40, 0.80] n=12; grounded 0.71 vs 0.80, passing 0.50 vs 0.75",
        "     2026-11-21    12 pairs  win rate 0.60 [0.40, 0.80] n=12; grounded 0.71 vs 0.80, passing 0.60 vs 0.75"]


def test_alerts_listed_once(report: dict[str, Any]) -> None:
    # build_report puts each candidate's alerts in its entry and all of them in one top-level list
    report["candidates"][0]["alerts"] = ["careful 2026-11-20: win rate 0.20", "careful only"]
    report["alerts"] = ["careful 2026-11-20: win rate 0.20"]
    report["candidates"][0]["failure_clusters"] = [{"size": 4, "share": 0.25, "examples": [
        {"exchange_id": "x", "question": "where is my order", "candidate": "no idea", "production": "shipped"}]}]
    text = " ".join(Page(render_html(report)).text)
    assert text.count("careful 2026-11-20: win rate 0.20") == 1
    assert "careful only" in text and "4 lost (25% of losses)" in text and "where is my order" in text


def test_drift_keyed_by_candidate_at_top_level(report: dict[str, Any]) -> None:
    report["drift"] = {"bold": [{"period": "2026-11-20", "n": 5, "win_rate": _est(0.6, 0.4, 0.8, 5)}]}
    assert len(Page(render_html(report)).svgs("timeseries")) == 1


def test_judges_and_optional_sections(report: dict[str, Any]) -> None:
    text = " ".join(Page(render_html(report)).text)
    assert "no judge has been checked against human grades" in text
    report["judges"] = {"grounded": {"n": 40, "kappa": 0.55, "accuracy": 0.8, "ece": 0.123, "reliable": True},
                        "citations": {"n": 40, "kappa": -0.1, "accuracy": 0.4, "reliable": False}}
    report["reward_gaming"] = ["bold: answers 40% longer while winning"]
    out = render_html(report, min_kappa=0.5)
    page = Page(out)
    assert len(page.svgs("kappa")) == 1 and "min_kappa 0.5" in out
    assert "grounded (n=40, ECE 0.12)" in out and "citations (n=40)" in out  # no ECE given: none shown
    assert "bold: answers 40% longer while winning" in " ".join(page.text)
    assert len(page.svgs("ratings")) == 1


@pytest.mark.parametrize("drop", ["window", "models", "noise_floor", "twin_pairs", "judges", "candidates"])
def test_missing_optional_keys_render(report: dict[str, Any], drop: str) -> None:
    report.pop(drop)
    assert "</html>" in render_html(report)


def test_bare_candidate_renders() -> None:
    bare = {"candidates": [{"candidate": "x", "pairs": 0, "call": "not enough data", "win_rate": {}, "scores": {},
                            "ops": {}, "slices": {}, "flags": []}]}
    text = " ".join(Page(render_html(bare)).text)
    assert "not enough data" in text and "no source decided" in text
    assert "nothing to compare" in " ".join(Page(render_html({"candidates": []})).text)


def test_time_series_with_one_point() -> None:
    svg = time_series([Bar("2026-11-20", 0.5, 0.4, 0.6)])
    assert svg.count("<circle") == 1


def test_write_html(tmp_path: Path, report: dict[str, Any]) -> None:
    path = write_html(report, tmp_path / "out" / "report.html")
    assert path.read_text(encoding="utf-8").startswith("<!doctype html>")


def _patterns(label: str = "refund, money, damaged") -> dict[str, Any]:
    """Failure clusters as `trends.failure_clusters` gives them: two patterns among 12 losses, 3 one-offs."""
    def cluster(size: int, label: str, question: str, reason: str) -> dict[str, Any]:
        return {"size": size, "share": size / 12, "label": label, "terms": label.split(", "),
                "representative": question,
                "examples": [{"exchange_id": "x", "question": question, "reason": reason, "candidate": "c",
                              "production": "p"}]}
    return {"losses": 12, "unclustered": 3, "left_out": 0, "more": 0, "clusters": [
        cluster(5, label, "I need a refund for the damaged order", "grounded: a restocking fee of 15% applies"),
        cluster(4, "shipping, courier", "when will the courier deliver my package", "")]}


def test_failure_clusters_labeled(report: dict[str, Any]) -> None:
    report["candidates"][0]["failure_clusters"] = _patterns()
    text = " ".join(" ".join(Page(render_html(report)).text).split())
    assert "cluster 1: refund, money, damaged — 5 lost (42% of losses)" in text
    assert "cluster 2: shipping, courier — 4 lost (33% of losses)" in text
    assert "3 not in any recurring pattern" in text and "a restocking fee of 15% applies" in text
    lines = format_report(report).splitlines()
    at = lines.index("   where it loses (12 losses grouped by question and the judges' reasons, largest first):")
    assert lines[at + 1:at + 4] == [
        "       5 x  42%  refund, money, damaged  e.g. 'I need a refund for the damaged order'",
        "       4 x  33%  shipping, courier  e.g. 'when will the courier deliver my package'",
        "       3 not in any recurring pattern"]
    report["candidates"][0]["failure_clusters"] = {**_patterns(), "passing": 9}
    assert "9 of the 12 lost answers pass every judge that decided on them (lost on a lower score, nothing failed)." \
        in " ".join(Page(render_html(report)).text)
    lines = format_report(report).splitlines()
    at = lines.index("   where it loses (12 losses grouped by question and the judges' reasons, largest first):")
    assert lines[at + 1] == ("     9 of the 12 lost answers pass every judge that decided on them: lost on a lower "
                             "score, nothing failed")
    report["candidates"][0]["failure_clusters"] = _patterns(label=XSS)  # labels are words from traffic
    assert "<script" not in render_html(report)


def test_failure_clusters_without_a_pattern(report: dict[str, Any]) -> None:
    report["candidates"][0]["failure_clusters"] = {"losses": 7, "unclustered": 7, "left_out": 0, "more": 0,
                                                   "passing": 3, "clusters": []}
    report["candidates"][1]["failure_clusters"] = {"losses": 0, "unclustered": 0, "left_out": 0, "more": 0,
                                                   "clusters": []}
    page = Page(render_html(report))
    assert "no recurring pattern among 7 losses" in page.text
    assert [t for t in page.text if t == "Failure clusters"] == ["Failure clusters"]  # none for no losses
    text = format_report(report)
    assert "   where it loses: no recurring pattern among 7 losses" in text.splitlines()
    assert "3 of the 7 lost answers pass every judge" in text
    said = [i for i, t in enumerate(page.text) if "3 of the 7 lost answers pass every judge" in t]
    assert said and said[0] < page.text.index("no recurring pattern among 7 losses")
    assert text.count("where it loses") == 1


def test_share_passing_is_a_row_under_its_judge(report: dict[str, Any]) -> None:
    grounded = report["candidates"][0]["scores"]["grounded"]
    assert "share passing" not in " ".join(Page(render_html(report)).text)
    grounded["pass_rate"] = _score(0.89, 0.97, "better")
    text = Page(render_html(report)).text
    at = text.index("grounded: share passing")
    assert text[at - 5] == "grounded" and text[at + 4] == "better"  # right below the judge's own row
    assert text.count("grounded: share passing") == 1  # the other candidates have none
