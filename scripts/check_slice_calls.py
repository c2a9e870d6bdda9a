"""How often the report's per-slice calls go wrong, with and without the correction for their number.

Synthetic pairs in S slices of P pairs: a pairwise judge's outcome per pair (a win with probability
0.5, or 0.3 in one "bad" slice) and one judge's score for each answer (uniform 0.4-0.9 for both, so
no real difference; pass at 0.6). `slice_table` calls every checked slice's win rate, the judge's
mean score and its share passing, as the report does. Printed per size: the share of honest reports
with any slice called better or worse and with any slice flagged worse, at `slice_fdr` 0 (each
slice alone at 95%) and 0.05 (the default); and how often the bad slice is flagged. Figures quoted in
docs/report.md.

    .venv/bin/python scripts/check_slice_calls.py [--reports 200] [--bad-reports 100] [--seed 2026]
"""

from __future__ import annotations

import argparse

import numpy as np

from shadoweval.core.settings import ReportSettings
from shadoweval.core.types import Output
from shadoweval.datasets.report.build import Row, slice_table


def rows(rng: np.random.Generator, slices: int, per_slice: int, bad: float | None = None) -> list[Row]:
    out = []
    for s in range(slices):
        rate = bad if bad is not None and s == 0 else 0.5
        for i in range(per_slice):
            k = s * per_slice + i
            o = Output(id=f"o{k}", exchange_id=f"e{k}", role="candidate", name="cand", model="m", status="ok",
                       started_at=0.0, text="a")
            p = Output(id=f"p{k}", exchange_id=f"e{k}", role="production", name="production", model="m",
                       status="ok", started_at=0.0, text="b")
            sp, sc = float(rng.uniform(0.4, 0.9)), float(rng.uniform(0.4, 0.9))
            out.append(Row(f"e{k}", float(k), "q", {"route": f"r{s:02d}"}, p, o, {"grounded": (sp, sc)},
                           float(rng.random() < rate), None, (), {"grounded": (sp >= 0.6, sc >= 0.6)}))
    return out


def calls(table: dict) -> list[str]:
    found = []
    for s in table.values():
        found += [w["call"] for w in s["win_rate"].values()]
        for sc in s["scores"].values():
            found += [sc["call"], sc["pass_rate"]["call"]]
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reports", type=int, default=200)
    p.add_argument("--bad-reports", type=int, default=100)
    p.add_argument("--seed", type=int, default=2026)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    qs = (0.0, 0.05)
    print(f"{'slices x pairs':>15}  {'any call (alone -> corrected)':>30}  {'any flag':>15}  "
          f"{'bad slice (0.3) flagged':>24}")
    for slices, per in ((4, 50), (10, 40), (10, 150)):
        any_call, any_flag, found = dict.fromkeys(qs, 0), dict.fromkeys(qs, 0), dict.fromkeys(qs, 0)
        for _ in range(args.reports):
            honest = rows(rng, slices, per)
            for q in qs:
                table, flags, _ = slice_table(honest, ReportSettings(bootstrap=1000, slice_fdr=q), {}, {}, "pairwise")
                any_call[q] += any(c != "within noise" for c in calls(table))
                any_flag[q] += bool(flags)
        for _ in range(args.bad_reports):
            planted = rows(rng, slices, per, bad=0.3)
            for q in qs:
                _, flags, _ = slice_table(planted, ReportSettings(bootstrap=1000, slice_fdr=q), {}, {}, "pairwise")
                found[q] += any(f.startswith("route=r00: worse by") for f in flags)
        r, b = args.reports, args.bad_reports
        print(f"{f'{slices} x {per}':>15}  {f'{any_call[0.0] / r:.3f} -> {any_call[0.05] / r:.3f}':>30}  "
              f"{f'{any_flag[0.0] / r:.3f} -> {any_flag[0.05] / r:.3f}':>15}  "
              f"{f'{found[0.0] / b:.2f} -> {found[0.05] / b:.2f}':>24}")


if __name__ == "__main__":
    main()
