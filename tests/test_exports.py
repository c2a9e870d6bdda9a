"""Eval set exports: each format exactly on small sets, read back by the real loaders where they are
installed (Inspect AI's json_dataset, PyYAML), and the shared-format records checked against the
real files in ../shared/data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from inspect_ai.dataset import json_dataset
from inspect_ai.model import ChatMessageAssistant, ChatMessageSystem, ChatMessageTool, ChatMessageUser

from shadoweval.core.types import EvalItem, EvalSet
from shadoweval.datasets.evalsets.exports import FORMATS, export, records

from .conftest import SHARED_DATA

SYSTEM = "Antworte nur aus den Dokumenten.\n[1] Die Zugspitze ist 2962 m hoch."
RAG = EvalItem(
    key="a1a1a1a1a1a1a1a1",
    request={"model": "gpt-x", "messages": [{"role": "system", "content": SYSTEM},
                                            {"role": "user", "content": "Wie hoch ist die Zugspitze?"}]},
    target="2962 m – Deutschlands höchster Berg.", target_source="human-preferred",
    contexts=[{"id": "p1", "title": "Zugspitze", "text": "Die Zugspitze ist 2962 m hoch."}],
    outputs={"cand-a": "Etwa 3000 m.", "production": "Sie ist 2962 m hoch [1]."},
    labels={"human": {"winner_votes": {"production": 2, "candidate": 0, "tie": 1}, "preferred": "production",
                      "rejected": "cand-a", "grounded": {"production": "yes", "cand-a": "partly"},
                      "citations_correct": {"production": True}, "meets_intent": {"production": True, "cand-a": False}},
            "judges": {"grounded": {"production": {"score": 0.9, "label": "yes", "passes": True}}}},
    meta={"exchange_id": "ex1", "route": "/v1/chat/completions", "tags": {"app": "wiki"}}, exchange_id="ex1")
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
MULTI = EvalItem(
    key="b2b2b2b2b2b2b2b2",
    request={"model": "gpt-x", "tools": TOOLS, "messages": [
        {"role": "user", "content": "Wie ist das Wetter in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C, sonnig"},
        {"role": "assistant", "content": "18°C und sonnig."},
        {"role": "user", "content": [{"type": "text", "text": "Und morgen?"},
                                     {"type": "image_url", "image_url": {"url": "data:,"}}]}]},
    target="Morgen: 20°C.", target_source="human-corrected",
    outputs={"production": "Weiß ich nicht.", "cand-b": "Regen, 12°C."},
    labels={"human": {"pairs": {"cand-b": {"production": 0, "candidate": 2, "tie": 1}},
                      "winner_votes": {"production": 0, "candidate": 2, "tie": 1}, "candidate": "cand-b",
                      "preferred": "cand-b", "rejected": "production"}},
    meta={"exchange_id": "ex2", "route": "/v1/chat/completions"}, exchange_id="ex2")
RESPONSES_API = EvalItem(
    key="c3c3c3c3c3c3c3c3",
    request={"model": "gpt-x", "instructions": "Sei knapp.",
             "input": [{"role": "user", "content": [{"type": "input_text", "text": "¿Qué es RAG? 🤔"}]}]},
    target="Retrieval-augmented generation.", target_source="reference",
    outputs={"production": "Retrieval-augmented generation."}, meta={"route": "/v1/responses"})
NO_TARGET = EvalItem(
    key="d4d4d4d4d4d4d4d4", request={"model": "gpt-x", "messages": [{"role": "user", "content": "Nenne drei Primzahlen."}]},
    outputs={"production": "2, 3, 5", "cand-a": "2, 3, 4"},
    labels={"human": {"winner_votes": {"production": 1, "candidate": 1, "tie": 0}, "preferred": None}})
NO_CONVERSATION = EvalItem(key="e5e5e5e5e5e5e5e5", request={"model": "gpt-x", "messages": [
    {"role": "system", "content": "nur System"}]}, outputs={"production": "?"})
SET = EvalSet(id="s1", name="wiki", version=3, created_at=0.0, manifest={},
              items=(RAG, MULTI, RESPONSES_API, NO_TARGET, NO_CONVERSATION))


def _all(fmt: str, evalset: EvalSet = SET) -> tuple[list[dict[str, Any]], Counter[str]]:
    skipped: Counter[str] = Counter()
    return list(records(evalset, fmt, skipped=skipped)), skipped


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_every_format_is_described_and_unknown_ones_are_refused():
    assert set(FORMATS) == {"inspect", "openai-evals", "promptfoo", "dpo", "responses", "pairs", "replay"}
    assert all(isinstance(d, str) and d and "\n" not in d for d in FORMATS.values())
    with pytest.raises(ValueError, match="unknown export format"):
        records(SET, "csv")


def test_inspect_records_exactly():
    rows, skipped = _all("inspect")
    assert [r["id"] for r in rows] == [RAG.key, MULTI.key, RESPONSES_API.key, NO_TARGET.key]
    assert skipped == Counter({"no conversation": 1})
    assert rows[0] == {"id": RAG.key, "input": [{"role": "system", "content": SYSTEM},
                                                {"role": "user", "content": "Wie hoch ist die Zugspitze?"}],
                       "target": RAG.target, "metadata": {
                           "route": "/v1/chat/completions", "tags": {"app": "wiki"}, "target_source": "human-preferred",
                           "exchange_id": "ex1", "eval_set": "wiki@3", "contexts": RAG.contexts}}
    assert rows[1]["input"][1:3] == [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "function": "get_weather", "arguments": {"city": "Paris"}, "type": "function"}]},
        {"role": "tool", "content": "18°C, sonnig", "tool_call_id": "call_1", "function": "get_weather"}]
    assert rows[1]["input"][-1] == {"role": "user", "content": "Und morgen?"}  # the image part is not text
    assert rows[1]["metadata"]["tools"] == TOOLS
    assert rows[2]["input"] == [{"role": "system", "content": "Sei knapp."}, {"role": "user", "content": "¿Qué es RAG? 🤔"}]
    assert rows[3]["input"] == "Nenne drei Primzahlen." and rows[3]["target"] == ""


def test_inspect_round_trip_through_its_own_loader(tmp_path):
    path = tmp_path / "set.jsonl"  # json_dataset reads JSON Lines only when the name ends in .jsonl
    assert export(SET, "inspect", path) == 4
    samples = list(json_dataset(str(path)))
    assert [s.id for s in samples] == [RAG.key, MULTI.key, RESPONSES_API.key, NO_TARGET.key]
    assert [s.target for s in samples] == [RAG.target, MULTI.target, RESPONSES_API.target, ""]
    rag, multi, resp, plain = samples
    assert [type(m) for m in rag.input] == [ChatMessageSystem, ChatMessageUser]
    assert [m.text for m in rag.input] == [SYSTEM, "Wie hoch ist die Zugspitze?"]
    assert [type(m) for m in multi.input] == [ChatMessageUser, ChatMessageAssistant, ChatMessageTool,
                                              ChatMessageAssistant, ChatMessageUser]
    call = multi.input[1].tool_calls[0]
    assert (call.id, call.function, call.arguments, call.parse_error) == ("call_1", "get_weather", {"city": "Paris"}, None)
    assert (multi.input[2].tool_call_id, multi.input[2].function, multi.input[2].text) == (
        "call_1", "get_weather", "18°C, sonnig")
    assert [m.text for m in resp.input] == ["Sei knapp.", "¿Qué es RAG? 🤔"]
    assert plain.input == "Nenne drei Primzahlen."
    assert rag.metadata["contexts"] == RAG.contexts and rag.metadata["eval_set"] == "wiki@3"


def test_inspect_keeps_a_call_whose_arguments_do_not_parse(tmp_path):
    bad = {"id": "c9", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
    item = EvalItem(key="f6f6f6f6f6f6f6f6", request={"messages": [
        {"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [bad]},
        {"role": "tool", "tool_call_id": "c9", "content": "y"}, {"role": "user", "content": "z"}]})
    path = tmp_path / "bad.jsonl"
    export(EvalSet("s", "n", 1, 0.0, {}, (item,)), "inspect", path)
    (sample,) = json_dataset(str(path))
    call = sample.input[1].tool_calls[0]
    assert call.arguments == {} and "not a JSON object" in call.parse_error


def test_openai_evals_needs_an_ideal():
    rows, skipped = _all("openai-evals")
    assert rows[0] == {"input": [{"role": "system", "content": SYSTEM},
                                 {"role": "user", "content": "Wie hoch ist die Zugspitze?"}], "ideal": RAG.target}
    assert rows[1]["input"][1] == MULTI.request["messages"][1] | {"content": ""}  # OpenAI's own tool-call shape
    assert [r["ideal"] for r in rows] == [RAG.target, MULTI.target, RESPONSES_API.target]
    assert skipped == Counter({"no target": 1, "no conversation": 1})


def test_promptfoo_cases_exactly_and_through_pyyaml(tmp_path):
    rows, skipped = _all("promptfoo")
    assert rows[0] == {
        "description": f"{RAG.key}: Wie hoch ist die Zugspitze?",
        "vars": {"messages": json.dumps(RAG.request["messages"], ensure_ascii=False),
                 "question": "Wie hoch ist die Zugspitze?", "context": "[1] Zugspitze\nDie Zugspitze ist 2962 m hoch."},
        "assert": [{"type": "similar", "value": RAG.target, "threshold": 0.8}],
        "metadata": {"eval_set": "wiki@3", "exchange_id": "ex1", "route": "/v1/chat/completions", "key": RAG.key,
                     "target_source": "human-preferred", "tags": {"app": "wiki"}}}
    assert rows[1]["vars"]["question"] == "Und morgen?" and rows[1]["vars"]["context"] == ""
    assert "assert" not in rows[3]  # nothing to compare with
    assert skipped == Counter({"no conversation": 1})
    path = tmp_path / "tests.yaml"
    assert export(SET, "promptfoo", path) == 4
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == rows
    assert "Zugspitze" in path.read_text(encoding="utf-8") and "\\u" not in path.read_text(encoding="utf-8")


def test_promptfoo_quotes_what_yaml_1_2_would_not_read_as_text(tmp_path):
    item = EvalItem(key="g7g7g7g7g7g7g7g7", request={"messages": [{"role": "user", "content": "1e3"}]},
                    target="no", outputs={})
    path = tmp_path / "t.yaml"
    export(EvalSet("s", "n", 1, 0.0, {}, (item,)), "promptfoo", path)
    text = path.read_text(encoding="utf-8")
    assert "question: \"1e3\"" in text and "value: 'no'" in text  # PyYAML quotes its own 1.1 booleans
    assert yaml.safe_load(text)[0]["vars"]["question"] == "1e3"


def test_dpo_pairs_come_only_from_human_preferences_and_corrections():
    rows, skipped = _all("dpo")
    rag_prompt = RAG.request["messages"]
    assert rows[0] == {"prompt": rag_prompt, "chosen": [{"role": "assistant", "content": RAG.outputs["production"]}],
                       "rejected": [{"role": "assistant", "content": "Etwa 3000 m."}]}
    multi = [r for r in rows if r["prompt"][-1]["content"] == "Und morgen?"]
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in multi] == [
        ("Regen, 12°C.", "Weiß ich nicht."), ("Morgen: 20°C.", "Weiß ich nicht.")]
    # NO_TARGET's one pair is a tie: left out, and counted as one, not as an item nobody voted on
    assert len(rows) == 3 and skipped == Counter({"no human preference": 1, "tied human preference": 1,
                                                  "no conversation": 1})
    for r in rows:
        assert set(r) == {"prompt", "chosen", "rejected"} and r["prompt"][-1]["role"] == "user"
        assert r["chosen"] != r["rejected"]


def test_dpo_drops_a_correction_equal_to_the_answer_it_would_beat():
    item = EvalItem(key="h8h8h8h8h8h8h8h8", request={"messages": [{"role": "user", "content": "q"},
                                                                   {"role": "assistant", "content": "old"}]},
                    target="same", target_source="human-corrected", outputs={"production": " same "},
                    labels={"human": {"preferred": None, "rejected": None}})
    assert _all("dpo", EvalSet("s", "n", 1, 0.0, {}, (item,)))[0] == []


IMPORTED = EvalItem(  # an imported request: answers named by model, production's in meta, a pair between two others
    key="k1k1k1k1k1k1k1k1", request={"messages": [{"role": "user", "content": "q"}]},
    outputs={"gpt": "G", "llama": "L", "reference": "R"},
    labels={"human": {"pairs": {"llama": {"production": 0, "candidate": 2, "tie": 1},
                                "reference": {"production": 1, "candidate": 1, "tie": 0}},
                      "winner_votes": {"production": 0, "candidate": 2, "tie": 1}, "candidate": "llama",
                      "preferred": "llama", "rejected": "gpt",
                      "other_pairs": [{"a": "llama", "b": "reference", "votes": {"a": 0, "b": 1, "tie": 0}}]}},
    meta={"production": "gpt"})


def test_imported_items_name_production_and_pair_other_answers():
    evalset = EvalSet("s", "n", 1, 0.0, {}, (IMPORTED,))
    rows, skipped = _all("dpo", evalset)
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [("L", "G"), ("R", "L")]
    assert skipped == Counter({"tied human preference": 1})  # gpt against reference: one vote each
    rows, _ = _all("pairs", evalset)
    assert [(r["meta"]["model_a"], r["meta"]["model_b"], r["response_a"], r["labels"]["preference"]) for r in rows] == [
        ("gpt", "llama", "G", "b"), ("gpt", "reference", "G", "tie"), ("llama", "reference", "L", "b")]
    assert [r["meta"]["model"] for r in _all("responses", evalset)[0]] == ["gpt", "llama", "reference"]


def test_responses_one_per_answer_with_its_human_labels():
    rows, skipped = _all("responses")
    assert [r["id"] for r in rows] == [
        f"{RAG.key}-production", f"{RAG.key}-cand-a", f"{MULTI.key}-production", f"{MULTI.key}-cand-b",
        f"{MULTI.key}-corrected", f"{RESPONSES_API.key}-production", f"{NO_TARGET.key}-production",
        f"{NO_TARGET.key}-cand-a", f"{NO_CONVERSATION.key}-production"]
    assert rows[0] == {"id": f"{RAG.key}-production", "request": RAG.request, "contexts": RAG.contexts,
                       "response": RAG.outputs["production"],
                       "labels": {"grounded": True, "groundedness": "yes", "citation_supported": True, "meets_intent": True},
                       "meta": {"source": "shadoweval", "model": "production", "eval_set": "wiki@3", "exchange_id": "ex1",
                                "route": "/v1/chat/completions", "target_source": "human-preferred"}}
    assert rows[1]["labels"] == {"groundedness": "partly", "meets_intent": False}  # partly is neither yes nor no
    assert rows[4]["response"] == MULTI.target and rows[4]["meta"]["model"] == "corrected"
    assert rows[5]["contexts"] == [] and rows[5]["labels"] == {}
    assert skipped == Counter()


def test_pairs_production_against_each_voted_candidate():
    rows, skipped = _all("pairs")
    assert rows[0] == {"id": f"{RAG.key}-production-cand-a", "request": RAG.request, "contexts": RAG.contexts,
                       "response_a": RAG.outputs["production"], "response_b": "Etwa 3000 m.",
                       "labels": {"preference": "a", "votes": ["a", "a", "tie"]},
                       "meta": {"source": "shadoweval", "model_a": "production", "model_b": "cand-a",
                                "eval_set": "wiki@3", "exchange_id": "ex1", "route": "/v1/chat/completions"}}
    assert [(r["id"], r["labels"]) for r in rows[1:]] == [
        (f"{MULTI.key}-production-cand-b", {"preference": "b", "votes": ["b", "b", "tie"]}),
        (f"{NO_TARGET.key}-production-cand-a", {"preference": "tie", "votes": ["a", "b"]})]
    assert skipped == Counter({"no human votes on a pair": 2})


def test_pairs_leave_out_votes_that_name_no_candidate():
    votes = {"human": {"winner_votes": {"production": 1, "candidate": 0, "tie": 0}}}
    item = EvalItem(key="i9", request={}, outputs={"production": "p", "x": "1", "y": "2"}, labels=votes)
    assert _all("pairs", EvalSet("s", "n", 1, 0.0, {}, (item,)))[0] == []


def test_replay_requests_with_their_reference():
    rows, skipped = _all("replay")
    assert rows[0] == {"id": RAG.key, "request": RAG.request, "contexts": RAG.contexts, "reference": RAG.target,
                       "meta": {"source": "shadoweval", "eval_set": "wiki@3", "exchange_id": "ex1",
                                "route": "/v1/chat/completions", "target_source": "human-preferred"}}
    assert rows[3] == {"id": NO_TARGET.key, "request": NO_TARGET.request, "meta": {"source": "shadoweval",
                                                                                    "eval_set": "wiki@3"}}
    assert len(rows) == 5 and skipped == Counter()


def test_export_counts_what_it_writes_and_writes_one_record_a_line(tmp_path):
    odd = EvalItem(key="j0", request={"messages": [{"role": "user", "content": "a\u2028b\x85c\nd"}]}, target="t")
    evalset = EvalSet("s", "n", 1, 0.0, {}, (*SET.items, odd))
    for fmt in FORMATS:
        skipped: Counter[str] = Counter()
        path = tmp_path / f"{fmt}.out"
        n = export(evalset, fmt, path, skipped=skipped)
        assert n == len(list(records(evalset, fmt)))
        assert not path.with_name(path.name + ".tmp").exists()
        if fmt != "promptfoo":
            assert _jsonl(path) == list(records(evalset, fmt))  # splitlines() splits at U+2028 and U+0085 too
    assert export(EvalSet("s", "n", 1, 0.0, {}, (NO_CONVERSATION,)), "inspect", tmp_path / "none.jsonl") == 0
    assert (tmp_path / "none.jsonl").read_text() == ""


SHARED = {"responses": "mtrag_responses.jsonl", "pairs": "mtrag_pairs.jsonl", "replay": "replay_rag_requests.jsonl"}


@pytest.mark.parametrize("fmt", sorted(SHARED))
def test_shared_formats_have_the_shared_files_fields(fmt):
    path = SHARED_DATA / SHARED[fmt]
    if not path.exists():
        pytest.skip("shared data not present")
    with path.open(encoding="utf-8") as f:
        theirs = json.loads(f.readline())
    ours = next(records(EvalSet("s", "n", 1, 0.0, {}, (RAG,)), fmt))
    assert set(ours) == set(theirs)
    assert all(type(ours[k]) is type(theirs[k]) for k in theirs)
    if fmt == "pairs":
        assert set(ours["labels"]) == set(theirs["labels"]) == {"preference", "votes"}


def test_replay_without_contexts_or_reference_has_the_chat_files_fields():
    path = SHARED_DATA / "replay_chat_requests.jsonl"
    if not path.exists():
        pytest.skip("shared data not present")
    with path.open(encoding="utf-8") as f:
        theirs = json.loads(f.readline())
    assert set(next(records(EvalSet("s", "n", 1, 0.0, {}, (NO_TARGET,)), "replay"))) == set(theirs)


def test_pair_preference_follows_the_shared_files_rule_on_their_votes():
    # The shared pair files derive a preference from annotators' votes: a strict plurality of a, b or
    # tie, else tie. Rebuild each record's votes as winner_votes and compare.
    paths = [SHARED_DATA / f for f in ("mtrag_pairs.jsonl", "pandalm_pairs.jsonl") if (SHARED_DATA / f).exists()]
    if not paths:
        pytest.skip("shared data not present")
    theirs, items = [], []
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            rec = json.loads(line)
            votes = Counter(rec["labels"]["votes"])
            items.append(EvalItem(key=f"{path.stem}-{n}", request=rec["request"], outputs={"production": "a", "c": "b"},
                                  labels={"human": {"winner_votes": {"production": votes["a"], "candidate": votes["b"],
                                                                     "tie": votes["tie"]}}}))
            theirs.append(rec["labels"]["preference"])
    ours = [r["labels"]["preference"] for r in records(EvalSet("s", "n", 1, 0.0, {}, tuple(items)), "pairs")]
    assert ours == theirs


def test_calibration_reads_the_shared_format_exports():
    # `shadoweval calibrate` is the in-project reader of these formats: production must be response_a.
    from shadoweval.judges.calibrate import is_pair, subject_of

    pair = next(records(SET, "pairs"))
    subject = subject_of(pair, now=0.0)
    assert is_pair(pair) and subject.output.text == "Etwa 3000 m." and subject.production.text == RAG.outputs["production"]
    response = next(records(SET, "responses"))
    assert not is_pair(response) and subject_of(response, now=0.0).output.text == RAG.outputs["production"]
    assert subject_of(response, now=0.0).exchange.contexts == RAG.contexts
