"""The comparison report as text for a terminal: the verdict first, then the evidence."""

from __future__ import annotations

from typing import Any

SOURCES = {"human": "human grades (reweighted)", "ppi": "judge + human (prediction-powered)",
            "pairwise": "pairwise LLM judge", "offline": "offline judges' preference"}


def _ci(e: dict[str, Any] | None, digits: int = 3) -> str:
    if not e or e.get("value") is None:
        return "-"
    grades = f" ({e['grades']} grades)" if e.get("grades", e["n"]) != e["n"] else ""  # pairs graded twice
    return f"{e['value']:.{digits}f} [{e['low']:.{digits}f}, {e['high']:.{digits}f}] n={e['n']}{grades}"


def _slices(c: dict[str, Any]) -> list[str]:
    tests = c.get("slice_tests") or {}
    corrected = (f" ({tests['tests']} calls, corrected for their number: false discovery rate {tests['fdr']:.0%})"
                 if tests.get("fdr") and tests.get("tests") else "")
    if c["flags"]:
        out = [f"   slices worse than production{corrected}:", *[f"     ! {f}" for f in c["flags"]]]
    else:
        slices = c.get("slices") or {}
        checked = sum(1 for s in slices.values() if s.get("checked", True))
        small = (f" ({len(slices) - checked} with too few pairs to check)" if checked < len(slices) else "")
        out = [f"   slices: {checked} checked{small}, none significantly worse{corrected}"]
    alone = uncorrected_calls(c)
    if alone:
        out.append("     called alone, not once corrected: " + "; ".join(alone))
    return out


def uncorrected_calls(c: dict[str, Any]) -> list[str]:
    """The slice calls a 95% interval made on its own that the correction for their number did not keep."""
    found = []
    for name, s in (c.get("slices") or {}).items():
        for source, w in (s.get("win_rate") or {}).items():
            if w.get("uncorrected_call"):
                found.append(f"{name} {source} win rate {w['uncorrected_call']}")
        for judge, sc in (s.get("scores") or {}).items():
            for what, e in ((judge, sc), (f"{judge} share passing", sc.get("pass_rate") or {})):
                if e.get("uncorrected_call"):
                    found.append(f"{name} {what} {e['uncorrected_call']}")
    return found


def _num(x: float | None, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def failure_patterns(value: Any) -> dict[str, Any] | None:
    """A report's `failure_clusters` as `trends.failure_clusters` gives them ({"losses", "unclustered",
    "more", "clusters"}); reports written before clusters were labeled hold a bare list of clusters."""
    if isinstance(value, dict) or not value:
        return value or None
    first = value[0]
    losses = round(first["size"] / first["share"]) if first.get("share") else sum(k.get("size", 0) for k in value)
    return {"losses": losses, "unclustered": 0, "more": 0, "clusters": list(value)}


def _where_it_loses(found: dict[str, Any] | None, shown: int = 5) -> list[str]:
    if not found or not found.get("losses"):
        return []
    clusters = found.get("clusters") or []
    passing = ([f"     {found['passing']} of the {found['losses']} lost answers pass every judge that decided on "
                "them: lost on a lower score, nothing failed"] if found.get("passing") else [])
    if not clusters:
        return [f"   where it loses: no recurring pattern among {found['losses']} losses", *passing]
    out = [f"   where it loses ({found['losses']} losses grouped by question and the judges' reasons, "
           "largest first):", *passing]
    for k in clusters[:shown]:
        question = k.get("representative") or k["examples"][0]["question"]
        label = f"{k['label']}  " if k.get("terms") else ""  # without shared terms the question is the label
        out.append(f"     {k['size']:3} x {k.get('share', 0):4.0%}  {label}e.g. {question[:90]!r}")
    more = len(clusters) - shown + (found.get("more") or 0)
    if more > 0:
        out.append(f"     + {more} more pattern{'s' if more > 1 else ''}")
    if found.get("unclustered"):
        out.append(f"     {found['unclustered']:3} not in any recurring pattern")
    return out


def _over_time(periods: list[dict[str, Any]]) -> list[str]:
    """Drift per period, when there is more than one (a single period is the whole comparison above):
    the win rate, then per judge the candidate's mean score and share passing against production's."""
    if len(periods) < 2:
        return []
    out = ["   over time (candidate vs production, plain means per period):"]
    for p in periods:
        parts = [f"win rate {_ci(p.get('win_rate'), 2)}"]
        for judge, s in (p.get("scores") or {}).items():
            passing = (p.get("passing") or {}).get(judge) or {}
            if s.get("n"):
                parts.append(f"{judge} {s['candidate']:.2f} vs {s['production']:.2f}"
                             + (f", passing {passing['candidate']:.2f} vs {passing['production']:.2f}"
                                if passing.get("n") else ""))
        out.append(f"     {p['period']}  {p['n']:4} pairs  " + "; ".join(parts))
    return out


def format_report(report: dict[str, Any]) -> str:
    out: list[str] = []
    if not report["candidates"]:
        return "no candidate answers stored yet: nothing to compare"
    floors = report.get("noise_floor") or {}
    out.append(f"noise floor from production's twin ({report.get('twin_pairs', 0)} pairs): "
               + (", ".join(f"{k} ±{v:.3f}" for k, v in sorted(floors.items())) or "none (no twin answers judged)"))
    for c in report["candidates"]:
        d = c.get("decision")
        verdict = ("" if not d else "  ->  PASSES" if d["pass"] else "  ->  FAILS" if d["pass"] is False
                   else "  ->  CANNOT DECIDE YET")
        out += ["", f"== {c['candidate']} vs production: {c['call'].upper()} ({c['pairs']} pairs){verdict}"]
        src = c.get("decided_by")
        if src:
            w = c["win_rate"].get(src) or {}
            out.append(f"   decided by: {SOURCES.get(src, src)}, win rate {_ci(w)}")
        if d:
            out.append(f"   rule: {d['rule']}")
            out += [f"   fails: {r}" for r in d["reasons"]]
            if d["cannot_decide"]:
                out.append(f"   cannot decide: {d['cannot_decide']}")
            if d.get("plan") and d["plan"].get("text") and (d["pass"] is not True):
                out.append(f"   more evidence: {d['plan']['text']}")
        for name, w in c["win_rate"].items():
            tag = "" if w.get("reliable") is not False else "  (judge below the reliability bar)"
            if w.get("reliable") is None and name in ("pairwise", "offline"):
                tag = "  (judge not checked against people)"
            if w.get("judge_weight") is not None:  # prediction-powered: how far it leans on the judge
                tag += f"  (judge weight {w['judge_weight']:.2f})"
            out.append(f"   win rate, {name:9} {_ci(w)}  win/tie/loss {w['wins']}/{w['ties']}/{w['losses']}  "
                       f"-> {w['call']}{tag}")
        if c.get("length_controlled"):
            out.append(f"   length-controlled win rate  {_ci(c['length_controlled'])}")
        if c["scores"]:
            out.append("   judge scores        production              candidate               difference")
            for judge, s in c["scores"].items():
                mark = " (unreliable)" if s.get("reliable") is False else ""
                out.append(f"   {judge:18}  {_ci(s['production'], 2):22}  {_ci(s['candidate'], 2):22}  "
                           f"{_ci(s['difference'], 2)} -> {s['call']}{mark}")
                if s.get("pass_rate"):
                    r = s["pass_rate"]
                    out.append(f"   {'  share passing':18}  {_ci(r['production'], 2):22}  {_ci(r['candidate'], 2):22}  "
                               f"{_ci(r['difference'], 2)} -> {r['call']}")
        ops = c["ops"]
        out.append("   ops: " + "; ".join(
            f"{k} {_num(v['production'], '.4g')} -> {_num(v['candidate'], '.4g')}" for k, v in ops.items()))
        out += _slices(c)
        out += _over_time(c.get("drift") or [])
        for m in c.get("reward_gaming") or []:
            out.append(f"   !! reward gaming: {m}")
        for a in c.get("alerts") or []:
            out.append(f"   !! drift alert: {a}")
        out += _where_it_loses(failure_patterns(c.get("failure_clusters")))
    if report.get("models"):
        out += ["", "Bradley-Terry ratings (production = 1000):"]
        for m, e in sorted(report["models"].items(), key=lambda kv: -(kv[1]["value"] or 0)):
            out.append(f"   {m:20} {_ci(e, 0)}")
    if report.get("judges"):
        out += ["", "judge reliability against human grades:"]
        for j, r in sorted(report["judges"].items()):
            ece = f", ECE {r['ece']:.2f}" if r.get("ece") is not None else ""
            out.append(f"   {j:18} kappa {_num(r['kappa'], '.2f')} on {r['n']}{ece}  "
                       + {True: "reliable", False: "below the bar"}.get(r["reliable"], "not checked yet (too few grades)"))
    return "\n".join(out)
