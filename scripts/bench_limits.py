#!/usr/bin/env python3
"""Memory of `shadoweval serve` while clients try to send oversized request heads.

Starts `shadoweval serve` (production pointed at a closed local port: nothing here should reach
it), prints its RSS, then opens N connections (default 5) that each try to send one header of
30 MB without ever finishing the head, and prints the RSS peak while they do and the RSS after,
with what each connection got back. With the header limits the figures stay flat and every
connection is answered 431 after about 64 KiB; without them (an older build) the proxy buffers
everything it is sent.

    .venv/bin/python scripts/bench_limits.py
    .venv/bin/python scripts/bench_limits.py --connections 5 --header-mb 30
    .venv/bin/python scripts/bench_limits.py --micro   # ns per request of the path check and the protocol

Loopback only; bounded in count and time; it stops the server it started.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 1e6


def attack(port: int, header_bytes: int, deadline: float, out: list[str], i: int) -> None:
    """Send a head whose one header never ends; stop at the first byte of an answer."""
    sent = 0
    answer = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-big: ")
            sock.setblocking(False)
            chunk = b"a" * 65536
            while sent < header_bytes and time.monotonic() < deadline:
                try:
                    answer = sock.recv(4096)
                    break  # answered (or closed: b"")
                except BlockingIOError:
                    pass
                try:
                    sent += sock.send(chunk)
                except BlockingIOError:
                    time.sleep(0.001)
            sock.setblocking(True)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            if not answer:
                try:
                    answer = sock.recv(4096)
                except TimeoutError:
                    answer = b"(no answer before the deadline)"
    except OSError as exc:
        answer = answer or f"({type(exc).__name__})".encode()
    first_line = answer.split(b"\r\n", 1)[0].decode("latin-1")[:60]
    out[i] = f"sent {sent / 1e6:6.2f} MB, got {first_line!r}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=5)
    ap.add_argument("--header-mb", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=20.0, help="longest the attack may run")
    ap.add_argument("--micro", action="store_true", help="only the per-request micro-benchmarks")
    args = ap.parse_args()
    if args.micro:
        micro()
        return

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "bench.toml"
        # judges off: the background judging child would only add noise to the figures
        cfg.write_text(f'[server]\nlog_level = "error"\n[production]\nbase_url = "http://127.0.0.1:{free_port()}/v1"\n'
                       '[mirror]\nenabled = false\n[judges]\nbackground = false\n')
        cmd = [str(REPO / ".venv/bin/shadoweval"), "serve", "--config", str(cfg), "--port", str(port),
               "--db", str(Path(tmp) / "bench.db")]
        server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        sys.exit("serve did not start")
                    time.sleep(0.1)
            proc = psutil.Process(server.pid)
            time.sleep(1.0)
            before = rss_mb(proc)
            peak = before
            results = ["(not run)"] * args.connections
            end = time.monotonic() + args.seconds
            threads = [threading.Thread(target=attack, args=(port, int(args.header_mb * 1e6), end, results, i))
                       for i in range(args.connections)]
            t0 = time.monotonic()
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                peak = max(peak, rss_mb(proc))
                time.sleep(0.02)
            took = time.monotonic() - t0
            time.sleep(1.0)
            after = rss_mb(proc)
        finally:
            server.terminate()
            server.wait(15)
    print(f"shadoweval serve ({os.environ.get('PYTHONPATH') or 'this checkout'}), {args.connections} connections "
          f"each trying to send a {args.header_mb:g} MB header:")
    for i, line in enumerate(results):
        print(f"  connection {i}: {line}")
    print(f"  RSS before {before:.1f} MB, peak during {peak:.1f} MB, after {after:.1f} MB "
          f"(peak - before: {peak - before:+.1f} MB); all connections done in {took:.2f} s")


def micro() -> None:
    """Per-request CPU of the path check (vs the old string concatenation) and of the limited
    protocol (vs uvicorn's) parsing an OpenAI client's request head; best of 5, in ns."""
    import asyncio
    import timeit

    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from shadoweval.core.settings import ServerSettings
    from shadoweval.proxy.app import KNOWN_ROUTES
    from shadoweval.proxy.paths import UpstreamPaths
    from shadoweval.proxy.server import limited_protocol

    def best(fn: Any, n: int) -> float:
        return min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e9

    paths = UpstreamPaths("/tenantA/v1", KNOWN_ROUTES)
    base, path = "/tenantA/v1", "/v1/chat/completions"
    print("path check, ns per request:")
    print(f"  {best(lambda: base + path[3:], 500_000):7.0f}  before: base_path + path[3:]")
    for raw, query in [(b"/v1/chat/completions", b""), (b"/v1/models/gpt-4o-mini", b""),
                       (b"/v1/models", b"limit=20&order=desc"), (b"/v1/caf%C3%A9", b"")]:
        shown = raw.decode() + ("?" + query.decode() if query else "")
        print(f"  {best(lambda raw=raw, query=query: paths.target(raw, query), 500_000):7.0f}  after: {shown}")

    class Transport(asyncio.Transport):
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 5555)}.get(name, default)

        def write(self, data: Any) -> None:
            pass

        def is_closing(self) -> bool:
            return False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    body = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}'
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:8080\r\naccept-encoding: gzip, deflate\r\n"
               b"connection: keep-alive\r\naccept: application/json\r\ncontent-type: application/json\r\n"
               b"user-agent: OpenAI/Python 1.99.0\r\nx-stainless-lang: python\r\nx-stainless-os: Linux\r\n"
               b"x-stainless-arch: x64\r\nx-stainless-runtime: CPython\r\nx-stainless-retry-count: 0\r\n"
               b"authorization: Bearer sk-xxxxxxxxxxxxxxxxxxxxxxxx\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    loop = asyncio.new_event_loop()

    def protocol(cls: Any) -> Any:
        config = Config(app, log_level="warning")
        config.load()
        p = cls(config=config, server_state=ServerState(), app_state={}, _loop=loop)
        p._start_asgi_task = lambda cycle, app: setattr(cycle, "response_complete", True)  # parsing only
        p.connection_made(Transport())
        return p

    print("parsing one request (head and body in one read), ns per request:")
    for name, p in [("uvicorn HttpToolsProtocol", protocol(HttpToolsProtocol)),
                    ("LimitedHttpToolsProtocol", protocol(limited_protocol(ServerSettings())))]:
        print(f"  {best(lambda p=p: p.data_received(request), 100_000):7.0f}  {name}")
    loop.close()


if __name__ == "__main__":
    main()
