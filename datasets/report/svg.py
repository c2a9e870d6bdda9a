"""The report's charts as inline SVG, drawn in Python: bars with interval whiskers and a time series
with an interval band. No script and nothing fetched, so the page stays one file under a strict CSP.
Every label goes through `markupsafe.escape`, as the page's Jinja2 template escapes everything else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import escape

_BAR, _ALARM, _REF = "#54aeff", "#cf222e", "#6e7781"


@dataclass(frozen=True)
class Bar:
    """A point estimate and its interval: one row of a bar chart, or one period of a time series."""

    label: str
    value: float | None
    low: float | None = None
    high: float | None = None
    mark: bool = False  # drawn in the alarm colour: a flagged slice, an unreliable judge
    dim: bool = False  # drawn faint: too few pairs for the slice to be checked


def _f(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _ci(e: dict[str, Any] | None, fmt: str = ".3f") -> str:
    if not e or e.get("value") is None:
        return "-"
    return f"{_f(e['value'], fmt)} [{_f(e.get('low'), fmt)}, {_f(e.get('high'), fmt)}]"


def bar_chart(bars: Sequence[Bar], *, domain: tuple[float, float], base: float, ref: float | None = None,
              ref_label: str = "", kind: str = "bars") -> str:
    """Horizontal bars from `base` to each value, interval whiskers, and a dashed reference line."""
    lo, hi = domain
    label_w, plot_w, row_h, top = 220, 460, 22, 18
    height = top + row_h * len(bars) + 22

    def x(v: float) -> float:  # values outside the domain are pinned to its edge, never drawn off the chart
        return label_w + (min(max(v, lo), hi) - lo) / ((hi - lo) or 1.0) * plot_w

    out = [f'<svg class="chart {escape(kind)}" width="{label_w + plot_w + 70}" height="{height}" role="img">']
    for i, b in enumerate(bars):
        y, mid = top + i * row_h, top + i * row_h + row_h / 2
        label = b.label if len(b.label) <= 32 else b.label[:31] + "…"
        weight = ' font-weight="700"' if b.mark else ""
        out.append(f'<text x="{label_w - 8}" y="{mid + 4:.1f}" text-anchor="end"{weight}>{escape(label)}</text>')
        if b.value is None:
            out.append(f'<text x="{label_w + 4}" y="{mid + 4:.1f}" fill="{_REF}">no data</text>')
            continue
        x0, x1 = sorted((x(base), x(b.value)))
        tip = f"{b.label}: {_f(b.value)} [{_f(b.low)}, {_f(b.high)}]"
        out.append(f'<rect x="{x0:.1f}" y="{y + 4}" width="{max(x1 - x0, 1.5):.1f}" height="{row_h - 8}" '
                   f'fill="{_ALARM if b.mark else _BAR}" opacity="{0.35 if b.dim else 0.85}"><title>{escape(tip)}</title>'
                   "</rect>")
        right = x(b.value)
        if b.low is not None and b.high is not None:
            xl, xh = x(b.low), x(b.high)
            right = max(right, xh)
            out.append(f'<path d="M{xl:.1f} {mid}H{xh:.1f}M{xl:.1f} {mid - 5}v10M{xh:.1f} {mid - 5}v10" '
                       'stroke="#1f2328" stroke-width="1.3" fill="none"/>')
        out.append(f'<text x="{right + 5:.1f}" y="{mid + 4:.1f}" fill="#57606a">{_f(b.value, ".2f")}</text>')
    if ref is not None:
        out.append(f'<line x1="{x(ref):.1f}" x2="{x(ref):.1f}" y1="{top - 4}" y2="{height - 20}" stroke="{_REF}" '
                   f'stroke-dasharray="4 3"/><text x="{x(ref):.1f}" y="{top - 7}" text-anchor="middle" '
                   f'fill="{_REF}">{escape(ref_label or _f(ref, "g"))}</text>')
    for t in (lo, (lo + hi) / 2, hi):  # three ticks are enough to read a scale that the values label anyway
        out.append(f'<text x="{x(t):.1f}" y="{height - 4}" text-anchor="middle" fill="{_REF}">{_f(t, ".4g")}</text>')
    return "\n".join(out + ["</svg>"])


def time_series(points: Sequence[Bar], *, domain: tuple[float, float] = (0.0, 1.0), ref: float | None = 0.5,
                kind: str = "timeseries") -> str:
    """A line through the points over their interval band, with a dashed reference line; periods without a
    value are left out."""
    lo, hi = domain
    left, top, plot_w, plot_h = 44, 12, 600, 150
    pts = [(p.label, p.value, p.value if p.low is None else p.low, p.value if p.high is None else p.high)
           for p in points if p.value is not None]

    def x(i: int) -> float:
        return left + (i / (len(pts) - 1) * plot_w if len(pts) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + (1 - (min(max(v, lo), hi) - lo) / ((hi - lo) or 1.0)) * plot_h

    band = [(x(i), y(h)) for i, (_, _, _, h) in enumerate(pts)] + [(x(i), y(lw)) for i, (_, _, lw, _) in
                                                                    reversed(list(enumerate(pts)))]
    out = [f'<svg class="chart {escape(kind)}" width="{left + plot_w + 50}" height="{top + plot_h + 40}" role="img">',
           f'<polygon points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in band)}" fill="{_BAR}" opacity="0.25"/>',
           f'<polyline points="{" ".join(f"{x(i):.1f},{y(v):.1f}" for i, (_, v, _, _) in enumerate(pts))}" '
           'fill="none" stroke="#0969da" stroke-width="2"/>']
    for t in sorted({lo, hi, *([ref] if ref is not None else [])}):
        out.append(f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end" fill="{_REF}">{_f(t, "g")}</text>')
    if ref is not None:
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(ref):.1f}" y2="{y(ref):.1f}" stroke="{_REF}" '
                   'stroke-dasharray="4 3"/>')
    step = -(-len(pts) // 8) or 1  # at most eight period labels, so they never overlap
    for i, (label, v, low, high) in enumerate(pts):
        out.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3.5" fill="#0969da"><title>'
                   f"{escape(label)}: {v:.3f} [{low:.3f}, {high:.3f}]</title></circle>")
        if (len(pts) - 1 - i) % step == 0:  # counted from the end, so the latest period is always labelled
            out.append(f'<text x="{x(i):.1f}" y="{top + plot_h + 22}" text-anchor="middle">{escape(label)}</text>')
    return "\n".join(out + ["</svg>"])
