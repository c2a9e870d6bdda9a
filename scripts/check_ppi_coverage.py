"""How often the report's win-rate intervals cover the truth: prediction-powered (power-tuned, and with the judge's weight fixed at 1), and people's alone when pairs are graded more than once.

A synthetic world shaped like the scenario suite's (docs/scenarios.md): each pair's true outcome is a
win, tie or loss (0.4 / 0.2 / 0.4, so the graders' win rate is 0.5), the judge is right 85% of the
time and a grader 80%, each otherwise picking one of the two other outcomes.

- Prediction-powered: a uniform sample of the pairs is graded once; `ppi_mean` gets every pair's judge
  outcome (graded ones included, as the report passes them).
- People alone: each sampled pair gets one grade, or k independent grades (10% of pairs graded twice,
  the grading queue's default `double_rate`; every pair three times, as a file imported with several
  annotators' votes). The report's estimate is each pair's mean grade, bootstrapped over pairs (a
  pair's grades share its answers); until 2026-12-08 it bootstrapped the grades as if independent,
  shown beside it.

Prints coverage and mean width per size. Figures quoted in docs/scenarios.md and docs/report.md.

    .venv/bin/python scripts/check_ppi_coverage.py [--reps 2000] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np

from shadoweval.datasets.report.estimates import mean_ci, ppi_mean

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
    people(args.reps, rng)


def people(reps: int, rng: np.random.Generator) -> None:
    """People's win rate alone: per pair (the report) against per grade (before), by grades per pair."""
    print(f"\n{'graded pairs':>12} {'grades per pair':>16}  {'per pair: coverage':>18} {'width':>6}"
          f"  {'per grade: coverage':>19} {'width':>6}")
    for n, label, times in ((100, "1", lambda k: np.ones(k, int)),
                            (100, "1, 10% twice", lambda k: 1 + (rng.random(k) < 0.1)),
                            (100, "3", lambda k: np.full(k, 3)),
                            (200, "3", lambda k: np.full(k, 3))):
        covered, widths = np.zeros(2), np.zeros(2)
        for r in range(reps):
            truth = rng.choice(OUTCOMES, size=n, p=[0.4, 0.2, 0.4])
            k = times(n)
            votes = noisy(np.repeat(truth, k), 0.8, rng)
            per_pair = np.add.reduceat(votes, np.r_[0, np.cumsum(k)[:-1]]) / k
            for j, e in enumerate((mean_ci(per_pair, n_boot=500, seed=r), mean_ci(votes, n_boot=500, seed=r))):
                assert e.low is not None and e.high is not None
                covered[j] += e.low <= 0.5 <= e.high
                widths[j] += e.high - e.low
        c, w = covered / reps, widths / reps
        print(f"{n:>12} {label:>16}  {c[0]:>18.3f} {w[0]:>6.3f}  {c[1]:>19.3f} {w[1]:>6.3f}")


if __name__ == "__main__":
    main()
