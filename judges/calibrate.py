"""Calibration: run a judge over human-labeled records and measure how well it agrees with people.

A judge's production threshold should come from here, not from a guess. The input is JSONL in the
formats of the shared data (`../shared/data/README.md`):

- a labeled response (`request`, `contexts`, `response`, `labels`, `meta`) becomes a Subject whose
  exchange carries the request and the passages, and whose output is the response (role candidate,
  status ok);
- a labeled pair (`response_a`, `response_b`, `labels.preference` = "a" / "b" / "tie") becomes a
  Subject with production = response_a and the candidate output = response_b. A pairwise judge's
  label is read as "production" or "a" (production / response_a is better), "candidate" or "b"
  (the candidate / response_b is better) or "tie", in any case.

The human label is a dotted path (`grounded` means `labels.grounded`; `labels.grounded` and
`meta.x` are read from the record's root). What kind of comparison follows from the labels:

- binary: labels that are booleans, 0/1 or "yes"/"no"/"true"/"false", or numbers with
  `positive_min` (faithfulness >= 3 is positive). The judge's score (0..1, higher = positive) is
  compared at a threshold (given, else the judge's own `threshold` attribute or argument, else
  0.5), across a sweep of thresholds, and by ROC AUC; the best thresholds by macro-F1 and by
  balanced accuracy are searched over every distinct score. When every score lies within 0..1 the
  scores are also read as probabilities: a reliability table, the expected calibration error and
  the Brier score (`metrics.calibration`), overall and per slice. A verdict with no score but a
  yes/no label counts as 1.0 / 0.0;
- categorical: other string labels: the judge's label is compared with the human's as it is;
- pairwise (every pair file): the judge's label, mapped as above, is compared with the preference.

Verdicts with `error` set, and verdicts that give nothing to compare (no score, an unknown label),
are left out and counted as `errors`; records without the label are not judged (`unlabeled`).
`by` (a dotted path from the record's root) breaks every figure down by its value; a record whose
value is a list counts in the slice of each element, so slices may overlap.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shadoweval.core.errors import ShadowevalError
from shadoweval.core.types import Exchange, Output, Verdict, new_id

from .base import Judge, Subject, judge_safely, key_of
from .metrics import (
    BinaryMetrics,
    Calibration,
    MulticlassMetrics,
    best_threshold,
    binary_metrics,
    calibration,
    multiclass_metrics,
    sweep,
)
from .scale import CrossFitted, cross_fitted

Kind = Literal["binary", "categorical", "pairwise"]

# A pairwise judge's verdict label -> the pair format's preference.
PAIR_VERDICT_LABELS = {"production": "a", "a": "a", "candidate": "b", "b": "b", "tie": "tie"}
PAIR_LABELS = ("a", "b", "tie")
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}
_MISSING: Any = object()
DEFAULT_THRESHOLD = 0.5


class CalibrationError(ShadowevalError, ValueError):
    """The input cannot be calibrated on (unreadable file, label absent everywhere, odd labels)."""


def load_records(path: str | Path, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Records from a JSONL file (or a JSON array), the first `limit` of them."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"no labels file at {path}")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except ValueError as exc:
            raise CalibrationError(f"{path}: not JSON ({exc})") from None
    else:
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if limit is not None and len(records) >= limit:
                break
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise CalibrationError(f"{path}:{lineno}: not JSON ({exc})") from None
    if not all(isinstance(r, dict) for r in records):
        raise CalibrationError(f"{path}: every record must be a JSON object")
    return records[:limit] if limit is not None else records


def label_path(key: str) -> str:
    """`grounded` -> `labels.grounded`; paths starting at the record's root are kept."""
    return key if key.split(".", 1)[0] in ("labels", "meta") else f"labels.{key}"


def lookup(record: dict[str, Any], path: str) -> Any:
    """The value at a dotted path, or `_MISSING`."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def parse_judge_args(pairs: Iterable[str]) -> dict[str, Any]:
    """`key=value` strings -> keyword arguments; a value is JSON when it parses, else a string."""
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise CalibrationError(f"judge argument {pair!r} is not key=value")
        try:
            args[key.strip()] = json.loads(raw)
        except ValueError:
            args[key.strip()] = raw
    return args


def is_pair(record: dict[str, Any]) -> bool:
    return "response_a" in record and "response_b" in record


def subject_of(record: dict[str, Any], *, now: float | None = None) -> Subject:
    """The Subject a judge sees for one labeled response or pair."""
    now = time.time() if now is None else now
    request = record.get("request")
    route = "/v1/responses" if isinstance(request, dict) and "input" in request and "messages" not in request \
        else "/v1/chat/completions"
    ex = Exchange(id=str(record.get("id") or new_id()), created_at=now, route=route,
                  request=request if isinstance(request, dict) else None, contexts=record.get("contexts"))
    meta = m if isinstance(m := record.get("meta"), dict) else {}

    def output(text: Any, role: Literal["production", "candidate"], model: Any) -> Output:
        return Output(id=new_id(), exchange_id=ex.id, role=role, name=role, model=model if isinstance(model, str)
                      else None, status="ok", started_at=now, text=text if isinstance(text, str) else None)

    if is_pair(record):
        return Subject(ex, output(record["response_b"], "candidate", meta.get("model_b")),
                       output(record["response_a"], "production", meta.get("model_a")))
    if "response" not in record:
        raise CalibrationError(f"record {ex.id} has neither `response` nor `response_a`/`response_b`")
    return Subject(ex, output(record["response"], "candidate", meta.get("model")))


def _as_bool(value: Any, positive_min: float | None) -> bool | None:
    if positive_min is not None:
        if isinstance(value, bool):
            return value
        try:
            return float(value) >= positive_min
        except (TypeError, ValueError):
            return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return None


def _slices(record: dict[str, Any], by: str | None) -> tuple[str, ...]:
    """The `by` values a record belongs to: one per element when the value is a list."""
    if by is None:
        return ()
    value = lookup(record, by)
    values = value if isinstance(value, list) else [value]
    return tuple(_slice_name(v) for v in values) or ("(none)",)


def _slice_name(v: Any) -> str:
    if v is _MISSING or v is None:
        return "(none)"
    if isinstance(v, str):
        return v
    return json.dumps(v, sort_keys=True)


@dataclass(frozen=True, slots=True)
class Item:
    """A labeled record made ready for judging."""

    subject: Subject
    truth: bool | str
    slices: tuple[str, ...]


def prepare(records: Sequence[dict[str, Any]], *, label: str, by: str | None = None,
            positive_min: float | None = None) -> tuple[Kind, list[Item], int]:
    """Check the labels before any judging is paid for: (kind, items, records without the label)."""
    path = label_path(label)
    if not records:
        raise CalibrationError("no records")
    labeled = [(r, lookup(r, path)) for r in records]
    labeled = [(r, v) for r, v in labeled if v is not _MISSING and v is not None]
    unlabeled = len(records) - len(labeled)
    if not labeled:
        keys = sorted({k for r in records if isinstance(r.get("labels"), dict) for k in r["labels"]})
        raise CalibrationError(f"no record has {path}; labels in these records: {', '.join(keys) or 'none'}")
    if by is not None and all(lookup(r, by) is _MISSING for r in records):
        raise CalibrationError(f"no record has {by} to break results down by")
    pairs = is_pair(labeled[0][0])
    values = [v for _, v in labeled]
    if pairs:
        kind: Kind = "pairwise"
        bad = sorted({repr(v) for v in values if not isinstance(v, str) or v.strip().lower() not in PAIR_LABELS})
        if bad:
            raise CalibrationError(f"{path} must be one of {', '.join(PAIR_LABELS)} in a pair file, "
                                   f"not {', '.join(bad[:5])}")
        truths: list[bool | str] = [v.strip().lower() for v in values]
    else:
        as_bools = [_as_bool(v, positive_min) for v in values]
        if all(b is not None for b in as_bools):
            kind, truths = "binary", [bool(b) for b in as_bools]
        elif positive_min is None and all(isinstance(v, str) for v in values) and all(b is None for b in as_bools):
            kind, truths = "categorical", [str(v) for v in values]
        else:
            odd = sorted({repr(v) for v, b in zip(values, as_bools, strict=True) if b is None})
            hint = " (numbers: pass --positive-min, e.g. 3 for faithfulness >= 3)" if positive_min is None and any(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values) else ""
            raise CalibrationError(f"{path} is not a yes/no label: {', '.join(odd[:5])}{hint}")
    now = time.time()
    items = []
    for (record, _), truth in zip(labeled, truths, strict=True):
        if is_pair(record) != pairs:
            raise CalibrationError(f"record {record.get('id')!r}: a file must hold only responses or only pairs")
        items.append(Item(subject_of(record, now=now), truth, _slices(record, by)))
    return kind, items, unlabeled


def judged_value(v: Verdict, kind: Kind) -> float | str | None:
    """What a verdict says, in the terms of the human label; None when it says nothing comparable."""
    if v.error is not None:
        return None
    if kind == "binary":
        if v.score is not None:
            return float(v.score)
        b = _as_bool(v.label, None) if v.label is not None else None
        return None if b is None else float(b)
    if v.label is None:
        return None
    return PAIR_VERDICT_LABELS.get(v.label.strip().lower()) if kind == "pairwise" else v.label


Metrics = BinaryMetrics | MulticlassMetrics


@dataclass(frozen=True, slots=True)
class CalibrationReport:
    """How a judge agrees with human labels: overall, per slice, and (binary) across thresholds."""

    judge: str  # the judge's key: name@version{args}
    label: str  # the dotted path of the human label
    kind: Kind
    records: int  # records read
    unlabeled: int  # records without the label: not judged
    errors: int  # judged, but nothing to compare: left out of every figure
    error_examples: list[str]
    overall: Metrics
    by_field: str | None
    by: dict[str, Metrics]
    threshold: float | None  # binary only
    threshold_source: str | None  # "flag", "judge" (its `threshold` attribute) or "default"
    positive_min: float | None
    sweep: list[BinaryMetrics]
    best_threshold: dict[str, BinaryMetrics]  # by macro_f1 and balanced_accuracy; empty when nothing scored
    # binary, scores all within 0..1: the scores read as probabilities, overall and per slice
    calibration: Calibration | None = None
    by_calibration: dict[str, Calibration | None] = field(default_factory=dict)
    # the scores rescaled to these labels (Platt scaling) and its worth out of sample: `judges.scale`
    rescaling: CrossFitted | None = None

    def as_dict(self) -> dict[str, Any]:
        binary = self.kind == "binary"
        return {
            **self.overall.as_dict(), "judge": self.judge, "label": self.label, "kind": self.kind,
            "records": self.records, "unlabeled": self.unlabeled, "errors": self.errors,
            "error_examples": self.error_examples, "positive_min": self.positive_min,
            "threshold": self.threshold, "threshold_source": self.threshold_source,
            "best_threshold": {k: r.as_dict() for k, r in self.best_threshold.items()} if binary else None,
            "sweep": [r.as_dict() for r in self.sweep] if binary else None,
            "by_field": self.by_field, "by": {k: m.as_dict() for k, m in self.by.items()},
            "calibration": self.calibration.as_dict() if self.calibration else None,
            "by_calibration": {k: c.as_dict() if c else None for k, c in self.by_calibration.items()},
            "rescaling": self.rescaling.as_dict() if self.rescaling else None,
        }


def _threshold(judge: Judge, threshold: float | None) -> tuple[float, str]:
    """The flag's threshold, else the judge's own (its `threshold` attribute or argument), else 0.5."""
    if threshold is not None:
        return float(threshold), "flag"
    for own in (getattr(judge, "threshold", None), (getattr(judge, "args", None) or {}).get("threshold")):
        if isinstance(own, int | float) and not isinstance(own, bool):
            return float(own), "judge"
    return DEFAULT_THRESHOLD, "default"


async def calibrate(records: Sequence[dict[str, Any]], judge: Judge, *, label: str, by: str | None = None,
                    threshold: float | None = None, positive_min: float | None = None, concurrency: int = 8,
                    sweep_rows: int = 101, progress: Callable[[int], None] | None = None) -> CalibrationReport:
    """Judge every labeled record (at most `concurrency` at a time) and compare with the labels."""
    kind, items, unlabeled = prepare(records, label=label, by=by, positive_min=positive_min)
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(item: Item) -> Verdict:
        async with sem:
            v = await judge_safely(judge, item.subject)
        if progress:
            progress(1)
        return v

    verdicts = await asyncio.gather(*(one(i) for i in items))
    kept: list[tuple[Item, Any]] = []
    examples: list[str] = []
    for item, v in zip(items, verdicts, strict=True):
        value = judged_value(v, kind)
        if value is None:
            if len(examples) < 3:
                examples.append(v.error or (
                    f"label {v.label!r} is none of {', '.join(PAIR_VERDICT_LABELS)}" if kind == "pairwise"
                    else f"nothing to compare: score {v.score!r}, label {v.label!r}"))
        else:
            kept.append((item, value))

    cut, source = _threshold(judge, threshold)

    def measure(group: list[tuple[Item, Any]]) -> Metrics:
        if kind == "binary":
            return binary_metrics([s for _, s in group], [bool(i.truth) for i, _ in group], cut)
        return multiclass_metrics([i.truth for i, _ in group], [p for _, p in group])

    sliced: dict[str, list[tuple[Item, Any]]] = {name: [] for item in items for name in item.slices}
    for item, value in kept:
        for name in item.slices:
            sliced[name].append((item, value))
    scores, truths = [s for _, s in kept], [bool(i.truth) for i, _ in kept]
    rows: list[BinaryMetrics] = []
    best: dict[str, BinaryMetrics] = {}
    if kind == "binary" and kept:
        rows = sweep(scores, truths, max_rows=sweep_rows)
        best = {by_: best_threshold(scores, truths, by_) for by_ in ("macro_f1", "balanced_accuracy")}

    def reliability(group: list[tuple[Item, Any]]) -> Calibration | None:
        return calibration([s for _, s in group], [bool(i.truth) for i, _ in group]) if kind == "binary" else None
    overall = reliability(kept)
    return CalibrationReport(
        judge=key_of(judge), label=label_path(label), kind=kind, records=len(records), unlabeled=unlabeled,
        errors=len(items) - len(kept), error_examples=examples, overall=measure(kept), by_field=by,
        by={k: measure(g) for k, g in sorted(sliced.items())}, threshold=cut if kind == "binary" else None,
        threshold_source=source if kind == "binary" else None,
        positive_min=positive_min if kind == "binary" else None, sweep=rows, best_threshold=best,
        calibration=overall,
        by_calibration={k: reliability(g) for k, g in sorted(sliced.items())} if kind == "binary" else {},
        rescaling=cross_fitted(scores, truths) if overall is not None else None,
    )
