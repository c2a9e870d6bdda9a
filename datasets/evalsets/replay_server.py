"""Serve an eval set's recorded answers as an OpenAI-compatible model.

An app's own tests want a model that answers its real questions the same way every run, offline and
for free. An eval set already holds those questions with the answers they should get (and the
answers production and candidates gave), so `replay_app(evalset)` turns it into that model: point
the app's `base_url` at it and each recorded request gets its recorded answer back, through the
official client, streaming included. Requests are matched by `request_key`, which ignores the model
name, stream flag and sampling parameters, so the app can change those without breaking its tests.
Anything not in the eval set gets a 404 that names the key, so a failing test says which request
drifted.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import orjson

from shadoweval.core.types import EvalSet
from shadoweval.datasets.evalsets.keys import request_key
from shadoweval.proxy.api import error_json
from shadoweval.proxy.asgi import lifespan, read_body, send_json

KEY_HEADER = b"x-shadoweval-replay-key"
_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
# Split before every word that follows whitespace, so the chunks join back to the exact text.
_WORD_START = re.compile(r"(?<=\s)(?=\S)")


@dataclass(frozen=True, slots=True)
class Recorded:
    """What the server answers to one request key: the chosen text, or None when the item has no
    recorded answer of the chosen kind (then the request is known but cannot be answered)."""

    key: str
    text: str | None


@dataclass(slots=True)
class Counters:
    """Requests by outcome, shown on /healthz. Not frozen because it is the one piece of state the
    server mutates; every increment happens on the event loop, so no lock is needed."""

    served: int = 0  # answered with a recorded text
    unknown: int = 0  # key not in the eval set
    unanswered: int = 0  # key known, but the item has no text for `answer`
    invalid: int = 0  # not JSON, or the conversation field is missing

    def as_dict(self) -> dict[str, int]:
        return {"served": self.served, "unknown": self.unknown, "unanswered": self.unanswered,
                "invalid": self.invalid}


class ReplayApp:
    """The ASGI app `replay_app` returns; `counters` is public so tests can assert on it directly."""

    def __init__(self, evalset: EvalSet, answer: str) -> None:
        self.evalset = evalset
        self.answer = answer
        self.counters = Counters()
        self.recorded: dict[str, Recorded] = {}
        for item in evalset.items:
            # Recompute rather than trust item.key: the server must agree with what a live request
            # hashes to, even for an eval set built by an older version of request_key.
            key = request_key(item.request)
            if key not in self.recorded:  # first item wins; versions dedupe by key anyway
                self.recorded[key] = Recorded(key, choose_answer(item.target, item.outputs, answer,
                                                                  item.meta.get("production") or "production"))
        names = [evalset.ref] + [str(i.request["model"]) for i in evalset.items if i.request.get("model")]
        self.models = list(dict.fromkeys(names))  # order kept, duplicates dropped

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # no websockets here
        method, path = scope["method"], scope["path"].rstrip("/")
        if method == "GET" and path == "/healthz":
            await send_json(send, 200, {"status": "ok", "evalset": self.evalset.ref, "items": len(self.evalset.items),
                                        "answer": self.answer, **self.counters.as_dict()})
        elif method == "GET" and path == "/v1/models":
            await send_json(send, 200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": int(self.evalset.created_at), "owned_by": "shadoweval-replay"}
                for m in self.models]})
        elif method == "POST" and path in ("/v1/chat/completions", "/v1/responses"):
            await self._complete(path, await read_body(receive), send)
        else:
            await send_json(send, 404, _error(f"Invalid URL ({method} {scope['path']})", "unknown_url"))

    async def _complete(self, path: str, body: bytes, send: Any) -> None:
        chat = path == "/v1/chat/completions"
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            self.counters.invalid += 1
            await send_json(send, 400, _error(f"We could not parse the JSON body of your request: {e}", "invalid_json"))
            return
        if not isinstance(data, dict):
            self.counters.invalid += 1
            await send_json(send, 400, _error("The request body must be a JSON object.", "invalid_json"))
            return
        field_name = "messages" if chat else "input"
        if data.get(field_name) is None:
            self.counters.invalid += 1
            message = f"Missing required parameter: '{field_name}'."
            await send_json(send, 400, _error(message, "missing_required_parameter", param=field_name))
            return
        if not chat and data.get("stream"):
            # Checked before the lookup so the caller learns about the unsupported mode even when the
            # request is also unknown: that is the error they can act on first.
            self.counters.invalid += 1
            await send_json(send, 400, _error("Streaming is not supported for /v1/responses by the shadoweval "
                                              "replay server; send stream=false.", "unsupported_value", param="stream"))
            return
        key = request_key(data)
        headers = [(KEY_HEADER, key.encode())]
        found = self.recorded.get(key)
        if found is None:
            self.counters.unknown += 1
            message = (f"No recorded answer for this request (key {key}). "
                       f"The eval set {self.evalset.ref} has {len(self.evalset.items)} items.")
            await send_json(send, 404, _error(message, "not_found"), headers)
            return
        if found.text is None:
            self.counters.unanswered += 1
            message = (f"The eval set {self.evalset.ref} has this request (key {key}) "
                       f"but no recorded {self.answer!r} answer for it.")
            await send_json(send, 404, _error(message, "not_found"), headers)
            return
        self.counters.served += 1
        model = str(data.get("model") or self.evalset.ref)
        if not chat:
            await send_json(send, 200, _response(key, model, data, found.text), headers)
        elif data.get("stream"):
            include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
            await _send_sse(send, _chunks(key, model, data, found.text, include_usage), headers)
        else:
            await send_json(send, 200, _completion(key, model, data, found.text), headers)


def replay_app(evalset: EvalSet, *, answer: str = "target") -> ReplayApp:
    """An OpenAI-compatible ASGI app answering `evalset`'s requests with recorded text.

    `answer` is "target" (the item's target, else production's output), "production", or any model
    name in the items' `outputs`. A name no item has raises ValueError here, since a typo would
    otherwise show up only as a 404 on every request."""
    known = {name for item in evalset.items for name in item.outputs}
    if answer not in ("target", "production") and answer not in known:
        raise ValueError(f"answer={answer!r} is not 'target', 'production' or a model in the eval set's outputs "
                         f"({', '.join(sorted(known)) or 'none'})")
    return ReplayApp(evalset, answer)


def choose_answer(target: str | None, outputs: dict[str, str], answer: str, production: str = "production") -> str | None:
    """The recorded text to answer with; `production` is the name production's answer has in this
    item (imported items name it by model, `meta["production"]`)."""
    if answer == "target":
        return target if target is not None else outputs.get(production)
    return outputs.get(production if answer == "production" else answer)


def _words(value: Any) -> int:
    """Rough token count: whitespace-separated words in a message, content part or input. Real
    tokenizers differ by model; a replay only needs usage to be present and plausible."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return _words(value.get("content")) + _words(value.get("text"))
    return 0


def _chat_usage(data: dict[str, Any], text: str) -> dict[str, int]:
    prompt, completion = _words(data.get("messages")), _words(text)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _completion(key: str, model: str, data: dict[str, Any], text: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-replay-{key}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": _chat_usage(data, text)}


def _chunks(key: str, model: str, data: dict[str, Any], text: str, include_usage: bool) -> list[dict[str, Any]]:
    """The chunk sequence the official client expects: role, content pieces, finish, then usage (with
    empty choices, as OpenAI sends it) when the request asked for it."""
    base = {"id": f"chatcmpl-replay-{key}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model, "system_fingerprint": None}
    # With include_usage OpenAI sends "usage": null on every chunk but the last; the client accepts both.
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in _WORD_START.split(text) if piece]
    events.append(chunk({}, "stop"))
    if include_usage:
        events.append({**base, "choices": [], "usage": _chat_usage(data, text)})
    return events


def _response(key: str, model: str, data: dict[str, Any], text: str) -> dict[str, Any]:
    """A completed Responses API object with one assistant message, carrying the fields the API
    always sends so that typed clients find what they expect."""
    prompt, completion = _words(data.get("input")) + _words(data.get("instructions")), _words(text)
    return {"id": f"resp_replay_{key}", "object": "response", "created_at": int(time.time()), "status": "completed",
            "model": model, "error": None, "incomplete_details": None, "instructions": data.get("instructions"),
            "metadata": data.get("metadata") or {}, "parallel_tool_calls": True, "temperature": data.get("temperature"),
            "top_p": data.get("top_p"), "tool_choice": "auto", "tools": [],
            "output": [{"type": "message", "id": f"msg_replay_{key}", "status": "completed", "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
                      "total_tokens": prompt + completion}}


def _error(message: str, code: str, *, param: str | None = None) -> dict[str, Any]:
    return error_json(message, "invalid_request_error", code, param)


async def _send_sse(send: Any, events: list[dict[str, Any]], headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [*_SSE_HEADERS, *headers]})
    for event in events:
        await send({"type": "http.response.body", "body": b"data: " + orjson.dumps(event) + b"\n\n", "more_body": True})
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
