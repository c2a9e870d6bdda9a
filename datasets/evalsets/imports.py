"""Bringing labeled data a team already has into the store, so it works like captured traffic:
labeled responses, labeled pairs or replay requests (formats: the shared data README) become
exchanges, outputs, grading items and grades, so judges run on them, the agreement report compares
the judges with the people who labeled them, and eval sets are built from them.

Decisions, made once here:
- One request (`request_key`) is one exchange, tagged `import` (the source) and `import_key`
  (`source:request_key`). A request whose key is in the store is skipped whole, so a second import
  adds nothing; `limit` takes whole requests (those of the first `limit` records) so none is left
  half in. Short meta strings equal on all of a request's records become tags, to slice by.
- Responses: one output per record; production is the record from `production`, else the first that
  is not a human reference (candidates are judged against production, never against a reference).
  A labeled record gets a single-answer item with one grade: the file's consensus labels, which the
  judges are calibrated against. Annotators' votes go in its note, not into grades of their own,
  which would count each answer several times in the report.
- Pairs: each annotator's vote is a grade (`import:source:N`, N its place in the vote list, not a
  known person), so inter-rater agreement can be measured. Production is the side from `production`
  if either is, else response_a; response_a is shown left, as in the source. The pairwise judge keeps
  one verdict per candidate output, against its exchange's production output, so a request's pairs
  become one exchange per production answer (all with the request's `import_key`); an eval set
  joins them back into one item (items.merged), whose answers keep their model names.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from shadoweval.core.store import Record, Store
from shadoweval.core.types import AnswerLabels, Exchange, Grade, GradingItem, Output, Role, new_id

from .conversation import api_route
from .keys import request_key

Kind = Literal["responses", "pairs", "requests"]
POLICY = "imported"
_NAME_KEYS = frozenset({"model", "generator", "model_a", "model_b", "models"})  # names, not tags
_SLICE_KEYS = ("collection", "src_dataset", "app")  # the first one present names an item's slice
_REFERENCE_NAMES = frozenset({"reference", "human", "human-reference", "human_reference"})
_VOTE_SIDE: dict[str, Literal["left", "right", "tie"]] = {"a": "left", "b": "right", "tie": "tie"}  # a shown left
_FLUSH_EVERY = 5000  # records: back-pressure well inside the store's queue
_Line = tuple[int, dict[str, Any]]  # line number (from 1), record


@dataclass(frozen=True, slots=True)
class InvalidLine:
    line: int  # from 1
    reason: str


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What one import did: `read` counts the valid records of the requests taken, `skipped` those already in."""

    kind: Kind | None  # None: the file holds no valid record
    source: str
    read: int
    exchanges: int
    outputs: int
    items: int
    grades: int
    skipped: int
    invalid: tuple[InvalidLine, ...]


def import_records(store: Store, path: Path, *, source: str | None = None, production: str | None = None,
                   limit: int | None = None) -> ImportResult:
    """Import a JSONL file of labeled records into a started store. Raises ValueError on a file that
    mixes kinds (before writing anything) and RuntimeError when the store does not take the records."""
    source = source or path.stem
    kind, lines, invalid = _read(path)
    groups: dict[str, list[_Line]] = {}
    for line in lines:
        groups.setdefault(request_key(line[1]["request"]), []).append(line)
    if limit is not None:
        groups = {k: groups[k] for k in dict.fromkeys(request_key(r["request"]) for _, r in lines[:limit])}
    done = store.tag_values("import_key")
    now = time.time()
    # one millisecond apart (the store's resolution) and ending now: exchanges keep the file's order
    clock = iter(now - 0.001 * (len(lines) - i) for i in range(len(lines) + 1))
    records: list[Record] = []
    read = skipped = 0
    for key, group in groups.items():
        read += len(group)
        import_key = f"{source}:{key}"
        if import_key in done:
            skipped += len(group)
            continue
        tags = {**_meta_tags(group), "import": source, "import_key": import_key}
        if kind == "pairs":
            records += _pairs(group, tags, clock, source, production, now, invalid)
            continue
        exchange = _exchange(group[0][1], tags, next(clock))
        built = _responses(group, exchange, source, production, now) if kind == "responses" else _references(
            group, exchange)
        records += [exchange, *built]
    _write(store, records)
    n = {cls: sum(1 for r in records if isinstance(r, cls)) for cls in (Exchange, Output, GradingItem, Grade)}
    return ImportResult(kind=kind, source=source, read=read, exchanges=n[Exchange], outputs=n[Output],
                        items=n[GradingItem], grades=n[Grade], skipped=skipped,
                        invalid=tuple(sorted(invalid, key=lambda x: x.line)))


def _read(path: Path) -> tuple[Kind | None, list[_Line], list[InvalidLine]]:
    lines: list[_Line] = []
    invalid: list[InvalidLine] = []
    first: dict[Kind, int] = {}
    with path.open(encoding="utf-8") as f:
        for number, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                invalid.append(InvalidLine(number, f"not JSON: {exc.msg}"))
                continue
            kind = _kind(record)
            problem = _problem(record, kind) if kind else "neither request, response nor response_a/_b"
            if problem or kind is None:
                invalid.append(InvalidLine(number, problem or ""))
                continue
            first.setdefault(kind, number)
            lines.append((number, record))
    if len(first) > 1:
        found = ", ".join(f"{k} (first on line {n})" for k, n in first.items())
        raise ValueError(f"{path} mixes record kinds: {found}; import one kind per file")
    return next(iter(first), None), lines, invalid


def _kind(record: Any) -> Kind | None:
    """From the fields alone: the answer fields decide, since every kind has a request."""
    fields = set(record) if isinstance(record, dict) else set()
    return ("responses" if "response" in fields else "pairs" if fields & {"response_a", "response_b"}
            else "requests" if "request" in fields else None)


def _problem(record: dict[str, Any], kind: Kind) -> str | None:
    """Why a record cannot be imported, or None."""
    labels = given if isinstance(given := record.get("labels"), dict) else {}
    contexts, votes = record.get("contexts"), labels.get("votes") if kind == "pairs" else None
    texts = {"responses": ("response",), "pairs": ("response_a", "response_b"), "requests": ()}[kind]
    checks = [
        (isinstance(record.get("request"), dict), "request is not an object"),
        (contexts is None or isinstance(contexts, list) and all(
            isinstance(c, dict) and isinstance(c.get("text"), str) for c in contexts),
         "contexts is not a list of {id, title, text}"),
        (isinstance(record.get("meta"), dict | None), "meta is not an object"),
        (isinstance(record.get("labels"), dict | None), "labels is not an object"),
        *((isinstance(record.get(f), str), f"{f} is {type(record.get(f)).__name__}, not a string") for f in texts),
        (kind != "requests" or isinstance(record.get("reference"), str | None), "reference is not a string"),
        (labels.get("grounded") in (None, True, False, "yes", "partly", "no"),
         f"labels.grounded is {labels.get('grounded')!r}, not a boolean"),
        (labels.get("citation_supported") in (None, True, False),
         f"labels.citation_supported is {labels.get('citation_supported')!r}, not a boolean"),
        (kind != "pairs" or labels.get("preference") in (None, "a", "b", "tie"),
         f"labels.preference is {labels.get('preference')!r}, not a, b or tie"),
        (votes is None or isinstance(votes, list) and all(v in ("a", "b", "tie") for v in votes),
         "labels.votes is not a list of a, b or tie"),
    ]
    return next((reason for ok, reason in checks if not ok), None)


def _exchange(record: dict[str, Any], tags: dict[str, str], created_at: float) -> Exchange:
    request = record["request"]
    contexts = [{"id": c.get("id"), "title": c.get("title"), "text": c["text"]} for c in record.get("contexts") or ()]
    return Exchange(id=new_id(), created_at=created_at, route=api_route(request), request=request, tags=tags,
                    contexts=contexts or None)


def _output(exchange: Exchange, role: Role, name: str, text: str) -> Output:
    return Output(id=new_id(), exchange_id=exchange.id, role=role, name=name, model=name, status="ok",
                  started_at=exchange.created_at, text=text)


def _item(exchange_id: str, production_id: str, candidate_id: str | None, left: Literal["production", "candidate"],
          evaluators: int, meta: dict[str, Any], source: str, now: float) -> GradingItem:
    return GradingItem(id=new_id(), exchange_id=exchange_id, candidate_output_id=candidate_id,
                       production_output_id=production_id, left=left, policy=POLICY, probability=1.0,
                       inclusion_probability=1.0, evaluators=evaluators, slice=_slice(meta), created_at=now,
                       batch=f"import:{source}")


def _responses(group: list[_Line], exchange: Exchange, source: str, production: str | None,
               now: float) -> Iterable[Record]:
    names = [_text_or(_meta(r).get("model"), _meta(r).get("generator"), "response") for _, r in group]
    chosen = [i for i, n in enumerate(names) if (n == production if production else n.lower() not in _REFERENCE_NAMES)]
    taken: set[str] = set()
    for i, ((_, r), name) in enumerate(zip(group, names, strict=True)):
        reference = name.lower() in _REFERENCE_NAMES
        role: Role = "production" if chosen and i == chosen[0] else "reference" if reference else "candidate"
        yield (output := _output(exchange, role, _unique(name, taken), r["response"]))
        labels = r.get("labels") or {}
        # checked by _problem: a boolean, "yes", "partly" or "no"
        grounded: Any = labels.get("grounded")
        cited = labels.get("citation_supported")
        grounded = {True: "yes", False: "no"}.get(grounded, grounded)  # "yes", "partly", "no" pass as they are
        if grounded is None and cited is None:
            continue
        yield (item := _item(exchange.id, output.id, None, "production", 1, _meta(r), source, now))
        # the labels with no field here (votes, appropriateness...) stay readable with the grade
        yield Grade(id=new_id(), item_id=item.id, evaluator=f"import:{source}", created_at=now,
                    left_labels=AnswerLabels(grounded=grounded, citations_correct=cited),
                    note=json.dumps(labels, sort_keys=True))


def _references(group: list[_Line], exchange: Exchange) -> Iterable[Output]:
    taken: set[str] = set()
    return [_output(exchange, "reference", _unique("reference", taken), r["reference"])
            for _, r in group if r.get("reference")]


def _pairs(group: list[_Line], tags: dict[str, str], clock: Iterator[float], source: str, production: str | None,
           now: float, invalid: list[InvalidLine]) -> list[Record]:
    records: list[Record] = []
    # per production answer: its exchange, the outputs by (name, text), the names taken, candidate -> line
    subs: dict[tuple[str, str], tuple[Exchange, dict[tuple[str, str], Output], set[str], dict[str, int]]] = {}
    for number, r in group:
        a, b = _pair_names(meta := _meta(r))
        b_is_production = production is not None and b == production and a != production
        sides = [(a, r["response_a"]), (b, r["response_b"])]
        prod, cand = sides[::-1] if b_is_production else sides
        if prod == cand:
            invalid.append(InvalidLine(number, "response_a and response_b are the same answer"))
            continue
        if prod not in subs:
            exchange = _exchange(r, tags, next(clock))
            first = _output(exchange, "production", prod[0], prod[1])
            subs[prod] = (exchange, {prod: first}, {prod[0]}, {})
            records += [exchange, first]
        exchange, outputs, taken, paired = subs[prod]
        if cand not in outputs:
            role: Role = "reference" if cand[0].lower() in _REFERENCE_NAMES else "candidate"
            outputs[cand] = _output(exchange, role, _unique(cand[0], taken), cand[1])
            records.append(outputs[cand])
        candidate = outputs[cand]
        if candidate.id in paired:  # the store keeps one item per pair of outputs
            invalid.append(InvalidLine(number, f"the same two answers as line {paired[candidate.id]}"))
            continue
        paired[candidate.id] = number
        labels = r.get("labels") or {}
        votes = [(f"import:{source}:{i}", v) for i, v in enumerate(labels.get("votes") or (), 1)] or [
            (f"import:{source}", v) for v in (labels.get("preference"),) if v is not None]
        if not votes:
            continue
        item = _item(exchange.id, outputs[prod].id, candidate.id, "candidate" if b_is_production else "production",
                     len(votes), meta, source, now)
        records += [item, *(Grade(id=new_id(), item_id=item.id, evaluator=evaluator, created_at=now,
                            preference=_VOTE_SIDE[vote], winner=item.winner(_VOTE_SIDE[vote]))
                            for evaluator, vote in votes)]
    return records


def _meta(record: dict[str, Any]) -> dict[str, Any]:
    return record.get("meta") or {}


def _text_or(*values: Any) -> str:
    return next(v for v in values if isinstance(v, str) and v)  # the last value is a fallback name


def _pair_names(meta: dict[str, Any]) -> tuple[str, str]:
    split = meta["models"].split("_") if isinstance(meta.get("models"), str) else []  # PandaLM: "bloom-7b_llama-7b"
    split = split if len(split) == 2 and all(split) else ["a", "b"]
    return _text_or(meta.get("model_a"), split[0]), _text_or(meta.get("model_b"), split[1])


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or `name#2`, `name#3`...: output names are unique within an exchange."""
    unique = next(n for n in (name, *(f"{name}#{i}" for i in range(2, len(taken) + 3))) if n not in taken)
    taken.add(unique)
    return unique


def _tag_value(value: Any) -> str | None:
    """A short string for a tag, or None (long text, objects): tags are for slicing, not storage."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = ",".join(value)  # MTRAG's answerability: ["ANSWERABLE"]
    ok = isinstance(value, str | int | float) and not isinstance(value, bool) and 0 < len(str(value)) <= 80
    return str(value) if ok else None


def _meta_tags(group: list[_Line]) -> dict[str, str]:
    values = [{k: _tag_value(v) for k, v in _meta(r).items() if k not in _NAME_KEYS} for _, r in group]
    return {k: v for k, v in values[0].items() if v is not None and all(m.get(k) == v for m in values[1:])}


def _slice(meta: dict[str, Any]) -> str:
    return next((f"{k}={v}" for k in _SLICE_KEYS if (v := _tag_value(meta.get(k))) is not None), "all")


def _write(store: Store, records: list[Record]) -> None:
    lost = store.status().lost
    for n, record in enumerate(records, 1):
        if not store.submit(record):
            raise RuntimeError("the store's queue is full; the import stopped part way")
        if (n % _FLUSH_EVERY == 0 or n == len(records)) and not store.flush(60.0):
            raise RuntimeError("the store did not confirm the import was written")
    if (status := store.status()).lost > lost:  # flush returns once the writer is done, also when it could not write
        raise RuntimeError(f"the store lost {status.lost - lost} records: {status.last_error}")
