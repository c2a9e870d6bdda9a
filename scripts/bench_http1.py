"""Client CPU per request: shadoweval.proxy.http1.Pool against httpx.AsyncClient.

Sequential small POSTs (a chat-completion-sized request and answer) to a local uvicorn server that
runs in a separate process, so time.process_time() here counts only the client and its event loop.

    .venv/bin/python scripts/bench_http1.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import uvloop

from shadoweval.proxy.http1 import Pool

ANSWER = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "The capital of France is Paris. " * 8}}],
    "usage": {"prompt_tokens": 25, "completion_tokens": 64, "total_tokens": 89},
}).encode()
REQUEST = json.dumps({
    "model": "gpt-4o-mini", "temperature": 0,
    "messages": [{"role": "system", "content": "You answer in one sentence."},
                 {"role": "user", "content": "What is the capital of France? " * 6}],
}).encode()
HEADERS = [(b"authorization", b"Bearer sk-bench-not-a-key"), (b"content-type", b"application/json"),
           (b"accept", b"application/json"), (b"user-agent", b"bench/1.0")]


async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
              send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(ANSWER))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", access_log=False,
                loop="uvloop", http="httptools", ws="none")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("the benchmark server did not start")


async def measure(one: Callable[[], Awaitable[bytes]], requests: int) -> tuple[float, float]:
    for _ in range(200):  # warm up: connection, caches, lazy imports
        assert await one() == ANSWER
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(requests):
        await one()
    return (time.process_time() - cpu) / requests * 1e6, (time.perf_counter() - wall) / requests * 1e6


class _Floor(asyncio.Protocol):
    """Writes a canned request and waits for the canned answer: the loop and syscalls alone."""

    def __init__(self) -> None:
        self.received = b""
        self.done: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        self.received += data
        if self.received.endswith(ANSWER) and self.done is not None:
            self.received = b""
            self.done.set_result(None)


async def bench_floor(base: str, requests: int) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    host, port = base.removeprefix("http://").split(":")
    transport, protocol = await loop.create_connection(_Floor, host, int(port))
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n\r\n"
    wire = head % (host.encode(), len(REQUEST)) + REQUEST

    async def one() -> bytes:
        protocol.done = loop.create_future()
        transport.write(wire)
        await protocol.done
        return ANSWER

    try:
        return await measure(one, requests)
    finally:
        transport.close()


async def bench_pool(base: str, requests: int) -> tuple[float, float]:
    async with Pool(base) as pool:
        async def one() -> bytes:
            response = await pool.request("POST", "/v1/chat/completions", HEADERS, REQUEST)
            return await response.read()

        return await measure(one, requests)


async def bench_httpx(base: str, requests: int) -> tuple[float, float]:
    headers = [(name.decode(), value.decode()) for name, value in HEADERS]
    async with httpx.AsyncClient(base_url=base) as client:
        async def one() -> bytes:
            return (await client.post("/v1/chat/completions", content=REQUEST, headers=headers)).content

        return await measure(one, requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        wait_until_listening(port)
        base = f"http://127.0.0.1:{port}"
        print(f"{args.requests} sequential POSTs, {len(REQUEST)} B up, {len(ANSWER)} B down; per request"
              " (raw floor: a bare Protocol writing canned bytes, i.e. the loop and syscalls alone):")
        for loop_name, runner in (("asyncio", asyncio.run), ("uvloop", uvloop.run)):
            for client_name, bench in (("raw floor", bench_floor), ("http1.Pool", bench_pool),
                                       ("httpx", bench_httpx)):
                cpu, wall = runner(bench(base, args.requests))
                print(f"  {loop_name:8} {client_name:11} client CPU {cpu:7.1f} us   wall {wall:7.1f} us")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
