"""The upstream HTTP/1.1 client against real servers on 127.0.0.1, on both asyncio and uvloop.

Well-behaved answers come from uvicorn running a raw ASGI app in a thread; misbehaving servers
(garbage, silence, hanging up mid-body) are plain asyncio.start_server handlers in the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import uvicorn
import uvloop

from shadoweval.proxy.http1 import ConnectError, Pool, ProtocolError, UpstreamTimeout

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Run = Callable[[Coroutine[Any, Any, Any]], Any]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class MockUpstream:
    """A small ASGI app that records, per test tag, which client connection each request came on."""

    def __init__(self) -> None:
        self.ports: dict[str, list[int]] = defaultdict(list)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.max_in_flight: dict[str, int] = defaultdict(int)
        self.events: dict[str, asyncio.Event] = {}
        self.loop: asyncio.AbstractEventLoop | None = None

    def event(self, name: str) -> asyncio.Event:
        return self.events.setdefault(name, asyncio.Event())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        self.loop = asyncio.get_running_loop()
        query = dict(parse_qsl(scope["query_string"].decode()))
        tag = query.get("tag", "")
        self.ports[tag].append(scope["client"][1])
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        path = scope["path"]
        if path == "/echo":
            await self.respond(send, 200, body, [(b"x-method", scope["method"].encode())])
        elif path == "/headers":
            seen = [[name.decode(), value.decode()] for name, value in scope["headers"]]
            await self.respond(send, 200, json.dumps(seen).encode(), [(b"x-dup", b"1"), (b"x-dup", b"2")])
        elif path == "/bytes":
            await self.respond(send, 200, b"x" * int(query["n"]))
        elif path == "/empty":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/slow":
            self.in_flight[tag] += 1
            self.max_in_flight[tag] = max(self.max_in_flight[tag], self.in_flight[tag])
            await asyncio.sleep(0.03)
            self.in_flight[tag] -= 1
            await self.respond(send, 200, b"done")
        elif path == "/stream":  # chunked; piece i+1 only after the test has seen piece i
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for i in range(int(query["n"])):
                await send({"type": "http.response.body", "body": b"piece-%d" % i, "more_body": True})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.event(f"{tag}-{i}").wait(), 5)
            await send({"type": "http.response.body", "body": b""})
        elif path == "/flood":  # chunked, as fast as the client lets it
            await send({"type": "http.response.start", "status": 200, "headers": []})
            piece = os.urandom(64 * 1024)
            for _ in range(int(query["n"]) // len(piece)):
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await self.respond(send, 404, b"")

    @staticmethod
    async def respond(send: Send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        length = [(b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": length + list(headers)})
        await send({"type": "http.response.body", "body": body})


class ServerHandle:
    def __init__(self, app: MockUpstream, port: int) -> None:
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{port}/v1"

    def set_event(self, name: str) -> None:
        assert self.app.loop is not None
        self.app.loop.call_soon_threadsafe(lambda: self.app.event(name).set())


@pytest.fixture(scope="module")
def server() -> Iterator[ServerHandle]:
    app = MockUpstream()
    # Port 0 and uvicorn's own bind: a socket passed in by hand would miss TCP_NODELAY (asyncio only
    # sets it when proto is IPPROTO_TCP), and Nagle would add 40 ms to every response.
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning",
                            access_log=False, loop="asyncio", http="httptools", ws="none")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield ServerHandle(app, uv.servers[0].sockets[0].getsockname()[1])
    uv.should_exit = True
    thread.join(10)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coro)

    return run


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request's head from a raw connection, its body skipped; None once the client is gone."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                await reader.readexactly(int(line.split(b":")[1]))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return head


@contextlib.asynccontextmanager
async def raw_server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[tuple[str, list[int]]]:
    """Serve handler on a free port; yields the base URL and a one-item list counting connections."""
    connections = [0]
    handlers: set[asyncio.Task[Any]] = set()

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0, ssl=tls)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections
    finally:
        server.close()
        await server.wait_closed()
        if handlers:  # they end when the client hangs up; let them, rather than cancel them noisily
            await asyncio.wait(handlers, timeout=2)


def answer_once(response: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is not None:
            writer.write(response)
            await writer.drain()

    return handler


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1, made by the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


# Well-behaved servers


def test_get_and_post(run: Run, server: ServerHandle, tag: str) -> None:
    async def main() -> None:
        async with Pool(server.url) as pool:
            assert (pool.base_path, pool.host_header) == ("/v1", f"127.0.0.1:{server.port}".encode())
            got = await pool.request("GET", f"/echo?tag={tag}", [])
            assert (got.status, got.reason, await got.read()) == (200, b"OK", b"")
            assert (b"x-method", b"GET") in got.headers
            posted = await pool.request("POST", f"/echo?tag={tag}", [(b"Content-Type", b"application/json")],
                                        b'{"model": "m"}')
            assert (posted.status, await posted.read()) == (200, b'{"model": "m"}')
            assert (b"content-length", b"14") in posted.headers

    run(main())


def test_request_headers_are_forwarded_and_framing_recomputed(run: Run, server: ServerHandle) -> None:
    async def main() -> None:
        async with Pool(server.url) as pool:
            given = [(b"Authorization", b"Bearer sk-test"), (b"Content-Length", b"999"), (b"Connection", b"close"),
                     (b"Transfer-Encoding", b"chunked"), (b"X-A", b"1"), (b"X-A", b"2")]
            response = await pool.request("POST", "/headers", given, b"abc")
            seen = json.loads(await response.read())
            assert seen == [["authorization", "Bearer sk-test"], ["x-a", "1"], ["x-a", "2"],
                            ["host", f"127.0.0.1:{server.port}"], ["content-length", "3"]]
            assert [h for h in response.headers if h[0] == b"x-dup"] == [(b"x-dup", b"1"), (b"x-dup", b"2")]
            response = await pool.request("GET", "/headers", [(b"Host", b"api.example.test")])
            assert ["host", "api.example.test"] in json.loads(await response.read())
            with pytest.raises(ValueError):
                await pool.request("GET", "/headers", [(b"x-evil", b"1\r\nx-injected: 2")])

    run(main())


def test_large_bodies_both_ways(run: Run, server: ServerHandle) -> None:
    payload = os.urandom(6 * 1024 * 1024)

    async def main() -> None:
        async with Pool(server.url) as pool:
            echoed = await pool.request("POST", "/echo", [], payload)
            assert await echoed.read() == payload
            response = await pool.request("GET", f"/bytes?n={len(payload)}", [])
            pieces = [piece async for piece in response]
            assert len(pieces) > 1 and b"".join(pieces) == b"x" * len(payload)

    run(main())


def test_streamed_pieces_arrive_as_they_are_sent(run: Run, server: ServerHandle, tag: str) -> None:
    async def main() -> None:
        async with Pool(server.url, read_timeout=3) as pool:
            response = await pool.request("POST", f"/stream?tag={tag}&n=3", [], b"{}")
            assert (response.status, (b"transfer-encoding", b"chunked") in response.headers) == (200, True)
            pieces = []
            async for piece in response:  # the server waits for each set_event, so buffering would hang
                pieces.append(piece)
                server.set_event(f"{tag}-{len(pieces) - 1}")
            assert pieces == [b"piece-0", b"piece-1", b"piece-2"]

    run(main())


def test_slow_consumer_pauses_reading(run: Run, server: ServerHandle) -> None:
    size = 16 * 1024 * 1024

    async def main() -> None:
        async with Pool(server.url) as pool:
            response = await pool.request("GET", f"/flood?n={size}", [])
            await asyncio.sleep(0.3)
            # The unread backlog stops near 1 MiB (plus one socket read) instead of growing to 16 MiB.
            assert response._buffered <= 1024 * 1024 + 256 * 1024
            assert len(await response.read()) == size

    run(main())


def test_keep_alive_reuses_one_connection(run: Run, server: ServerHandle, tag: str) -> None:
    async def main() -> None:
        async with Pool(server.url) as pool:
            for i in range(20):
                response = await pool.request("POST", f"/echo?tag={tag}", [], b"%d" % i)
                assert await response.read() == b"%d" % i

    run(main())
    assert len(server.app.ports[tag]) == 20 and len(set(server.app.ports[tag])) == 1


def test_no_more_than_max_connections(run: Run, server: ServerHandle, tag: str) -> None:
    async def one(pool: Pool) -> bytes:
        response = await pool.request("GET", f"/slow?tag={tag}", [])
        return await response.read()

    async def main() -> None:
        async with Pool(server.url, max_connections=8) as pool:
            assert await asyncio.gather(*(one(pool) for _ in range(50))) == [b"done"] * 50

    run(main())
    assert len(server.app.ports[tag]) == 50
    assert len(set(server.app.ports[tag])) <= 8
    assert 1 < server.app.max_in_flight[tag] <= 8


def test_head_and_204_have_no_body_and_keep_the_connection(run: Run, server: ServerHandle, tag: str) -> None:
    async def main() -> None:
        async with Pool(server.url) as pool:
            head = await pool.request("HEAD", f"/bytes?n=10&tag={tag}", [])
            assert (head.status, (b"content-length", b"10") in head.headers, await head.read()) == (200, True, b"")
            empty = await pool.request("DELETE", f"/empty?tag={tag}", [])
            assert (empty.status, await empty.read()) == (204, b"")
            after = await pool.request("POST", f"/echo?tag={tag}", [], b"still in sync")
            assert await after.read() == b"still in sync"

    run(main())
    assert len(set(server.app.ports[tag])) == 1


def test_tls(run: Run, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")

    async def main() -> None:
        async with raw_server(keep_answering, server_side) as (url, connections):
            async with Pool(url, ssl_context=trusting) as pool:
                for _ in range(3):
                    response = await pool.request("POST", "/v1/chat/completions", [], b"{}")
                    assert await response.read() == b"secret"
            assert connections == [1]
            async with Pool(url) as pool:  # the system's trust store does not know this certificate
                with pytest.raises(ConnectError):
                    await pool.request("GET", "/", [])

    run(main())


def test_interim_responses_are_skipped(run: Run) -> None:
    answer = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
              b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Final: yes\r\n\r\nok")

    async def main() -> None:
        async with raw_server(answer_once(answer)) as (url, _), Pool(url) as pool:
            response = await pool.request("POST", "/", [], b"{}")
            assert (response.status, response.reason) == (201, b"Created")
            assert response.headers == [(b"content-length", b"2"), (b"x-final", b"yes")]
            assert await response.read() == b"ok"

    run(main())


# Failures and misbehaving servers


def test_connection_refused(run: Run) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the request: nothing listens there

    async def main() -> None:
        async with Pool(f"http://127.0.0.1:{port}") as pool:
            with pytest.raises(ConnectError):
                await pool.request("GET", "/", [])

    run(main())


def test_silent_server_times_out(run: Run) -> None:
    async def answer_then_go_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await reader.read()  # until the client gives up

    async def main() -> None:
        async with raw_server(answer_then_go_silent) as (url, _), Pool(url, read_timeout=60) as pool:
            first = await pool.request("GET", "/", [])
            assert await first.read() == b"ok"
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout):  # on the same connection, whose last wait allowed 60 s
                await pool.request("GET", "/", [], read_timeout=0.2)
            assert 0.15 < time.monotonic() - started < 2

    run(main())


def test_stalled_body_times_out(run: Run) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        await reader.read()

    async def main() -> None:
        async with raw_server(stall) as (url, _), Pool(url, read_timeout=0.2) as pool:
            response = await pool.request("GET", "/", [])
            pieces = []
            with pytest.raises(UpstreamTimeout):
                async for piece in response:
                    pieces.append(piece)
            assert pieces == [b"abc"]

    run(main())


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
], ids=["content-length", "chunked"])
def test_server_closing_mid_body(run: Run, answer: bytes) -> None:
    async def main() -> None:
        async with raw_server(answer_once(answer)) as (url, _), Pool(url) as pool:
            response = await pool.request("GET", "/", [])
            assert response.status == 200
            pieces = []
            with pytest.raises(ProtocolError):
                async for piece in response:
                    pieces.append(piece)
            assert pieces == [b"abc"]

    run(main())


@pytest.mark.parametrize("answer", [b"", b"SSH-2.0-OpenSSH_9.6\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Le"],
                         ids=["nothing", "garbage", "truncated-head"])
def test_no_or_garbage_response(run: Run, answer: bytes) -> None:
    async def main() -> None:
        async with raw_server(answer_once(answer)) as (url, connections), Pool(url) as pool:
            with pytest.raises(ProtocolError):
                await pool.request("GET", "/", [])
            assert connections == [1]  # a fresh connection is not retried

    run(main())


@pytest.mark.parametrize("version", [b"HTTP/1.0", b"HTTP/1.1"], ids=["http-1.0", "http-1.1"])
def test_body_delimited_by_close(run: Run, version: bytes) -> None:
    answer = version + b" 200 OK\r\nContent-Type: text/plain\r\n\r\nhello world"

    async def main() -> None:
        async with raw_server(answer_once(answer)) as (url, connections), Pool(url) as pool:
            for _ in range(2):
                response = await pool.request("GET", "/", [])
                assert response.headers == [(b"content-type", b"text/plain")]
                assert await response.read() == b"hello world"
            assert connections == [2]

    run(main())


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye",
    b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nbye",
], ids=["connection-close", "http-1.0"])
def test_connection_close_response_is_not_reused(run: Run, answer: bytes) -> None:
    async def close_said_not_done(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is not None:
            writer.write(answer)
            await reader.read()  # leaves closing to the client; a reused connection would hang here

    async def main() -> None:
        async with raw_server(close_said_not_done) as (url, connections), Pool(url, read_timeout=2) as pool:
            for _ in range(2):
                response = await pool.request("GET", "/", [])
                assert (response.status, await response.read()) == (200, b"bye")
            assert connections == [2]

    run(main())


def test_idle_connection_closed_by_server_is_retried(run: Run) -> None:
    async def once_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await read_request(reader)  # the next request on this connection: hang up without a word

    async def main() -> None:
        async with raw_server(once_per_connection) as (url, connections), Pool(url) as pool:
            for _ in range(3):
                response = await pool.request("POST", "/", [], b"{}")
                assert await response.read() == b"ok"
            assert connections == [3]

    run(main())


def test_server_closing_right_after_each_response(run: Run) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    async def main() -> None:
        async with raw_server(answer_once(answer)) as (url, connections), Pool(url) as pool:
            for i in range(6):
                response = await pool.request("GET", "/", [])
                assert await response.read() == b"ok"
                if i % 2:
                    await asyncio.sleep(0.01)  # sometimes the client has seen the close, sometimes not
            assert connections == [6]

    run(main())


def test_aclose_before_the_end_closes_the_connection(run: Run) -> None:
    async def main() -> None:
        hung_up = asyncio.Event()

        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if await read_request(reader) is None:
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nfirst")
            await reader.read()
            hung_up.set()

        async with raw_server(endless) as (url, connections), Pool(url) as pool:
            response = await pool.request("GET", "/", [])
            assert await response.__anext__() == b"first"
            await response.aclose()
            await response.aclose()
            await asyncio.wait_for(hung_up.wait(), 2)
            with pytest.raises(ProtocolError):
                await response.read()
            second = await pool.request("GET", "/", [])
            assert await second.__anext__() == b"first"
            await second.aclose()
            assert connections == [2]

    run(main())
