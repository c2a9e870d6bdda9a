"""A scripted judge model: OpenAI chat completions whose replies a test computes from the prompt.

Served by uvicorn on 127.0.0.1 (`ThreadedServer`) and reached through litellm like a real judge
model. Every reply reports the same token usage, so every call costs the same known amount at
litellm's price for the model the test names. `hang` holds the request until the client gives
up and disconnects; `error500` fails it. `in_flight_max` records how many calls overlapped.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from shadoweval.proxy.asgi import lifespan, read_body, send_json

Messages = list[dict[str, Any]]


@dataclass
class MockJudge:
    reply: Callable[[Messages], str] = lambda messages: "{}"
    behaviour: str = "ok"  # ok | hang | error500
    latency_s: float = 0.0
    prompt_tokens: int = 1000
    completion_tokens: int = 100
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    in_flight_max: int = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        data = orjson.loads(await read_body(receive))
        self.requests.append(data)
        self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        self.in_flight += 1
        self.in_flight_max = max(self.in_flight_max, self.in_flight)
        try:
            if self.behaviour == "hang":
                # until the client gives up: its disconnect is the next thing received
                await asyncio.wait_for(receive(), 30)
                return
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            if self.behaviour == "error500":
                await send_json(send, 500, {"error": {"message": "judge failed on purpose", "type": "server_error",
                                                  "param": None, "code": None}})
                return
            content = self.reply(data["messages"])
        finally:
            self.in_flight -= 1
        await send_json(send, 200, {
            "id": "chatcmpl-judge", "object": "chat.completion", "created": int(time.time()), "model": data["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                      "total_tokens": self.prompt_tokens + self.completion_tokens},
        })


def prompt_of(messages: Messages) -> str:
    """The judge prompt proper: the first user message (later ones are corrections)."""
    return next(m["content"] for m in messages if m["role"] == "user")


_NUMBERED = re.compile(r"^(\d+)\. (.*?)(?:  \[cites: ([^\]]*)\])?$", re.M)


def numbered(prompt: str, after: str) -> list[tuple[int, str, list[str]]]:
    """The numbered lines of the prompt's section headed `after`: (number, text, cited passages)."""
    section = prompt.split(after, 1)[1].split("\n\n", 1)[0]
    return [(int(m.group(1)), m.group(2), [c.strip() for c in (m.group(3) or "").split(",") if c.strip() != "none"])
            for m in _NUMBERED.finditer(section)]


def between(prompt: str, tag: str) -> str:
    return prompt.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0].strip()
