"""The records everything else passes around: an exchange, the outputs answered to it, feedback.

Frozen dataclasses that import nothing from the project, so that every layer (store, mirror, app,
judges, reports) can share them without import cycles.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["production", "candidate", "twin", "reference"]  # reference: a human-written answer, imported

# Output statuses. "ok" means the model answered; everything else explains why there is no
# (complete) answer. Aggregates later skip anything that is not "ok".
# "partial": answered, but part of the answer could not be read (malformed stream events).
OutputStatus = Literal["ok", "error", "timeout", "cancelled", "dropped", "partial"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PAIRS = [_CROCKFORD[i >> 5] + _CROCKFORD[i & 31] for i in range(1024)]  # 10 bits -> 2 characters


def new_id() -> str:
    """A ULID: 26 characters, the first 10 the creation time in milliseconds (so ids sort by
    millisecond), the last 16 are 80 fresh random bits every time.

    No monotonic increment within a millisecond (the ULID spec's option): exchange ids are handed
    to clients (`x-shadoweval-exchange-id`) and name the exchange in `/shadoweval/...`, so one id
    must not tell anyone its neighbours'. Ids made in the same millisecond sort in random order."""
    value = ((time.time_ns() // 1_000_000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join([_PAIRS[(value >> shift) & 1023] for shift in range(120, -1, -10)])  # 26 chars, 130 bits


def key_id(key: str | bytes) -> str:
    """A key's non-reversible id (16 hex digits of its SHA-256): what the store keeps as an
    exchange's `owner` and what logs may show, never the key itself."""
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Output:
    """One model's answer to one exchange: production's, a candidate's, or the production twin's."""

    id: str
    exchange_id: str
    role: Role
    name: str  # "production", the candidate's configured name, or "production-twin"
    model: str | None  # the model the answer came from, as reported or configured
    status: OutputStatus
    started_at: float  # unix seconds
    text: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    usage: Usage = Usage()
    latency_ms: float | None = None
    ttft_ms: float | None = None  # time to first token (streaming only)
    http_status: int | None = None
    error: str | None = None
    cost_usd: float | None = None
    stream: bool = False
    # the stored text was cut at [store] max_capture_bytes; original_bytes is the answer's full size
    truncated: bool = False
    original_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request as production received it, with where it came from."""

    id: str
    created_at: float  # unix seconds
    route: str  # the API path, e.g. /v1/chat/completions
    request: dict[str, Any] | None  # the parsed JSON body (secrets never included, redacted)
    tags: dict[str, str] = field(default_factory=dict)
    stream: bool = False
    status: str = "ok"  # ok | error | cancelled | partial
    http_status: int | None = None
    # The retrieved passages the model was given, as [{"id", "title", "text"}], found in the request
    # (or a field or header the app sends) by core/context.py; None when none were found.
    contexts: list[dict[str, Any]] | None = None
    # key_id() of the proxy key that sent it; None without proxy keys (or stored before owners were
    # kept). Only that key (and admin keys) may read it or post feedback on it over HTTP.
    owner: str | None = None
    # some request string was cut at [store] max_capture_bytes; request_bytes is the body's full size
    truncated: bool = False
    request_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Feedback:
    """An end user's rating or comment on an exchange (thumbs down, complaint)."""

    id: str
    exchange_id: str
    created_at: float
    rating: float | None = None  # -1 .. 1 (thumbs down/up) or a score the app chooses
    comment: str | None = None
    source: str | None = None  # who gave it: "end_user", an app name...

    @property
    def is_complaint(self) -> bool:
        """A negative rating or any comment: end users rarely write to praise."""
        return (self.rating is not None and self.rating < 0) or bool((self.comment or "").strip())


@dataclass(frozen=True, slots=True)
class ContextsFound:
    """The passages found in a stored exchange's request after the fact (by the judges' process),
    to be saved with it; `[]` records that the request was searched and holds none."""

    exchange_id: str
    contexts: list[dict[str, Any]]


# Judges' labels that mean the output fails, whatever its score: `Verdict.passes` reads them.
FAIL_LABELS = frozenset({"fail", "ungrounded", "unsupported", "misaligned", "off_topic", "missing_citation",
                         "irrelevant_citation", "unknown_source"})


@dataclass(frozen=True, slots=True)
class Verdict:
    """A judge's result on one output. `error` set means "could not judge": aggregates skip it.

    The judge's name, version and arguments are kept with every verdict, so any number can be
    traced to exactly what produced it and re-run."""

    id: str
    output_id: str
    exchange_id: str
    judge: str
    version: str
    args: dict[str, Any]
    created_at: float
    score: float | None = None  # 0..1, higher is better
    label: str | None = None
    explanation: str = ""
    evidence: Any = None  # JSON-able: the unsupported sentences, the measurements...
    cost_usd: float = 0.0
    error: str | None = None

    @property
    def judge_key(self) -> str:
        return judge_key(self.judge, self.version, self.args)

    @property
    def threshold(self) -> float | None:
        """The decision threshold the judge was built with (its `threshold` argument), if any."""
        t = self.args.get("threshold") if isinstance(self.args, dict) else None
        return float(t) if isinstance(t, int | float) and not isinstance(t, bool) else None

    @property
    def passes(self) -> bool | None:
        """The judge's yes: its score at or above its threshold, unless its label names a failure
        (`FAIL_LABELS`: the citations judge's score is the mean support of the cited sentences, and
        one sentence below the threshold, or a source that does not exist, makes it `unsupported`
        whatever the mean). None without a score or a threshold."""
        t = self.threshold
        if self.score is None or t is None:
            return None
        return self.score >= t and (self.label or "").lower() not in FAIL_LABELS


def judge_key(name: str, version: str, args: dict[str, Any]) -> str:
    """One string per judge, version and arguments: a verdict exists once per output and key."""
    return f"{name}@{version}" + (json.dumps(args, sort_keys=True, separators=(",", ":")) if args else "")


@dataclass(frozen=True, slots=True)
class CandidateStats:
    """What `shadoweval stats` shows per model."""

    name: str
    role: str
    outputs: int
    ok: int
    errors: int
    timeouts: int
    cancelled: int
    mean_latency_ms: float | None
    p95_latency_ms: float | None
    cost_usd: float
    partial: int = 0  # answered, but some stream events could not be read


@dataclass(frozen=True, slots=True)
class PairToGrade:
    """A production/candidate pair not queued for grading yet, with what the sampling policies read:
    the exchange's route and tags, both outputs' verdicts and the exchange's feedback."""

    exchange_id: str
    candidate_output_id: str
    candidate_name: str
    production_output_id: str
    route: str
    tags: dict[str, str]
    candidate_verdicts: tuple[Verdict, ...] = ()
    production_verdicts: tuple[Verdict, ...] = ()
    feedback: tuple[Feedback, ...] = ()


@dataclass(frozen=True, slots=True)
class GradingItem:
    """A pair queued for human grading, with the policy that chose it and the chances it had, so
    estimates from the grades can be reweighted (Horvitz-Thompson) back to all pairs."""

    id: str
    exchange_id: str
    candidate_output_id: str | None  # None: one answer graded alone (labels imported for single answers)
    production_output_id: str
    left: Literal["production", "candidate"]  # the side shown on the left, randomized per item
    policy: str  # uniform | stratified | informative
    probability: float  # that policy's inclusion probability for this pair
    inclusion_probability: float  # the chance the pair was queued at all
    evaluators: int  # how many people grade it (2+ measures agreement between graders)
    slice: str  # e.g. "route=billing"
    created_at: float
    batch: str  # one id per `grade queue` run

    def winner(self, preference: str | None) -> Literal["production", "candidate", "tie"] | None:
        """The model a grader's left/right/tie preference picks on this item."""
        if preference is None:
            return None
        if preference == "tie":
            return "tie"
        if preference not in ("left", "right"):
            raise ValueError(f"preference must be left, right or tie, not {preference!r}")
        other: Literal["production", "candidate"] = "candidate" if self.left == "production" else "production"
        return self.left if preference == "left" else other

    def output_ids(self) -> tuple[str | None, str | None]:
        """The (left, right) output ids, as the grader saw them (None: no answer on that side)."""
        if self.left == "production":
            return self.production_output_id, self.candidate_output_id
        return self.candidate_output_id, self.production_output_id

    def labels_by_output(self, grade: Grade) -> dict[str, AnswerLabels]:
        """A grade's per-answer labels keyed by the output they describe."""
        left_id, right_id = self.output_ids()
        pairs = ((left_id, grade.left_labels), (right_id, grade.right_labels))
        return {output_id: labels for output_id, labels in pairs if output_id is not None}


@dataclass(frozen=True, slots=True)
class AnswerLabels:
    """What a grader said about one answer of a pair; the fields mirror the judges'. None = not said
    (for `citations_correct`: the answer cites nothing)."""

    grounded: Literal["yes", "partly", "no"] | None = None
    citations_correct: bool | None = None
    meets_intent: bool | None = None

    def __post_init__(self) -> None:
        if self.grounded not in (None, "yes", "partly", "no"):
            raise ValueError(f"grounded must be yes, partly or no, not {self.grounded!r}")


@dataclass(frozen=True, slots=True)
class Grade:
    """A human's result on one grading item. `skipped` means "could not grade": it does not count
    towards the item's evaluators, and the same person is not shown the item again. A person grades
    an item once: grading it again replaces their earlier grade."""

    id: str
    item_id: str
    evaluator: str
    created_at: float
    preference: Literal["left", "right", "tie"] | None = None  # as the grader saw the pair
    winner: Literal["production", "candidate", "tie"] | None = None  # resolved from the item's `left`
    left_labels: AnswerLabels = AnswerLabels()  # the answer shown on the left
    right_labels: AnswerLabels = AnswerLabels()
    note: str = ""
    keep: bool = False  # worth keeping in an eval set
    corrected_answer: str | None = None
    seconds: float | None = None  # time on task
    skipped: bool = False

    def __post_init__(self) -> None:
        if self.preference not in (None, "left", "right", "tie"):
            raise ValueError(f"preference must be left, right or tie, not {self.preference!r}")


@dataclass(frozen=True, slots=True)
class JudgeLease:
    """A judge worker claims outputs for one judge key until `expires_at`, so that workers on other
    processes or machines (several replicas' judges on one PostgreSQL store) never judge the same
    output twice. Granted per output only where no other worker holds a live claim."""

    output_ids: tuple[str, ...]
    judge_key: str
    worker: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Lease:
    """An evaluator holds a grading item until `expires_at`, so that concurrent graders are not shown
    the same item beyond its number of evaluators. The store grants it only while the item has room."""

    item_id: str
    evaluator: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class GradingProgress:
    """How far grading has got: items queued, items with all their grades, grades per evaluator."""

    queued: int
    fully_graded: int
    grades_by_evaluator: dict[str, int]  # grades given, skips not counted
    skipped_by_evaluator: dict[str, int]



@dataclass(frozen=True, slots=True)
class EvalItem:
    """One example of an eval set: a request as production received it, the answer it should get
    when people said so, and what people and judges said about the answers it got."""

    key: str  # content hash of the request: the same question keeps its key across versions
    request: dict[str, Any]  # the OpenAI request (model, messages or input ...), redacted
    target: str | None = None  # the answer it should get
    target_source: str | None = None  # human-corrected | human-preferred | production | reference
    contexts: list[dict[str, Any]] | None = None  # retrieved passages {id, title, text}
    outputs: dict[str, str] = field(default_factory=dict)  # model name -> its answer
    labels: dict[str, Any] = field(default_factory=dict)  # human grades and judge verdicts, summarized
    meta: dict[str, Any] = field(default_factory=dict)  # exchange id, route, tags, created_at, cluster
    exchange_id: str | None = None


@dataclass(frozen=True, slots=True)
class EvalSet:
    """One immutable version of a named eval set. `id` is the hash of its content, so building twice
    from the same traffic gives the same id; `version` counts the versions of `name`."""

    id: str
    name: str
    version: int
    created_at: float
    manifest: dict[str, Any]  # filters, counts, source window, parent version
    items: tuple[EvalItem, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@dataclass(frozen=True, slots=True)
class ExchangeBundle:
    """An exchange with everything said about it: what eval sets are built from."""

    exchange: Exchange
    outputs: tuple[Output, ...]
    verdicts: tuple[Verdict, ...]
    feedback: tuple[Feedback, ...]
    graded: tuple[tuple[GradingItem, Grade], ...]  # human grades, with the item each belongs to


@dataclass(frozen=True, slots=True)
class ReportRun:
    """What one `shadoweval report` raised: the proxy's `/metrics` shows the latest run's alerts."""

    id: str
    created_at: float
    alerts: tuple[tuple[str, str, str], ...]  # (candidate, kind: drift | reward_gaming, message)
