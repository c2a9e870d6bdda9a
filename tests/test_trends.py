"""Trends on rows with a planted truth: drift per day with alerts only on the bad day, reward gaming
caught when the judge rises and people do not, and losses grouped by theme and by the judges' reasons,
labeled with what they share, one-offs counted but no pattern."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from shadoweval.core.types import Output, Verdict
from shadoweval.datasets.report import trends
from shadoweval.datasets.report.rows import Row
from shadoweval.datasets.report.trends import DriftRules, drift, drift_alerts, failure_clusters, reward_gaming
from shadoweval.judges.embed import HashingEmbedder

DAY = 86400.0
T0 = 1795132800.0  # 2026-11-20 00:00 UTC, a Friday in ISO week 47
HAS_QUESTION = "question" in Row.__dataclass_fields__  # Row is gaining the question; work either way


def _row(i: int, t: float, *, pairwise: float | None = None, offline: float | None = None,
         human: Sequence[tuple[float, float]] = (), scores: dict | None = None, route: str = "billing",
         model: str = "cand-v1", text: str = "", question: str = "", passes: dict | None = None) -> Row:
    ex = f"ex{i:04d}"
    prod = Output(id=f"p{i}", exchange_id=ex, role="production", name="production", model="prod", status="ok",
                  started_at=t, text=f"production answer {i}")
    other = Output(id=f"c{i}", exchange_id=ex, role="candidate", name="cand", model=model, status="ok",
                   started_at=t, text=text or f"candidate answer {i}")
    extra = {"question": question} if HAS_QUESTION else {}
    return Row(exchange_id=ex, created_at=t, slices={"route": route}, production=prod, other=other,
               scores=scores or {}, pairwise=pairwise, offline=offline, human=tuple(human), passes=passes or {},
               **extra)


def _outcomes(n: int, rate: float) -> list[float]:
    wins = round(n * rate)
    return [1.0] * wins + [0.0] * (n - wins)


# ---- drift --------------------------------------------------------------------------------------

def _three_days() -> list[Row]:
    """Days 1-2 fine (win rates 0.75 and 0.5, equal scores); day 3 bad (0.1, candidate 0.3 lower);
    day 4 only 5 rows with a big score drop: too few to alert on."""
    rows, i = [], 0
    for day, rate, cand, n in ((0, 0.75, 0.8, 40), (1, 0.5, 0.8, 40), (2, 0.1, 0.5, 40), (3, 0.4, 0.2, 5)):
        for o in _outcomes(n, rate):
            rows.append(_row(i, T0 + day * DAY + 60 * i % 3600, pairwise=o, scores={"grounded": (0.8, cand)}))
            i += 1
    return rows[::-1]  # drift must order by time itself


def test_drift_per_day() -> None:
    periods = drift(_three_days(), period="day", source="pairwise", judges=["grounded", "missing"])
    assert [p["period"] for p in periods] == ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"]
    assert [p["n"] for p in periods] == [40, 40, 40, 5]
    assert [p["win_rate"]["value"] for p in periods] == pytest.approx([0.75, 0.5, 0.1, 0.4])
    assert all(p["win_rate"]["low"] <= p["win_rate"]["value"] <= p["win_rate"]["high"] for p in periods)
    g = periods[2]["scores"]["grounded"]
    assert g["n"] == 40
    assert (g["candidate"], g["production"], g["difference"]) == pytest.approx((0.5, 0.8, -0.3))
    assert periods[0]["scores"]["missing"] == {"n": 0, "candidate": None, "production": None, "difference": None}


def test_drift_per_week_and_human_source() -> None:
    rows = [_row(i, T0 + i * DAY, human=[(o, 2.0)]) for i, o in enumerate([1.0, 0.0, 1.0, 1.0])]
    periods = drift(rows, period="week", source="human")
    assert [(p["period"], p["n"]) for p in periods] == [("2026-W47", 3), ("2026-W48", 1)]
    assert periods[0]["win_rate"]["value"] == pytest.approx(2 / 3)
    assert trends.period_of(T0 + 41 * DAY, "week") == "2026-W53"  # 2026-12-31 is in ISO week 53 of 2026
    with pytest.raises(ValueError):
        trends.period_of(T0, "month")  # type: ignore[arg-type]


def test_drift_alerts_fire_only_on_the_bad_day() -> None:
    periods = drift(_three_days(), source="pairwise", judges=["grounded"])
    alerts = drift_alerts("cand", periods, DriftRules(min_win_rate=0.4, max_score_drop=0.1))
    assert len(alerts) == 2
    assert all(a.startswith("cand 2026-11-22:") for a in alerts)
    assert "win rate 0.10" in alerts[0] and "minimum 0.40" in alerts[0]
    assert "grounded score difference -0.30" in alerts[1] and "allowed drop of 0.10" in alerts[1]
    assert drift_alerts("cand", periods, DriftRules()) == []
    with pytest.raises(ValueError):
        DriftRules(max_score_drop=-0.1)


def _passing_days() -> list[Row]:
    """Two days of 30 pairs: production passes 27 both days; the candidate 27 on day 1, 15 on day 2
    (40 points fewer), while its mean score stays level with production's. Day 2 also has 5 pairs
    the judge decided for production only, which the share must leave out."""
    rows, i = [], 0
    for day, cand_pass in ((0, 27), (1, 15)):
        for k in range(30):
            passes = {"grounded": (k < 27, k < cand_pass)}
            rows.append(_row(i, T0 + day * DAY + i, scores={"grounded": (0.7, 0.7)}, passes=passes))
            i += 1
    rows += [_row(i + k, T0 + DAY + 5000 + k, passes={"grounded": (True, None)}) for k in range(5)]
    return rows


def test_drift_share_passing_per_period_and_its_alert() -> None:
    periods = drift(_passing_days(), source="pairwise", judges=["grounded"])
    day1, day2 = (p["passing"]["grounded"] for p in periods)
    assert day1 == pytest.approx({"n": 30, "candidate": 0.9, "production": 0.9, "difference": 0.0})
    assert day2 == pytest.approx({"n": 30, "candidate": 0.5, "production": 0.9, "difference": -0.4})
    assert periods[1]["scores"]["grounded"]["difference"] == pytest.approx(0.0)  # the mean cannot see it
    alerts = drift_alerts("cand", periods, DriftRules(max_score_drop=0.1, max_pass_drop=0.2))
    assert alerts == ["cand 2026-11-21: grounded share passing difference -0.40 (candidate 0.50, production 0.90) "
                      "on 30 pairs is beyond the allowed drop of 0.20"]
    assert drift_alerts("cand", periods, DriftRules(max_pass_drop=0.5)) == []
    assert drift_alerts("cand", periods, DriftRules(max_pass_drop=0.2, min_n=31)) == []  # too few pairs
    with pytest.raises(ValueError, match="max_pass_drop"):
        DriftRules(max_pass_drop=-0.1)


# ---- reward gaming ------------------------------------------------------------------------------

def _gaming_rows(judge: tuple[float, float], people: tuple[float, float], *, n: int = 60, graded: int = 60,
                 route: str = "billing", start: int = 0, models: tuple[str, str] = ("cand-v1", "cand-v1")) -> list[Row]:
    """2n rows in time order: the first half with offline and human win rates judge[0] and people[0],
    the second with judge[1] and people[1]; only `graded` rows per half carry a human grade."""
    rows = []
    for half in (0, 1):
        human = _outcomes(n, people[half])
        for k, o in enumerate(_outcomes(n, judge[half])):
            i = start + half * n + k
            grade = [(human[(k * 7) % n], 2.0)] if k < graded else []  # shuffled against the judge's outcomes
            t = T0 + (half * n + k) * 60 + start * 1e-3  # groups built apart interleave in time
            rows.append(_row(i, t, offline=o, human=grade, route=route, model=models[half]))
    return rows


def test_reward_gaming_alarm_when_judge_rises_and_people_do_not() -> None:
    rows = _gaming_rows((0.5, 0.8), (0.5, 0.5)) + _gaming_rows((0.5, 0.5), (0.5, 0.5), route="returns", start=1000)
    alarms = reward_gaming(rows, source_judge="offline", split="time")
    billing = [a for a in alarms if a.startswith("route=billing")]
    assert len(billing) == 1
    assert not any(a.startswith("route=returns") for a in alarms)
    assert "offline judge's win rate rose from 0.50 to 0.80 (+0.30 [" in billing[0]
    assert "while human grades did not (0.50 -> 0.50, +0.00 [" in billing[0]
    assert billing[0].endswith("the model may be learning the judge, not the task.")


def test_reward_gaming_quiet_when_people_rise_too_or_are_too_few() -> None:
    assert reward_gaming(_gaming_rows((0.5, 0.8), (0.5, 0.8)), split="time") == []
    assert reward_gaming(_gaming_rows((0.5, 0.8), (0.5, 0.5), graded=10), split="time") == []
    assert reward_gaming(_gaming_rows((0.5, 0.5), (0.5, 0.5)), split="time") == []


def test_reward_gaming_by_model_version() -> None:
    rows = _gaming_rows((0.5, 0.8), (0.5, 0.5), models=("cand-v1", "cand-v2"))
    alarms = reward_gaming(rows, split="model")
    assert [a.split(":")[0] for a in alarms] == ["all (cand-v1 -> cand-v2)", "route=billing (cand-v1 -> cand-v2)"]
    assert reward_gaming(_gaming_rows((0.5, 0.8), (0.5, 0.5)), split="model") == []  # one version only


def test_reward_gaming_on_score_differences() -> None:
    rows = []
    for i in range(120):
        gap = (0.0 if i < 60 else 0.2) + (i % 5 - 2) * 0.02
        rows.append(_row(i, T0 + i * 60, human=[(float(i % 2), 1.0)], scores={"grounded": (0.6, 0.6 + gap)}))
    alarms = reward_gaming(rows, source_judge="grounded", split="time")
    assert len(alarms) == 2 and "grounded judge's mean score difference rose from 0.00 to 0.20" in alarms[0]


def test_win_rate_difference() -> None:
    d = trends.win_rate_difference(_outcomes(100, 0.5), _outcomes(100, 0.8), n_boot=500)
    assert d.value == pytest.approx(0.3)
    assert d.n == 100 and 0 < d.low < 0.3 < d.high
    assert trends.win_rate_difference([], [1.0]).value is None
    with pytest.raises(ValueError):
        trends.win_rate_difference([0.3], [1.0])


# ---- failure clusters ---------------------------------------------------------------------------

REFUNDS = ["yesterday", "monday", "tuesday", "wednesday", "recently"]
SHIPPING = ["london", "paris", "berlin", "madrid"]
ONE_OFFS = ["how do I reset the forgotten password for my account", "where can I download last year's invoice",
            "the mobile app crashes when I open settings"]
EMBED = HashingEmbedder().encode


def _losses() -> tuple[list[Row], dict[str, str]]:
    """Two themes (5 refund questions, 4 shipping ones), three one-off losses, wins on the first theme
    and a loss whose question is unknown."""
    questions = [f"I need a refund of my money for the damaged order placed {x}" for x in REFUNDS]
    questions += [f"when will the shipping courier deliver my package to {x}" for x in SHIPPING]
    questions += ONE_OFFS
    rows = [_row(i, T0 + i, offline=0.0, text="x" * 500) for i in range(len(questions))]
    wins = [_row(100 + i, T0 + 100 + i, offline=o) for i, o in enumerate([1.0, 0.5, 1.0])]
    by_id = {r.exchange_id: q for r, q in zip(rows, questions, strict=True)}
    by_id.update({r.exchange_id: f"I need a refund for the order placed {i}" for i, r in enumerate(wins)})
    lost_unknown = _row(999, T0 + 999, offline=0.0)  # no question known: left out
    return rows + wins + [lost_unknown], by_id


def test_failure_clusters_by_theme() -> None:
    rows, questions = _losses()
    found = failure_clusters(rows, EMBED, questions=questions, source="offline")
    clusters = found["clusters"]
    assert (found["losses"], found["unclustered"], found["left_out"], found["more"]) == (12, 3, 0, 0)
    assert [(c["size"], c["share"]) for c in clusters] == [(5, pytest.approx(5 / 12)), (4, pytest.approx(4 / 12))]
    refunds, shipping = clusters
    assert refunds["terms"][:3] == ["refund", "money", "damaged"]  # what every member says and no other loss
    assert {"shipping", "courier", "deliver", "package"} <= set(shipping["terms"])
    assert refunds["label"] == ", ".join(refunds["terms"])
    for cluster, word in ((refunds, "refund"), (shipping, "shipping")):
        assert len(cluster["examples"]) == 3
        assert all(word in e["question"] for e in cluster["examples"])
        assert cluster["representative"] == cluster["examples"][0]["question"]
    in_clusters = {e["question"] for c in clusters for e in c["examples"]}
    assert not in_clusters & set(ONE_OFFS)  # one-off losses are no pattern, only counted
    e = refunds["examples"][0]
    assert set(e) == {"exchange_id", "question", "reason", "candidate", "production"}
    assert len(e["candidate"]) == 300 and e["production"].startswith("production answer") and e["reason"] == ""
    assert questions[e["exchange_id"]] == e["question"]
    capped = failure_clusters(rows, EMBED, questions=questions, source="offline", max_clusters=1)
    assert len(capped["clusters"]) == 1 and capped["more"] == 1 and capped["unclustered"] == 3
    latest = failure_clusters(rows, EMBED, questions=questions, source="offline", limit=7)
    assert (latest["losses"], latest["left_out"]) == (7, 5)  # the oldest losses (the refunds) go first
    assert [c["size"] for c in latest["clusters"]] == [4]


def test_failure_clusters_no_recurring_pattern_and_empty() -> None:
    rows, questions = _losses()
    one_offs = [r for r in rows if questions.get(r.exchange_id) in ONE_OFFS]
    found = failure_clusters(one_offs, EMBED, questions=questions, source="offline")
    assert found == {"losses": 3, "unclustered": 3, "left_out": 0, "more": 0, "passing": 0, "clusters": []}
    empty = {"losses": 0, "unclustered": 0, "left_out": 0, "more": 0, "passing": 0, "clusters": []}
    assert failure_clusters([], EMBED, source="offline") == empty
    assert failure_clusters(rows, EMBED, questions=questions, source="pairwise") == empty  # no pairwise outcomes


def test_losses_whose_answer_every_judge_passes_are_counted() -> None:
    """A loss on a lower score with nothing failed is told apart from a loss on a failed check."""
    decisions = [{"grounded": (True, True), "citations": (True, True)},  # passes both: counted
                 {"grounded": (True, True), "citations": (True, None)},  # citations undecided: still passes all
                 {"grounded": (True, False), "citations": (True, True)},  # fails grounded
                 {},  # no judge decided: not counted
                 {"grounded": (True, None)}]  # nothing decided on the candidate's side: not counted
    rows = [_row(i, T0 + i, offline=0.0, question=f"question {i}", passes=p) for i, p in enumerate(decisions)]
    questions = {r.exchange_id: f"question {i}" for i, r in enumerate(rows)}
    found = failure_clusters(rows, EMBED, questions=questions, source="offline")
    assert (found["losses"], found["passing"]) == (5, 2)


def test_failure_clusters_group_by_the_judges_reasons() -> None:
    # six refund questions worded too differently to group, lost for one of two reasons
    asked = ["can I get a refund for the blender", "refund for a kettle that arrived broken",
             "how do refunds work for a toaster", "I want a refund on my mixer", "is a refund possible for the juicer",
             "refund please, the grill is faulty"]
    rows = [_row(i, T0 + i, offline=0.0, question=q) for i, q in enumerate(asked)]
    questions = None if HAS_QUESTION else {r.exchange_id: q for r, q in zip(rows, asked, strict=True)}
    fee = "grounded: a restocking fee of 15 percent applies"
    credit = "citations: you are paid back in store credit only"
    reasons = {r.exchange_id: fee if i % 2 == 0 else credit for i, r in enumerate(rows)}
    assert failure_clusters(rows, EMBED, questions=questions, source="offline")["clusters"] == []
    found = failure_clusters(rows, EMBED, questions=questions, reasons=reasons, source="offline")
    by_reason = {c["examples"][0]["reason"]: c for c in found["clusters"]}
    assert set(by_reason) == {fee, credit} and [c["size"] for c in found["clusters"]] == [3, 3]
    assert {"restocking", "fee"} <= set(by_reason[fee]["terms"])
    assert {"store", "credit"} <= set(by_reason[credit]["terms"])
    assert not {"refund", "grounded", "citations"} & {t for c in found["clusters"] for t in c["terms"]}


def _verdict(output_id: str, judge: str, evidence: dict, explanation: str = "", label: str = "x") -> Verdict:
    return Verdict(id=f"v-{judge}-{output_id}", output_id=output_id, exchange_id="", judge=judge, version="1", args={},
                   created_at=T0, score=0.5, label=label, explanation=explanation, evidence=evidence)


def test_loss_reasons_from_the_judges_evidence() -> None:
    made_up = "Northwind replaces the battery free of charge"
    rows = [_row(0, T0, offline=0.0, scores={"grounded": (0.9, 0.2), "citations": (0.8, 0.5), "checks": (1.0, 1.0)}),
            _row(1, T0 + 1, offline=0.0, scores={"grounded": (0.9, 0.8)}),
            _row(2, T0 + 2, offline=1.0, scores={"grounded": (0.5, 0.9)}),
            _row(3, T0 + 3, offline=0.0, scores={"checks": (1.0, 0.0), "grounded": (0.7, 0.6)})]
    verdicts = {
        "c0": [_verdict("c0", "grounded", {"unsupported": [{"sentence": made_up, "support": 0.1}]},
                        "1 of 2 sentences supported by the passages"),
               _verdict("c0", "citations", {"unsupported": [{"sentence": made_up}],
                                            "nonexistent": [{"sentence": "See the manual [7] for details."}]}),
               _verdict("c0", "checks", {"failed": []})],  # scored no lower than production: not a reason
        "c1": [_verdict("c1", "grounded", {"unsupported": [], "least_supported": {"sentence": "Yes."}},
                        "2 of 2 sentences supported by the passages")],  # a template and "Yes." say nothing
        "c2": [_verdict("c2", "grounded", {"unsupported": [{"sentence": "A better answer than production's."}]})],
        "c3": [_verdict("c3", "checks", {"failed": ["refusal"]}),
               _verdict("c3", "grounded", {"least_supported": {"sentence": "I cannot help with that."}})],
    }
    reasons = trends.loss_reasons(rows, verdicts)
    assert reasons["ex0000"] == f"grounded, citations: {made_up} | citations: See the manual [7] for details."
    assert "ex0001" not in reasons and "ex0002" not in reasons  # nothing specific; the candidate scored higher
    assert reasons["ex0003"] == "checks: refusal | grounded: I cannot help with that."
    assert len(trends.loss_reasons(rows, verdicts, chars=20)["ex0000"]) == 20


def test_failure_clusters_human_majority_loss() -> None:
    rows = [_row(0, T0, human=[(0.0, 1.0), (0.0, 1.0), (1.0, 1.0)], question="refunds?"),  # lost by majority
            _row(1, T0 + 1, human=[(0.0, 1.0), (1.0, 1.0)], question="refunds?"),  # split: not a loss
            _row(2, T0 + 2, question="refunds?"),  # ungraded
            _row(3, T0 + 3, human=[(0.0, 1.0)], question="refunds?")]
    # rows that carry their question need no mapping
    questions = None if HAS_QUESTION else {r.exchange_id: "refunds?" for r in rows}
    found = failure_clusters(rows, EMBED, questions=questions, source="human")
    assert found["losses"] == 2
    assert [sorted(e["exchange_id"] for e in c["examples"]) for c in found["clusters"]] == [["ex0000", "ex0003"]]
    assert found["clusters"][0]["label"] == "refunds?"  # no word sets it apart: the question is the label


def test_reward_gaming_false_alarms_stay_near_five_percent_across_slices() -> None:
    """An honest candidate, judged and graded at random with no change over time, on five routes:
    with the rise tested per slice uncorrected, about one report in ten would cry gaming."""
    import numpy as np

    rng = np.random.default_rng(7)
    routes = ["billing", "returns", "shipping", "account", "other"]
    alarmed = 0
    for _ in range(150):
        rows = []
        for i in range(300):
            grade = [(float(rng.random() < 0.5), 1.0)] if i % 2 else []
            rows.append(_row(i, T0 + i * 60, offline=float(rng.random() < 0.5), human=grade, route=routes[i % 5]))
        alarmed += bool(reward_gaming(rows, source_judge="offline", split="time"))
    assert alarmed <= 9  # 5% of 150 is 7.5
