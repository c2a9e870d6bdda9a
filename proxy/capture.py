"""Shape what the request path copied (raw bytes and arrival times) into an exchange and an output.

The request path only keeps references to the bytes it forwarded; `production_records()` runs
later, in the store's writer thread, where parsing JSON and SSE and finding the retrieved passages
cost the client nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from shadoweval.core.context import extract_contexts
from shadoweval.core.settings import ContextSettings
from shadoweval.core.types import Exchange, Output, OutputStatus, Usage, new_id

from .pricing import cost_usd
from .sse import Capture, decode_body, parse_body, parse_stream

log = logging.getLogger("shadoweval.capture")

# Routes whose exchanges are stored and mirrored; anything else under /v1 is forwarded only.
CAPTURED_ROUTES = frozenset({"/v1/chat/completions", "/v1/responses"})

# The error of an exchange whose client left before production's answer could be sent: unlike a
# client leaving after the last event, it never had the answer, so it stays `cancelled`.
CLIENT_LEFT_BEFORE_ANSWER = "client disconnected before the answer was sent"

TAGS_HEADER = b"x-shadoweval-tags"
MAX_TAGS = 32
MAX_TAG_CHARS = 200


def parse_tags(header: str | None, request: Mapping[str, Any] | None) -> dict[str, str]:
    """Slices for reports: `x-shadoweval-tags: route=billing,tenant=acme`, plus the request's own
    `user` and string-valued `metadata` fields. The header wins on conflicts."""
    tags: dict[str, str] = {}
    if isinstance(request, Mapping):
        meta = request.get("metadata")
        if isinstance(meta, Mapping):
            for k, v in meta.items():
                if isinstance(k, str) and isinstance(v, (str, int, float, bool)):
                    tags[k[:MAX_TAG_CHARS]] = str(v)[:MAX_TAG_CHARS]
        user = request.get("user")
        if isinstance(user, str) and user:
            tags["user"] = user[:MAX_TAG_CHARS]
    if header:
        for part in header.split(","):
            key, sep, value = part.partition("=")
            key = key.strip()
            if key:
                tags[key[:MAX_TAG_CHARS]] = value.strip()[:MAX_TAG_CHARS] if sep else "true"
    return dict(list(tags.items())[:MAX_TAGS])


def parse_request(body: bytes) -> dict[str, Any] | None:
    """The JSON body as a dict, or None for a body that is not a JSON object (forwarded, not mirrored)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


@dataclass(slots=True)
class ProductionCapture:
    """Everything the request path saw of one exchange, shaped later by `production_records()`."""

    exchange_id: str
    route: str
    created_at: float  # unix seconds
    t0: float  # perf_counter when the request arrived
    body: bytes
    tags_header: str | None
    answer: Capture
    t_end: float = 0.0
    outcome: Literal["ok", "error", "cancelled", "timeout"] = "ok"  # partial is decided when the answer is read
    error: str | None = None
    context_header: str | None = None  # the raw `x-shadoweval-context` value, parsed in the writer
    owner: str | None = None  # key_id() of the proxy key presented, None without proxy keys
    stored: bool = False  # handed to the store already (strict durability does it before the answer ends)


def production_records(c: ProductionCapture, context: ContextSettings | None = None) -> tuple[Exchange, Output]:
    """The exchange (with the passages its request carried) and production's output.
    `context` defaults to the default `[context]` settings."""
    request = parse_request(c.body)
    stream = bool(request.get("stream")) if request else False
    answer = c.answer
    responses_api = c.route == "/v1/responses"
    latency_ms = (c.t_end - c.t0) * 1000 if c.t_end else None
    text = tool_calls = finish = model = None
    ttft_ms = None
    error = c.error
    unreadable: str | None = None
    usage_parsed = None
    if answer.pieces:
        is_sse = answer.content_type.startswith("text/event-stream")
        try:
            if is_sse:
                parsed = parse_stream(
                    [decode_body(b"".join(answer.pieces), answer.content_encoding)]
                    if answer.content_encoding
                    else answer.pieces,
                    responses_api=responses_api,
                )
                if parsed.first_token_index is not None and not answer.content_encoding:
                    ttft_ms = (answer.times[parsed.first_token_index] - c.t0) * 1000
            else:
                parsed = parse_body(
                    decode_body(b"".join(answer.pieces), answer.content_encoding), responses_api=responses_api
                )
            text, tool_calls, finish, model = parsed.text, parsed.tool_calls, parsed.finish_reason, parsed.model
            usage_parsed = parsed.usage
            error = error or parsed.error
            if parsed.malformed and not answer.truncated:  # a cut copy ends mid-event: that is not production's fault
                unreadable = f"{parsed.malformed} stream event(s) could not be parsed (first: {parsed.malformed_sample!r})"
        except (ValueError, OSError) as exc:  # undecodable body: keep the exchange, say why
            error = error or f"could not read production's answer: {exc}"
    http_ok = 200 <= answer.status < 300
    outcome = c.outcome
    if outcome == "cancelled" and finish is not None and c.error != CLIENT_LEFT_BEFORE_ANSWER:
        # The client left after the model had finished (e.g. right after the last event): its
        # answer is complete, so this is not a cancellation.
        outcome, error = "ok", None
    status: OutputStatus = outcome if outcome != "ok" else ("ok" if http_ok and not error else "error")
    if status == "ok" and unreadable:  # the client got it all; what we stored misses the unreadable events
        status, error = "partial", unreadable
    requested = request.get("model") if request else None
    model = model or (requested if isinstance(requested, str) else None)
    usage = usage_parsed or Usage()
    exchange = Exchange(
        id=c.exchange_id,
        created_at=c.created_at,
        route=c.route,
        request=request,
        tags=parse_tags(c.tags_header, request),
        stream=stream,
        status=status if status != "timeout" else "error",
        http_status=answer.status or None,
        contexts=_contexts(request, context, c.context_header),
        owner=c.owner,
        request_bytes=len(c.body),
    )
    output = Output(
        id=new_id(),
        exchange_id=c.exchange_id,
        role="production",
        name="production",
        model=model,
        status=status,
        started_at=c.created_at,
        text=text,
        tool_calls=tool_calls,
        finish_reason=finish,
        usage=usage,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        http_status=answer.status or None,
        error=error if status != "ok" else None,
        cost_usd=cost_usd(model, usage) if http_ok else None,
        stream=stream,
        truncated=answer.truncated,
        original_bytes=answer.size or None,
    )
    return exchange, output


def _contexts(request: dict[str, Any] | None, settings: ContextSettings | None,
              header: str | None) -> list[dict[str, Any]] | None:
    """The passages, or None: a prompt the extraction chokes on still leaves its exchange stored."""
    try:
        # only what the app supplied: searching the prompt costs the writer ~0.1 ms an exchange, so
        # the judges' process does it (contexts stay None until then)
        return extract_contexts(request, settings=settings, header=header, search_messages=False)
    except Exception:
        log.exception("could not extract contexts")
        return None

