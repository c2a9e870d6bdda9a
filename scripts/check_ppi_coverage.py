"""How often the report's prediction-powered interval covers the truth, power-tuned and with the judge's weight fixed at 1.

A synthetic world shaped like the scenario suite's (docs/scenarios.md): each pair's true outcome is a
win, tie or loss (0.4 / 0.2 / 0.4, so the graders' win rate is 0.5), the judge is right 85% of the
time and a grader 80%, each otherwise picking one of the two other outcomes. A uniform sample of
the pairs is graded; `ppi_mean` gets every pair's judge outcome (graded ones included, as the report
passes them). Prints coverage and mean width per size. Figures quoted in docs/scenarios.md.

    .venv/bin/python scripts/check_ppi_coverage.py [--reps 2000] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

from shadoweval.datasets.report.estimates import ppi_mean

OUTCOMES = np.array([0.0, 0.5, 1.0])


def noisy(truth: np.ndarray, right: float, rng: np.random.Generator) -> np.ndarray:
    """`truth` where a draw is right, else one of the two other outcomes at random."""
    shift = rng.integers(1, 3, size=truth.size)  # 1 or 2 steps round the three outcomes
    other = OUTCOMES[(np.searchsorted(OUTCOMES, truth) + shift) % 3]
    return np.where(rng.random(truth.size) < right, truth, other)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{'graded':>6} {'pairs':>6}  {'tuned: coverage':>15} {'width':>6}  {'weight 1: coverage':>18} {'width':>6}")
    for n, size in ((45, 100), (100, 200), (200, 400)):
        covered, widths = np.zeros(2), np.zeros(2)
        for _ in range(args.reps):
            truth = rng.choice(OUTCOMES, size=size, p=[0.4, 0.2, 0.4])
            judge, grade = noisy(truth, 0.85, rng), noisy(truth, 0.8, rng)
            graded = rng.choice(size, n, replace=False)
            for k, power in enumerate((None, 1.0)):
                e = ppi_mean(grade[graded], judge[graded], judge, power=power)
                assert e.low is not None and e.high is not None
                covered[k] += e.low <= 0.5 <= e.high
                widths[k] += e.high - e.low
        c, w = covered / args.reps, widths / args.reps
        print(f"{n:>6} {size:>6}  {c[0]:>15.3f} {w[0]:>6.3f}  {c[1]:>18.3f} {w[1]:>6.3f}")


if __name__ == "__main__":
    main()
