"""A scripted OpenAI-compatible model server, and a way to run any ASGI app on 127.0.0.1.

It stands in for production and candidates in the built-in demo and in the tests: it answers
chat completions and the Responses API, streaming or not, with tool calls, usage and scripted
misbehaviour (latency, hangs, HTTP errors, garbage, broken streams). Behaviour is set per server
and can be overridden per request with `x-mock-*` headers, so one test can make production fail
without restarting anything. Every request it received is kept in `requests` for assertions.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn

from shadoweval.core.messages import last_user_text
from shadoweval.proxy.asgi import lifespan, read_body, send_json
from shadoweval.proxy.asgi import send_raw as _raw

Answer = Callable[[dict[str, Any]], str]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any


@dataclass
class MockLLM:
    name: str = "mock"
    answer: Answer | None = None
    latency_s: float = 0.0  # before the first byte
    chunk_delay_s: float = 0.0  # between stream chunks
    behaviour: str = "ok"  # ok | hang | garbage | error500 | error400 | error429 | break_stream | not_json
    requests: list[Received] = field(default_factory=list)

    def text_for(self, request: dict[str, Any]) -> str:
        if self.answer is not None:
            return self.answer(request)
        return f"{self.name} says: {last_user_text(request)}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        body = await read_body(receive)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            data = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            data = None
        path = scope["path"]
        self.requests.append(Received(path, headers, body, data))
        behaviour = headers.get("x-mock-behaviour", self.behaviour)
        latency = float(headers.get("x-mock-latency-ms", self.latency_s * 1000)) / 1000
        if latency:
            await asyncio.sleep(latency)
        if behaviour == "hang":
            await asyncio.sleep(3600)
        if behaviour.startswith("error"):
            status = int(behaviour[5:] or 500)
            await send_json(send, status, {"error": {"message": f"{self.name} failed on purpose", "type": "server_error"
                                                 if status >= 500 else "invalid_request_error", "param": None,
                                                 "code": f"mock_{status}"}})
            return
        if behaviour == "garbage":
            await _raw(send, 200, b"application/json", b"<html>this is not json{{")
            return
        if scope["method"] == "GET" and path.endswith("/models"):
            await send_json(send, 200, {"object": "list", "data": [{"id": self.name, "object": "model", "created": 0,
                                                                 "owned_by": "mock"}]})
            return
        if data is None or not isinstance(data, dict):
            await send_json(send, 400, {"error": {"message": "body is not JSON", "type": "invalid_request_error",
                                              "param": None, "code": None}})
            return
        if path.endswith("/embeddings"):
            inputs = data.get("input")
            n = len(inputs) if isinstance(inputs, list) else 1
            await send_json(send, 200, {"object": "list", "model": data.get("model"), "usage": {"prompt_tokens": n, "total_tokens": n},
                                    "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(n)]})
            return
        if path.endswith("/responses"):
            await self._responses(send, data, behaviour)
            return
        if path.endswith("/completions") and not path.endswith("/chat/completions"):
            text = self.text_for({"messages": [{"role": "user", "content": str(data.get("prompt", ""))}]})
            await send_json(send, 200, {"id": "cmpl-mock", "object": "text_completion", "created": int(time.time()),
                                    "model": data.get("model"), "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]})
            return
        await self._chat(send, data, behaviour)

    async def _chat(self, send: Any, data: dict[str, Any], behaviour: str) -> None:
        model = data.get("model") or self.name
        text = self.text_for(data)
        tool_call = _tool_call(data)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in data.get("messages") or [] if isinstance(m, dict))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                 "total_tokens": prompt_tokens + len(text.split())}
        created = int(time.time())
        if not data.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": None if tool_call else text}
            if tool_call:
                message["tool_calls"] = [tool_call]
            await send_json(send, 200, {"id": "chatcmpl-mock", "object": "chat.completion", "created": created,
                                    "model": model, "system_fingerprint": "fp_mock",
                                    "choices": [{"index": 0, "message": message, "logprobs": None,
                                                 "finish_reason": "tool_calls" if tool_call else "stop"}],
                                    "usage": usage})
            return
        base = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_mock"}
        events: list[dict[str, Any]] = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                              "finish_reason": None}]}]
        if tool_call:
            events.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, **tool_call}]},
                                                "finish_reason": None}]})
        else:
            words = text.split(" ")
            for i, w in enumerate(words):
                events.append({**base, "choices": [{"index": 0, "delta": {"content": w if i == 0 else " " + w},
                                                    "finish_reason": None}]})
        events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls" if tool_call else "stop"}]})
        if (data.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "choices": [], "usage": usage})
        await self._sse(send, [b"data: " + orjson.dumps(e) + b"\n\n" for e in events] + [b"data: [DONE]\n\n"], behaviour)

    async def _responses(self, send: Any, data: dict[str, Any], behaviour: str) -> None:
        text = self.text_for(data)
        model = data.get("model") or self.name
        usage = {"input_tokens": len(last_user_text(data).split()), "output_tokens": len(text.split())}
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        final = {"id": "resp_mock", "object": "response", "created_at": int(time.time()), "status": "completed",
                 "model": model, "output": [{"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
                                             "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                 "usage": usage}
        if not data.get("stream"):
            await send_json(send, 200, final)
            return
        events: list[dict[str, Any]] = [{"type": "response.created", "response": {**final, "status": "in_progress", "output": []}}]
        for i, w in enumerate(text.split(" ")):
            events.append({"type": "response.output_text.delta", "item_id": "msg_mock", "output_index": 0,
                           "content_index": 0, "delta": w if i == 0 else " " + w})
        events.append({"type": "response.completed", "response": final})
        await self._sse(send, [b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events],
                        behaviour)

    async def _sse(self, send: Any, chunks: list[bytes], behaviour: str) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]})
        for i, chunk in enumerate(chunks):
            if behaviour == "break_stream" and i == len(chunks) // 2:
                raise RuntimeError("mock stream broken on purpose")  # uvicorn closes the connection mid-body
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
        await send({"type": "http.response.body", "body": b""})


def _tool_call(data: dict[str, Any]) -> dict[str, Any] | None:
    tools = data.get("tools")
    if not tools or data.get("tool_choice") == "none":
        return None
    fn = (tools[0] or {}).get("function") or {}
    args = orjson.dumps({"query": last_user_text(data)}).decode()
    return {"id": "call_mock_1", "type": "function", "function": {"name": fn.get("name", "tool"), "arguments": args}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadedServer:
    """uvicorn serving an ASGI app on 127.0.0.1 in a background thread (demo and tests)."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        self.config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                     access_log=False, lifespan="on", timeout_graceful_shutdown=2, **config)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadedServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 20.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.01)

    def stop(self, timeout: float = 20.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
