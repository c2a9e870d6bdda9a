"""The agreement report against known truth: hand-computed judge and rater figures, Krippendorff's
published worked example, an exact binomial p-value, skipped grades and left/right sides."""

from __future__ import annotations

import json

import pytest

from shadoweval.core.types import AnswerLabels, Grade, GradingItem, Verdict, new_id
from shadoweval.datasets.report.agreement import (
    OVERALL,
    BinaryAgreement,
    PairwiseAgreement,
    agreement,
    binomial_p_value,
    krippendorff_alpha,
)
from shadoweval.datasets.report.agreement_text import format_report

_clock = [1_000.0]


def _now() -> float:
    _clock[0] += 1  # strictly increasing, so "latest" is well defined
    return _clock[0]


def item(left: str = "production", slice: str = "route=billing") -> GradingItem:
    return GradingItem(id=new_id(), exchange_id=new_id(), candidate_output_id=new_id(), production_output_id=new_id(),
                       left=left, policy="uniform", probability=1.0, inclusion_probability=1.0, evaluators=2,
                       slice=slice, created_at=_now(), batch="b1")


def grade(it: GradingItem, evaluator: str = "ann", preference: str | None = None, *,
          left: AnswerLabels = AnswerLabels(), right: AnswerLabels = AnswerLabels(), skipped: bool = False) -> Grade:
    return Grade(id=new_id(), item_id=it.id, evaluator=evaluator, created_at=_now(), preference=preference,
                 winner=it.winner(preference), left_labels=left, right_labels=right, skipped=skipped)


def verdict(output_id: str, judge: str = "grounded", score: float | None = None, label: str | None = None, *,
            threshold: float | None = 0.5, version: str = "1", error: str | None = None) -> Verdict:
    args = {} if threshold is None else {"threshold": threshold}
    return Verdict(id=new_id(), output_id=output_id, exchange_id="x", judge=judge, version=version, args=args,
                   created_at=_now(), score=score, label=label, error=error)


def by_output(*vs: Verdict) -> dict[str, list[Verdict]]:
    out: dict[str, list[Verdict]] = {}
    for v in vs:
        out.setdefault(v.output_id, []).append(v)
    return out


def grounded_case(judge_says: list[bool], human_says: list[str]) -> tuple[list[GradingItem], list[Grade], dict]:
    """One item per label; the human grades the candidate (shown on the right), the judge scores it."""
    items, grades, verdicts = [], [], []
    for said, human in zip(judge_says, human_says, strict=True):
        it = item()
        items.append(it)
        grades.append(grade(it, right=AnswerLabels(grounded=human)))
        verdicts.append(verdict(it.candidate_output_id, score=0.9 if said else 0.1))
    return items, grades, by_output(*verdicts)


def only_judge(report, name: str = "grounded"):
    (j,) = [j for j in report.judges if j.judge == name]
    return j


def test_a_judge_that_agrees_perfectly():
    items, grades, verdicts = grounded_case([True, True, False, False], ["yes", "yes", "no", "partly"])
    fig = only_judge(agreement(items, grades, verdicts)).overall
    assert (fig.n, fig.positives, fig.predicted) == (4, 2, 2)
    assert fig.accuracy == fig.precision == fig.recall == fig.specificity == fig.f1 == fig.kappa == 1.0
    assert fig.roc_auc == 1.0 and fig.auc_n == 4
    assert fig.ece == pytest.approx(0.1)  # right every time, yet its 0.9 and 0.1 are 0.1 short of certain


def test_a_judge_that_always_passes():
    items, grades, verdicts = grounded_case([True] * 4, ["yes", "no", "partly", "no"])  # partly is negative
    fig = only_judge(agreement(items, grades, verdicts)).overall
    assert (fig.tp, fig.fp, fig.tn, fig.fn) == (1, 3, 0, 0)
    assert fig.specificity == 0.0 and fig.recall == 1.0 and fig.precision == 0.25 and fig.accuracy == 0.25
    assert fig.kappa == 0.0  # p_o = 0.25, p_e = (4*1 + 0*3) / 16 = 0.25
    assert fig.roc_auc == 0.5  # every score tied
    assert fig.ece == pytest.approx(0.9 - 0.25)  # says 0.9 where a quarter are grounded


def test_empty_denominators_are_none_not_zero():
    fig = BinaryAgreement.of([])
    assert fig.n == 0 and fig.accuracy is None and fig.kappa is None and fig.f1 is None and fig.roc_auc is None
    # all positives, all predicted positive: no negatives, so specificity and kappa are undefined
    fig = BinaryAgreement.of([(True, True, None)] * 3)
    assert fig.accuracy == 1.0 and fig.recall == 1.0 and fig.specificity is None and fig.kappa is None
    assert fig.roc_auc is None and fig.auc_n == 0 and fig.ece is None
    assert BinaryAgreement.of([(True, True, 4.0), (False, False, 1.0)]).ece is None  # a 1-5 scale is no probability


def test_sides_are_resolved_from_the_item():
    labels = {"left": AnswerLabels(grounded="yes"), "right": AnswerLabels(grounded="no")}
    cand_left, prod_left = item(left="candidate"), item(left="production")
    grades = [grade(cand_left, **labels), grade(prod_left, **labels)]
    verdicts = by_output(verdict(cand_left.candidate_output_id, score=0.9),
                         verdict(cand_left.production_output_id, score=0.1),
                         verdict(prod_left.candidate_output_id, score=0.9),
                         verdict(prod_left.production_output_id, score=0.1))
    report = agreement([cand_left], grades, verdicts)  # left answer is the candidate: the judge is right
    assert only_judge(report).overall.accuracy == 1.0 and only_judge(report).overall.n == 2
    report = agreement([prod_left], grades, verdicts)  # left answer is production: the judge is wrong
    assert only_judge(report).overall.accuracy == 0.0


def test_skipped_grades_are_ignored_everywhere():
    items, grades, verdicts = grounded_case([True, False], ["yes", "no"])
    noisy = [grade(items[0], "bob", "left", right=AnswerLabels(grounded="no"), skipped=True),
             grade(items[1], "bob", "left", right=AnswerLabels(grounded="yes"), skipped=True)]
    report = agreement(items, grades + noisy, verdicts)
    assert (report.grades, report.skipped) == (2, 2)
    assert only_judge(report).overall.n == 2 and only_judge(report).overall.accuracy == 1.0
    assert [b.evaluator for b in report.position_bias] == [OVERALL, "ann"]
    assert all(r.units == 0 for r in report.raters)  # bob's skips do not make a second grader


def test_a_regrade_replaces_the_earlier_grade():
    items, grades, verdicts = grounded_case([True], ["no"])
    grades.append(grade(items[0], right=AnswerLabels(grounded="yes")))  # ann again, later
    report = agreement(items, grades, verdicts)
    assert report.grades == 1 and only_judge(report).overall.accuracy == 1.0


def test_each_grade_and_verdict_is_one_observation_per_slice():
    a, b = item(slice="route=billing"), item(slice="route=search")
    grades = [grade(a, "ann", right=AnswerLabels(meets_intent=True)), grade(a, "bob", right=AnswerLabels(meets_intent=False)),
              grade(b, "ann", right=AnswerLabels(meets_intent=False))]
    # intent has no threshold: its own labels decide
    verdicts = by_output(verdict(a.candidate_output_id, "intent", 1.0, "aligned", threshold=None),
                         verdict(b.candidate_output_id, "intent", 0.0, "off_topic", threshold=None))
    j = only_judge(agreement([a, b], grades, verdicts), "intent")
    assert j.human_field == "meets_intent"
    assert (j.overall.n, j.overall.tp, j.overall.fp, j.overall.tn) == (3, 1, 1, 1)
    assert (j.slices["route=billing"].n, j.slices["route=billing"].accuracy) == (2, 0.5)
    assert (j.slices["route=search"].n, j.slices["route=search"].accuracy) == (1, 1.0)


def test_errors_and_minor_keys_are_skipped_and_counted():
    items, grades, verdicts = grounded_case([True, False], ["yes", "no"])
    c0, c1 = items[0].candidate_output_id, items[1].candidate_output_id
    verdicts[c0].append(verdict(c0, error="timeout"))
    verdicts[c1].append(verdict(c1, score=0.9, version="2"))  # one verdict from another version: not reported
    uncited = item()
    grades.append(grade(uncited, right=AnswerLabels(citations_correct=True)))
    verdicts[uncited.candidate_output_id] = [verdict(uncited.candidate_output_id, "citations", None, "uncited")]
    report = agreement([*items, uncited], grades, verdicts)
    j = only_judge(report)
    assert j.judge_key == "grounded@1" + '{"threshold":0.5}' and (j.errors, j.other_keys) == (1, 1)
    assert j.overall.n == 2 and j.overall.accuracy == 1.0
    cites = only_judge(report, "citations")  # "uncited" decides nothing
    assert cites.overall.n == 0 and cites.overall.accuracy is None


def test_pairwise_against_the_human_winner():
    # (human winner, judge label); the human's preference is resolved through each item's left side
    cases = [("candidate", "candidate"), ("candidate", "candidate"), ("production", "production"),
             ("production", "candidate"), ("tie", "tie"), ("candidate", "tie")]
    items, grades, verdicts = [], [], []
    for k, (human, judged) in enumerate(cases):
        it = item(left="candidate" if k % 2 else "production")
        pref = "tie" if human == "tie" else "left" if it.left == human else "right"
        items.append(it)
        grades.append(grade(it, preference=pref))
        verdicts.append(verdict(it.candidate_output_id, "pairwise", {"candidate": 1.0, "production": 0.0, "tie": 0.5}[judged],
                                judged, threshold=None))
    j = only_judge(agreement(items, grades, by_output(*verdicts)), "pairwise")
    fig = j.overall
    assert isinstance(fig, PairwiseAgreement) and j.human_field == "winner"
    assert fig.n == 6 and fig.accuracy == pytest.approx(4 / 6)
    # human c/p/t = 3/2/1, judge c/p/t = 3/1/2: p_e = (9 + 2 + 2) / 36, kappa = (4/6 - 13/36) / (1 - 13/36)
    assert fig.kappa == pytest.approx((24 / 36 - 13 / 36) / (23 / 36))
    assert fig.confusion["production"]["candidate"] == 1 and fig.confusion["candidate"]["tie"] == 1
    d = fig.decisive  # the 4 cases with no tie on either side
    assert (d.n, d.tp, d.fp, d.tn, d.fn) == (4, 2, 1, 1, 0) and d.accuracy == 0.75


def test_krippendorff_alpha_published_nominal_example():
    # Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", 4 observers x 12 units, nominal
    n = None
    a = [1, 2, 3, 3, 2, 1, 4, 1, 2, n, n, n]
    b = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, n, 3]
    c = [n, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, n]
    d = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, n]
    assert round(krippendorff_alpha(zip(a, b, c, d, strict=True)), 3) == 0.743
    assert krippendorff_alpha([[1, 1], [2, 2]]) == 1.0
    assert krippendorff_alpha([[1, 1], [1, 1]]) is None  # one value only: no disagreement to expect
    assert krippendorff_alpha([[1], [2, None]]) is None  # nothing pairable


def test_rater_kappa_alpha_and_agreement_by_hand():
    # 50 items, two graders on meets_intent: yes/yes 20, yes/no 5, no/yes 10, no/no 15.
    # p_o = 0.7; ann says yes 25/50, bob 30/50: p_e = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.4.
    # Alpha: n = 100 values, 55 yes, 45 no, 30 disagreeing coincidences: 1 - 30 / (2*55*45/99) = 0.4.
    items, grades = [], []
    for ann, bob, count in ((True, True, 20), (True, False, 5), (False, True, 10), (False, False, 15)):
        for _ in range(count):
            it = item()
            items.append(it)
            grades += [grade(it, "ann", left=AnswerLabels(meets_intent=ann)),
                       grade(it, "bob", left=AnswerLabels(meets_intent=bob)), grade(it, "cat", skipped=True)]
    (intent,) = [r for r in agreement(items, grades, {}).raters if r.field == "meets_intent"]
    assert (intent.units, intent.values) == (50, 100)  # the right answers carry no label: not units
    assert intent.percent_agreement == pytest.approx(0.7) and intent.alpha == pytest.approx(0.4)
    (pair,) = intent.pairs
    assert (pair.a, pair.b, pair.n) == ("ann", "bob", 50)
    assert pair.agreement == pytest.approx(0.7) and pair.kappa == pytest.approx(0.4)


def test_winner_agreement_survives_different_sides():
    # two graders who pick the same model agree, whichever side each item showed it on
    items, grades = [item(left="candidate"), item(left="production")], []
    for it in items:
        side = "left" if it.left == "candidate" else "right"
        grades += [grade(it, "ann", side), grade(it, "bob", side)]
    (winner,) = [r for r in agreement(items, grades, {}).raters if r.field == "winner"]
    assert winner.percent_agreement == 1.0 and winner.units == 2
    assert winner.alpha is None and winner.pairs[0].kappa is None  # only "candidate" was ever said


def test_position_bias_binomial():
    assert binomial_p_value(9, 10) == pytest.approx(22 / 1024) and round(binomial_p_value(9, 10), 4) == 0.0215
    assert binomial_p_value(5, 10) == 1.0 and binomial_p_value(0, 0) is None
    it = item()
    grades = [grade(it, f"e{k}", "left") for k in range(9)] + [grade(it, "e9", "right"), grade(it, "e10", "tie"),
                                                              grade(it, "e11", None)]
    report = agreement([it], grades, {})
    overall = report.position_bias[0]
    assert (overall.evaluator, overall.n, overall.left, overall.right, overall.ties) == (OVERALL, 11, 9, 1, 1)
    assert overall.left_share == 0.9 and overall.p_value == pytest.approx(0.021484375)
    ties_only = next(b for b in report.position_bias if b.evaluator == "e10")
    assert ties_only.n == 1 and ties_only.left_share is None and ties_only.p_value is None


def test_to_dict_is_json_and_the_table_reads():
    items, grades, verdicts = grounded_case([True, False], ["yes", "no"])
    grades.append(grade(items[0], "bob", "left", right=AnswerLabels(grounded="yes")))
    report = agreement(items, grades, verdicts)
    data = json.loads(json.dumps(report.to_dict()))
    assert set(data) == {"items", "grades", "skipped", "judges", "raters", "position_bias"}
    assert data["judges"][0]["overall"]["kappa"] == 1.0 and data["judges"][0]["slices"]["route=billing"]["n"] == 3
    text = format_report(report)
    assert "grounded" in text and "route=billing" in text and "Position bias" in text
    header = next(line for line in text.splitlines() if line.startswith("judge"))
    assert header.split()[-2:] == ["kappa", "ece"]
    assert "no verdicts" in format_report(agreement([], [], {}))


def test_single_answers_graded_alone_count_for_labels_not_for_winners():
    from dataclasses import replace

    singles = [replace(item(), candidate_output_id=None) for _ in range(3)]
    grades, verdicts = [], []
    for i, it in enumerate(singles):
        grounded = "yes" if i % 2 == 0 else "no"
        grades += [grade(it, "ann", left=AnswerLabels(grounded)), grade(it, "bob", left=AnswerLabels(grounded))]
        verdicts.append(verdict(it.production_output_id, score=1.0 if grounded == "yes" else 0.0))
    report = agreement(singles, grades, by_output(*verdicts))
    (judge,) = report.judges
    assert judge.overall.n == 6 and judge.overall.accuracy == 1.0
    raters = {r.field: r for r in report.raters}
    assert raters["winner"].units == 0 and raters["grounded"].units == 3
    assert raters["grounded"].percent_agreement == 1.0


def test_a_failing_label_fails_whatever_the_score():
    """The citations judge's score is the mean support of the cited sentences; one unsupported sentence makes
    its label `unsupported` though the mean may pass. Its decision is the label's, here and everywhere
    `Verdict.passes` is read (the cascade, the grading sampler, the report's share passing)."""
    mixed = verdict("o", "citations", 0.9, "unsupported")
    assert mixed.score >= mixed.threshold and mixed.passes is False
    assert verdict("o", "citations", 0.9, "supported").passes is True
    assert verdict("o", "citations", 0.3, "supported").passes is False  # below the threshold still fails
    assert verdict("o", "citations", None, "uncited").passes is None
    assert verdict("o", "intent", 1.0, "aligned", threshold=None).passes is None  # no threshold: the label decides
    it = item()
    grades = [grade(it, right=AnswerLabels(citations_correct=False))]
    judged = verdict(it.candidate_output_id, "citations", 0.9, "unsupported")
    fig = only_judge(agreement([it], grades, by_output(judged)), "citations").overall
    assert (fig.tn, fig.fp) == (1, 0)


def test_the_offline_preference_is_checked_against_the_human_winner():
    """Derived from the offline verdicts on both answers, as the report's offline win rate reads them."""
    from shadoweval.datasets.report.agreement import with_offline_preference

    # (production's grounded, citations; the candidate's; the human's preference, production on the left)
    cases = [((0.5, 0.6), (0.9, 0.8), "right"),  # candidate +0.3: the judge and the human say candidate
             ((0.9, None), (0.5, 0.7), "left"),  # citations on one side only: grounded alone, -0.4
             ((0.7, 0.7), (0.72, 0.7), "right"),  # within the 0.05 margin: tie, the human says candidate
             ((0.4, 0.4), (0.9, 0.9), "left")]  # the judge says candidate, the human production
    items, grades, vs = [], [], []
    for prod, cand, pref in cases:
        it = item()
        items.append(it)
        grades.append(grade(it, preference=pref))
        for output_id, scores in ((it.production_output_id, prod), (it.candidate_output_id, cand)):
            vs += [verdict(output_id, j, s) for j, s in zip(("grounded", "citations"), scores, strict=True)
                   if s is not None]
    vs.append(verdict(items[0].candidate_output_id, "grounded", 0.1))  # a later verdict replaces the earlier
    stored = by_output(*vs)
    report = agreement(items, grades, with_offline_preference(items, stored, judges=("grounded", "citations"),
                                                              margin=0.05))
    j = only_judge(report, "offline-preference")
    assert j.human_field == "winner" and isinstance(j.overall, PairwiseAgreement)
    # item 0: the later grounded 0.1 makes it (0.1 - 0.5 + 0.8 - 0.6) / 2 = -0.1: production
    assert j.overall.confusion == {"candidate": {"candidate": 0, "production": 1, "tie": 1},
                                   "production": {"candidate": 1, "production": 1, "tie": 0},
                                   "tie": {"candidate": 0, "production": 0, "tie": 0}}
    assert json.loads(json.dumps(report.to_dict()))  # and it serializes for the page
    assert "offline-preference" in format_report(report)
    # with nothing stored on one side, no verdict is derived for that pair
    candidate_only = by_output(*[v for v in vs if v.output_id == items[0].candidate_output_id])
    assert with_offline_preference(items[:1], candidate_only, judges=("grounded", "citations"),
                                   margin=0.05) == candidate_only
