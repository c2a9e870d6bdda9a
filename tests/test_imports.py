"""Importing labeled files: what lands in the store for each kind (exchanges, outputs and roles,
grading items, grades), that a second import adds nothing, that bad lines are reported without
stopping the import, and that the real shared files flow on into the agreement report."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shadoweval.core.store import Store
from shadoweval.core.types import AnswerLabels, Exchange, Output, Verdict, new_id
from shadoweval.datasets.evalsets.imports import InvalidLine, import_records
from shadoweval.datasets.evalsets.keys import request_key
from shadoweval.datasets.report.agreement import OVERALL, BinaryAgreement, from_store

from .conftest import SHARED_DATA

CONTEXTS = [{"id": "d1", "title": "Doc", "text": "The sky is blue."}]


def _request(question: str) -> dict[str, Any]:
    return {"model": "production", "messages": [{"role": "system", "content": "[1] The sky is blue."},
                                                {"role": "user", "content": question}]}


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "shadow.db", flush_interval_ms=10)
    s.start()
    yield s
    s.stop()


def _exchanges(store: Store) -> list[tuple[Exchange, dict[str, Output]]]:
    found = []
    for exchange_id in store.exchange_ids():
        got = store.get_exchange(exchange_id)
        assert got is not None
        found.append((got[0], {o.name: o for o in got[1]}))
    return found


def _response(question: str, model: str | None, text: str, labels: dict[str, Any] | None = None,
              **meta: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"id": new_id(), "request": _request(question), "contexts": CONTEXTS, "response": text,
                              "meta": {"source": "t", **({"model": model} if model else {}), **meta}}
    if labels is not None:
        record["labels"] = labels
    return record


def test_labeled_responses(tmp_path: Path, store: Store) -> None:
    path = _write(tmp_path / "resp.jsonl", [
        _response("q1", "reference", "Blue.", {"grounded": True, "faithfulness_votes": [4, 3, 1]}, collection="c1"),
        "{not json",
        _response("q1", "gpt", "Blue [1].", {"grounded": True}, collection="c1"),
        {"id": "x", "response": "no request"},
        _response("q1", "llama", "Green.", {"grounded": False}, collection="c1"),
        _response("q2", None, "A claim [1].", {"citation_supported": False}, src_dataset="ExpertQA"),
        _response("q2", None, "Another claim.", {"citation_supported": True}, src_dataset="LFQA"),
        _response("q2", None, "Unlabeled."),
        _response("q3", "gpt", "Bad label.", {"grounded": "maybe"}),
    ])
    result = import_records(store, path)
    assert (result.kind, result.source, result.read, result.skipped) == ("responses", "resp", 6, 0)
    assert (result.exchanges, result.outputs, result.items, result.grades) == (2, 6, 5, 5)
    assert [i.line for i in result.invalid] == [2, 4, 9]
    assert "not JSON" in result.invalid[0].reason and "grounded" in result.invalid[2].reason

    (q1, out1), (q2, out2) = _exchanges(store)
    key = request_key(_request("q1"))
    assert q1.tags == {"source": "t", "collection": "c1", "import": "resp", "import_key": f"resp:{key}"}
    assert q1.route == "/v1/chat/completions" and q1.contexts == CONTEXTS and q1.request == _request("q1")
    assert q1.created_at < q2.created_at <= time.time()  # file order, never in the future
    # the reference comes first in the file but is never production: the first model answer is
    assert {n: o.role for n, o in out1.items()} == {"reference": "reference", "gpt": "production", "llama": "candidate"}
    assert {n: o.role for n, o in out2.items()} == {"response": "production", "response#2": "candidate",
                                                   "response#3": "candidate"}
    assert out1["gpt"].text == "Blue [1]." and out1["gpt"].model == "gpt" and out1["gpt"].status == "ok"

    items = {i.production_output_id: i for i in store.grading_items()}
    assert set(items) == {o.id for o in (*out1.values(), out2["response"], out2["response#2"])}
    labels = {}
    for item in items.values():
        assert (item.candidate_output_id, item.left, item.policy, item.evaluators) == (None, "production", "imported", 1)
        assert (item.probability, item.inclusion_probability, item.batch) == (1.0, 1.0, "import:resp")
        (grade,) = store.grades(item.id)
        assert grade.evaluator == "import:resp" and grade.preference is None
        labels.update(item.labels_by_output(grade))
    assert labels == {
        out1["reference"].id: AnswerLabels(grounded="yes"), out1["gpt"].id: AnswerLabels(grounded="yes"),
        out1["llama"].id: AnswerLabels(grounded="no"), out2["response"].id: AnswerLabels(citations_correct=False),
        out2["response#2"].id: AnswerLabels(citations_correct=True)}
    assert items[out1["gpt"].id].slice == "collection=c1" and items[out2["response"].id].slice == "src_dataset=ExpertQA"
    # votes are kept with the consensus grade, not made grades of their own
    (ref_grade,) = store.grades(items[out1["reference"].id].id)
    assert json.loads(ref_grade.note)["faithfulness_votes"] == [4, 3, 1]

    again = import_records(store, path)
    assert (again.exchanges, again.outputs, again.items, again.grades, again.skipped) == (0, 0, 0, 0, 6)
    assert len(store.exchange_ids()) == 2 and len(store.grades()) == 5


def test_production_and_source_chosen(tmp_path: Path, store: Store) -> None:
    path = _write(tmp_path / "resp.jsonl", [
        _response("q1", "gpt", "Blue.", {"grounded": True}), _response("q1", "llama", "Blue!", {"grounded": True}),
        _response("q2", "gpt", "Blue?", {"grounded": True}),
    ])
    result = import_records(store, path, source="team-a", production="llama")
    assert result.exchanges == 2
    (q1, out1), (q2, out2) = _exchanges(store)
    assert (out1["llama"].role, out1["gpt"].role) == ("production", "candidate")
    assert out2["gpt"].role == "candidate"  # llama did not answer q2: no production answer to compare with
    assert q1.tags["import"] == "team-a" and q1.tags["import_key"].startswith("team-a:")
    assert {i.batch for i in store.grading_items()} == {"import:team-a"}


def _pair(question: str, a: str, b: str, ta: str, tb: str, labels: dict[str, Any]) -> dict[str, Any]:
    return {"id": new_id(), "request": _request(question), "contexts": CONTEXTS, "response_a": ta, "response_b": tb,
            "labels": labels, "meta": {"source": "t", "model_a": a, "model_b": b, "collection": "c1"}}


def test_labeled_pairs(tmp_path: Path, store: Store) -> None:
    path = _write(tmp_path / "pairs.jsonl", [
        _pair("q1", "gpt", "llama", "G", "L", {"preference": "tie", "votes": ["a", "b", "tie"]}),
        _pair("q1", "gpt", "reference", "G", "R", {"preference": "b"}),
        _pair("q1", "llama", "reference", "L", "R", {"preference": "a", "votes": ["a", "a"]}),
        _pair("q1", "gpt", "llama", "G", "L", {"preference": "a", "votes": ["a"]}),
        {**_pair("q1", "x", "y", "X", "Y", {}), "labels": {"votes": ["left"]}},
    ])
    result = import_records(store, path)
    assert (result.kind, result.read, result.exchanges, result.outputs, result.items, result.grades) == (
        "pairs", 4, 2, 5, 3, 6)
    assert result.invalid == (InvalidLine(4, "the same two answers as line 1"),
                              InvalidLine(5, "labels.votes is not a list of a, b or tie"))
    # one exchange per production answer, both tagged with the request's key
    (e1, gpt), (e2, llama) = _exchanges(store)
    assert e1.tags["import_key"] == e2.tags["import_key"] == f"pairs:{request_key(_request('q1'))}"
    assert {n: o.role for n, o in gpt.items()} == {"gpt": "production", "llama": "candidate", "reference": "reference"}
    assert {n: o.role for n, o in llama.items()} == {"llama": "production", "reference": "reference"}

    items = {(i.production_output_id, i.candidate_output_id): i for i in store.grading_items()}
    first = items[(gpt["gpt"].id, gpt["llama"].id)]
    assert (first.left, first.policy, first.evaluators, first.slice) == ("production", "imported", 3, "collection=c1")
    grades = store.grades(first.id)
    assert {g.evaluator: (g.preference, g.winner) for g in grades} == {
        "import:pairs:1": ("left", "production"), "import:pairs:2": ("right", "candidate"),
        "import:pairs:3": ("tie", "tie")}
    no_votes = items[(gpt["gpt"].id, gpt["reference"].id)]
    assert [(g.evaluator, g.winner) for g in store.grades(no_votes.id)] == [("import:pairs", "candidate")]
    assert no_votes.evaluators == 1 and no_votes.labels_by_output(store.grades(no_votes.id)[0]) == {
        gpt["gpt"].id: AnswerLabels(), gpt["reference"].id: AnswerLabels()}
    assert items[(llama["llama"].id, llama["reference"].id)].evaluators == 2

    again = import_records(store, path)
    assert (again.exchanges, again.outputs, again.items, again.grades, again.skipped) == (0, 0, 0, 0, 4)


def test_pairs_oriented_by_production(tmp_path: Path, store: Store) -> None:
    """With `production` on side b, b is production and a (still shown left) the candidate."""
    path = _write(tmp_path / "pairs.jsonl", [_pair("q1", "gpt", "llama", "G", "L", {"votes": ["a", "b"]})])
    import_records(store, path, production="llama")
    ((_, outputs),) = _exchanges(store)
    assert (outputs["llama"].role, outputs["gpt"].role) == ("production", "candidate")
    (item,) = store.grading_items()
    assert (item.left, item.production_output_id, item.candidate_output_id) == (
        "candidate", outputs["llama"].id, outputs["gpt"].id)
    assert sorted((g.preference, g.winner) for g in store.grades(item.id)) == [
        ("left", "candidate"), ("right", "production")]


def test_replay_requests(tmp_path: Path, store: Store) -> None:
    path = _write(tmp_path / "replay.jsonl", [
        {"id": "r1", "request": _request("q1"), "contexts": CONTEXTS, "reference": "Blue.",
         "meta": {"source": "t", "answerability": ["ANSWERABLE"], "notes": "x" * 500, "n": {"nested": 1}}},
        {"id": "r2", "request": {"model": "m", "input": "hello"}, "meta": {"source": "t"}},
        {"id": "r3", "request": "not an object"},
    ])
    result = import_records(store, path)
    assert (result.kind, result.exchanges, result.outputs, result.items, result.grades) == ("requests", 2, 1, 0, 0)
    assert result.invalid == (InvalidLine(3, "request is not an object"),)
    (rag, outputs), (responses, none) = _exchanges(store)
    assert rag.tags == {"source": "t", "answerability": "ANSWERABLE", "import": "replay",
                        "import_key": f"replay:{request_key(_request('q1'))}"}
    assert rag.contexts == CONTEXTS and rag.route == "/v1/chat/completions"
    assert {n: (o.role, o.text) for n, o in outputs.items()} == {"reference": ("reference", "Blue.")}
    assert responses.route == "/v1/responses" and responses.contexts is None and none == {}
    assert import_records(store, path).exchanges == 0


def test_mixed_kinds_are_refused_before_writing(tmp_path: Path, store: Store) -> None:
    path = _write(tmp_path / "mixed.jsonl", [_response("q1", "gpt", "Blue.", {"grounded": True}),
                                             _pair("q2", "a", "b", "A", "B", {"preference": "a"})])
    with pytest.raises(ValueError, match="mixes record kinds"):
        import_records(store, path)
    assert store.exchange_ids() == []


def test_limit_takes_whole_requests(tmp_path: Path, store: Store) -> None:
    path = _write(tmp_path / "resp.jsonl", [
        _response("q1", "gpt", "A", {"grounded": True}), _response("q2", "gpt", "B", {"grounded": True}),
        _response("q1", "llama", "C", {"grounded": False}),
    ])
    result = import_records(store, path, limit=1)
    assert (result.read, result.exchanges, result.outputs) == (2, 1, 2)  # q1's later record came along
    assert import_records(store, path).exchanges == 1  # q2 only


def _data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip("shared data absent")
    return path


# agreement() puts the None of a single-answer item's missing side into its set of output ids and sorts
# it (datasets/report/agreement.py, `outputs = {... item.output_ids()}`): any verdict on such an item raises.
# Strict, so the fix makes this test fail until the mark is removed; with None left out it passes.
def test_mtrag_responses_flow_into_the_agreement_report(store: Store) -> None:
    path = _data("mtrag_responses.jsonl")
    result = import_records(store, path, limit=60)
    assert result.kind == "responses" and result.invalid == () and result.items == result.grades == result.read > 60
    # the file's own label by request and answer, to score each imported output with a stand-in judge
    truth = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        truth[(request_key(r["request"]), r["response"])] = r["labels"]["grounded"]
    roles = set()
    for exchange, outputs in _exchanges(store):
        for o in outputs.values():
            roles.add(o.role)
            label = truth[(exchange.tags["import_key"].split(":")[1], o.text)]
            store.submit(Verdict(id=new_id(), output_id=o.id, exchange_id=exchange.id, judge="grounded",
                                 version="test", args={"threshold": 0.5}, created_at=time.time(),
                                 score=1.0 if label else 0.0))
    assert store.flush()
    assert roles == {"production", "candidate", "reference"}
    report = from_store(store, batch="import:mtrag_responses")
    (judge,) = report.judges
    assert isinstance(judge.overall, BinaryAgreement)
    assert (judge.judge, judge.human_field, judge.overall.n, judge.overall.accuracy) == (
        "grounded", "grounded", result.grades, 1.0)
    assert set(judge.slices) == {"collection=clapnq", "collection=fiqa"}


def test_mtrag_pairs_votes_are_grades_with_rater_figures(store: Store) -> None:
    path = _data("mtrag_pairs.jsonl")
    result = import_records(store, path, limit=60)
    wanted = {request_key(json.loads(line)["request"]) for line in path.read_text().splitlines()[:60]}
    votes = [len(r["labels"]["votes"]) for r in map(json.loads, path.read_text().splitlines()) if request_key(r["request"]) in wanted]
    assert result.items == len(votes) and result.grades == sum(votes) and result.invalid == ()
    report = from_store(store)
    assert report.grades == sum(votes)
    winner = next(r for r in report.raters if r.field == "winner")
    assert winner.units == sum(1 for n in votes if n >= 2) and winner.percent_agreement is not None
    assert winner.alpha is not None and winner.pairs
    assert report.position_bias[0].evaluator == OVERALL and report.position_bias[0].n == sum(votes)


def test_replay_rag_requests_keep_contexts(store: Store) -> None:
    path = _data("replay_rag_requests.jsonl")
    result = import_records(store, path, limit=60)
    assert (result.kind, result.exchanges, result.outputs, result.items) == ("requests", 60, 60, 0)
    records = {request_key(r["request"]): r for r in map(json.loads, path.read_text().splitlines()[:60])}
    with_passages = 0
    for exchange, outputs in _exchanges(store):
        record = records[exchange.tags["import_key"].split(":")[1]]
        # unanswerable tasks come without passages: none stored rather than an empty list
        assert exchange.contexts == (record["contexts"] or None)
        with_passages += bool(exchange.contexts)
        assert exchange.tags["answerability"] == ",".join(record["meta"]["answerability"])
        assert (outputs["reference"].role, outputs["reference"].text) == ("reference", record["reference"])
    assert with_passages > 30


def test_attribution_claims_become_citation_labels(store: Store) -> None:
    result = import_records(store, _data("attribution_claims.jsonl"), limit=60)
    assert result.items == result.grades == result.read >= 60
    slices = {i.slice.split("=")[0] for i in store.grading_items()}
    assert slices == {"src_dataset"}
    assert {g.left_labels.citations_correct for g in store.grades()} == {True, False}
