"""Turn what an OpenAI-compatible API answered into an output: text, tool calls, usage, timings.

Kept hand-written because no installed library parses server-sent events from a stored copy with arrival
times (httpx-sse and the openai client read a live stream); its cost is measured by scripts/bench_store.py
--scenarios capture-sse: about 2,040 streamed answers/s parsed in the writer (docs/performance.md).

The proxy forwards production's bytes untouched and keeps a copy with the arrival time of every
piece; this module reads that copy later, in the store's writer thread. It understands chat
completions and the Responses API, as one JSON body or as server-sent events, and finds the time
to first token from the arrival time of the piece that carried the first content.
"""

from __future__ import annotations

import bisect
import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from shadoweval.core.types import Usage


@dataclass
class Parsed:
    text: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    usage: Usage = Usage()
    model: str | None = None
    error: str | None = None  # an error the API reported (in the body or in an error event)
    first_token_index: int | None = None  # which raw piece carried the first content
    malformed: int = 0  # stream events that were not JSON objects (their content is missing)
    malformed_sample: bytes = b""  # the first of them, cut short, for the error message


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    """Undo gzip/deflate so the copy can be read; the client got the bytes as production sent them."""
    enc = (content_encoding or "").lower().strip()
    if not enc or enc == "identity":
        return body
    if enc in ("gzip", "x-gzip"):
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if enc == "deflate":
        try:
            return zlib.decompress(body)
        except zlib.error:
            return zlib.decompress(body, -zlib.MAX_WBITS)
    if enc == "br":
        import brotli  # only present when the app asked for br

        return brotli.decompress(body)
    raise ValueError(f"unsupported content-encoding {enc!r}")


def _usage(u: Any) -> Usage:
    if not isinstance(u, dict):
        return Usage()
    prompt = u.get("prompt_tokens", u.get("input_tokens"))
    completion = u.get("completion_tokens", u.get("output_tokens"))
    total = u.get("total_tokens")
    if total is None and isinstance(prompt, int) and isinstance(completion, int):
        total = prompt + completion
    return Usage(prompt, completion, total)


def _error_text(err: Any) -> str:
    if isinstance(err, dict):
        return str(err.get("message") or err.get("type") or err)
    return str(err)


# -- chat completions ------------------------------------------------------------------------------


def parse_chat_json(data: Any) -> Parsed:
    if not isinstance(data, dict):
        return Parsed(error="response is not a JSON object")
    if "error" in data and "choices" not in data:
        return Parsed(error=_error_text(data["error"]))
    choices = data.get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = first.get("message") or {}
    calls = message.get("tool_calls") or None
    if calls is None and message.get("function_call"):
        calls = [{"type": "function", "function": message["function_call"]}]
    return Parsed(
        text=message.get("content") if isinstance(message.get("content"), str) else None,
        tool_calls=calls,
        finish_reason=first.get("finish_reason"),
        usage=_usage(data.get("usage")),
        model=data.get("model"),
    )


class ChatStreamAccumulator:
    """Builds the final answer from chat.completion.chunk events (choice 0 is the answer kept)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.result = Parsed()

    def feed(self, event: dict[str, Any]) -> bool:
        """Take one event; True when it carried content (text or a tool call)."""
        r = self.result
        choices = event.get("choices")
        if type(choices) is list and len(choices) == 1 and not event.get("usage"):
            # the common chunk: one choice, a text delta, nothing else (hundreds per answer)
            choice = choices[0]
            if type(choice) is dict and not choice.get("index") and not choice.get("finish_reason"):
                delta = choice.get("delta")
                if type(delta) is dict and "tool_calls" not in delta and "function_call" not in delta:
                    content = delta.get("content")
                    if content:
                        self.parts.append(content)
                    if r.model is None:
                        r.model = event.get("model") or None
                    return bool(content)
        if "error" in event and "choices" not in event:
            r.error = _error_text(event["error"])
            return False
        if event.get("model"):
            r.model = event["model"]
        if event.get("usage"):
            r.usage = _usage(event["usage"])
        carried = False
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                self.parts.append(content)
                carried = True
            for tc in delta.get("tool_calls") or []:
                slot = self.calls.setdefault(
                    tc.get("index", len(self.calls)), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                )
                if tc.get("id"):
                    slot["id"] = tc["id"]
                fn = tc.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
                carried = True
            if choice.get("finish_reason"):
                r.finish_reason = choice["finish_reason"]
        return carried

    def finish(self) -> Parsed:
        r = self.result
        r.text = "".join(self.parts) if self.parts or r.text is None and not self.calls else r.text
        if self.calls:
            r.tool_calls = [self.calls[i] for i in sorted(self.calls)]
        return r


# -- Responses API ---------------------------------------------------------------------------------


def parse_responses_json(data: Any) -> Parsed:
    if not isinstance(data, dict):
        return Parsed(error="response is not a JSON object")
    if data.get("error") and not data.get("output"):
        return Parsed(error=_error_text(data["error"]))
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in data.get("output") or []:
        if not isinstance(item, dict):
            continue
        if item.get("type") == "message":
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "output_text":
                    texts.append(part.get("text") or "")
        elif item.get("type") in ("function_call", "custom_tool_call"):
            calls.append(
                {
                    "id": item.get("call_id") or item.get("id"),
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments") or item.get("input") or ""},
                }
            )
    status = data.get("status")
    incomplete = (data.get("incomplete_details") or {}).get("reason") if isinstance(data.get("incomplete_details"), dict) else None
    return Parsed(
        text="".join(texts) if texts or not calls else None,
        tool_calls=calls or None,
        finish_reason=incomplete or ("tool_calls" if calls else ("stop" if status == "completed" else status)),
        usage=_usage(data.get("usage")),
        model=data.get("model"),
    )


class ResponsesStreamAccumulator:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.final: Parsed | None = None
        self.error: str | None = None

    def feed(self, event: dict[str, Any]) -> bool:
        kind = event.get("type", "")
        if kind == "response.output_text.delta":
            self.parts.append(event.get("delta") or "")
            return True
        if kind == "response.function_call_arguments.delta":
            return True
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            self.final = parse_responses_json(event.get("response"))
            if kind == "response.failed":
                self.error = _error_text((event.get("response") or {}).get("error") or "response failed")
        elif kind == "error":
            self.error = _error_text(event.get("error") or event.get("message") or event)
        return False

    def finish(self) -> Parsed:
        r = self.final or Parsed(text="".join(self.parts))
        if r.text is None and self.parts and not r.tool_calls:
            r.text = "".join(self.parts)
        r.error = r.error or self.error
        return r


# -- SSE framing -----------------------------------------------------------------------------------


def sse_payloads(pieces: Sequence[bytes]) -> tuple[list[bytes], list[int]]:
    """The data payload of every SSE event, and the byte offset at which each event was complete.

    One split over the joined bytes and no per-event function calls: long streams have hundreds
    of events, and this runs for every streamed answer."""
    buf = b"".join(pieces)
    if b"\r" in buf:
        buf = buf.replace(b"\r\n", b"\n")  # CRLF framing (rare); offsets then shift slightly
    blocks = buf.split(b"\n\n")
    if blocks and not blocks[-1]:
        blocks.pop()
    ends = list(itertools.accumulate(map(len, blocks)))
    n = len(blocks)
    # every event one `data: ` line, checked by counting instead of looking at each event
    newlines = 2 * n if buf.endswith(b"\n\n") else 2 * n - 2
    if buf.startswith(b"data: ") and buf.count(b"\n\ndata: ") == n - 1 and buf.count(b"\n") == newlines:
        return [b[6:] for b in blocks], [e + 2 * i + 1 for i, e in enumerate(ends)]
    payloads: list[bytes] = []
    offsets: list[int] = []
    for i, block in enumerate(blocks):
        if block.startswith(b"data: ") and b"\n" not in block:  # the common case: one data line
            payload = block[6:]
        elif block.strip():
            lines = [line[5:].lstrip(b" ") for line in block.strip(b"\n").split(b"\n") if line.startswith(b"data:")]
            if not lines:
                continue
            payload = b"\n".join(lines)
        else:
            continue
        payloads.append(payload)
        offsets.append(ends[i] + 2 * i + 1)
    return payloads, offsets


def _json_or_none(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def parse_stream(pieces: Sequence[bytes], *, responses_api: bool) -> Parsed:
    acc: ChatStreamAccumulator | ResponsesStreamAccumulator
    acc = ResponsesStreamAccumulator() if responses_api else ChatStreamAccumulator()
    payloads, offsets = sse_payloads(pieces)
    if payloads and payloads[-1] == b"[DONE]":
        payloads, offsets = payloads[:-1], offsets[:-1]
    try:  # one parse for the whole stream; event by event only when some event is not JSON
        events = orjson.loads(b"[" + b",".join(payloads) + b"]")
    except orjson.JSONDecodeError:
        events = [_json_or_none(p) for p in payloads]
    first_offset: int | None = None
    feed = acc.feed
    malformed = 0
    for k, event in enumerate(events):
        if type(event) is dict:
            if feed(event) and first_offset is None:
                first_offset = offsets[k]
        elif payloads[k] != b"[DONE]":  # not a JSON object: whatever it carried is missing
            malformed += 1
    result = acc.finish()
    if malformed:
        result.malformed = malformed
        result.malformed_sample = next(p for p, e in zip(payloads, events, strict=True)
                                       if type(e) is not dict and p != b"[DONE]")[:80]
    if first_offset is not None:
        # which piece had arrived once the first content event was complete
        ends = list(itertools.accumulate(map(len, pieces)))
        result.first_token_index = min(bisect.bisect_right(ends, first_offset), len(pieces) - 1)
    return result


def parse_body(body: bytes, *, responses_api: bool) -> Parsed:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Parsed(error="response body is not JSON")
    return parse_responses_json(data) if responses_api else parse_chat_json(data)


@dataclass
class Capture:
    """The raw copy of one answer as it crossed the proxy, with arrival times (perf_counter)."""

    status: int = 0
    content_type: str = ""
    content_encoding: str | None = None
    pieces: list[bytes] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    size: int = 0  # bytes the answer had, kept or not
    truncated: bool = False  # pieces past the proxy's capture limit were not kept
