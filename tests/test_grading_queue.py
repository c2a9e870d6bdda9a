"""The human grading queue: items and grades in the store, build_queue on a real store, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlite_utils

from shadoweval.core.migrations import migrate
from shadoweval.core.store import Store
from shadoweval.core.types import (
    AnswerLabels,
    Exchange,
    Feedback,
    Grade,
    GradingItem,
    Output,
    Verdict,
    new_id,
)
from shadoweval.datasets.grading.queue import build_queue, to_sampling_pair
from shadoweval.datasets.grading.sampling import SamplingPlan, inclusion_probabilities, policy_probabilities, select

BIN = Path(sys.executable).parent / "shadoweval"


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "s.db", flush_interval_ms=5)
    s.start()
    yield s
    s.stop()


def _item(ex_id: str = "", cand: str = "", prod: str = "", *, evaluators: int = 1, left: str = "production",
          created_at: float | None = None, batch: str = "b1") -> GradingItem:
    return GradingItem(id=new_id(), exchange_id=ex_id or new_id(), candidate_output_id=cand or new_id(),
                       production_output_id=prod or new_id(), left=left, policy="uniform", probability=0.3,
                       inclusion_probability=0.5, evaluators=evaluators, slice="route=a",
                       created_at=created_at or time.time(), batch=batch)


def _grade(item: GradingItem, evaluator: str, **kw) -> Grade:
    return Grade(id=new_id(), item_id=item.id, evaluator=evaluator, created_at=time.time(), **kw)


def test_migration_makes_a_pair_unique():
    db = sqlite_utils.Database(memory=True)
    migrate(db)
    assert {"grading_items", "grades"} <= set(db.table_names())
    assert any(i.unique and i.columns == ["candidate_output_id", "production_output_id"]
               for i in db["grading_items"].indexes)


def test_items_round_trip_and_queueing_a_pair_twice_keeps_the_first(store):
    first = _item(left="candidate")
    again = _item(first.exchange_id, first.candidate_output_id, first.production_output_id, batch="b2")
    store.submit(first)
    assert store.flush()
    store.submit(again)
    assert store.flush()
    got = store.grading_items()
    assert len(got) == 1
    assert got[0] == GradingItem(**{**{f: getattr(first, f) for f in first.__slots__},
                                    "created_at": got[0].created_at})
    assert abs(got[0].created_at - first.created_at) < 0.001
    assert store.grading_items(batch="b2") == []


def test_grades_resolve_the_winner_from_the_left_side(store):
    shown_candidate_left = _item(left="candidate")
    store.submit(shown_candidate_left)
    g1 = _grade(shown_candidate_left, "ann", preference="left", winner="production",
                left_labels=AnswerLabels("partly", False, True), right_labels=AnswerLabels("yes", None, False),
                note="too long", keep=True,
                corrected_answer="Shorter.", seconds=42.5)
    g2 = _grade(shown_candidate_left, "bob", preference="right")
    g3 = _grade(shown_candidate_left, "cy", preference="tie")
    g4 = _grade(shown_candidate_left, "dee", skipped=True)
    for g in (g1, g2, g3, g4):
        store.submit(g)
    assert store.flush()
    got = {g.evaluator: g for g in store.grades(shown_candidate_left.id)}
    assert got["ann"].winner == "candidate"  # what was passed is replaced by what the grader saw
    assert got["ann"].left_labels == AnswerLabels("partly", False, True)
    assert got["ann"].right_labels == AnswerLabels("yes", None, False)
    by_output = shown_candidate_left.labels_by_output(got["ann"])
    assert by_output[shown_candidate_left.candidate_output_id] == AnswerLabels("partly", False, True)
    assert (got["ann"].note, got["ann"].keep, got["ann"].corrected_answer, got["ann"].seconds) == (
        "too long", True, "Shorter.", 42.5)
    assert got["bob"].winner == "production" and got["cy"].winner == "tie"
    assert got["dee"].skipped and got["dee"].winner is None and got["dee"].left_labels == AnswerLabels()
    assert [g.id for g in store.grades()] == [g1.id, g2.id, g3.id, g4.id]
    assert shown_candidate_left.winner("left") == "candidate" and shown_candidate_left.winner("right") == "production"
    with pytest.raises(ValueError):
        _grade(shown_candidate_left, "eve", preference="a")


def test_m006_keeps_grades_made_before_answers_were_labelled_per_side(tmp_path):
    from shadoweval.core import migrations

    db = sqlite_utils.Database(tmp_path / "old.db")
    before = migrations.MIGRATIONS[:migrations.MIGRATIONS.index(migrations.m006_grade_labels_per_answer_and_leases)]
    db["_migrations"].create({"name": str, "applied_at": str}, pk="name")
    for fn in before:
        fn(db)
        db["_migrations"].insert({"name": fn.__name__, "applied_at": "2026-11-01T00:00:00Z"})
    old = {"item_id": "i1", "evaluator": "ann", "created_at": "2026-11-01T00:00:00Z", "preference": "left",
           "grounded": "partly", "citations_correct": 0, "meets_intent": 1, "keep": 0, "skipped": 0}
    db["grades"].insert_all([{**old, "id": "g1"}, {**old, "id": "g2", "grounded": "no"}])  # graded twice
    assert migrate(db)[0] == "m006_grade_labels_per_answer_and_leases"
    (row,) = db["grades"].rows  # the latest of a person's grades on an item is kept
    assert (row["id"], row["grounded_left"], row["citations_correct_left"], row["meets_intent_left"]) == (
        "g2", "no", 0, 1)
    assert row["grounded_right"] is None
    assert any(i.unique and i.columns == ["item_id", "evaluator"] for i in db["grades"].indexes)
    assert "grading_leases" in db.table_names()


def test_next_item_oldest_first_with_two_evaluators_and_skips(store):
    now = time.time()
    newer = _item(created_at=now)  # made first, so its id sorts first: age is created_at
    older = _item(evaluators=2, created_at=now - 60)
    store.submit(newer)
    store.submit(older)
    assert store.flush()

    def grade(item: GradingItem, who: str, **kw) -> None:
        store.submit(_grade(item, who, **kw))
        assert store.flush()

    assert store.next_item("ann").id == older.id
    assert store.next_item("ann").id == older.id  # held: a reloaded page shows the same pair
    grade(older, "ann", preference="left")
    assert store.next_item("ann").id == newer.id  # never the same item twice
    store.release(newer.id, "ann")
    assert store.next_item("bob").id == older.id  # it wants a second evaluator
    grade(older, "bob", skipped=True)
    assert store.next_item("bob").id == newer.id  # a skip is not shown again...
    store.release(newer.id, "bob")
    assert store.next_item("cy").id == older.id  # ...and does not count as a grade
    grade(older, "cy", preference="tie")
    assert store.next_item("dee").id == newer.id  # older has its two grades
    progress = store.grading_progress()
    assert (progress.queued, progress.fully_graded) == (2, 1)
    grade(newer, "dee", preference="right")
    assert store.next_item("ann") is None and store.next_item("zed") is None
    progress = store.grading_progress()
    assert (progress.queued, progress.fully_graded) == (2, 2)
    assert progress.grades_by_evaluator == {"ann": 1, "cy": 1, "dee": 1}
    assert progress.skipped_by_evaluator == {"bob": 1}


def test_leases_keep_concurrent_graders_apart_and_expire(store):
    single, double = _item(created_at=time.time() - 10), _item(evaluators=2)
    for record in (single, double):
        store.submit(record)
    assert store.flush()
    graders = [f"g{i}" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        got = dict(zip(graders, pool.map(lambda g: store.next_item(g, lease_s=60), graders), strict=True))
    taken = [g for g, item in got.items() if item is not None]
    # three places in all: one on `single`, two on `double`; nobody else gets an item
    assert sorted(got[g].id for g in taken) == sorted([single.id, double.id, double.id])
    idle = next(g for g, item in got.items() if item is None)
    holder = next(g for g in taken if got[g].id == single.id)
    store.release(single.id, holder)
    assert store.flush()
    assert store.next_item(idle, lease_s=0.2).id == single.id  # released: free again
    time.sleep(0.3)
    other = next(g for g, item in got.items() if item is None and g != idle)
    assert store.next_item(other).id == single.id  # the lease ran out


def test_grading_again_replaces_the_earlier_grade(store):
    item = _item()
    store.submit(item)
    store.submit(_grade(item, "ann", preference="left"))
    assert store.flush()
    store.submit(_grade(item, "ann", preference="right", note="changed my mind"))
    assert store.flush()
    (only,) = store.grades(item.id)
    assert (only.preference, only.note) == ("right", "changed my mind")


def _populate(store: Store, exchanges: int = 6) -> dict[str, tuple[str, ...]]:
    """Exchanges with production, two candidates and one failed candidate; judge verdicts on all
    (well clear of the threshold), a complaint on one exchange and a flipped pairwise verdict on one
    candidate output. Returns which pairs carry a signal."""
    t0 = time.time() - 600
    marked: dict[str, tuple[str, ...]] = {}
    for i in range(exchanges):
        ex = Exchange(id=new_id(), created_at=t0 + i, route="/v1/chat/completions", request={"messages": []},
                      tags={"route": "billing" if i % 3 else "returns", "tenant": f"t{i % 2}"})
        store.submit(ex)
        outs = {}
        for name, role, status in (("production", "production", "ok"), ("cand-a", "candidate", "ok"),
                                   ("cand-b", "candidate", "ok"), ("cand-c", "candidate", "timeout")):
            o = Output(id=new_id(), exchange_id=ex.id, role=role, name=name, model="m", status=status,
                       started_at=t0 + i, text="answer" if status == "ok" else None)
            outs[name] = o
            store.submit(o)
            if status == "ok":
                store.submit(Verdict(id=new_id(), output_id=o.id, exchange_id=ex.id, judge="grounded", version="1",
                                     args={"threshold": 0.5}, created_at=t0 + i, score=0.95))
        if i == 1:
            store.submit(Feedback(id=new_id(), exchange_id=ex.id, created_at=t0 + i, rating=-1,
                                  comment="wrong warranty period"))
            marked["complaint"] = (outs["cand-a"].id, outs["cand-b"].id)
        if i == 4:
            o = outs["cand-b"]
            store.submit(Verdict(id=new_id(), output_id=o.id, exchange_id=ex.id, judge="pairwise", version="1",
                                 args={}, created_at=t0 + i, score=0.5, label="tie",
                                 evidence={"flipped": True, "orders": []}))
            marked["flipped"] = (o.id,)
    assert store.flush()
    return marked


def test_pairs_to_grade_reads_what_the_policies_need(store):
    marked = _populate(store)
    pairs = store.pairs_to_grade()
    assert len(pairs) == 12  # two answered candidates on six exchanges; the timeout is no pair
    assert {p.candidate_name for p in pairs} == {"cand-a", "cand-b"}
    assert all(len(p.production_verdicts) == 1 and p.tags["route"] in ("billing", "returns") for p in pairs)
    complaint = [p for p in pairs if p.candidate_output_id in marked["complaint"]]
    assert len(complaint) == 2 and all(p.feedback[0].rating == -1 for p in complaint)
    flipped = next(p for p in pairs if p.candidate_output_id in marked["flipped"])
    assert {v.judge for v in flipped.candidate_verdicts} == {"grounded", "pairwise"}
    assert [p.candidate_name for p in store.pairs_to_grade(names=("cand-b",))] == ["cand-b"] * 6
    assert store.pairs_to_grade(since=time.time()) == []


def test_build_queue_favours_informative_pairs_and_never_queues_a_pair_twice(store):
    marked = _populate(store)
    signalled = {*marked["complaint"], *marked["flipped"]}
    pairs = [to_sampling_pair(p, ("route", "tenant")) for p in store.pairs_to_grade()]
    assert {p.slice for p in pairs} == {"route=billing,tenant=t0", "route=billing,tenant=t1",
                                         "route=returns,tenant=t0", "route=returns,tenant=t1"}
    plan = SamplingPlan(3, seed=0)
    pi = inclusion_probabilities(pairs, plan)
    plain = max(x for k, x in pi.items() if k[1] not in signalled)
    assert all(pi[p.key] > 2 * plain for p in pairs if p.candidate_output_id in signalled)
    drawn = {p.candidate_output_id: 0 for p in pairs}
    for seed in range(300):
        for s in select(pairs, SamplingPlan(3, seed=seed)):
            drawn[s.pair.candidate_output_id] += 1
    # each pair is drawn as often as its probability says (within 4.5 sigma; which pair meets which of
    # the seeded coins depends on the ids, random within a millisecond), the signalled ones most
    for p in pairs:
        expected = 300 * pi[p.key]
        assert abs(drawn[p.candidate_output_id] - expected) < 4.5 * (expected * (1 - pi[p.key])) ** 0.5
    assert min(drawn[c] for c in signalled) > max(n for c, n in drawn.items() if c not in signalled)

    first = build_queue(store, plan, slice_by=("route", "tenant"))
    assert first.eligible == 12 and first.items == store.grading_items(batch=first.batch)
    assert sum(q for _, q in first.slices.values()) == len(first.items)
    for item in first.items:
        if item.policy == "uniform":  # 0.3 of the budget, scaled up so 3 distinct pairs are expected
            assert item.probability == pytest.approx(policy_probabilities(pairs, plan)[1]["uniform"][0])
            assert item.probability > 3 * 0.3 / 12
        assert 0 < item.probability <= item.inclusion_probability <= 1
        assert item.left in ("production", "candidate") and item.evaluators in (1, 2)
    everything = SamplingPlan(12, seed=1, shares={"uniform": 1.0})
    second = build_queue(store, everything)
    assert second.eligible == 12 - len(first.items) and len(second.items) == second.eligible
    assert all(i.inclusion_probability == 1.0 for i in second.items)
    third = build_queue(store, everything)
    assert (third.eligible, third.items) == (0, [])
    queued = store.grading_items()
    assert len(queued) == 12 == len({(i.candidate_output_id, i.production_output_id) for i in queued})


def test_cli_queues_a_demo_store(tmp_path):
    db = tmp_path / "demo.db"
    subprocess.run([str(BIN), "demo", "--db", str(db), "--questions", "6", "--no-judge"], capture_output=True,
                   check=True, timeout=120)
    cmd = [str(BIN), "grade", "queue", "--db", str(db), "-n", "1000", "--seed", "7", "--double-rate", "0.5",
           "--slice-by", "route", "--slice-by", "tenant", "--json"]
    out = json.loads(subprocess.run(cmd, capture_output=True, check=True, text=True).stdout)
    assert out["seed"] == 7 and out["eligible"] > 0
    assert out["queued"] == out["eligible"] == sum(out["by_policy"].values())  # n far above: every pair
    assert out["expected"] == pytest.approx(out["eligible"])
    assert sum(s["queued"] for s in out["slices"].values()) == out["queued"]
    assert all(k.startswith("route=") and ",tenant=" in k for k in out["slices"])
    items = Store(db).grading_items(batch=out["batch"])
    assert len(items) == out["queued"] and sum(i.evaluators == 2 for i in items) == out["double_graded"]
    again = json.loads(subprocess.run(cmd, capture_output=True, check=True, text=True).stdout)
    assert (again["eligible"], again["queued"]) == (0, 0)
    text = subprocess.run([str(BIN), "grade", "queue", "--db", str(db)], capture_output=True, check=True,
                          text=True).stdout
    assert "0 pairs not queued before" in text and text.startswith("seed ")
    # every candidate's evidence plan: here nothing is judged or graded yet, and it says so
    assert set(out["evidence"]) == {"careful", "drifting"}
    assert all(e["mode"] == "not-worse" and "nothing compared" in e["text"] for e in out["evidence"].values())
    assert "evidence for careful (not-worse rule): no win rate" in text


def test_retention_drops_ungraded_items_and_keeps_grades(store):
    old = Exchange(id=new_id(), created_at=time.time() - 30 * 86400, route="/v1/chat/completions", request=None)
    graded, ungraded = _item(old.id), _item(old.id)
    for record in (old, graded, ungraded, _grade(graded, "ann", preference="tie")):
        store.submit(record)
    assert store.flush()
    assert store.prune(older_than_days=7) == 1
    assert [i.id for i in store.grading_items()] == [graded.id] and len(store.grades()) == 1
    assert store.next_item("bob") is None  # graded enough already
