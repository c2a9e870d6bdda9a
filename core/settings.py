"""One frozen Settings object: the TOML file, then SHADOWEVAL_* environment variables, then flags.

This is the only module that reads the environment. Every setting is declared once, as a pydantic
field with a default and a description; `settings_table()` lists them for docs/configuration.md and the
tests check that each one is documented. Secrets never live in the file: it names the environment
variables that hold them, and they are read here, once.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ShadowevalError

ENV_PREFIX = "SHADOWEVAL_"
# The standard proxy variables, both cases; netconf decides what they mean.
PROXY_ENV = tuple(n for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy") for n in (name, name.upper()))


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSettings(_Section):
    host: str = Field("127.0.0.1", description="Interface the proxy listens on.")
    port: int = Field(8080, description="Port the proxy listens on.")
    max_body_bytes: int = Field(
        16 * 1024 * 1024, description="Largest request body accepted; larger ones get 413."
    )
    max_url_bytes: int = Field(
        8 * 1024, ge=256, description="Longest request target (path and query) accepted; longer ones get 414."
    )
    max_headers: int = Field(100, ge=8, description="Most request headers accepted; more get 431.")
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="Most bytes of request header names and values, all headers together; "
        "more get 431 before they are buffered."
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Longest a request's line and headers may take to arrive (from the connection's "
        "start or the request's first byte); slower ones get 408 and the connection is closed."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="Longest a request's whole body may take to arrive after its headers; slower "
        "ones get 408 and the connection is closed."
    )
    proxy_keys_env: str = Field(
        "",
        description="Environment variable holding comma-separated proxy keys. When set, clients "
        "must present one (as `x-shadoweval-key`, or as their bearer token when production's key "
        "comes from `production.api_key_env`).",
    )
    admin_keys_env: str = Field(
        "",
        description="Environment variable holding comma-separated admin keys: they read and post "
        "feedback on every stored exchange (proxy keys only on their own) and see health details and "
        "metrics. They do not send `/v1` traffic unless also listed as proxy keys. See docs/access.md.",
    )
    ops_keys_env: str = Field(
        "",
        description="Environment variable holding comma-separated ops keys, for `/metrics` and the "
        "details of `/healthz` (as `x-shadoweval-key` or a bearer token; admin keys count too). "
        "Without ops or admin keys those are served to loopback clients only.",
    )
    require_keys: bool = Field(
        False,
        description="Refuse to start unless proxy keys are configured (`proxy_keys_env` names a set "
        "variable holding at least one key): for deployments reachable beyond this host.",
    )
    log_level: str = Field("info", description="debug, info, warning or error.")
    log_format: str = Field("json", description="json (one object per line) or text.")


class ProductionSettings(_Section):
    base_url: str = Field(
        "https://api.openai.com/v1",
        description="Where production traffic goes: an OpenAI-compatible base URL ending in /v1.",
    )
    api_key_env: str = Field(
        "",
        description="Environment variable holding production's API key. When set it replaces the "
        "client's Authorization; when empty the client's own Authorization is forwarded.",
    )
    timeout_s: float = Field(
        600.0, description="Longest wait for production's next byte before answering 504."
    )
    connect_timeout_s: float = Field(10.0, description="Longest wait to connect to production (502).")
    max_connections: int = Field(1024, description="Keep-alive connections to production at most.")
    ca_file: str = Field("", description="PEM file (or directory) of extra CAs trusted for production, added to "
                         "the default trust store; empty: `[network] ca_file`.")
    client_cert: str = Field("", description="PEM client certificate presented to production (mutual TLS).")
    client_key: str = Field("", description="Private key of `client_cert` when it is not in the same file.")


class StoreSettings(_Section):
    path: str = Field("shadoweval.db", description="SQLite file where exchanges are stored (with `url`: only the "
                      "folder of this machine's crash journal).")
    url: str | None = Field(None, description="PostgreSQL instead of the SQLite file, e.g. "
                            "`postgresql://shadoweval@db.internal/shadoweval`, so that several replicas share one store "
                            "(docs/replicas.md). Keep the password out of the file: `url_env`, PGPASSWORD or ~/.pgpass.")
    url_env: str = Field("", description="Name of an environment variable holding the PostgreSQL URL (it may "
                         "carry the password); used instead of `url` when set.")

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, v: str | None) -> str | None:
        if v is not None and not is_postgres_url(v):
            raise ValueError("a PostgreSQL URL starts with postgresql:// (the SQLite file is `path`)")
        return v
    capture: bool = Field(True, description="Store exchanges at all (off: forward and mirror only).")
    queue_size: int = Field(
        50_000, description="Records waiting for the writer at most; beyond it they are dropped and counted."
    )
    batch_size: int = Field(1000, description="Records the writer commits in one transaction at most.")
    flush_interval_ms: int = Field(100, description="Longest a record waits before the writer commits.")
    retention_days: float = Field(
        0, description="Delete exchanges older than this many days (0 keeps everything)."
    )
    durability: str = Field(
        "batched", pattern="^(batched|strict)$",
        description="batched: answer at once, commit within flush_interval_ms (a crash loses what is queued, "
        "counted as `crash` on restart); strict: a non-streamed answer is sent, and a streamed one ended, only "
        "once its exchange is committed (waits up to strict_timeout_ms). See docs/durability.md.",
    )
    strict_timeout_ms: int = Field(
        1000, ge=0, description="With durability = strict, the longest a response waits for its commit; "
        "past it the answer is sent anyway and the wait is counted.",
    )
    max_capture_bytes: int = Field(
        1_048_576, ge=0, description="Longest stored text (the answer, each string in the request) in bytes; "
        "longer ones are cut and flagged `truncated` with their original size. The client still gets everything. "
        "0: no limit.",
    )


class RedactionSettings(_Section):
    emails: bool = Field(True, description="Replace e-mail addresses with [EMAIL] before storage.")
    card_numbers: bool = Field(True, description="Replace payment card numbers with [CARD].")
    phone_numbers: bool = Field(True, description="Replace phone numbers with [PHONE].")
    patterns: tuple[str, ...] = Field(
        (), description="Extra regular expressions whose matches are replaced with [REDACTED]."
    )


class MirrorSettings(_Section):
    enabled: bool = Field(True, description="Mirror traffic to candidates at all.")
    queue_size: int = Field(
        1000, description="Mirrored requests waiting per candidate at most; beyond it they are dropped and counted."
    )
    sample_key: str = Field(
        "content",
        description="What sampling hashes: `content` (model-independent request content) or "
        "`header:NAME` (a request header such as a conversation id; falls back to content).",
    )
    drain_timeout_s: float = Field(
        10.0, description="On shutdown, how long queued mirror work may still run."
    )


class TwinSettings(_Section):
    sample_rate: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of requests re-sent to production itself, to measure its own randomness.",
    )
    concurrency: int = Field(4, ge=1, description="Twin requests in flight at most.")
    timeout_s: float = Field(120.0, description="Longest a twin request may take.")


class ContextSettings(_Section):
    enabled: bool = Field(
        True, description="Find the retrieved passages each request gave the model and store them with the exchange."
    )
    header: str = Field(
        "x-shadoweval-context",
        description="Request header the app may send the passages in: a JSON array of strings or of "
        "`{id, title, text}` objects. Never forwarded, so it must start with `x-shadoweval-`; empty "
        "turns it off. Wins over `field` and the messages.",
    )
    field: str = Field(
        "",
        description="Dotted path of a request field holding the passages (e.g. `metadata.contexts`): a "
        "list of strings or of `{id, title, text}` objects, or a JSON string of either. Wins over the "
        "messages.",
    )
    patterns: tuple[str, ...] = Field(
        (),
        description="Extra regular expressions tried first on system and user messages; each match is "
        "one passage, from the named group `text` and the optional groups `id` and `title`.",
    )
    max_passages: int = Field(100, ge=1, description="Passages stored per exchange at most.")
    max_chars: int = Field(
        200_000, ge=1, description="Characters of passage text stored per exchange at most; the rest is cut."
    )

    @field_validator("header")
    @classmethod
    def _header_ok(cls, v: str) -> str:
        v = v.strip().lower()
        # The proxy strips every x-shadoweval-* header before forwarding, and only those: any other
        # name would leak the passages to production.
        if v and (not v.startswith("x-shadoweval-") or v in ("x-shadoweval-key", "x-shadoweval-tags")):
            raise ValueError("must start with 'x-shadoweval-' and not be x-shadoweval-key or x-shadoweval-tags")
        return v

    @field_validator("patterns")
    @classmethod
    def _patterns_ok(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            try:
                compiled = re.compile(p)
            except re.error as exc:
                raise ValueError(f"{p!r} is not a valid regular expression: {exc}") from None
            if "text" not in compiled.groupindex:
                raise ValueError(f"{p!r} has no named group 'text', e.g. (?P<text>...)")
        return v


class CandidateSettings(_Section):
    name: str = Field(description="Name used in reports; unique.")
    model: str = Field(
        description="litellm model string (`anthropic/claude-...`, `openai/gpt-4o-mini`, ...), or the "
        "model name sent to `base_url`."
    )
    base_url: str = Field(
        "",
        description="An OpenAI-compatible base URL; when set the candidate is called directly "
        "(no litellm) with `model` as the model name.",
    )
    api_base: str = Field(
        "", description="For litellm candidates: the provider endpoint to use instead of litellm's default."
    )
    api_key_env: str = Field("", description="Environment variable holding this candidate's API key.")
    sample_rate: float = Field(1.0, ge=0, le=1, description="Share of requests mirrored to it.")
    routes: tuple[str, ...] = Field(
        (), description="Only mirror these API paths (e.g. `/v1/chat/completions`); empty = all mirrored routes."
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Only mirror requests carrying all these tags (e.g. `{route = \"billing\"}`)."
    )
    concurrency: int = Field(4, ge=1, description="Requests in flight to this candidate at most.")
    timeout_s: float = Field(120.0, gt=0, description="Longest a mirrored request may take.")
    daily_requests: int = Field(0, ge=0, description="Mirrored requests per UTC day at most (0 = no limit).")
    daily_usd: float = Field(0.0, ge=0, description="Estimated spend per UTC day at most (0 = no limit).")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Parameters that override the request's (e.g. `{temperature = 0}`)."
    )
    responses: bool = Field(True, description="Also mirror `/v1/responses` requests to this candidate.")
    ca_file: str = Field("", description="For `base_url` candidates: PEM file (or directory) of extra CAs, added to "
                         "the default trust store; empty: `[network] ca_file`.")
    client_cert: str = Field("", description="For `base_url` candidates: PEM client certificate (mutual TLS).")
    client_key: str = Field("", description="For `base_url` candidates: private key of `client_cert` when it is "
                            "not in the same file.")

    @model_validator(mode="after")
    def _tls_needs_base_url(self) -> CandidateSettings:
        # litellm builds its own HTTP clients and follows the environment only: a silent no-op would be worse.
        if not self.base_url and (self.ca_file or self.client_cert or self.client_key):
            raise ValueError(f"candidate {self.name!r}: ca_file, client_cert and client_key apply to base_url "
                             "candidates only (litellm candidates follow SSL_CERT_FILE; see docs/networks.md)")
        return self

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or v in ("production", "production-twin"):
            raise ValueError("candidate name must be non-empty and not 'production' or 'production-twin'")
        return v


class JudgesSettings(_Section):
    background: bool = Field(
        True, description="Run the judges in the background of `shadoweval serve` (a child process that "
        "judges new outputs every `interval_s`); off: run `shadoweval judge run` yourself."
    )
    interval_s: float = Field(30.0, gt=0, description="Pause between background judging passes.")
    offline: tuple[str, ...] = Field(
        ("checks", "grounded", "citations"), description="Offline judges run on every output (no LLM)."
    )
    embedder: str = Field("minilm", description="Embeddings for the offline judges: minilm (all-MiniLM-L6-v2, "
                          "shipped in a package) or hashing (a fast deterministic stand-in for tests).")
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="Decision thresholds of the offline judges for your own traffic, e.g. "
        "`{ grounded = 0.42 }`, as `shadoweval calibrate` suggests from your labeled records (empty: the thresholds "
        "shipped with the support model, chosen on its training data)."
    )
    calibration: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="A rescaling of `grounded` or `citations` scores so they read as "
        "probabilities of your own labels, `{ grounded = [slope, intercept] }`, as `shadoweval calibrate` fits it "
        "(Platt scaling: sigmoid(slope * logit(score) + intercept)); it never reorders answers, and the same answers "
        "pass and fail (the threshold moves with it; `thresholds` stay on the support model's scale), while margins "
        "on scores (`preference_margin`, `score_margin`, `risk_margin`) read the new scale. Empty: the support "
        "model's own probabilities."
    )
    concurrency: int = Field(2, ge=1, description="Outputs judged at once by the offline tier.")
    threads: int = Field(
        1, ge=0, description="CPU threads the embedding model uses (0 = every core). The background judge also "
        "runs at a lower CPU priority than the proxy, so judging never takes the proxy's CPU."
    )
    llm: tuple[str, ...] = Field(
        ("grounded-llm", "citations-llm", "intent", "pairwise"),
        description="LLM judges, run on the share `llm_share` selects when `llm_model` is set.",
    )
    llm_model: str = Field("", description="litellm model string of the judge model (e.g. `openai/gpt-4o-mini`); "
                           "empty: no LLM tier.")
    llm_api_base: str = Field("", description="Endpoint of the judge model instead of the provider's default.")
    llm_api_key_env: str = Field("", description="Environment variable holding the judge model's API key.")
    llm_timeout_s: float = Field(60.0, gt=0, description="Longest a judge model call may take.")
    llm_concurrency: int = Field(4, ge=1, description="Judge model calls in flight at most.")
    llm_daily_usd: float = Field(
        5.0, ge=0, description="Judge model spend per UTC day at most, counted from stored verdicts (0 = no limit)."
    )
    llm_share: str = Field(
        "risky", description="Which outputs the LLM tier judges: all, sample (`llm_sample_rate`), risky (offline "
        "score within `risk_margin` of its threshold, offline judges disagree, a `gap` to production, a "
        "complaint, an answer that only says what the documents lack) or none."
    )
    llm_sample_rate: float = Field(0.1, ge=0, le=1, description="Share of outputs judged when `llm_share = sample`.")
    risk_margin: float = Field(0.1, ge=0, description="Offline scores this close to their threshold are risky.")
    gap: float = Field(0.3, ge=0, description="A candidate's offline score this far from production's is risky.")

    @field_validator("llm_share")
    @classmethod
    def _share_ok(cls, v: str) -> str:
        if v not in ("all", "sample", "risky", "none"):
            raise ValueError("llm_share must be all, sample, risky or none")
        return v

    @field_validator("calibration")
    @classmethod
    def _calibration_ok(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (slope, intercept) in v.items():
            if name not in ("grounded", "citations"):
                raise ValueError(f"calibration rescales grounded or citations scores, not {name!r}")
            if not (math.isfinite(slope) and math.isfinite(intercept)):
                raise ValueError(f"calibration.{name}: the slope and intercept must be finite numbers, not "
                                 f"[{slope}, {intercept}]")
            if not slope > 0:
                raise ValueError(f"calibration.{name}: the slope must be > 0 (it keeps the scores' order), not {slope}")
        return v


class IntentSettings(_Section):
    name: str = Field(description="Name of the intent (shown in verdicts).")
    intent: str = Field(description="What the app is for, in plain words (\"answers billing questions for Acme "
                        "customers\").")
    criteria: tuple[str, ...] = Field((), description="Rules each answer must follow (\"never promises refunds\").")
    routes: tuple[str, ...] = Field((), description="Route tags or API paths it applies to (globs); empty = all.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tags a request must carry for it to apply.")


class GradingSettings(_Section):
    enabled: bool = Field(True, description="Serve the grading page at `/grade` from `shadoweval serve` (it is "
                          "reachable only by the `[[evaluators]]` configured).")
    lease_minutes: float = Field(30.0, gt=0, description="How long a pair shown to an evaluator is held for them "
                                 "before another evaluator may take its place.")
    session_hours: float = Field(12.0, gt=0, description="How long a sign-in lasts.")
    secure_cookies: bool = Field(False, description="Mark the session cookie Secure (set it when the page is "
                                 "served over HTTPS, e.g. behind a TLS proxy).")
    signin_max_failures: int = Field(5, ge=1, description="Failed sign-ins from one client address within "
                                     "`signin_lockout_minutes` that lock the address out (HTTP 429) for "
                                     "`signin_lockout_minutes`, the right token included. Kept in memory.")
    signin_lockout_minutes: float = Field(15.0, gt=0, description="The window in which failed sign-ins are "
                                          "counted per address, and how long a locked-out address waits.")
    signin_global_per_s: float = Field(5.0, gt=0, description="Sign-in attempts checked per second across all "
                                       "addresses (burst of as many); more wait their turn up to 2 s, then get "
                                       "429. Successful sign-ins give their turn back.")


class ReportSettings(_Section):
    slice_by: tuple[str, ...] = Field(("route",), description="Tag keys the report breaks every metric down by "
                                      "(`route` falls back to the API path).")
    judges: tuple[str, ...] = Field(("grounded", "citations", "intent", "grounded-llm", "citations-llm"),
                                    description="Judges whose scores the report compares, production against each "
                                    "candidate.")
    preference_margin: float = Field(0.05, ge=0, description="Offline preference: a candidate wins an exchange when "
                                     "its mean offline score beats production's by more than this, loses when it "
                                     "trails by more, ties otherwise.")
    min_kappa: float = Field(0.4, description="A judge is reliable when its Cohen's kappa against human grades "
                             "reaches this (on at least `min_graded` graded answers).")
    min_graded: int = Field(30, ge=0, description="Graded answers a judge needs before its reliability counts, "
                            "and graded pairs people's own win rate needs before a decision rests on it.")
    slice_fdr: float = Field(0.05, ge=0, lt=1, description="Slices' better/worse calls are corrected for their "
                             "number (Benjamini-Hochberg): the false discovery rate allowed among them; with no real "
                             "difference anywhere, the chance of any slice called better or worse by chance (0: each "
                             "slice tested alone at 95%).")
    min_pairs: int = Field(20, ge=1, description="Fewer pairs than this in a slice: its numbers are shown, never "
                           "flagged.")
    bootstrap: int = Field(1000, ge=100, description="Bootstrap resamples behind every interval.")
    drift_period: str = Field("day", description="Drift is shown per `day` or per `week`.")
    alert_min_win_rate: float = Field(0.0, ge=0, le=1, description="Alert when a period's win rate interval lies "
                                      "entirely below this (0: no alert).")
    alert_max_score_drop: float = Field(0.0, ge=0, description="Alert when a judge's candidate-minus-production "
                                        "score in a period falls below minus this (0: no alert).")
    alert_max_pass_drop: float = Field(0.0, ge=0, le=1, description="Alert when a judge's candidate-minus-production "
                                       "share of answers passing in a period falls below minus this (0.1: 10 points "
                                       "fewer of the candidate's answers pass; 0: no alert).")
    judge_bias_margin: float = Field(0.1, ge=0, description="Alarm when, on the pairs people graded, the judge's win "
                                     "rate for a candidate exceeds people's by more than this (interval wholly above): "
                                     "the candidate may please the judge, not the users. The gate fails on it.")
    webhook_url: str = Field("", description="`shadoweval report` posts its alerts (drift, reward gaming) as JSON "
                             "here; empty: alerts go to the report and the log only.")

    @field_validator("drift_period")
    @classmethod
    def _period_ok(cls, v: str) -> str:
        if v not in ("day", "week"):
            raise ValueError("drift_period must be day or week")
        return v


class GateSettings(_Section):
    mode: str = Field("not-worse", description="The decision rule. `not-worse` (non-inferiority, the default): pass "
                      "when the win rate's interval lies above 0.5 - `margin` and no judged score is significantly "
                      "lower than production's by more than `score_margin`; the usual reason to shadow a candidate "
                      "is that it is cheaper or faster, and one exactly as good must be able to pass. `better` "
                      "(superiority): pass only when the interval lies above 0.5.")
    margin: float = Field(0.05, ge=0, lt=0.5, description="`not-worse`: how far below production's 0.5 the candidate's "
                          "win rate may plausibly be (0.05: a 5-point drop is the most the interval may allow).")
    score_margin: float = Field(0.05, ge=0, description="`not-worse`: how far below production a judged score "
                                "(groundedness, citations, intent) may plausibly be before the gate fails.")
    score_metric: str = Field("mean", description="What `score_margin` and `slice_regression` read of a judge: "
                              "`mean`, its mean score, or `share_passing`, the share of answers it passes at the "
                              "threshold each verdict was judged at (a drop of 0.05 is then 5 points fewer answers "
                              "passing; it does not depend on how far the scores are calibrated).")
    slice_regression: float = Field(0.1, ge=0, description="Fail when a slice is significantly worse and its win "
                                    "rate is below 0.5 - this, or a judge score drops by more than this.")
    require_reliable_judges: bool = Field(True, description="Fail when the win rate the decision rests on comes from "
                                          "a judge below the reliability bar (`[report] min_kappa`).")
    max_latency_ratio: float = Field(1.5, gt=0, description="Fail when the candidate's p95 latency exceeds "
                                     "production's times this.")
    max_cost_ratio: float = Field(2.0, gt=0, description="Fail when the candidate's mean cost exceeds production's "
                                  "times this.")
    max_error_rate_increase: float = Field(0.01, ge=0, description="Fail when the candidate's error rate exceeds "
                                           "production's by more than this.")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "regression_margin" in data:  # the name before `mode` existed
            data = dict(data)
            data.setdefault("margin", data.pop("regression_margin"))
            data.setdefault("mode", "not-worse")
        return data

    @field_validator("mode")
    @classmethod
    def _mode_ok(cls, v: str) -> str:
        if v not in ("not-worse", "better"):
            raise ValueError('mode must be "not-worse" or "better"')
        return v

    @field_validator("score_metric")
    @classmethod
    def _score_metric_ok(cls, v: str) -> str:
        if v not in ("mean", "share_passing"):
            raise ValueError('score_metric must be "mean" or "share_passing"')
        return v


# Words people pick and runs along the alphabet, the digits or the keyboard: a token made of them is guessed first.
_COMMON_WORDS = ("password", "passwd", "passphrase", "changeme", "secret", "letmein", "welcome", "admin", "token",
                 "test", "qwerty", "azerty", "example", "default", "demo", "grading", "grade", "shadoweval", "login",
                 "hello", "iloveyou", "monkey", "dragon", "master", "sunshine", "football", "trustno")
_RUNS = ("abcdefghijklmnopqrstuvwxyz", "0123456789", "qwertyuiop", "asdfghjkl", "zxcvbnm")


def token_weakness(token: str) -> str | None:
    """Why a sign-in token is too easy to guess, or None: it needs 16+ characters, 8+ different ones, and
    12+ left once common words, runs (`abcd`, `4321`, `qwer`) and repeats (`abab`) are taken out."""
    if len(token) < 16:
        return "shorter than 16 characters"
    if len(set(token)) < 8:
        return "fewer than 8 different characters"
    rest = token.lower()
    for word in _COMMON_WORDS:
        rest = rest.replace(word, "")
    runs = (*_RUNS, *(r[::-1] for r in _RUNS))
    kept, i = [], 0
    while i < len(rest):
        j = i + 3
        while j <= len(rest) and any(rest[i:j] in r for r in runs):
            j += 1
        if j - 1 - i >= 3:
            i = j - 1
        else:
            kept.append(rest[i])
            i += 1
    rest = re.sub(r"(.{1,8}?)\1+", r"\1", "".join(kept))
    if len(rest) < 12 or len(set(rest)) < 6:
        return "made mostly of common words, runs or repeats"
    return None


class EvaluatorSettings(_Section):
    name: str = Field(description="The evaluator's name, recorded with each of their grades; unique.")
    token_env: str = Field("", description="Environment variable holding the evaluator's sign-in token; a weak "
                           "one (under 16 characters, little variety, common words) is a configuration error.")
    token_sha256: str = Field("", description="Or: the SHA-256 (hex) of their token, safe to keep in the file "
                              "(`shadoweval grade token NAME` makes a strong token and prints both; a hash cannot "
                              "be checked for strength).")
    admin: bool = Field(False, description="May see the agreement page (judges against people, people against "
                        "each other).")

    @model_validator(mode="after")
    def _has_token(self) -> EvaluatorSettings:
        if not self.token_env and not self.token_sha256:
            raise ValueError(f"evaluator {self.name!r} needs token_env or token_sha256")
        if self.token_sha256 and not re.fullmatch(r"[0-9a-f]{64}", self.token_sha256):
            raise ValueError(f"evaluator {self.name!r}: token_sha256 must be 64 lowercase hex digits")
        return self


class NetworkSettings(_Section):
    proxy: str = Field(
        "", repr=False,
        description="HTTP proxy for production and `base_url` candidates (`http://user:pass@host:port`); empty: "
        "from `https_proxy`/`http_proxy`/`all_proxy`; `none` or `direct`: never. litellm calls follow the "
        "environment only.",
    )
    no_proxy: str = Field("", description="Hosts reached directly (`NO_PROXY` syntax: `*`, `.corp.example`, "
                          "`host:port`, `10.0.0.0/8`); empty: from `no_proxy`/`NO_PROXY`.")
    ca_file: str = Field("", description="PEM file (or directory) of extra CAs trusted for every upstream that has "
                         "no `ca_file` of its own, added to the default trust store (not replacing it).")


class Settings(_Section):
    server: ServerSettings = ServerSettings()
    production: ProductionSettings = ProductionSettings()
    store: StoreSettings = StoreSettings()
    redaction: RedactionSettings = RedactionSettings()
    mirror: MirrorSettings = MirrorSettings()
    twin: TwinSettings = TwinSettings()
    context: ContextSettings = ContextSettings()
    judges: JudgesSettings = JudgesSettings()
    grading: GradingSettings = GradingSettings()
    report: ReportSettings = ReportSettings()
    gate: GateSettings = GateSettings()
    network: NetworkSettings = NetworkSettings()
    candidates: tuple[CandidateSettings, ...] = ()
    intents: tuple[IntentSettings, ...] = ()
    evaluators: tuple[EvaluatorSettings, ...] = ()
    # Secrets resolved from the environment at load time; excluded from repr and dumps.
    secrets: Mapping[str, str] = Field(default_factory=dict, repr=False, exclude=True)

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        names = [c.name for c in self.candidates]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"candidate names must be unique, repeated: {sorted(dupes)}")
        people = [e.name for e in self.evaluators]
        if len(set(people)) != len(people):
            raise ValueError("evaluator names must be unique")
        return self

    @model_validator(mode="after")
    def _strong_tokens(self) -> Settings:
        for e in self.evaluators:
            why = token_weakness((self.secret(e.token_env) or "").strip()) if self.secret(e.token_env) else None
            if why:  # name the evaluator and the variable, never the token
                raise ValueError(f"evaluator {e.name!r}: the token in ${e.token_env} is too easy to guess ({why}); "
                                 f"make a strong one with `shadoweval grade token {e.name}`")
        return self

    @property
    def store_target(self) -> str:
        """Where the store is: the PostgreSQL URL (from `url_env`, else `url`), else the SQLite file."""
        return self.secret(self.store.url_env) or self.store.url or self.store.path

    def secret(self, env_name: str) -> str | None:
        """The value of a secret named by an `*_env` setting, or None when unset."""
        return self.secrets.get(env_name) if env_name else None

    def proxy_keys(self) -> frozenset[str]:
        return self._keys(self.server.proxy_keys_env)

    def admin_keys(self) -> frozenset[str]:
        return self._keys(self.server.admin_keys_env)

    def ops_keys(self) -> frozenset[str]:
        """Keys that may see `/metrics` and health details: the ops keys and the admin keys."""
        return self._keys(self.server.ops_keys_env) | self.admin_keys()

    def _keys(self, env_name: str) -> frozenset[str]:
        raw = self.secret(env_name) or ""
        return frozenset(k.strip() for k in raw.split(",") if k.strip())


SECTIONS: dict[str, type[_Section]] = {
    "server": ServerSettings,
    "production": ProductionSettings,
    "store": StoreSettings,
    "redaction": RedactionSettings,
    "mirror": MirrorSettings,
    "twin": TwinSettings,
    "context": ContextSettings,
    "judges": JudgesSettings,
    "grading": GradingSettings,
    "report": ReportSettings,
    "gate": GateSettings,
    "network": NetworkSettings,
}


class SettingsError(ShadowevalError, ValueError):
    """The configuration cannot be used; the message says which setting and why."""


REQUIRED = object()  # settings_table's default of a setting that has none


def settings_table() -> Iterator[tuple[str, str, Any, str]]:
    """(section, key, default, help) for every setting, candidates' included, in declaration order;
    the default is REQUIRED for a setting that must be given (None is a default: unset)."""
    models: list[tuple[str, type[_Section]]] = [*SECTIONS.items(), ("candidates", CandidateSettings),
                                                ("intents", IntentSettings), ("evaluators", EvaluatorSettings)]
    for section, model in models:
        for key, f in model.model_fields.items():
            default = REQUIRED if f.is_required() else f.get_default(call_default_factory=True)
            yield section, key, default, f.description or ""


def is_postgres_url(target: str) -> bool:
    """Whether a store target (`--db`, `[store] url`) names PostgreSQL rather than a SQLite file."""
    return target.startswith(("postgresql://", "postgres://"))


def env_settable(annotation: Any) -> bool:
    """Whether a setting of this type can come from SHADOWEVAL_<SECTION>_<KEY>: one scalar, optional
    or not (`str`, `int | None`, ...)."""
    args = [a for a in get_args(annotation) if a is not type(None)] if get_origin(annotation) in (Union, UnionType) \
        else [annotation]
    return len(args) == 1 and args[0] in (str, int, float, bool)


def _env_overrides(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """SHADOWEVAL_<SECTION>_<KEY>=value for scalar settings, e.g. SHADOWEVAL_STORE_PATH."""
    out: dict[str, dict[str, str]] = {}
    for section, model in SECTIONS.items():
        for key, f in model.model_fields.items():
            if not env_settable(f.annotation):
                continue
            value = env.get(f"{ENV_PREFIX}{section.upper()}_{key.upper()}")
            if value is not None:
                out.setdefault(section, {})[key] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build Settings from the TOML file, then the environment, then `overrides` (the CLI flags)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SettingsError(f"configuration file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path}: not valid TOML: {exc}") from exc
    data = _merge(data, _env_overrides(env))
    data = _merge(data, {k: v for k, v in (overrides or {}).items() if v})
    wanted = {s.get("api_key_env", "") for s in data.get("candidates", []) if isinstance(s, dict)}
    wanted |= {s.get("token_env", "") for s in data.get("evaluators", []) if isinstance(s, dict)}
    wanted |= {data.get("production", {}).get("api_key_env", ""), data.get("server", {}).get("proxy_keys_env", ""),
               data.get("server", {}).get("admin_keys_env", ""), data.get("server", {}).get("ops_keys_env", ""),
               data.get("judges", {}).get("llm_api_key_env", ""), data.get("store", {}).get("url_env", "")}
    wanted |= set(PROXY_ENV)  # proxy URLs may carry credentials, so they are kept with the secrets
    data["secrets"] = {name: env[name] for name in wanted if name and name in env}
    url_env = data.get("store", {}).get("url_env", "")
    if url_env and url_env not in env:
        raise SettingsError(f"store.url_env: the environment variable {url_env} (the PostgreSQL URL) is not set")
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(lines)) from None
