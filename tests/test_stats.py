"""The report statistics against known truth: interval coverage over many seeds, unbiased Hajek
weighting under Poisson sampling, Bradley-Terry against closed forms and a direct maximisation of its
likelihood, length control on a judge that only likes length, PPI with a biased judge, and the noise
floor on production judged against itself."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shadoweval.datasets.report.stats import (
    Estimate,
    bradley_terry,
    length_controlled_win_rate,
    mean_ci,
    noise_floor,
    paired_difference,
    ppi_mean,
    ppi_power,
    significant,
    win_rate,
    win_tie_loss,
    z_for,
)

ELO = 400 / math.log(10)


def outcomes(rng: np.random.Generator, n: int, win: float, tie: float) -> np.ndarray:
    return rng.choice([1.0, 0.5, 0.0], p=[win, tie, 1 - win - tie], size=n)


def test_z_for_matches_normal_quantiles() -> None:
    assert z_for(0.975) == pytest.approx(1.95996, abs=5e-6)
    assert z_for(0.975) == pytest.approx(1.959963984540054, abs=1e-12)
    assert z_for(0.5) == 0.0
    assert z_for(0.001) == pytest.approx(-3.090232306167813, abs=1e-12)  # the lower tail branch
    assert z_for(0.9) == pytest.approx(-z_for(0.1), abs=1e-12)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError):
            z_for(bad)


def test_estimate_excludes_and_to_dict() -> None:
    e = Estimate(0.6, 0.55, 0.65, 100)
    assert e.excludes(0.5) and e.excludes(0.7) and not e.excludes(0.55) and not e.excludes(0.6)
    assert e.to_dict() == {"value": 0.6, "low": 0.55, "high": 0.65, "n": 100, "level": 0.95}
    assert not Estimate(None, None, None, 0).excludes(0.5)


def test_bootstrap_interval_covers_known_win_rate() -> None:
    # 50% wins, 20% ties, 30% losses: a true win rate of 0.6
    covered = 0
    for seed in range(200):
        y = outcomes(np.random.default_rng(seed), 200, 0.5, 0.2)
        e = win_rate(y, n_boot=300, seed=seed)
        assert e.low <= e.value <= e.high and e.n == 200
        covered += e.low <= 0.6 <= e.high
    assert 0.90 <= covered / 200 <= 0.99


def test_win_rate_is_deterministic_given_a_seed() -> None:
    y = outcomes(np.random.default_rng(0), 100, 0.5, 0.2)
    assert win_rate(y, seed=3) == win_rate(list(y), seed=3)
    assert win_rate(y, seed=3) != win_rate(y, seed=4)


def test_hajek_weights_undo_unequal_inclusion_probabilities() -> None:
    rng = np.random.default_rng(0)
    size = 5000
    pi = rng.uniform(0.02, 0.3, size)  # informative sampling: pairs likelier to be lost are graded more
    y = (rng.random(size) < 0.8 - 2 * pi).astype(float)
    truth = y.mean()
    weighted, unweighted, covered = [], [], 0
    for seed in range(300):
        take = np.random.default_rng(seed).random(size) < pi  # Poisson sampling: one coin per pair
        e = win_rate(y[take], 1 / pi[take], n_boot=200, seed=seed)
        assert e.value == pytest.approx(np.sum(y[take] / pi[take]) / np.sum(1 / pi[take]))
        weighted.append(e.value)
        unweighted.append(y[take].mean())
        covered += e.low <= truth <= e.high
    assert abs(np.mean(weighted) - truth) < 0.005  # the spread of that mean is ~0.002
    assert np.mean(unweighted) - truth < -0.05
    assert 0.90 <= covered / 300 <= 0.99


def test_win_tie_loss_counts_and_shares() -> None:
    assert win_tie_loss([1, 1, 0.5, 0]) == {"n": 4, "wins": 2, "ties": 1, "losses": 1, "win_share": 0.5,
                                            "tie_share": 0.25, "loss_share": 0.25}


def test_paired_difference_cancels_shared_difficulty() -> None:
    rng = np.random.default_rng(1)
    difficulty = rng.normal(0, 1, 300)
    candidate = difficulty + 0.1 + rng.normal(0, 0.1, 300)
    production = difficulty + rng.normal(0, 0.1, 300)
    e = paired_difference(candidate, production, seed=1)
    assert e.low <= 0.1 <= e.high and e.high - e.low < 0.05
    assert e.value == pytest.approx(np.mean(candidate - production))
    with pytest.raises(ValueError):
        paired_difference([1, 2], [1])


# ---- Bradley-Terry -------------------------------------------------------------------------------

def test_bradley_terry_two_models_is_wins_over_losses() -> None:
    games = [("a", "b", 1.0)] * 20 + [("a", "b", 0.5)] * 10 + [("b", "a", 1.0)] * 10
    ratings = bradley_terry(games, prior=0)
    assert ratings["a"].value == 1000 and (ratings["a"].low, ratings["a"].high) == (1000, 1000)
    assert ratings["a"].value - ratings["b"].value == pytest.approx(400 * math.log10(25 / 15), abs=1e-8)
    assert ratings["b"].low < ratings["b"].value < ratings["b"].high and ratings["b"].n == 40
    # the prior is half a tie more between every pair: a quarter win to each side
    ratings = bradley_terry(games, anchor="b")
    assert ratings["a"].value - 1000 == pytest.approx(400 * math.log10(25.25 / 15.25), abs=1e-8)


def test_bradley_terry_recovers_known_strengths() -> None:
    truth = {"prod": 1000.0, "strong": 1150.0, "weak": 900.0}
    rng = np.random.default_rng(7)
    names = list(truth)
    games = []
    for _ in range(3000):
        a, b = rng.choice(3, size=2, replace=False)
        p = 1 / (1 + 10 ** ((truth[names[b]] - truth[names[a]]) / 400))
        games.append((names[a], names[b], float(rng.random() < p)))
    ratings = bradley_terry(games, anchor="prod", seed=7)
    assert sorted(ratings, key=lambda m: ratings[m].value) == ["weak", "prod", "strong"]
    for name, rating in ratings.items():
        assert rating.value == pytest.approx(truth[name], abs=30)
        assert rating.low <= truth[name] <= rating.high


def _gradient_ascent_log_strengths(games: list[tuple[str, str, float]], names: list[str],
                                   prior: float) -> np.ndarray:
    """The reference: maximise sum over comparisons of o*log s(t_a - t_b) + (1-o)*log s(t_b - t_a),
    plus `prior` tie pseudo-comparisons per pair, by plain gradient ascent."""
    k = len(names)
    beat = np.full((k, k), prior / 2) - np.eye(k) * prior / 2
    for a, b, o in games:
        beat[names.index(a), names.index(b)] += o
        beat[names.index(b), names.index(a)] += 1 - o
    wins, n = beat.sum(1), beat + beat.T
    theta = np.zeros(k)
    step = 1 / (0.5 * n.sum(1).max())  # 1 / (a bound on the Hessian's largest eigenvalue)
    for _ in range(200_000):
        grad = wins - (n / (1 + np.exp(theta[None, :] - theta[:, None]))).sum(1)
        theta += step * grad
        if np.abs(grad).max() < 1e-11:
            break
    return theta - theta[0]


@pytest.mark.parametrize("prior", [0.0, 0.5])
def test_bradley_terry_maximises_the_likelihood(prior: float) -> None:
    rng = np.random.default_rng(3)
    names = ["m0", "m1", "m2", "m3"]
    games = [(names[a], names[b], float(rng.choice([1, 0.5, 0], p=[0.2 + 0.2 * a, 0.1, 0.7 - 0.2 * a])))
             for a, b in (rng.choice(4, 2, replace=False) for _ in range(150))]
    ratings = bradley_terry(games, anchor="m0", prior=prior, n_boot=20)
    ours = np.array([(ratings[m].value - 1000) / ELO for m in names])
    np.testing.assert_allclose(ours, _gradient_ascent_log_strengths(games, names, prior), atol=1e-8)


def test_bradley_terry_one_sided_models() -> None:
    games = [("champ", "mid", 1.0)] * 10 + [("mid", "chump", 1.0)] * 10 + [("champ", "chump", 1.0)] * 5
    ratings = bradley_terry(games)  # first seen, "champ", is the anchor
    assert all(math.isfinite(r.value) and math.isfinite(r.low) and math.isfinite(r.high) for r in ratings.values())
    assert ratings["champ"].value > ratings["mid"].value > ratings["chump"].value
    with pytest.raises(ValueError, match="prior"):
        bradley_terry(games, prior=0)
    assert bradley_terry([]) == {}
    with pytest.raises(ValueError):
        bradley_terry([("a", "a", 1.0)])
    with pytest.raises(ValueError):
        bradley_terry([("a", "b", 0.7)])
    with pytest.raises(ValueError):
        bradley_terry([("a", "b", 1.0)], anchor="c")


# ---- length control ------------------------------------------------------------------------------

def test_length_control_removes_a_pure_length_preference() -> None:
    rng = np.random.default_rng(11)
    n = 2000
    diff = rng.normal(300, 400, n)  # candidates mostly write longer answers
    prefers = 1 / (1 + np.exp(-2.0 * np.tanh(diff / diff.std())))  # the judge likes length, nothing else
    y = np.where(rng.random(n) < 0.2, 0.5, (rng.random(n) < prefers).astype(float))
    raw = win_rate(y, seed=11)
    lc = length_controlled_win_rate(y, diff, seed=11)
    assert raw.value > 0.6 and raw.low > 0.5
    assert abs(lc.value - 0.5) < 0.05 and lc.low <= 0.5 <= lc.high
    assert significant(raw) == "better" and significant(lc) == "within noise"


def test_length_control_keeps_a_real_win_and_survives_one_sided_data() -> None:
    rng = np.random.default_rng(12)
    diff = rng.normal(0, 200, 800)
    y = (rng.random(800) < 0.7).astype(float)  # better, and length has nothing to do with it
    lc = length_controlled_win_rate(y, diff, n_boot=500)
    assert lc.value == pytest.approx(win_rate(y).value, abs=0.03)
    assert length_controlled_win_rate([1.0] * 10, [5] * 10).value > 0.99  # separable and constant diffs
    assert length_controlled_win_rate([0.0] * 5, [1, 2, 3, 4, 5], n_boot=50).value < 0.01
    with pytest.raises(ValueError):
        length_controlled_win_rate([1.0, 0.0], [1.0])


# ---- prediction-powered inference ----------------------------------------------------------------

def test_ppi_corrects_a_biased_judge_and_beats_labels_alone() -> None:
    rng = np.random.default_rng(5)
    size, n = 20_000, 300
    y = (rng.random(size) < 0.6).astype(float)
    judge = y + 0.1 + rng.normal(0, 0.2, size)  # a judge that tracks the truth, 0.1 too generous
    truth = y.mean()
    labeled = rng.choice(size, n, replace=False)
    ppi = ppi_mean(y[labeled], judge[labeled], judge)
    classical = mean_ci(y[labeled], seed=5)
    assert ppi.low <= truth <= ppi.high and ppi.n == n
    assert ppi.high - ppi.low < 0.6 * (classical.high - classical.low)
    assert judge.mean() - truth == pytest.approx(0.1, abs=0.01) and not ppi.low <= judge.mean() <= ppi.high
    covered = 0
    for seed in range(200):
        labeled = np.random.default_rng(seed).choice(size, n, replace=False)
        e = ppi_mean(y[labeled], judge[labeled], judge)
        covered += e.low <= truth <= e.high
    assert 0.90 <= covered / 200 <= 0.99


def test_power_tuned_ppi_is_never_much_wider_than_labels_alone() -> None:
    """PPI++: with a judge that says nothing about the labels, lambda goes to 0 and the interval is
    the labels' own; plain PPI (lambda 1) adds the judge's noise to it. Coverage holds either way."""
    rng = np.random.default_rng(7)
    size, n = 5_000, 200
    y = (rng.random(size) < 0.5).astype(float)
    noise = rng.random(size)  # a judge unrelated to the labels
    truth, covered, widths, lambdas = y.mean(), 0, [], []
    for seed in range(200):
        take = np.random.default_rng(seed).choice(size, n, replace=False)
        tuned, plain = ppi_mean(y[take], noise[take], noise), ppi_mean(y[take], noise[take], noise, power=1.0)
        classical = y[take].std(ddof=1) / np.sqrt(n) * 2 * 1.959964
        covered += tuned.low <= truth <= tuned.high
        widths.append(((tuned.high - tuned.low) / classical, (plain.high - plain.low) / classical))
        lambdas.append(ppi_power(y[take], noise[take], noise))
    assert 0.90 <= covered / 200 <= 0.99
    tuned_w, plain_w = np.mean(widths, axis=0)
    assert tuned_w < 1.03 and plain_w > 1.15  # the useless judge: no help, and no harm once tuned
    assert np.mean(lambdas) < 0.1
    # a judge that tracks the labels keeps a weight near 1
    good = y + rng.normal(0, 0.1, size)
    take = rng.choice(size, n, replace=False)
    assert ppi_power(y[take], good[take], good) > 0.9


@pytest.mark.parametrize("power", [None, 1.0, 0.5])
def test_ppi_interval_matches_the_spread_of_the_estimate_when_graded_pairs_are_among_the_judged(power) -> None:
    """The report passes every judged pair, the graded ones included: the stated standard error must
    match how much the estimate actually varies (it was 20% too wide at weight 1 and too narrow
    when tuned, before the two means' covariance was counted)."""
    rng = np.random.default_rng(11)
    outcomes = np.array([0.0, 0.5, 1.0])

    def noisy(truth: np.ndarray, right: float) -> np.ndarray:
        other = outcomes[(np.searchsorted(outcomes, truth) + rng.integers(1, 3, truth.size)) % 3]
        return np.where(rng.random(truth.size) < right, truth, other)

    values, stated = [], []
    for _ in range(1500):
        truth = rng.choice(outcomes, size=200, p=[0.4, 0.2, 0.4])
        judge, grade = noisy(truth, 0.85), noisy(truth, 0.8)
        graded = rng.choice(200, 100, replace=False)
        e = ppi_mean(grade[graded], judge[graded], judge, power=power)
        values.append(e.value)
        stated.append((e.high - e.low) / 2 / 1.959964)
    assert np.mean(stated) == pytest.approx(np.std(values), rel=0.08)


def test_ppi_power_by_hand() -> None:
    # Cov(y, f) over the 4 labels, Var(f) over the 8 judged (the labeled among them)
    y, f, fu = [1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0]
    cov = np.cov(y, f, ddof=1)[0, 1]
    assert ppi_power(y, f, fu) == pytest.approx(cov / np.var(fu, ddof=1))
    assert ppi_power([1.0], [1.0], fu) == 1.0  # one label: nothing to tune on
    assert ppi_power(y, f, [0.5] * 8) == 0.0  # a judge that never varies
    assert ppi_power(y, [0.0, 1.0, 0.0, 1.0], fu) == 0.0  # negatively related: clipped at 0
    e = ppi_mean(y, f, fu, power=0.0)  # lambda 0 is the labels' own mean
    assert e.value == pytest.approx(0.5)


def test_weighted_ppi_undoes_informative_labeling() -> None:
    rng = np.random.default_rng(6)
    size = 20_000
    y = (rng.random(size) < 0.6).astype(float)
    judge = y + 0.1 - 0.3 * y * (rng.random(size) < 0.3)  # wrong more often on positives
    pi = np.where(judge < 0.5, 0.05, 0.01)  # labeling goes where the judge says "bad"
    truth, weighted, unweighted, covered = y.mean(), [], [], 0
    for seed in range(200):
        take = np.random.default_rng(seed).random(size) < pi  # ~520 labels of 20,000
        e = ppi_mean(y[take], judge[take], judge, 1 / pi[take])
        weighted.append(e.value)
        covered += e.low <= truth <= e.high
        unweighted.append(ppi_mean(y[take], judge[take], judge).value)
    assert abs(np.mean(weighted) - truth) < 0.005
    assert 0.90 <= covered / 200 <= 0.99
    assert abs(np.mean(unweighted) - truth) > 0.02


# ---- the noise floor -----------------------------------------------------------------------------

def test_noise_floor_rule() -> None:
    twin = [1.0, 1.0, 0.5, 0.0]
    half = z_for(0.975) * np.std(twin, ddof=1) / 2
    assert noise_floor(twin) == pytest.approx(abs(np.mean(twin) - 0.5) + half)
    assert noise_floor([0.5] * 50) == 0.0
    assert noise_floor([1.0]) == 1.0 and noise_floor([]) == 0.0


def test_identical_models_are_within_noise_and_a_real_win_is_not() -> None:
    for seed in range(20):
        rng = np.random.default_rng(seed)
        twin = rng.choice([1.0, 0.0], size=400)  # the judge flips a coin between identical answers
        floor = noise_floor(twin)
        assert 0.04 < floor < 0.12
        same = win_rate(rng.choice([1.0, 0.0], size=400), seed=seed)
        assert significant(same, floor=floor) == "within noise"
        ties = win_rate([0.5] * 400, seed=seed)
        assert significant(ties, floor=noise_floor([0.5] * 400)) == "within noise"
        better = win_rate(outcomes(rng, 400, 0.6, 0.2), seed=seed)  # a win rate of 0.7
        assert significant(better, floor=floor) == "better"
        worse = win_rate(outcomes(rng, 400, 0.2, 0.2), seed=seed)  # 0.3
        assert significant(worse, floor=floor) == "worse"


def test_significant_needs_the_whole_interval_beyond_the_floor() -> None:
    e = Estimate(0.55, 0.52, 0.58, 500)
    assert significant(e) == "better"
    assert significant(e, floor=0.01) == "better" and significant(e, floor=0.02) == "within noise"
    assert significant(Estimate(0.45, 0.42, 0.48, 500), floor=0.01) == "worse"
    assert significant(Estimate(None, None, None, 0)) == "within noise"
    with pytest.raises(ValueError):
        significant(e, floor=-0.1)


# ---- edge cases ----------------------------------------------------------------------------------

def test_empty_inputs_give_none() -> None:
    empty = Estimate(None, None, None, 0)
    assert win_rate([]) == empty and mean_ci([]) == empty and paired_difference([], []) == empty
    assert length_controlled_win_rate([], []) == empty
    assert ppi_mean([], [], [0.5, 0.7]) == empty and ppi_mean([1.0], [0.9], []).value is None
    assert win_tie_loss([])["win_share"] is None
    assert ppi_mean([1.0], [0.9], [0.8, 0.9]).value == pytest.approx(0.95)  # one label: a value, no bounds
    assert ppi_mean([1.0], [0.9], [0.8, 0.9]).low is None


def test_one_sided_data_and_bad_inputs() -> None:
    all_wins = win_rate([1.0] * 30)
    assert (all_wins.value, all_wins.low, all_wins.high) == (1.0, 1.0, 1.0)
    assert significant(all_wins) == "better"
    assert win_rate([0.0]).to_dict() == {"value": 0.0, "low": 0.0, "high": 0.0, "n": 1, "level": 0.95}
    for bad in ([0.7], [math.nan], [[1.0]]):
        with pytest.raises(ValueError):
            win_rate(bad)
    with pytest.raises(ValueError):
        win_rate([1.0, 0.0], [1.0, -1.0])
    with pytest.raises(ValueError):
        win_rate([1.0, 0.0], [1.0])
    with pytest.raises(ValueError):
        mean_ci([1.0], level=1.0)
    with pytest.raises(ValueError):
        mean_ci([1.0], n_boot=0)
