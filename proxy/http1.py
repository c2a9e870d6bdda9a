"""A small HTTP/1.1 client for the one hop that every answer waits on: proxy -> production.

Kept instead of httpx because it is measured ~9x cheaper: about 0.1 ms of CPU per request against 0.9 ms
for httpx.AsyncClient (scripts/bench_http1.py; docs/performance.md).

httpx and aiohttp cost 1-3 ms of CPU per request on a small machine, and the proxy pays that on
every exchange. This client does only what forwarding needs: one asyncio Protocol per connection,
llhttp (through httptools, uvicorn's parser) to read responses, a LIFO keep-alive pool, and body
pieces handed on as they arrive (de-chunked, never decompressed), with read back-pressure so a
slow consumer cannot make it buffer without bound. No redirects, cookies or HTTP/2.

Corporate networks: given an http:// forward proxy, an http:// origin is asked in absolute form
(`GET http://host/path`) over connections to the proxy, and an https:// origin through a CONNECT
tunnel with TLS started inside it; the proxy's credentials go in Proxy-Authorization and appear in
no error message. Without a proxy none of this code runs per request. Which proxy (if any) and
which TLS context to use is decided by netconf; this module only carries it out.
It imports nothing from the project, so any module may use it.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import cast
from urllib.parse import unquote, urlsplit

import httptools

_PAUSE_AT = 1 << 20  # stop reading the socket once this much body waits unread ...
_RESUME_AT = 1 << 18  # ... and start again when the consumer has caught up to this
# Framing is ours to decide (Content-Length is recomputed); these describe the caller's hop only.
_HOP_BY_HOP = frozenset((b"content-length", b"transfer-encoding", b"connection", b"keep-alive"))


class UpstreamError(Exception):
    """Base of every error about talking to the upstream server."""


class ConnectError(UpstreamError):
    """No connection: refused, unreachable, DNS or TLS failure."""


class UpstreamTimeout(UpstreamError):
    """No connection within connect_timeout, or no byte within read_timeout."""


class ProtocolError(UpstreamError):
    """A malformed response, or the connection closed before the response ended."""


class Response:
    """One response: status and headers are set when returned; the body streams in behind them."""

    __slots__ = ("status", "reason", "headers", "_conn", "_loop", "_timeout", "_pieces", "_buffered",
                 "_headers_done", "_complete", "_keep_alive", "_error", "_retryable", "_waiter")

    def __init__(self, conn: _Connection, read_timeout: float) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self._conn: _Connection | None = conn
        self._loop = conn.loop
        self._timeout = read_timeout
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._headers_done = False
        self._complete = False
        self._keep_alive = False
        self._error: UpstreamError | None = None
        self._retryable = False
        self._waiter: asyncio.Future[None] | None = None

    async def read(self) -> bytes:
        """The whole body, de-chunked."""
        if self._complete:  # the usual case for small answers: everything arrived with the headers
            body = b"".join(self._pieces)
            self._pieces.clear()
            return body
        return b"".join([piece async for piece in self])

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._pieces:
                piece = self._pieces.popleft()
                self._buffered -= len(piece)
                conn = self._conn
                if conn is not None and conn.paused and self._buffered < _RESUME_AT:
                    conn.resume()
                return piece
            if self._error is not None:
                raise self._error
            if self._complete:
                raise StopAsyncIteration
            await self._wait()

    async def aclose(self) -> None:
        """Give the connection back if the body has fully arrived, else close it. Idempotent."""
        if not self._complete and self._error is None:
            self._error = ProtocolError("the response was closed before its body was read")
        self._detach(reuse=False)  # a complete response has already given its connection back

    async def _wait(self) -> None:
        # The timeout is per wait, not per response: an LLM stream may run for many minutes.
        assert self._conn is not None  # only a response still being received is ever waited on
        waiter = self._waiter = self._loop.create_future()
        self._conn.watch(self._loop.time() + self._timeout)
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None and not self._complete:
            self._error = error
        self._wake()
        self._detach(reuse=False)

    def _detach(self, reuse: bool) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.response = None
            conn.pool._put(conn, reuse)


def _delimited_by_close(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
            return False
    return True


class _Connection(asyncio.Protocol):
    """One connection, carrying one request at a time; feeds what it reads to the current Response."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.response: Response | None = None
        self.alive = True
        self.paused = False
        self.sent = 0  # requests sent on this connection
        self.got_bytes = False  # for the current request
        self.no_body = False  # the current request is a HEAD
        self.interim = False  # inside a 1xx response, which precedes the real one
        self.deadline = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    def watch(self, deadline: float) -> None:
        # A timer per wait costs more than the rest of a request on asyncio's loop; this one is
        # only re-armed when it fires early, i.e. about once per read_timeout on a busy connection.
        self.deadline = deadline
        if self.timer is None or deadline < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(deadline, self._check_deadline)
            self.timer_at = deadline

    def _check_deadline(self) -> None:
        self.timer = None
        response = self.response
        if response is None or response._waiter is None or response._waiter.done():
            return  # nobody is waiting; the next wait arms a new timer
        if self.loop.time() < self.deadline:
            self.watch(self.deadline)
        else:
            response._fail(UpstreamTimeout(f"no data from upstream for {response._timeout} s"))

    def send(self, response: Response, head: bytes, body: bytes, no_body: bool) -> None:
        assert self.transport is not None
        self.response = response
        # A fresh parser per request: cheap, and after a HEAD the old one still expects a body.
        self.parser = httptools.HttpResponseParser(self)
        self.sent += 1
        self.got_bytes = False
        self.no_body = no_body
        if len(body) <= 1 << 16:
            self.transport.write(head + body)  # one segment; copying a small body costs nothing
        else:
            self.transport.write(head)
            self.transport.write(body)

    def resume(self) -> None:
        self.paused = False
        if self.alive and self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        if self.alive:
            self.alive = False
            self.pool._forget(self)
            if self.timer is not None:
                self.timer.cancel()
            if self.transport is not None:
                self.transport.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None or self.parser is None:
            self.close()  # bytes nobody asked for: the connection cannot be trusted any more
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            response._fail(ProtocolError(f"malformed response from upstream: {exc!r}"))
            self.close()  # also when the response had completed and junk followed it

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None  # already gone: nothing left to close
        self.close()
        response = self.response
        if response is None:
            return
        if exc is None and response._headers_done and _delimited_by_close(response.headers):
            response._complete = True  # HTTP/1.0 style: the body ends where the connection does
            response._wake()
            response._detach(reuse=False)
            return
        # A reused connection that answered nothing was most likely closed while idle.
        response._retryable = not self.got_bytes and self.sent > 1
        reason = f": {exc!r}" if exc is not None else ""
        response._fail(ProtocolError(f"upstream closed the connection mid-response{reason}"))

    # httptools callbacks; only called from data_received, so self.response is set

    def on_status(self, reason: bytes) -> None:
        self.response.reason += reason  # type: ignore[union-attr]  # set, see above; hot: no assert

    def on_header(self, name: bytes, value: bytes) -> None:
        self.response.headers.append((name.lower(), value))  # type: ignore[union-attr]  # as on_status

    def on_headers_complete(self) -> None:
        response = self.response
        parser = self.parser
        assert response is not None and parser is not None
        status = parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: the real response follows
            self.interim = True
            response.reason = b""
            response.headers = []
            return
        response.status = status
        response._keep_alive = parser.should_keep_alive()
        response._headers_done = True
        response._wake()
        if self.no_body:  # llhttp would wait for Content-Length bytes that a HEAD never gets
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        response = self.response
        assert response is not None
        response._pieces.append(body)
        response._buffered += len(body)
        if response._buffered > _PAUSE_AT and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        response._wake()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        response = self.response
        if response is None:  # a HEAD response, completed by hand already
            return
        response._complete = True
        response._wake()
        # The body now sits in the Response, so the connection can serve someone else at once.
        response._detach(reuse=response._keep_alive)


class _TunnelReply(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT: the status line and headers, nothing after them."""

    def __init__(self) -> None:
        self.reply: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        if self.reply.done():
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > 1 << 16:
                self.reply.set_exception(ConnectError("the proxy's answer to CONNECT has no end"))
            return
        parts = self._buffer[:self._buffer.find(b"\r\n")].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            self.reply.set_exception(ConnectError("the proxy answered CONNECT with something other than HTTP"))
            return
        status = int(parts[1])
        if status == 200 and len(self._buffer) > end + 4:  # TLS is ours to start: nothing may precede it
            self.reply.set_exception(ConnectError("the proxy sent data before the tunnel was ready"))
            return
        reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
        self.reply.set_result((status, reason))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(ConnectError(f"the proxy closed the connection before answering CONNECT"
                                                  f"{f': {exc!r}' if exc else ''}"))


class Pool:
    """Keep-alive connections to one origin; at most max_connections in use, more requests wait."""

    def __init__(self, base_url: str, *, max_connections: int = 1024, connect_timeout: float = 10.0,
                 read_timeout: float = 600.0, ssl_context: ssl.SSLContext | None = None,
                 proxy: str | None = None) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if url.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        self.base_path = url.path.rstrip("/")
        self.host_header = url.netloc.rpartition("@")[2].encode("ascii")
        self._proxy: tuple[str, int] | None = None
        self._proxy_auth = b""  # a whole `proxy-authorization: ...` line, or nothing
        if proxy:
            self._use_proxy(proxy)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []  # LIFO: the warmest connection is the least likely to be closed
        self._all: set[_Connection] = set()
        self._closed = False

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def request(self, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"",
                      *, read_timeout: float | None = None) -> Response:
        """Send a request; return once the status line and headers have arrived."""
        if self._closed:
            raise UpstreamError("the pool is closed")
        head = self._head(method, path, headers, len(body))
        timeout = self._read_timeout if read_timeout is None else read_timeout
        for attempt in (0, 1):
            await self._slots.acquire()
            try:
                conn = self._idle.pop() if self._idle and attempt == 0 else await self._connect()
            except BaseException:
                self._slots.release()
                raise
            response = Response(conn, timeout)
            conn.send(response, head, body, method == "HEAD")
            try:
                while not response._headers_done:
                    if response._error is not None:
                        raise response._error
                    await response._wait()
            except BaseException:
                response._detach(reuse=False)
                if attempt == 0 and response._retryable:
                    continue  # nothing was received, so sending again cannot do anything twice
                raise
            return response
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Close every connection, idle or in use."""
        self._closed = True
        for conn in list(self._all):
            conn.close()
        await asyncio.sleep(0)  # let the transports report connection_lost

    def _use_proxy(self, proxy: str) -> None:
        p = urlsplit(proxy if "://" in proxy else "http://" + proxy)  # `host:port` means http, as in curl
        if p.scheme != "http" or not p.hostname:
            # Never echo the URL itself: it may hold the proxy's password.
            raise ValueError(f"unsupported proxy (scheme {p.scheme!r}): only http://host:port proxies are supported")
        self._proxy = (p.hostname, p.port or 80)
        if p.username is not None:
            cred = f"{unquote(p.username)}:{unquote(p.password or '')}".encode()
            self._proxy_auth = b"proxy-authorization: Basic " + base64.b64encode(cred) + b"\r\n"
        if self._ssl is None:
            # http:// origin: requests go to the proxy with the full URL as their target. An instance
            # attribute, so the direct path keeps calling the class's _head with no extra test.
            self._origin = "http://" + self.host_header.decode("ascii")
            self._head = self._head_absolute  # type: ignore[method-assign]  # on purpose, see the comment

    @property
    def via(self) -> str:
        """`host:port` of the proxy in use, or "" when connecting directly (safe to log)."""
        return f"{self._proxy[0]}:{self._proxy[1]}" if self._proxy else ""

    def _head_absolute(self, method: str, path: str, headers: list[tuple[bytes, bytes]], length: int) -> bytes:
        head = Pool._head(self, method, self._origin + path, headers, length)
        if self._proxy_auth:
            end = head.index(b"\r\n") + 2
            head = head[:end] + self._proxy_auth + head[end:]
        return head

    def _head(self, method: str, path: str, headers: list[tuple[bytes, bytes]], length: int) -> bytes:
        lines = [f"{method} {path} HTTP/1.1\r\n".encode("ascii")]
        has_host = False
        for name, value in headers:
            lower = name.lower()
            if lower in _HOP_BY_HOP:
                continue
            if lower == b"host":
                has_host = True
            lines.append(name + b": " + value + b"\r\n")
        if not has_host:
            lines.append(b"host: " + self.host_header + b"\r\n")
        lines.append(b"content-length: %d\r\n\r\n" % length)
        head = b"".join(lines)
        # One CRLF per line plus the blank one: anything else would let a value smuggle a header.
        if head.count(b"\n") != len(lines) + 1 or head.count(b"\r") != len(lines) + 1:
            raise ValueError("CR or LF inside the request line or a header")
        return head

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        where = f"{self._host}:{self._port}"
        if self._proxy is not None:
            where += f" through the proxy {self.via}"
        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._proxy is None:
                    _, conn = await loop.create_connection(lambda: _Connection(self), self._host, self._port,
                                                           ssl=self._ssl)
                elif self._ssl is None:  # absolute-form requests over a plain connection to the proxy
                    _, conn = await loop.create_connection(lambda: _Connection(self), *self._proxy)
                else:
                    conn = await self._tunnel(loop, self._ssl)
        except TimeoutError as exc:  # before OSError, of which it is a subclass
            raise UpstreamTimeout(f"no connection to {where} within {self._connect_timeout} s") from exc
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            raise ConnectError(f"cannot connect to {where}: {exc!r}") from exc
        self._all.add(conn)
        return conn

    async def _tunnel(self, loop: asyncio.AbstractEventLoop, context: ssl.SSLContext) -> _Connection:
        """CONNECT through the proxy, then TLS with the origin inside the tunnel."""
        assert self._proxy is not None
        raw, answer = await loop.create_connection(_TunnelReply, *self._proxy)
        try:
            target = (f"[{self._host}]" if ":" in self._host else self._host) + f":{self._port}"
            raw.write(f"CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n".encode("ascii") + self._proxy_auth
                      + b"\r\n")
            status, reason = await answer.reply
            if status != 200:
                raise ConnectError(f"the proxy {self.via} refused a tunnel to {target}: {status} {reason}")
            conn = _Connection(self)
            tls = await loop.start_tls(raw, conn, context, server_hostname=self._host)
        except BaseException:
            answer.reply.cancel()  # a late answer then has nobody to tell, and must not be reported as lost
            raw.close()
            raise
        if tls is None:  # the tunnel closed during the handshake
            raise ConnectError(f"the proxy {self.via} closed the tunnel to {target}")
        conn.connection_made(tls)
        return conn

    def _put(self, conn: _Connection, reuse: bool) -> None:
        if reuse and conn.alive and not self._closed:
            if conn.paused:
                conn.resume()
            self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()

    def _forget(self, conn: _Connection) -> None:
        self._all.discard(conn)
        if conn in self._idle:
            self._idle.remove(conn)
