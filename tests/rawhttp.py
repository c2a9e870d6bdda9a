"""Raw-socket HTTP for tests that must send bytes no client library would (un-normalized paths,
oversized or malformed heads), and a recording upstream that keeps every request line it receives."""

from __future__ import annotations

import select
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from shadoweval.cli.mockllm import ThreadedServer
from shadoweval.core.settings import load_settings
from shadoweval.proxy.server import limited_protocol

UPSTREAM_BODY = b'{"object":"list","data":[],"upstream":"recording"}'


class Recording:
    """Request lines and headers the upstream received, in order."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, list[tuple[bytes, bytes]]]] = []
        self.lock = threading.Lock()

    def __repr__(self) -> str:  # short: hypothesis prints the fixture's value with each failure
        return f"Recording({len(self.requests)} requests)"

    @property
    def targets(self) -> list[bytes]:
        with self.lock:
            return [line.split(b" ")[1] for line, _ in self.requests]


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            line = self.rfile.readline(1 << 20)
            if not line:
                return
            headers = []
            length = 0
            while True:
                h = self.rfile.readline(1 << 20)
                if h in (b"\r\n", b""):
                    break
                name, _, value = h.partition(b":")
                headers.append((name.strip().lower(), value.strip()))
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length:
                self.rfile.read(length)
            rec: Recording = self.server.recording  # type: ignore[attr-defined]
            with rec.lock:
                rec.requests.append((line.rstrip(b"\r\n"), headers))
            self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(UPSTREAM_BODY), UPSTREAM_BODY))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def recording_upstream() -> Iterator[tuple[str, Recording]]:
    """A tiny HTTP/1.1 server on 127.0.0.1 answering 200 to anything and recording each request."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.recording = Recording()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.recording  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def limited_proxy(tmp_path: Path, production_base_url: str, *, env: dict[str, str] | None = None,
                  server: dict[str, Any] | None = None, **sections: Any) -> Iterator[tuple[int, Any]]:
    """The proxy (create_app) served by uvicorn with the protocol `shadoweval serve` uses."""
    from shadoweval.proxy.app import create_app

    data: dict[str, Any] = {"production": {"base_url": production_base_url, **sections.pop("production", {})},
                            "store": {"path": str(tmp_path / "shadow.db"), "flush_interval_ms": 10},
                            "server": server or {}, **sections}
    settings = load_settings(None, overrides=data, env=env or {})
    app = create_app(settings)
    with ThreadedServer(app, http=limited_protocol(settings.server)) as srv:
        yield srv.port, app


@dataclass
class RawResponse:
    status: int | None  # None: the connection closed without an answer
    headers: dict[bytes, bytes]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def parse_response(data: bytes) -> RawResponse:
    if not data:
        return RawResponse(None, {}, b"")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for h in lines[1:]:
        name, _, value = h.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers:
        body = body[: int(headers[b"content-length"])]
    return RawResponse(status, headers, body)


def exchange(port: int, data: bytes, *, timeout: float = 10.0, chunk: int = 65536) -> RawResponse:
    """Send `data` on a fresh connection (stopping early once an answer arrives), read until the
    server closes or `timeout` passes, and parse the first response."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        for i in range(0, len(data), chunk):
            if select.select([sock], [], [], 0)[0]:
                break  # answered already (e.g. 431 before the head ended)
            try:
                sock.sendall(data[i:i + chunk])
            except (BrokenPipeError, ConnectionResetError):
                break
        return parse_response(read_all(sock, timeout))


def read_all(sock: socket.socket, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    got = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            piece = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not piece:
            break
        got += piece
        response = parse_response(got)
        if b"content-length" in response.headers and len(got.partition(b"\r\n\r\n")[2]) >= int(
                response.headers[b"content-length"]):
            break
    return got


def is_openai_error(response: RawResponse) -> bool:
    if not response.headers.get(b"content-type", b"").startswith(b"application/json"):
        return False
    try:
        err = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(err, dict) and set(err) == {"message", "type", "param", "code"} and bool(err["message"])
