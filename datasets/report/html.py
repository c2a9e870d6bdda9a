"""The comparison report as one self-contained HTML page: a decision to swap models is easier to argue
from a page that draws every interval than from terminal text. The page travels as one file (attached to
a ticket, opened from disk) and is served under a CSP that forbids scripts, so it has no JavaScript and
loads nothing: one inline style block, which the page's own CSP pins by hash, and inline SVG drawn by
`svg`. Slice names, judge names, flags and example texts come from production traffic: the page is
the Jinja2 template templates/report.html.j2 with autoescape on, so every string from the report is
escaped; only the charts (built with `markupsafe.escape`), the call badges and the style block are Markup.
This module turns the report's dict into the template's context."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from shadoweval.core.settings import ReportSettings

from .svg import Bar, _ci, _f, bar_chart, time_series
from .text import SOURCES, failure_patterns, uncorrected_calls  # one wording for both renderings

# Calls map to fixed class names: a call string never reaches an attribute, even if a new one appears.
_CALLS = {"better": "better", "worse": "worse", "within noise": "noise", "not enough data": "nodata"}
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:0 auto;padding:1rem 1.5rem;color:#1f2328}
h2{border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2.2rem}h3{margin:1.3rem 0 .4rem}
table{border-collapse:collapse;margin:.4rem 0}
th,td{padding:.2rem .7rem;border-bottom:1px solid #eaeef2;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}.note{color:#57606a}.flag,.alert{color:#cf222e}
.verdicts{display:flex;flex-wrap:wrap;gap:.8rem}.verdict a{color:inherit}
.verdict{border-left:6px solid var(--c);background:#f6f8fa;padding:.5rem .9rem;min-width:15rem}
.call{color:var(--c);font-weight:700;text-transform:uppercase}
.better{--c:#1a7f37}.worse{--c:#cf222e}.noise{--c:#6e7781}.nodata,.unknown{--c:#9a6700}
.ex{white-space:pre-wrap;max-height:12rem;overflow:auto;background:#f6f8fa;padding:.4rem .6rem;margin:.2rem 0 .6rem}
svg{display:block;margin:.3rem 0;font:12px system-ui,sans-serif}
"""


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                             autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template("report.html.j2")


def _call(call: str | None) -> Markup:
    text = call or "not enough data"
    return Markup('<span class="call {}">{}</span>').format(_CALLS.get(text, "unknown"), text)


def _per_candidate(report: dict[str, Any], cand: dict[str, Any], key: str) -> Any:
    # newer sections may sit in each candidate or at the top level keyed by candidate name; accept both
    if cand.get(key) is not None:
        return cand[key]
    top = report.get(key)
    return top.get(cand.get("candidate")) if isinstance(top, dict) else None


def _clusters(value: Any) -> dict[str, Any] | None:
    found = failure_patterns(value)
    if not found or not found.get("losses"):
        return None
    rest = [f"{found['unclustered']} not in any recurring pattern"] if found.get("unclustered") else []
    rest += [f"{found['more']} more patterns not listed"] if found.get("more") else []
    clusters = []
    for cl in found.get("clusters") or []:
        examples = cl.get("examples") or []
        clusters.append({
            "label": cl.get("label"), "size": cl.get("size", len(examples)),
            "share": f" ({cl['share']:.0%} of losses)" if isinstance(cl.get("share"), int | float) else "",
            "examples": [[(part, ex[part]) for part in ("question", "reason", "candidate", "production")
                          if ex.get(part)] for ex in examples],
        })
    passing = (f"{found['passing']} of the {found['losses']} lost answers pass every judge that decided on them "
               "(lost on a lower score, nothing failed)") if found.get("passing") else None
    return {"losses": found["losses"], "rest": rest, "clusters": clusters, "passing": passing}


def _win_rates(c: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for source, w in (c.get("win_rate") or {}).items():
        note = {False: "judge below the reliability bar", True: "reliable"}.get(w.get("reliable"), "not checked")
        if w.get("judge_weight") is not None:  # prediction-powered: how far it leans on the judge
            note += f", judge weight {w['judge_weight']:.2f}"
        n = w.get("n", "")
        if w.get("grades", n) != n:  # people's win rate: graded pairs, some graded more than once
            n = f"{n} ({w['grades']} grades)"
        rows.append([SOURCES.get(source, source), _ci(w), n,
                     f"{w.get('wins', '')} / {w.get('ties', '')} / {w.get('losses', '')}", _call(w.get("call")), note])
    if c.get("length_controlled"):
        rows.append(["length-controlled", _ci(c["length_controlled"]), c["length_controlled"].get("n", ""),
                     "", "", ""])
    return rows


def _slice_note(c: dict[str, Any]) -> str:
    tests = c.get("slice_tests") or {}
    if tests.get("fdr") and tests.get("tests"):
        return (f"Red: flagged as worse, its call kept after correcting the {tests['tests']} slice calls for their "
                f"number (false discovery rate {tests['fdr']:.0%}). Faint: too few pairs to check.")
    return "Red: flagged as worse. Faint: too few pairs to check."


def _slices(c: dict[str, Any]) -> Markup | None:
    slices = c.get("slices") or {}
    if not slices:
        return None
    flags = [str(f) for f in c.get("flags") or []]
    bars = []
    for name, s in slices.items():
        wins = s.get("win_rate") or {}
        w: dict[str, Any] = wins.get(c.get("decided_by")) or next(iter(wins.values()), {})
        bars.append(Bar(f"{name} ({s.get('pairs', 0)})", w.get("value"), w.get("low"), w.get("high"),
                        mark=any(f.startswith(f"{name}: ") for f in flags), dim=s.get("checked") is False))
    return Markup(bar_chart(bars, domain=(0.0, 1.0), base=0.0, ref=0.5, ref_label="0.5 = tie", kind="slices"))


def _scores(c: dict[str, Any]) -> dict[str, Any] | None:
    scores = c.get("scores") or {}
    if not scores:
        return None
    rows, bars = [], []
    for judge, s in scores.items():
        rows.append([f"{judge}{' (unreliable)' if s.get('reliable') is False else ''}", _ci(s.get("production")),
                     _ci(s.get("candidate")), _ci(s.get("difference")), _call(s.get("call"))])
        if s.get("pass_rate"):
            r = s["pass_rate"]
            rows.append([f"{judge}: share passing", _ci(r.get("production")), _ci(r.get("candidate")),
                         _ci(r.get("difference")), _call(r.get("call"))])
        for side in ("production", "candidate"):
            e = s.get(side) or {}
            bars.append(Bar(f"{judge} · {side}", e.get("value"), e.get("low"), e.get("high"),
                            mark=side == "candidate" and s.get("call") == "worse"))
    top = max([1.0] + [b.high or b.value or 0.0 for b in bars])
    return {"rows": rows, "chart": Markup(bar_chart(bars, domain=(0.0, top), base=0.0, kind="scores"))}


def _ops(c: dict[str, Any]) -> list[list[str]]:
    return [[k, _f(v.get("production"), ".4g"), _f(v.get("candidate"), ".4g"), _f(v.get("delta"), "+.4g"),
             _f(v.get("ratio"), ".2f") + ("×" if v.get("ratio") is not None else "")]
            for k, v in (c.get("ops") or {}).items()]


def _drift(periods: Sequence[dict[str, Any]] | None) -> dict[str, Any] | None:
    if not periods:
        return None
    points = [Bar(str(p.get("period", "?")), w.get("value"), w.get("low"), w.get("high"))
              for p in periods for w in [p.get("win_rate") or {}]]
    judges = sorted({j for p in periods for j in (p.get("scores") or {})})
    # the share passing gets a column only for judges that decided on both sides in some period
    passing = sorted({j for p in periods for j, s in (p.get("passing") or {}).items() if s.get("n")})
    rows = [[p.get("period", "?"), p.get("n", ""), _ci(p.get("win_rate"))]
            + [_period_score((p.get("scores") or {}).get(j)) for j in judges]
            + [_period_score((p.get("passing") or {}).get(j)) for j in passing] for p in periods]
    chart = Markup(time_series(points)) if any(b.value is not None for b in points) else None
    return {"chart": chart, "judges": judges + [f"{j}: share passing" for j in passing], "rows": rows}


def _period_score(s: Any) -> str:
    # `trends.drift` gives each judge {n, candidate, production, difference}; a bare number is a mean score
    if isinstance(s, dict):
        c, p, d = (_f(s.get(k), f) for k, f in (("candidate", ".2f"), ("production", ".2f"), ("difference", "+.2f")))
        return f"{c} vs {p} ({d})"
    return _f(s) if isinstance(s, int | float) else "-"


def _decision(d: dict[str, Any] | None) -> dict[str, Any] | None:
    """The switch decision by the team's rule, the rule in words, its reasons and the evidence plan."""
    if not d:
        return None
    verdict = "passes" if d.get("pass") else "fails" if d.get("pass") is False else "cannot decide yet"
    items = [*(d.get("reasons") or []), *([d["cannot_decide"]] if d.get("cannot_decide") else [])]
    plan = (d.get("plan") or {}).get("text") if d.get("pass") is not True else None
    return {"verdict": verdict, "rule": d.get("rule", ""), "items": items, "plan": plan}


def _candidate(report: dict[str, Any], c: dict[str, Any], i: int, shown: set[str]) -> dict[str, Any]:
    def own(key: str) -> list[Any]:  # messages the page already lists at the top are not repeated here
        return [m for m in _per_candidate(report, c, key) or [] if str(m) not in shown]

    return {"i": i, "name": c.get("candidate", "?"), "call": _call(c.get("call")), "decision": _decision(c.get("decision")),
            "alerts": own("alerts"), "win_rates": _win_rates(c), "drift": _drift(_per_candidate(report, c, "drift")),
            "slices": _slices(c), "slice_note": _slice_note(c), "slices_alone": uncorrected_calls(c),
            "flags": c.get("flags"), "scores": _scores(c), "ops": _ops(c),
            "reward_gaming": own("reward_gaming"), "clusters": _clusters(_per_candidate(report, c, "failure_clusters"))}


def _cards(report: dict[str, Any]) -> list[dict[str, Any]]:
    cards = []
    for i, c in enumerate(report.get("candidates") or []):
        call = c.get("call") or "not enough data"
        src = c.get("decided_by")
        cards.append({"i": i, "css": _CALLS.get(call, "unknown"), "name": c.get("candidate"), "call": _call(call),
                      "source": SOURCES.get(src, src) if src else None, "pairs": c.get("pairs", 0)})
    return cards


def _judges(judges: dict[str, Any] | None, min_kappa: float) -> Markup | None:
    if not judges:
        return None
    bars = [Bar(f"{j} (n={r.get('n', 0)}" + (f", ECE {r['ece']:.2f})" if r.get("ece") is not None else ")"),
                r.get("kappa"), mark=r.get("reliable") is False)
            for j, r in sorted(judges.items())]
    lo = min([0.0] + [b.value for b in bars if b.value is not None])  # kappa can fall below chance
    return Markup(bar_chart(bars, domain=(lo, 1.0), base=0.0, ref=min_kappa, ref_label=f"min_kappa {min_kappa:g}",
                            kind="kappa"))


def _models(models: dict[str, Any] | None) -> Markup | None:
    if not models:
        return None
    ranked = sorted(models.items(), key=lambda kv: -(kv[1].get("value") or 0))
    bars = [Bar(m, e.get("value"), e.get("low"), e.get("high")) for m, e in ranked]
    ends = [v for b in bars for v in (b.low, b.high, b.value) if v is not None] or [1000.0]
    pad = max(10.0, (max(ends) - min(ends)) * 0.05)
    # bars grow from production's 1000 so that a model below production points left
    return Markup(bar_chart(bars, domain=(min(ends) - pad, max(ends) + pad), base=1000.0, ref=1000.0,
                            ref_label="production", kind="ratings"))


def render_html(report: dict[str, Any], *, title: str = "shadoweval report", min_kappa: float | None = None) -> str:
    """The whole report as one HTML page with no script and nothing loaded from elsewhere. `min_kappa` draws
    the judge reliability bar (default: the report's own `min_kappa`, then the settings' default)."""
    bar = min_kappa if min_kappa is not None else report.get("min_kappa", ReportSettings().min_kappa)
    floors = report.get("noise_floor") or {}
    floor = None
    if floors or report.get("twin_pairs"):
        floor = {"twin_pairs": report.get("twin_pairs", 0), "rows": [[k, f"±{_f(v)}"] for k, v in sorted(floors.items())]}
    # lists at the top level are report-wide and shown first; dicts are keyed by candidate
    wide = {k: v if isinstance(v := report.get(k), list) else None
            for k in ("alerts", "reward_gaming", "failure_clusters")}
    shown = {str(m) for k in ("alerts", "reward_gaming") for m in wide[k] or []}
    window = report.get("window") or {}
    stamps = [datetime.fromtimestamp(window[k], UTC).strftime("%Y-%m-%d %H:%M UTC")
              for k in ("first", "last") if isinstance(window.get(k), int | float)]
    # the page pins its one style block by hash: even opened from disk it loads nothing and runs nothing
    digest = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
    return _template().render(
        title=title, csp=f"default-src 'none'; style-src 'sha256-{digest}'", css=Markup(_CSS), stamps=stamps,
        cards=_cards(report), alerts=wide["alerts"], reward_gaming=wide["reward_gaming"],
        candidates=[_candidate(report, c, i, shown) for i, c in enumerate(report.get("candidates") or [])],
        models=_models(report.get("models")), judges=_judges(report.get("judges"), float(bar)), floor=floor,
        wide_clusters=_clusters(wide["failure_clusters"]),
    )


def write_html(report: dict[str, Any], path: str | Path, *, title: str = "shadoweval report") -> Path:
    """Render the report and write it to `path` (parents created); returns the path written."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(report, title=title), encoding="utf-8")
    return out
