"""uvicorn's httptools protocol with limits on what a client may make the proxy hold.

uvicorn (with httptools) accepts request heads of any size and waits forever for them: a 30 MB
header, 10,000 headers, or a head sent one byte every few seconds are all buffered and kept until
they end. httptools even accumulates a header's value by concatenation, so a huge one also costs
CPU. This protocol counts what arrives while a request's head is incomplete and answers, before
anything reaches the app (so before any key check or upstream work):

- 414 `url_too_long` when the request target exceeds `[server] max_url_bytes`;
- 431 `too_many_headers` / `headers_too_large` past `max_headers` or `max_header_bytes` (names and
  values of all headers together), checked on the raw bytes too, so at most one socket read beyond
  the limit is ever buffered;
- 408 `request_timeout` when the head has not arrived within `header_timeout_s` of the connection's
  start (or of the request's first byte on a kept-alive connection), or the body within
  `body_timeout_s` of the head's end (a connection that sent nothing at all is closed silently);
- 400 `malformed_request` for what the parser refuses, in place of uvicorn's plain-text 400.

Every answer is OpenAI's error JSON with `Connection: close`, and the connection is closed (after
a short lingering close, so that the client reads the answer rather than a reset). When a
response to an earlier request on the same connection is still going out, it is allowed to finish
and the connection is closed after it instead.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shadoweval.core.errors import ShadowevalError
from shadoweval.core.settings import ServerSettings

from .api import error_body

log = logging.getLogger("shadoweval.proxy")
LINGER_S = 2.0  # how long a refused client's further bytes are read and dropped before closing


@dataclass(frozen=True)
class Limits:
    max_url_bytes: int = 8 * 1024
    max_headers: int = 100
    max_header_bytes: int = 64 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, server: ServerSettings) -> Limits:
        return cls(server.max_url_bytes, server.max_headers, server.max_header_bytes, server.header_timeout_s,
                   server.body_timeout_s)

    @property
    def max_head_bytes(self) -> int:
        """Raw bytes a head within every limit can take: target, names and values, and per line
        ': ' and CRLF, plus the method, version and a little optional whitespace."""
        return self.max_url_bytes + self.max_header_bytes + 8 * self.max_headers + 256


class _Reject(ShadowevalError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str,
                   extra_headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A complete HTTP/1.1 response carrying OpenAI's error JSON, ending the connection."""
    body = error_body(message, "invalid_request_error", code)
    lines = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n".encode("ascii")]
    lines += [name + b": " + value + b"\r\n" for name, value in extra_headers]
    lines.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    return b"".join(lines) + body


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that enforces `limits`; `limited_protocol()` makes one per configuration."""

    limits: ClassVar[Limits] = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_pending = True  # bytes arriving now belong to a request head
        self._head_seen = False  # some of them did arrive
        self._head_raw = 0
        self._head_exact = self._counted = True
        self.url, self.headers = b"", []  # uvicorn sets them per request; read before the first one
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._rejected = False

    # connection

    # ignore[override]: asyncio passes stream protocols a Transport; uvicorn's base narrows it the same way
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._rejected:
            return
        # Bytes are counted while a head is incomplete, before the parser buffers them.
        self._counted = self._head_pending
        if self._head_pending:
            self._head_raw += len(data)
            self._head_seen = True
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._reject(cause.status, cause.code, cause.message)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self._reject(400, "malformed_request", f"Invalid HTTP request: {exc}.")
            return
        # What is still incomplete after this read gets checked and timed; a request that arrived
        # whole in one read (the usual case) costs nothing more here.
        if self._head_pending:
            if self._head_seen:
                self._partial_head()
        elif self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timeout)

    def send_400_response(self, msg: str) -> None:
        self._reject(400, "malformed_request", msg)

    # parser callbacks (per request, not per header: uvicorn's own collect the target and headers)

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        self._head_seen = True
        # a head that began in a read counted from its start is measured exactly by _head_raw
        self._head_exact = self._counted

    def on_headers_complete(self) -> None:
        limits = self.limits
        self._check_head(exact=False)
        if not self._head_exact or self._head_raw > limits.max_header_bytes:
            if sum(len(name) + len(value) for name, value in self.headers) > limits.max_header_bytes:
                raise _Reject(431, "headers_too_large", f"The request's headers exceed the proxy's limit of "
                              f"{limits.max_header_bytes} bytes.")
        self._head_pending = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        self._head_pending = True
        self._head_seen = self._counted = False
        self._head_raw = 0
        HttpToolsProtocol.on_message_complete(self)

    def _check_head(self, *, exact: bool) -> None:
        limits = self.limits
        if len(self.url) > limits.max_url_bytes:
            raise _Reject(414, "url_too_long", f"The request target exceeds the proxy's limit of "
                          f"{limits.max_url_bytes} bytes.")
        if len(self.headers) > limits.max_headers:
            raise _Reject(431, "too_many_headers", f"The request has more than the proxy's limit of "
                          f"{limits.max_headers} headers.")
        if exact and self._head_raw > limits.max_head_bytes:
            raise _Reject(431, "headers_too_large", f"The request's headers exceed the proxy's limit of "
                          f"{limits.max_header_bytes} bytes.")

    def _partial_head(self) -> None:
        """After a read that left a head incomplete: refuse it once it is too big, else time it."""
        try:
            self._check_head(exact=True)
        except _Reject as exc:
            self._reject(exc.status, exc.code, exc.message)
            return
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timeout)

    # limits

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self._rejected or self.transport.is_closing():
            return
        if self.flow.read_paused:  # we stopped reading, not the client
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timeout)
        elif not self._head_seen:
            self._rejected = True
            self.transport.close()
        else:
            self._reject(408, "request_timeout", f"The request's headers did not arrive within "
                         f"{self.limits.header_timeout_s:g} s.")

    def _body_timeout(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if self._rejected or self.transport.is_closing() or cycle is None:
            return
        if self.flow.read_paused:
            self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timeout)
            return
        message = f"The request's body did not arrive within {self.limits.body_timeout_s:g} s."
        if not cycle.response_started:
            # the app is waiting in receive(): it sees a disconnect, and the client sees the 408
            cycle.disconnected = True
            cycle.message_event.set()
            self._reject(408, "request_timeout", message)
        else:
            # answered already (say 401, without reading the body): nothing more to say, just close
            self._rejected = True
            if cycle.response_complete:
                self.transport.close()
            else:
                cycle.keep_alive = False

    def _reject(self, status: int, code: str, message: str) -> None:
        self._rejected = True
        self._cancel_timers()
        log.warning("request refused", extra={"status": status, "code": code,
                                              "client": f"{self.client[0]}:{self.client[1]}" if self.client else None})
        cycle = self.cycle
        if self.pipeline:
            self.transport.close()  # pipelined requests are waiting: answering now would mix answers up
            return
        if cycle is not None and not cycle.response_complete and not cycle.disconnected:
            # an earlier request on this connection is still being answered: let it end, then close
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        if not self.transport.is_closing():
            self.transport.write(error_response(status, code, message, self.server_state.default_headers))
            # A lingering close: closing with the client's bytes still unread would send it a reset,
            # which can destroy the answer before the client reads it. So end our side, discard what
            # still arrives (data_received drops it), and close a moment later.
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None


def limited_protocol(server: ServerSettings) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to give uvicorn.Config(http=...) for these `[server]` settings."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": Limits.from_settings(server)})
