"""Eval sets out to the tools people already use: Inspect AI, OpenAI Evals, promptfoo, TRL (DPO), and
the team's own labeled-record formats (../shared/data/README.md).

An eval set is only worth building if it can leave this project: a team keeps its regression suite
in Inspect or promptfoo, fine-tunes on what graders preferred, or calibrates judges on the same
records as the shared data. Each format is one generator of plain dicts over the items in set
order, so output is deterministic and a format can be tested without touching the disk. Items a
format cannot represent are left out and counted by reason in `skipped`, never written half-made;
so are the pairs of an item that a pair format cannot write (a tie has no chosen answer).

Answers are named as the item names them: captured production answers "production", imported ones
by their model, which `meta["production"]` says is production's (items.py).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from shadoweval.core.types import EvalItem, EvalSet

from .conversation import Turn, conversation

FORMATS: dict[str, str] = {
    "inspect": "Inspect AI samples (JSONL; name the file *.jsonl for json_dataset): input, target, metadata",
    "openai-evals": "OpenAI Evals basic samples (JSONL): input messages and ideal; items without a target left out",
    "promptfoo": "promptfoo test cases (YAML list): vars messages/question/context, `similar` to the target",
    "dpo": "TRL conversational preference pairs (JSONL): prompt, chosen, rejected, from human preferences",
    "responses": "labeled responses, shared data format (JSONL): one per answer, with its human labels",
    "pairs": "labeled pairs, shared data format (JSONL): production (a) vs candidate (b), human preference",
    "replay": "replay requests, shared data format (JSONL): request, contexts, reference answer",
}
SOURCE = "shadoweval"  # meta.source of the shared-format records, as the shared files name theirs
SIMILAR_THRESHOLD = 0.8
TIE = "tied human preference"


class _LeftOut(NamedTuple):
    """Yielded by a builder for a part of an item it leaves out (a tied pair), counted by reason."""

    reason: str


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _production(item: EvalItem) -> str:
    """The name of production's answer: "production" in captured traffic and in sets built before
    imported answers kept their model names."""
    name = item.meta.get("production")
    return name if isinstance(name, str) else "production"


def _voted_pairs(item: EvalItem) -> list[tuple[str, str, dict[str, int]]]:
    """Every pair of the item's answers people voted on, as (a, b, votes for a / b / tie): a is
    production's answer, or for the `other_pairs` of an imported request the answer that was
    production in its pair. Per-candidate votes (`pairs`) when the item has them; else
    `winner_votes` about the candidate named in `candidate`, or the only candidate there is."""
    human = _dict(item.labels.get("human"))
    production = _production(item)
    by_candidate = {c: _dict(v) for c, v in _dict(human.get("pairs")).items()}
    if not by_candidate and _dict(human.get("winner_votes")):
        candidates = [n for n in item.outputs if n != production]
        named = human.get("candidate") if isinstance(human.get("candidate"), str) else None
        named = named if named in item.outputs else None
        if named or len(candidates) == 1:
            by_candidate = {named or candidates[0]: human["winner_votes"]}
    found: list[tuple[Any, Any, dict[str, Any]]] = [(production, cand, {"a": votes.get("production"), "b": votes.get("candidate"), "tie": votes.get("tie")})
             for cand, votes in sorted(by_candidate.items())]
    found += [(other.get("a"), other.get("b"), _dict(other.get("votes")))
              for other in human.get("other_pairs") or () if isinstance(other, dict)]
    out = []
    for a, b, votes in found:
        counts = {k: int(votes.get(k) or 0) for k in ("a", "b", "tie")}
        total = sum(counts.values())
        if isinstance(a, str) and isinstance(b, str) and a != b and {a, b} <= item.outputs.keys() and total:
            out.append((a, b, counts))
    return out


def _meta(evalset: EvalSet, item: EvalItem, **extra: Any) -> dict[str, Any]:
    base = {"eval_set": evalset.ref, "exchange_id": item.exchange_id or item.meta.get("exchange_id"),
            "route": item.meta.get("route"), **extra}
    return {k: v for k, v in base.items() if v is not None}


def _inspect(evalset: EvalSet, item: EvalItem, turns: list[Turn]) -> Iterator[dict[str, Any]]:
    functions = {c.id: c.name for t in turns for c in t.calls}
    single = len(turns) == 1 and turns[0].role == "user"
    metadata = {"route": item.meta.get("route"), "tags": item.meta.get("tags") or {},
                "target_source": item.target_source, "exchange_id": item.exchange_id or item.meta.get("exchange_id"),
                "eval_set": evalset.ref, "contexts": item.contexts or []}
    if item.request.get("tools"):  # a solver that replays the request needs them; Inspect's input cannot hold them
        metadata["tools"] = item.request["tools"]
    yield {"id": item.key, "input": turns[0].text if single else [t.inspect(functions) for t in turns],
           "target": item.target or "", "metadata": metadata}


def _openai_evals(evalset: EvalSet, item: EvalItem, turns: list[Turn]) -> Iterator[dict[str, Any]]:
    yield {"input": [t.openai() for t in turns], "ideal": item.target}


def _promptfoo(evalset: EvalSet, item: EvalItem, turns: list[Turn]) -> Iterator[dict[str, Any]]:
    question = next(t.text for t in reversed(turns) if t.role == "user" and t.text.strip())
    short = " ".join(question.split())
    case: dict[str, Any] = {
        "description": f"{item.key}: {short[:60]}{'…' if len(short) > 60 else ''}",
        # A JSON string, not a list: promptfoo expands a var holding a list of strings into one test
        # per element; a prompt of `{{ messages }}` renders it back as the OpenAI messages. (A var that
        # starts with "file://" is read by promptfoo as a path: production text rarely does.)
        "vars": {"messages": json.dumps([t.openai() for t in turns], ensure_ascii=False), "question": question,
                 "context": "\n\n".join(f"[{n}] " + "\n".join(s for s in (c.get("title"), c.get("text")) if s)
                                        for n, c in enumerate(item.contexts or [], 1))},
    }
    if item.target:
        case["assert"] = [{"type": "similar", "value": item.target, "threshold": SIMILAR_THRESHOLD}]
    case["metadata"] = _meta(evalset, item, key=item.key, target_source=item.target_source,
                             tags=item.meta.get("tags") or None)
    yield case


def _dpo(evalset: EvalSet, item: EvalItem, turns: list[Turn]) -> Iterator[dict[str, Any] | _LeftOut]:
    """One row per pair people voted on without a tie (chosen: the answer they preferred), and one
    for a grader's correction against the answer it replaces."""
    last_user = max(i for i, t in enumerate(turns) if t.role == "user" and t.text.strip())
    prompt = [t.openai() for t in turns[: last_user + 1]]  # the answers being compared replace what followed
    human = _dict(item.labels.get("human"))
    preferred, rejected = (n if isinstance(n, str) else None for n in (human.get("preferred"), human.get("rejected")))
    pairs = []
    voted = _voted_pairs(item)
    for a, b, votes in voted:
        preference = _preference(votes)
        if preference == "tie":
            yield _LeftOut(TIE)
        else:
            pairs.append((item.outputs[a], item.outputs[b]) if preference == "a" else (item.outputs[b], item.outputs[a]))
    if not voted and preferred in item.outputs and rejected in item.outputs and preferred != rejected:
        pairs.append((item.outputs[preferred], item.outputs[rejected]))  # a preference without its votes
    loser = rejected if rejected in item.outputs else _production(item)
    if item.target_source == "human-corrected" and item.target and loser in item.outputs:
        pairs.append((item.target, item.outputs[loser]))
    seen: set[tuple[str, str]] = set()
    for chosen, worse in pairs:
        key = (chosen.strip(), worse.strip())
        if not key[0] or not key[1]:
            yield _LeftOut("an empty answer")
        elif key[0] == key[1]:  # equal texts teach nothing
            yield _LeftOut("chosen equals rejected")
        elif key in seen:  # the same answers under other names, or a correction equal to the preferred answer
            yield _LeftOut("the same chosen and rejected as another row")
        else:
            seen.add(key)
            yield {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                   "rejected": [{"role": "assistant", "content": worse}]}


def _answer_labels(human: dict[str, Any], name: str) -> dict[str, Any]:
    """One answer's human labels under the shared data's names; a split vote (None) says nothing."""
    out: dict[str, Any] = {}
    grounded = _dict(human.get("grounded")).get(name)
    if grounded in ("yes", "no"):
        out["grounded"] = grounded == "yes"
    if grounded in ("yes", "partly", "no"):
        out["groundedness"] = grounded  # "partly" has no yes/no, but is worth keeping
    for field, label in (("citations_correct", "citation_supported"), ("meets_intent", "meets_intent")):
        value = _dict(human.get(field)).get(name)
        if isinstance(value, bool):
            out[label] = value
    return out


def _responses(evalset: EvalSet, item: EvalItem, turns: list[Turn]) -> Iterator[dict[str, Any]]:
    human = _dict(item.labels.get("human"))
    production = _production(item)
    names = sorted(item.outputs, key=lambda n: (n != production, n))  # production first, then by name
    answers = [(n, item.outputs[n], _answer_labels(human, n)) for n in names]
    if item.target_source == "human-corrected" and item.target and "corrected" not in item.outputs:
        answers.append(("corrected", item.target, {}))
    for name, text, labels in answers:
        yield {"id": f"{item.key}-{name}", "request": item.request, "contexts": item.contexts or [],
               "response": text, "labels": labels,
               "meta": {"source": SOURCE, "model": name, **_meta(evalset, item, target_source=item.target_source)}}


def _preference(counts: dict[str, int]) -> str:
    top = max(counts.values())
    winners = [k for k, n in counts.items() if n == top]
    return winners[0] if len(winners) == 1 else "tie"  # no majority is no preference


def _pairs(evalset: EvalSet, item: EvalItem, turns: list[Turn]) -> Iterator[dict[str, Any]]:
    for a, b, counts in _voted_pairs(item):  # a: production's answer, as response_a in the shared files
        yield {"id": f"{item.key}-{a}-{b}", "request": item.request, "contexts": item.contexts or [],
               "response_a": item.outputs[a], "response_b": item.outputs[b],
               "labels": {"preference": _preference(counts), "votes": [v for v, n in counts.items() for _ in range(n)]},
               "meta": {"source": SOURCE, "model_a": a, "model_b": b, **_meta(evalset, item)}}


def _replay(evalset: EvalSet, item: EvalItem, turns: list[Turn]) -> Iterator[dict[str, Any]]:
    record: dict[str, Any] = {"id": item.key, "request": item.request}
    if item.contexts:  # optional in the shared format, and absent there rather than null
        record["contexts"] = item.contexts
    if item.target:
        record["reference"] = item.target
    record["meta"] = {"source": SOURCE, **_meta(evalset, item, target_source=item.target_source if item.target else None)}
    yield record


Builder = Callable[[EvalSet, EvalItem, list[Turn]], Iterator[dict[str, Any] | _LeftOut]]
# format -> (builder, needs a conversation, needs a target)
_BUILDERS: dict[str, tuple[Builder, bool, bool]] = {
    "inspect": (_inspect, True, False), "openai-evals": (_openai_evals, True, True),
    "promptfoo": (_promptfoo, True, False), "dpo": (_dpo, True, False), "responses": (_responses, False, False),
    "pairs": (_pairs, False, False), "replay": (_replay, False, False),
}
_NOTHING = {"dpo": "no human preference", "responses": "no outputs", "pairs": "no human votes on a pair"}


def records(evalset: EvalSet, fmt: str, *, skipped: Counter[str] | None = None) -> Iterator[dict[str, Any]]:
    """The records of `fmt` for the items of `evalset`, in set order. Items left out are counted in
    `skipped` by reason ("no conversation", "no target", ...)."""
    if fmt not in _BUILDERS:  # raised here, on the call, not on the first next()
        raise ValueError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    return _records(evalset, fmt, Counter() if skipped is None else skipped)


def _records(evalset: EvalSet, fmt: str, skipped: Counter[str]) -> Iterator[dict[str, Any]]:
    build, needs_turns, needs_target = _BUILDERS[fmt]
    for item in evalset.items:
        turns = conversation(item.request) if isinstance(item.request, dict) else []
        if needs_turns and not any(t.role == "user" and t.text.strip() for t in turns):
            skipped["no conversation"] += 1
            continue
        if needs_target and not item.target:
            skipped["no target"] += 1
            continue
        made = 0
        for record in build(evalset, item, turns):
            made += 1
            if isinstance(record, _LeftOut):
                skipped[record.reason] += 1
            else:
                yield record
        if not made:
            skipped[_NOTHING.get(fmt, "nothing to export")] += 1


_YAML_NON_STRING = re.compile(  # plain scalars a YAML 1.2 reader (promptfoo's js-yaml) would not read as text
    r"^(?:~|null|Null|NULL|true|True|TRUE|false|False|FALSE|[-+]?[0-9][0-9_]*|0o[0-7]+|0x[0-9a-fA-F]+"
    r"|[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


class _Dumper(yaml.SafeDumper):
    """PyYAML writes YAML 1.1; quote what 1.2 would read otherwise, and keep long texts readable."""

    def ignore_aliases(self, data: Any) -> bool:  # a test file is read by people: no &anchors for shared objects
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if _YAML_NON_STRING.match(value) else "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)  # PyYAML falls back when needed


_Dumper.add_representer(str, _str)


def _jsonl_line(record: dict[str, Any]) -> str:
    # Valid JSON either way, but readers that split on str.splitlines() would cut a record at these.
    line = json.dumps(record, ensure_ascii=False)
    return line.replace("\x85", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n"


def export(evalset: EvalSet, fmt: str, out: Path, *, skipped: Counter[str] | None = None) -> int:
    """Write `evalset` as `fmt` to `out` (UTF-8, replaced whole only once every record is made) and
    return the number of records written."""
    rows = list(records(evalset, fmt, skipped=skipped))
    if fmt == "promptfoo":
        text = yaml.dump(rows, Dumper=_Dumper, allow_unicode=True, sort_keys=False, width=100) if rows else "[]\n"
    else:
        text = "".join(_jsonl_line(r) for r in rows)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    os.replace(tmp, out)
    return len(rows)
