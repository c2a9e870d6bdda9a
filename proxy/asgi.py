"""Small helpers for answering raw ASGI scopes: a lifespan that has nothing to do, reading a request
body, sending a whole JSON or bytes response. Used by the mock model server (cli/mockllm.py) and the
eval-set replay server (datasets/evalsets/replay_server.py); kept in proxy/ so both import them one way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson


async def lifespan(receive: Any, send: Any) -> None:
    """Answer an ASGI lifespan scope for a server that has nothing to start or stop."""
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def send_json(send: Any, status: int, obj: Any, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send_raw(send, status, b"application/json", orjson.dumps(obj), headers)


async def send_raw(send: Any, status: int, ctype: bytes, body: bytes,
                   headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})
