"""Choosing pairs for human grading: exact probabilities, coverage, informativeness, reweighting."""

from __future__ import annotations

import math
import time
from collections import Counter

import pytest

from shadoweval.core.types import Feedback, Verdict, new_id
from shadoweval.datasets.grading.sampling import (
    Pair,
    SamplingPlan,
    horvitz_thompson_mean,
    inclusion_probabilities,
    informativeness,
    policy_probabilities,
    select,
)


def _population(sizes: dict[str, int], loud_every: int = 0) -> list[Pair]:
    """Pairs per slice; every `loud_every`-th pair carries a flip and a complaint."""
    pairs, i = [], 0
    for slice_, size in sizes.items():
        for _ in range(size):
            loud = loud_every and i % loud_every == 0
            signals = {"flipped": 1.0, "complaint": 1.0} if loud else {"near_threshold": 0.0}
            pairs.append(Pair(f"e{i:05d}", f"c{i}", f"p{i}", slice_, signals))
            i += 1
    return pairs


def _within(freq: float, p: float, runs: int, z: float = 4.5) -> bool:
    return abs(freq - p) <= z * math.sqrt(p * (1 - p) / runs) + 1e-9


def test_deterministic_and_order_independent():
    pairs = _population({"route=a": 50, "route=b": 10}, loud_every=7)
    plan = SamplingPlan(15, seed=42)
    first = select(pairs, plan)
    assert first == select(list(reversed(pairs)), plan)
    assert first == select(pairs, SamplingPlan(15, seed=42))
    assert [s.pair.key for s in first] != [s.pair.key for s in select(pairs, SamplingPlan(15, seed=43))]


def test_probabilities_are_exact():
    pairs = _population({"route=a": 40, "route=b": 15, "route=c": 5}, loud_every=6)
    runs = 3000
    plans = [SamplingPlan(12, seed=s) for s in range(runs)]
    _, probs = policy_probabilities(pairs, plans[0])
    overall = inclusion_probabilities(pairs, plans[0])
    by_policy: Counter[tuple[tuple[str, str, str], str]] = Counter()
    queued: Counter[tuple[str, str, str]] = Counter()
    for plan in plans:
        for s in select(pairs, plan):
            queued[s.pair.key] += 1
            by_policy[s.pair.key, s.policy] += 1
            assert s.inclusion_probability == pytest.approx(overall[s.pair.key])
    for i, pair in enumerate(sorted(pairs, key=lambda p: p.key)):
        u, st, inf = probs["uniform"][i], probs["stratified"][i], probs["informative"][i]
        assert _within(queued[pair.key] / runs, overall[pair.key], runs)
        # The first policy to draw a pair is recorded, so each policy's own π shows through exactly.
        assert _within(by_policy[pair.key, "uniform"] / runs, u, runs)
        assert _within(by_policy[pair.key, "stratified"] / runs, (1 - u) * st, runs)
        assert _within(by_policy[pair.key, "informative"] / runs, (1 - u) * (1 - st) * inf, runs)


def test_selection_reports_its_policys_probability():
    pairs = _population({"route=a": 80, "route=b": 20}, loud_every=5)
    plan = SamplingPlan(20, seed=3)
    _, probs = policy_probabilities(pairs, plan)
    # budgets keep their shares, all scaled up alike so that 20 distinct pairs are queued in expectation
    scale = probs["uniform"].sum() / (20 * 0.3)
    assert 1 < scale < 1.5
    for policy, share in plan.shares.items():
        assert probs[policy].sum() == pytest.approx(20 * share * scale)
    assert sum(inclusion_probabilities(pairs, plan).values()) == pytest.approx(20)
    seen = set()
    for seed in range(50):
        for s in select(pairs, SamplingPlan(20, seed=seed)):
            seen.add(s.policy)
            if s.policy == "uniform":
                assert s.probability == pytest.approx(scale * 20 * 0.3 / 100)
            if s.policy == "stratified":
                assert s.probability == pytest.approx(scale * 3 / (80 if s.pair.slice == "route=a" else 20))
            assert s.probability <= s.inclusion_probability <= 1
    assert seen == {"uniform", "stratified", "informative"}


def test_expected_sample_size_is_about_n():
    pairs = _population({"route=a": 1500, "route=b": 400, "route=c": 100}, loud_every=11)
    plan = SamplingPlan(60, seed=0)
    expected = sum(inclusion_probabilities(pairs, plan).values())
    # Pairs drawn by several policies are queued once; the budgets are scaled up to make up for it.
    assert expected == pytest.approx(60)
    sizes = [len(select(pairs, SamplingPlan(60, seed=s))) for s in range(200)]
    assert sum(sizes) / len(sizes) == pytest.approx(expected, rel=0.03)


def test_stratified_covers_every_slice_when_one_dominates():
    pairs = _population({"route=big": 2000, "route=rare": 3, "tag=vip": 4})
    plan = SamplingPlan(30, shares={"stratified": 1.0}, seed=0)
    _, probs = policy_probabilities(pairs, plan)
    by_slice = {p.slice: probs["stratified"][i] for i, p in enumerate(sorted(pairs, key=lambda p: p.key))}
    # The small slices cannot use their 10 each: they take all they have, the big slice the rest.
    assert by_slice["route=rare"] == 1.0 and by_slice["tag=vip"] == 1.0
    assert by_slice["route=big"] == pytest.approx((30 - 7) / 2000)
    assert probs["stratified"].sum() == pytest.approx(30)
    for seed in range(20):
        chosen = {s.pair.slice for s in select(pairs, SamplingPlan(30, shares={"stratified": 1.0}, seed=seed))}
        assert chosen == {"route=big", "route=rare", "tag=vip"}


def test_informative_pairs_are_chosen_far_more_often():
    pairs = _population({"route=a": 500}, loud_every=10)
    plan = SamplingPlan(40, shares={"informative": 1.0}, seed=0)
    loud = {p.key for p in pairs if p.signals.get("flipped")}
    counts = Counter(s.pair.key in loud for seed in range(100)
                     for s in select(pairs, SamplingPlan(40, shares={"informative": 1.0}, seed=seed)))
    per_loud, per_quiet = counts[True] / len(loud), counts[False] / (len(pairs) - len(loud))
    assert per_loud > 20 * per_quiet > 0
    assert all(p > 0 for p in inclusion_probabilities(pairs, plan).values())


def test_capped_informative_probabilities_redistribute_the_excess():
    pairs = _population({"route=a": 100}, loud_every=10)  # 10 loud pairs with weight 2.05 each
    plan = SamplingPlan(30, shares={"informative": 1.0}, seed=0)
    _, probs = policy_probabilities(pairs, plan)
    assert probs["informative"].max() == 1.0
    assert probs["informative"].sum() == pytest.approx(30)
    assert sorted(set(probs["informative"].round(12)))[0] == pytest.approx(20 / 90)


@pytest.mark.parametrize("shares", [{"informative": 1.0}, {"uniform": 0.3, "stratified": 0.3, "informative": 0.4}])
def test_horvitz_thompson_is_unbiased_where_the_naive_mean_is_not(shares):
    pairs = _population({"route=a": 250, "route=b": 50}, loud_every=5)
    # Loud pairs are where the candidate loses: the quantity a report wants is its win rate.
    value = {p.key: 0.0 if p.signals.get("flipped") else 1.0 for p in pairs}
    truth = sum(value.values()) / len(pairs)
    ht, naive = [], []
    for seed in range(1500):
        # A higher floor than the default keeps the estimator's variance, and so the test, tight.
        sample = select(pairs, SamplingPlan(30, shares=shares, floor=0.5, seed=seed))
        ys = [value[s.pair.key] for s in sample]
        ht.append(horvitz_thompson_mean(ys, [s.inclusion_probability for s in sample], len(pairs)))
        naive.append(sum(ys) / len(ys))
    mean = sum(ht) / len(ht)
    stderr = math.sqrt(sum((x - mean) ** 2 for x in ht) / (len(ht) - 1) / len(ht))
    assert stderr < 0.01
    assert abs(mean - truth) < 4 * stderr
    if shares == {"informative": 1.0}:
        assert truth - sum(naive) / len(naive) > 0.3


def test_sides_are_balanced_and_double_rate_holds():
    pairs = _population({"route=a": 3000})
    sample = select(pairs, SamplingPlan(1500, shares={"uniform": 1.0}, double_rate=0.2, seed=9))
    assert 1300 < len(sample) < 1700
    left = sum(s.left == "production" for s in sample) / len(sample)
    doubled = sum(s.evaluators == 2 for s in sample) / len(sample)
    assert 0.45 < left < 0.55
    assert 0.17 < doubled < 0.23
    assert {s.evaluators for s in sample} == {1, 2}
    none = select(pairs, SamplingPlan(100, shares={"uniform": 1.0}, double_rate=0.0, seed=9))
    assert {s.evaluators for s in none} == {1}
    three = select(pairs, SamplingPlan(300, shares={"uniform": 1.0}, double_rate=0.5, double_evaluators=3, seed=9))
    assert {s.evaluators for s in three} == {1, 3}
    with pytest.raises(ValueError, match="double_evaluators"):
        SamplingPlan(10, double_evaluators=1, seed=0)


def test_edge_cases_and_validation():
    assert select([], SamplingPlan(10, seed=0)) == []
    small = _population({"route=a": 3, "route=b": 2})
    everything = select(small, SamplingPlan(50, seed=0))
    assert len(everything) == 5 and all(s.inclusion_probability == 1.0 for s in everything)
    with pytest.raises(ValueError, match="twice"):
        select(small + small[:1], SamplingPlan(1, seed=0))
    with pytest.raises(ValueError, match="sum to 1"):
        SamplingPlan(10, shares={"uniform": 0.5}, seed=0)
    with pytest.raises(ValueError, match="unknown"):
        SamplingPlan(10, shares={"random": 1.0}, seed=0)
    with pytest.raises(ValueError):
        SamplingPlan(10, double_rate=1.5, seed=0)
    assert horvitz_thompson_mean([], [], 10) == 0.0
    assert horvitz_thompson_mean([1.0, 0.0], [0.5, 0.5], 4) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        horvitz_thompson_mean([1.0], [0.0], 4)


def _v(output_id: str, judge: str, score: float | None, threshold: float | None = 0.5, *,
       evidence: object = None, error: str | None = None) -> Verdict:
    args = {"threshold": threshold} if threshold is not None else {}
    return Verdict(id=new_id(), output_id=output_id, exchange_id="e", judge=judge, version="1", args=args,
                   created_at=time.time(), score=score, evidence=evidence, error=error)


def _f(rating: float | None = None, comment: str | None = None) -> Feedback:
    return Feedback(id=new_id(), exchange_id="e", created_at=time.time(), rating=rating, comment=comment)


def test_informativeness_quiet_pair():
    signals = informativeness([_v("c", "grounded", 0.95)], [_v("p", "grounded", 0.9)], [_f(rating=1.0)])
    assert signals == {"near_threshold": 0.0, "flipped": 0.0, "disagree": 0.0, "gap": pytest.approx(0.05),
                       "complaint": 0.0}


def test_informativeness_reads_each_signal():
    cand = [_v("c", "grounded", 0.55), _v("c", "citations", 0.2),
            _v("c", "pairwise", 0.5, threshold=None, evidence={"flipped": True, "orders": []}),
            _v("c", "intent", None, error="judge model timed out")]
    prod = [_v("p", "grounded", 0.9), _v("p", "citations", 0.9)]
    signals = informativeness(cand, prod, [_f(comment="  wrong invoice total ")])
    assert signals["near_threshold"] == pytest.approx(0.5)  # 1 - 0.05 / 0.1
    assert signals["flipped"] == 1.0
    assert signals["disagree"] == 1.0  # grounded passes, citations fails
    assert signals["gap"] == pytest.approx(0.7)  # citations 0.2 vs 0.9
    assert signals["complaint"] == 1.0
    assert informativeness([], [], [_f(rating=-1.0)])["complaint"] == 1.0
    assert informativeness([], [], [_f(comment="   ")])["complaint"] == 0.0
    # A pairwise verdict whose orders agreed, and an errored verdict near the threshold, are quiet.
    quiet = informativeness([_v("c", "pairwise", 1.0, threshold=None, evidence={"flipped": False}),
                             _v("c", "grounded", 0.5, error="boom")])
    assert quiet == {"near_threshold": 0.0, "flipped": 0.0, "disagree": 0.0, "gap": 0.0, "complaint": 0.0}
    # Wider margins make more pairs count as near; production's own closeness counts too.
    assert informativeness([], [_v("p", "grounded", 0.6)], margin=0.2)["near_threshold"] == pytest.approx(0.5)
