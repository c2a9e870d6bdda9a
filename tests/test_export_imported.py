"""Every export format on imported labeled pairs, run as a user runs it: `shadoweval evalset import`,
`build` and `export` through the CLI against a real SQLite file. Imported answers are named by their
model (or "a" / "b") and a request's pairs are stored one exchange per production answer, so the
preferred answer must be read by name and a request's pairs must come back as one item."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from shadoweval.cli.main import main
from shadoweval.datasets.evalsets.exports import FORMATS
from shadoweval.datasets.evalsets.keys import request_key

from .conftest import SHARED_DATA

SYSTEM = "Answer from the documents. Cite them as [n].\n\nDocuments:\n[1] Refunds take 5 business days."


def _request(question: str) -> dict[str, Any]:
    return {"model": "production", "messages": [{"role": "system", "content": SYSTEM},
                                                {"role": "user", "content": question}]}


def _pair(question: str, a: str, b: str, labels: dict[str, Any], models: tuple[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"source": "test", "collection": "c1"}
    if models:
        meta |= {"model_a": models[0], "model_b": models[1]}
    return {"id": f"{question}-{a}-{b}", "request": _request(question),
            "contexts": [{"id": "d1", "title": "Refunds", "text": "Refunds take 5 business days."}],
            "response_a": a, "response_b": b, "labels": labels, "meta": meta}


G, L, R = "Five days [1].", "About a week.", "Refunds take 5 business days [1]."
RECORDS = [
    # one request, three answers, as in mtrag_pairs: one item with three voted pairs
    _pair("How long do refunds take?", G, L, {"preference": "b", "votes": ["b", "b", "a"]}, ("gpt", "llama")),
    _pair("How long do refunds take?", G, R, {"preference": "a", "votes": ["a"]}, ("gpt", "reference")),
    _pair("How long do refunds take?", L, R, {"preference": "tie", "votes": ["a", "b"]}, ("llama", "reference")),
    # no model names: the answers are named "a" and "b"
    _pair("Can I pay by card?", "Yes.", "No.", {"preference": "a", "votes": ["a", "a", "b"]}),
    _pair("Do you ship abroad?", "Maybe.", "Yes, to the EU.", {"preference": "b"}),  # no votes: the preference is one
    _pair("Is there a fee?", "No fee.", "There is no fee.", {"preference": "tie", "votes": ["tie", "a", "b"]}),
    _pair("Where is my order?", "In transit.", "Delivered.", {}),  # nobody voted
]
# chosen, rejected: one row per pair with a preference that is not a tie
DPO = {("How long do refunds take?", L, G), ("How long do refunds take?", G, R), ("Can I pay by card?", "Yes.", "No."),
       ("Do you ship abroad?", "Yes, to the EU.", "Maybe.")}
TARGETS = {"How long do refunds take?": (L, "human-preferred"),  # the pair graded most: gpt vs llama
           "Can I pay by card?": ("Yes.", "human-preferred"), "Do you ship abroad?": ("Yes, to the EU.", "human-preferred"),
           "Is there a fee?": ("No fee.", "production"), "Where is my order?": ("In transit.", "production")}


def _cli(tmp_path: Path) -> Any:
    db, cfg = tmp_path / "imported.db", tmp_path / "c.toml"
    # redaction off: the real files hold phone numbers, and the exports are compared with them as written
    cfg.write_text(f'[store]\npath = "{db}"\n[judges]\nembedder = "hashing"\n'
                   "[redaction]\nemails = false\ncard_numbers = false\nphone_numbers = false\n")
    runner = CliRunner()

    def run(*args: str) -> dict[str, Any]:
        result = runner.invoke(main, [*args, "--config", str(cfg), "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    return run


def _export(run: Any, tmp_path: Path, fmt: str) -> tuple[list[Any], dict[str, Any]]:
    out = tmp_path / f"export.{fmt}"
    body = run("evalset", "export", "s", "--format", fmt, "--out", str(out))
    text = out.read_text(encoding="utf-8")
    rows = yaml.safe_load(text) if fmt == "promptfoo" else [json.loads(line) for line in text.splitlines()]
    assert body["records"] == len(rows)
    return rows, body["skipped"]


def _question(request: dict[str, Any]) -> str:
    return request["messages"][-1]["content"]


@pytest.fixture
def exported(tmp_path: Path) -> Any:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    run = _cli(tmp_path)
    imported = run("evalset", "import", str(path))
    assert (imported["kind"], imported["read"], imported["invalid"]) == ("pairs", len(RECORDS), [])
    assert run("evalset", "build", "s", "--dedup", "0")["items"] == len(TARGETS)  # one item per request
    return lambda fmt: _export(run, tmp_path, fmt)


def test_dpo_one_row_per_preferred_pair_with_the_preferred_answer_chosen(exported):
    rows, skipped = exported("dpo")
    got = [(r["prompt"][-1]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows]
    assert len(got) == len(DPO) and set(got) == DPO
    assert all(r["prompt"] == _request(r["prompt"][-1]["content"])["messages"] for r in rows)
    assert skipped == {"tied human preference": 2, "no human preference": 1}


def test_pairs_come_back_as_they_were_imported(exported):
    rows, skipped = exported("pairs")
    ours = Counter((_question(r["request"]), r["response_a"], r["response_b"], r["labels"]["preference"]) for r in rows)
    theirs = Counter((_question(r["request"]), r["response_a"], r["response_b"], r["labels"]["preference"])
                     for r in RECORDS if r["labels"])
    assert ours == theirs
    by_texts = {(r["response_a"], r["response_b"]): r for r in rows}
    assert by_texts[(G, L)]["labels"]["votes"] == ["a", "b", "b"]
    assert (by_texts[(G, L)]["meta"]["model_a"], by_texts[(G, L)]["meta"]["model_b"]) == ("gpt", "llama")
    assert (by_texts[(L, R)]["meta"]["model_a"], by_texts[(L, R)]["labels"]["preference"]) == ("llama", "tie")
    assert skipped == {"no human votes on a pair": 1}


def test_responses_one_per_answer_production_first(exported):
    rows, skipped = exported("responses")
    answers = {(_question(r["request"]), t) for r in RECORDS for t in (r["response_a"], r["response_b"])}
    assert {(_question(r["request"]), r["response"]) for r in rows} == answers and len(rows) == len(answers)
    first = [r["meta"]["model"] for r in rows if r["id"].endswith(("-gpt", "-llama", "-reference"))]
    assert first == ["gpt", "llama", "reference"] and skipped == {}


@pytest.mark.parametrize("fmt", ["inspect", "openai-evals", "promptfoo", "replay"])
def test_target_formats_carry_the_preferred_answer(exported, fmt):
    rows, skipped = exported(fmt)
    assert len(rows) == len(TARGETS) and skipped == {}
    if fmt == "inspect":
        got = {r["input"][-1]["content"]: (r["target"], r["metadata"]["target_source"]) for r in rows}
    elif fmt == "openai-evals":
        got = {r["input"][-1]["content"]: (r["ideal"], None) for r in rows}
    elif fmt == "promptfoo":
        got = {r["vars"]["question"]: (r["assert"][0]["value"], r["metadata"]["target_source"]) for r in rows}
    else:
        got = {_question(r["request"]): (r["reference"], r["meta"]["target_source"]) for r in rows}
    assert got == {q: (t, None if fmt == "openai-evals" else s) for q, (t, s) in TARGETS.items()}


def test_every_format_the_cli_offers_is_checked_here():
    checked = {"dpo", "pairs", "responses", "inspect", "openai-evals", "promptfoo", "replay"}
    assert set(FORMATS) == checked


def _shared(name: str) -> tuple[list[dict[str, Any]], int]:
    """The file's importable pair records, and how many lines it has that are not."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip("shared data not present")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    ok = [r for r in rows if isinstance(r.get("response_a"), str) and isinstance(r.get("response_b"), str)]
    return ok, len(rows) - len(ok)


@pytest.mark.parametrize("name", ["mtrag_pairs.jsonl", "pandalm_pairs.jsonl"])
def test_real_pairs_file_exports_one_dpo_row_per_preferred_pair(tmp_path, name):
    records, bad = _shared(name)
    run = _cli(tmp_path)
    imported = run("evalset", "import", str(SHARED_DATA / name))
    assert len(imported["invalid"]) == bad and imported["items"] == len(records)
    built = run("evalset", "build", "s", "--dedup", "0")
    assert built["items"] == len({request_key(r["request"]) for r in records})  # one item per request
    rows, skipped = _export(run, tmp_path, "dpo")
    preferred = [r for r in records if r["labels"]["preference"] != "tie"]
    expected = set()  # (request, chosen, rejected): what the file says people preferred
    for r in preferred:
        a, b = r["response_a"].strip(), r["response_b"].strip()
        if a and b and a != b:  # an empty answer or two equal ones teach nothing
            expected.add((request_key(r["request"]), *((a, b) if r["labels"]["preference"] == "a" else (b, a))))
    got = [(request_key({"messages": r["prompt"]}), r["chosen"][0]["content"].strip(),
            r["rejected"][0]["content"].strip()) for r in rows]
    assert set(got) == expected and len(got) == len(expected)
    if name.startswith("mtrag"):  # every preferred pair there has two different answers
        assert len(rows) == len(preferred) == 185
    assert skipped.get("tied human preference", 0) == len(records) - len(preferred)
    pairs, _ = _export(run, tmp_path, "pairs")
    assert len(pairs) == len(records) == len(rows) + sum(skipped.values())  # every pair written or counted


def test_replay_answers_an_imported_item_with_its_production_answer():
    from shadoweval.datasets.evalsets.replay_server import choose_answer

    outputs = {"gpt-4o": "the production answer", "llama": "the other"}
    assert choose_answer(None, outputs, "production", "gpt-4o") == "the production answer"
    assert choose_answer(None, outputs, "target", "gpt-4o") == "the production answer"
    assert choose_answer(None, outputs, "llama", "gpt-4o") == "the other"
