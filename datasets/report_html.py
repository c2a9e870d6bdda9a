"""The comparison report as one self-contained HTML page: a decision to swap models is easier to argue
from a page that draws every interval than from terminal text. The page travels as one file (attached to
a ticket, opened from disk) and is served under a CSP that forbids scripts, so it has no JavaScript and
loads nothing: one inline style block, which the page's own CSP pins by hash, and inline SVG drawn here.
Slice names, judge names, flags and example texts come from production traffic: every string from the
report goes through `html.escape` before it reaches the page."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shadoweval.proxy.settings import ReportSettings

from .report_svg import Bar, _ci, _e, _f, bar_chart, time_series
from .report_text import SOURCES, failure_patterns  # one wording for both renderings

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


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """A table from already-escaped cells; `numeric` columns are right-aligned."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td class="n">{c}</td>' if j in numeric else f"<td>{c}</td>"
                                    for j, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _call(call: str | None) -> str:
    text = call or "not enough data"
    return f'<span class="call {_CALLS.get(text, "unknown")}">{_e(text)}</span>'


def _per_candidate(report: dict[str, Any], cand: dict[str, Any], key: str) -> Any:
    # newer sections may sit in each candidate or at the top level keyed by candidate name; accept both
    if cand.get(key) is not None:
        return cand[key]
    top = report.get(key)
    return top.get(cand.get("candidate")) if isinstance(top, dict) else None


def _messages(heading: str, items: Sequence[Any] | None, css: str = "flag") -> str:
    if not items:
        return ""
    return f"<h3>{_e(heading)}</h3><ul>" + "".join(f'<li class="{css}">{_e(m)}</li>' for m in items) + "</ul>"


def _clusters(value: Any, h: str = "h3") -> str:
    found = failure_patterns(value)
    if not found or not found.get("losses"):
        return ""
    out = [f"<{h}>Failure clusters</{h}>"]
    clusters = found.get("clusters") or []
    if not clusters:
        out.append(f'<p class="note">no recurring pattern among {_e(found["losses"])} losses</p>')
        return "\n".join(out)
    rest = [f"{_e(found['unclustered'])} not in any recurring pattern"] if found.get("unclustered") else []
    rest += [f"{_e(found['more'])} more patterns not listed"] if found.get("more") else []
    out.append(f'<p class="note">{_e(found["losses"])} losses grouped by question and the judges\' reasons, largest '
               f'first{"; " if rest else ""}{"; ".join(rest)}.</p>')
    for i, cl in enumerate(clusters, 1):
        examples = cl.get("examples") or []
        share = f" ({cl['share']:.0%} of losses)" if isinstance(cl.get("share"), int | float) else ""
        label = f" <b>{_e(cl['label'])}</b> &mdash;" if cl.get("label") else ""
        out.append(f"<details><summary>cluster {i}:{label} {_e(cl.get('size', len(examples)))} lost{share}"
                   "</summary>")
        for ex in examples:
            for part in ("question", "reason", "candidate", "production"):
                if ex.get(part):
                    out.append(f'<div class="note">{part}</div><div class="ex">{_e(ex[part])}</div>')
        out.append("</details>")
    return "\n".join(out)


def _win_rates(c: dict[str, Any]) -> str:
    rows = []
    for source, w in (c.get("win_rate") or {}).items():
        note = {False: "judge below the reliability bar", True: "reliable"}.get(w.get("reliable"), "not checked")
        rows.append([_e(SOURCES.get(source, source)), _ci(w), _e(w.get("n", "")),
                     f"{_e(w.get('wins', ''))} / {_e(w.get('ties', ''))} / {_e(w.get('losses', ''))}",
                     _call(w.get("call")), _e(note)])
    if c.get("length_controlled"):
        rows.append(["length-controlled", _ci(c["length_controlled"]), _e(c["length_controlled"].get("n", "")),
                     "", "", ""])
    return _table(["source", "win rate [interval]", "n", "win / tie / loss", "call", "judge"], rows, (2,))


def _slices(c: dict[str, Any]) -> str:
    slices = c.get("slices") or {}
    if not slices:
        return ""
    flags = [str(f) for f in c.get("flags") or []]
    bars = []
    for name, s in slices.items():
        wins = s.get("win_rate") or {}
        w: dict[str, Any] = wins.get(c.get("decided_by")) or next(iter(wins.values()), {})
        bars.append(Bar(f"{name} ({s.get('pairs', 0)})", w.get("value"), w.get("low"), w.get("high"),
                        mark=any(f.startswith(f"{name}: ") for f in flags), dim=s.get("checked") is False))
    return ("<h3>Win rate by slice</h3><p class=\"note\">Red: flagged as worse. Faint: too few pairs to check.</p>"
            + bar_chart(bars, domain=(0.0, 1.0), base=0.0, ref=0.5, ref_label="0.5 = tie", kind="slices"))


def _scores(c: dict[str, Any]) -> str:
    scores = c.get("scores") or {}
    if not scores:
        return ""
    rows, bars = [], []
    for judge, s in scores.items():
        rows.append([_e(judge) + (" (unreliable)" if s.get("reliable") is False else ""), _ci(s.get("production")),
                     _ci(s.get("candidate")), _ci(s.get("difference")), _call(s.get("call"))])
        for side in ("production", "candidate"):
            e = s.get(side) or {}
            bars.append(Bar(f"{judge} · {side}", e.get("value"), e.get("low"), e.get("high"),
                            mark=side == "candidate" and s.get("call") == "worse"))
    top = max([1.0] + [b.high or b.value or 0.0 for b in bars])
    return ("<h3>Judge scores</h3>" + _table(["judge", "production", "candidate", "difference", "call"], rows)
            + bar_chart(bars, domain=(0.0, top), base=0.0, kind="scores"))


def _ops(c: dict[str, Any]) -> str:
    rows = [[_e(k), _f(v.get("production"), ".4g"), _f(v.get("candidate"), ".4g"), _f(v.get("delta"), "+.4g"),
             _f(v.get("ratio"), ".2f") + ("×" if v.get("ratio") is not None else "")]
            for k, v in (c.get("ops") or {}).items()]
    return "<h3>Operations</h3>" + _table(["metric", "production", "candidate", "delta", "ratio"], rows, (1, 2, 3, 4))


def _drift(periods: Sequence[dict[str, Any]] | None) -> str:
    if not periods:
        return ""
    points = [Bar(str(p.get("period", "?")), w.get("value"), w.get("low"), w.get("high"))
              for p in periods for w in [p.get("win_rate") or {}]]
    judges = sorted({j for p in periods for j in (p.get("scores") or {})})
    rows = [[_e(p.get("period", "?")), _e(p.get("n", "")), _ci(p.get("win_rate"))]
            + [_period_score((p.get("scores") or {}).get(j)) for j in judges] for p in periods]
    no_value = '<p class="note">no period has a win rate yet</p>'
    chart = time_series(points) if any(b.value is not None for b in points) else no_value
    return ("<h3>Win rate over time</h3>" + chart
            + _table(["period", "pairs", "win rate [interval]", *map(_e, judges)], rows, (1,)))


def _period_score(s: Any) -> str:
    # `trends.drift` gives each judge {n, candidate, production, difference}; a bare number is a mean score
    if isinstance(s, dict):
        c, p, d = (_f(s.get(k), f) for k, f in (("candidate", ".2f"), ("production", ".2f"), ("difference", "+.2f")))
        return f"{c} vs {p} ({d})"
    return _f(s) if isinstance(s, int | float) else "-"


def _decision(d: dict[str, Any] | None) -> str:
    """The switch decision by the team's rule, the rule in words, its reasons and the evidence plan."""
    if not d:
        return ""
    verdict = "passes" if d.get("pass") else "fails" if d.get("pass") is False else "cannot decide yet"
    items = [f"<li>{_e(r)}</li>" for r in d.get("reasons") or []]
    if d.get("cannot_decide"):
        items.append(f"<li>{_e(d['cannot_decide'])}</li>")
    plan = (d.get("plan") or {}).get("text") if d.get("pass") is not True else None
    return (f'<p><strong>Decision: {_e(verdict)}</strong> &mdash; rule: {_e(d.get("rule", ""))}</p>'
            + (f"<ul>{''.join(items)}</ul>" if items else "")
            + (f'<p class="note">More evidence: {_e(plan)}</p>' if plan else ""))


def _candidate(report: dict[str, Any], c: dict[str, Any], i: int, shown: set[str]) -> str:
    def own(key: str) -> list[Any]:  # messages the page already lists at the top are not repeated here
        return [m for m in _per_candidate(report, c, key) or [] if str(m) not in shown]

    parts = [f'<section id="c{i}"><h2>{_e(c.get("candidate", "?"))} vs production: {_call(c.get("call"))}</h2>',
             _decision(c.get("decision")),
             _messages("Alerts", own("alerts"), "alert"),
             _win_rates(c), _drift(_per_candidate(report, c, "drift")), _slices(c),
             _messages("Slices worse than production", c.get("flags")), _scores(c), _ops(c),
             _messages("Possible reward gaming", own("reward_gaming")),
             _clusters(_per_candidate(report, c, "failure_clusters")), "</section>"]
    return "\n".join(p for p in parts if p)


def _header(report: dict[str, Any], title: str) -> str:
    window = report.get("window") or {}
    stamps = [datetime.fromtimestamp(window[k], UTC).strftime("%Y-%m-%d %H:%M UTC")
              for k in ("first", "last") if isinstance(window.get(k), int | float)]
    cards = []
    for i, c in enumerate(report.get("candidates") or []):
        call = c.get("call") or "not enough data"
        src = c.get("decided_by")
        cards.append(f'<div class="verdict {_CALLS.get(call, "unknown")}"><a href="#c{i}">'
                     f'<b>{_e(c.get("candidate"))}</b></a><br>{_call(call)}<br><span class="note">'
                     f'{"decided by " + _e(SOURCES.get(src, src)) if src else "no source decided"}; '
                     f'{_e(c.get("pairs", 0))} pairs</span></div>')
    when = f'<p class="note">traffic from {" to ".join(stamps)}</p>' if stamps else ""
    body = "".join(cards) or '<p class="note">no candidate answers stored yet: nothing to compare</p>'
    return f'<h1>{_e(title)}</h1>{when}<div class="verdicts">{body}</div>'


def _judges(judges: dict[str, Any] | None, min_kappa: float) -> str:
    if not judges:
        return '<h2>Judge reliability</h2><p class="note">no judge has been checked against human grades</p>'
    bars = [Bar(f"{j} (n={r.get('n', 0)})", r.get("kappa"), mark=not r.get("reliable"))
            for j, r in sorted(judges.items())]
    lo = min([0.0] + [b.value for b in bars if b.value is not None])  # kappa can fall below chance
    return ("<h2>Judge reliability</h2><p class=\"note\">Cohen's kappa against human grades; red: below the bar.</p>"
            + bar_chart(bars, domain=(lo, 1.0), base=0.0, ref=min_kappa, ref_label=f"min_kappa {min_kappa:g}",
                        kind="kappa"))


def _models(models: dict[str, Any] | None) -> str:
    if not models:
        return ""
    ranked = sorted(models.items(), key=lambda kv: -(kv[1].get("value") or 0))
    bars = [Bar(m, e.get("value"), e.get("low"), e.get("high")) for m, e in ranked]
    ends = [v for b in bars for v in (b.low, b.high, b.value) if v is not None] or [1000.0]
    pad = max(10.0, (max(ends) - min(ends)) * 0.05)
    # bars grow from production's 1000 so that a model below production points left
    chart = bar_chart(bars, domain=(min(ends) - pad, max(ends) + pad), base=1000.0, ref=1000.0,
                      ref_label="production", kind="ratings")
    return "<h2>Bradley-Terry ratings (production = 1000)</h2>" + chart


def render_html(report: dict[str, Any], *, title: str = "shadoweval report", min_kappa: float | None = None) -> str:
    """The whole report as one HTML page with no script and nothing loaded from elsewhere. `min_kappa` draws
    the judge reliability bar (default: the report's own `min_kappa`, then the settings' default)."""
    bar = min_kappa if min_kappa is not None else report.get("min_kappa", ReportSettings().min_kappa)
    floors = report.get("noise_floor") or {}
    floor = ""
    if floors or report.get("twin_pairs"):
        floor = (f"<h2>Noise floor</h2><p class=\"note\">How far production disagrees with its own twin "
                 f"({_e(report.get('twin_pairs', 0))} pairs): smaller differences are not called.</p>"
                 + _table(["source", "floor"], [[_e(k), f"±{_f(v)}"] for k, v in sorted(floors.items())], (1,)))
    # lists at the top level are report-wide and shown first; dicts are keyed by candidate
    wide = {k: v if isinstance(v := report.get(k), list) else None
            for k in ("alerts", "reward_gaming", "failure_clusters")}
    shown = {str(m) for k in ("alerts", "reward_gaming") for m in wide[k] or []}
    body = [_header(report, title), _messages("Alerts", wide["alerts"], "alert"),
            _messages("Possible reward gaming", wide["reward_gaming"]),
            *(_candidate(report, c, i, shown) for i, c in enumerate(report.get("candidates") or [])),
            _models(report.get("models")), _judges(report.get("judges"), float(bar)), floor,
            _clusters(wide["failure_clusters"], "h2")]
    # the page pins its one style block by hash: even opened from disk it loads nothing and runs nothing
    digest = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
    csp = f"default-src 'none'; style-src 'sha256-{digest}'"
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")


def write_html(report: dict[str, Any], path: str | Path, *, title: str = "shadoweval report") -> Path:
    """Render the report and write it to `path` (parents created); returns the path written."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_html(report, title=title), encoding="utf-8")
    return out
