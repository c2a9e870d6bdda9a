"""The ASGI application: the OpenAI-compatible surface, the feedback endpoint and operations.

`/v1/...` is served by `ProxyApp`, a plain ASGI callable kept as lean as possible: it reads the
body, forwards it to production with the lean HTTP client, and passes the answer back byte for
byte (a stream piece by piece, as it arrives). What it copies for the store and the mirror is
handed over without waiting: the mirror gets the request from a `call_soon` callback while
production is thinking, and the store gets a builder that parses the copy in the writer thread.
Everything else (health, metrics, feedback) is a small FastAPI app behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from shadoweval.core.errors import ShadowevalError
from shadoweval.core.metrics import Metrics, standard_metrics
from shadoweval.core.redact import Redactor
from shadoweval.core.settings import Settings
from shadoweval.core.store import Store
from shadoweval.core.types import key_id, new_id

from .access import Access, listens_beyond_loopback
from .api import error_body, ops_api
from .candidates import Caller
from .capture import CAPTURED_ROUTES, CLIENT_LEFT_BEFORE_ANSWER, ProductionCapture, production_records
from .http1 import ConnectError, Pool, UpstreamError, UpstreamTimeout
from .mirror import Mirror
from .netconf import production_route
from .paths import InvalidPath, UpstreamPaths
from .sse import Capture

log = logging.getLogger("shadoweval.proxy")

# the shapes of starlette.types, so that the ops app and this one type-check as each other's fallback
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Hop-by-hop headers (RFC 9110 7.6.1) and the ones the HTTP client recomputes.
_HOP_REQUEST = frozenset(
    {b"host", b"content-length", b"connection", b"keep-alive", b"proxy-authorization", b"proxy-connection",
     b"te", b"trailer", b"transfer-encoding", b"upgrade", b"expect"}
)
_HOP_RESPONSE = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"proxy-authenticate", b"trailer", b"upgrade"}
)
_OWN_PREFIX = b"x-shadoweval-"
ID_HEADER = b"x-shadoweval-exchange-id"
_JSON = (b"content-type", b"application/json")
KNOWN_ROUTES = frozenset({*CAPTURED_ROUTES, "/v1/completions", "/v1/embeddings", "/v1/models"})


class ProductionStreamBroken(ShadowevalError):
    """Raised to the server so that it aborts the client's connection, as production's broke.

    An expected event, not a bug: logs.OneLineEvents logs uvicorn's report of it as one line."""

    log_event = "production stream broke; client connection aborted"

    def __init__(self, message: str, exchange_id: str) -> None:
        super().__init__(message)
        self.log_extra = {"exchange_id": exchange_id}


class ClientGone(ShadowevalError):
    """The client left before its request body ended: nothing is forwarded, nothing answered."""


class ProxyApp:
    def __init__(
        self,
        settings: Settings,
        *,
        pool: Pool,
        store: Store | None,
        mirror: Mirror | None,
        metrics: Metrics,
        fallback: Callable[[Scope, Receive, Send], Awaitable[None]],
    ) -> None:
        self.pool = pool
        self.store = store
        self.mirror = mirror
        self.metrics = metrics
        self.fallback = fallback
        self.max_body = settings.server.max_body_bytes
        # key -> its key_id(), stored as the exchange's owner (never the key itself)
        self.proxy_keys = {k.encode(): key_id(k) for k in settings.proxy_keys()}
        key = settings.secret(settings.production.api_key_env)
        self.production_auth = b"Bearer " + key.encode() if key else None
        self.base_path = pool.base_path
        self.paths = UpstreamPaths(self.base_path, KNOWN_ROUTES)
        self.context = settings.context
        self.context_header = settings.context.header.encode() or None
        # raw bytes of one streamed answer kept for the store (the stored text is cut at the limit itself)
        self.capture_cap = 4 * settings.store.max_capture_bytes or 1 << 62
        self.strict = settings.store.durability == "strict"
        self.strict_timeout = settings.store.strict_timeout_ms / 1000
        if self.strict:
            metrics.counter("shadoweval_store_strict_timeouts_total",
                            "Strict-durability answers sent before their commit, as it took too long.")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            await self.proxy(scope, receive, send)
        else:
            await self.fallback(scope, receive, send)

    async def proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        created = time.time()
        path: str = scope["path"]
        method: str = scope["method"]
        exchange_id = new_id()
        id_header = (ID_HEADER, exchange_id.encode())
        route_label = path if path in KNOWN_ROUTES else "other"
        try:  # decided on the bytes as sent, never on the decoded path (docs/limits.md)
            target = self.paths.target(scope.get("raw_path") or path.encode(), scope["query_string"])
        except InvalidPath as exc:
            await self._error(send, 400, str(exc), "invalid_request_error", "invalid_path", id_header, route_label)
            return

        forward: list[tuple[bytes, bytes]] = []
        length = auth = presented = tags_header = context_header = None
        for name, value in scope["headers"]:
            if name in _HOP_REQUEST:
                if name == b"content-length":
                    length = value
            elif name.startswith(_OWN_PREFIX):
                if name == b"x-shadoweval-key":
                    presented = value
                elif name == b"x-shadoweval-tags":
                    tags_header = value.decode("latin-1")
                elif name == self.context_header:
                    context_header = value.decode("latin-1")
            elif name == b"authorization":
                auth = value
            else:
                forward.append((name, value))

        if self.proxy_keys:
            if presented is None and self.production_auth and auth and auth[:7].lower() == b"bearer ":
                presented = auth[7:].strip()
            if presented not in self.proxy_keys:
                await self._error(send, 401, "Missing or invalid proxy key: send one of the configured keys in "
                                  "x-shadoweval-key.", "invalid_request_error", "invalid_api_key", id_header, route_label)
                return
        if self.production_auth is not None:
            forward.append((b"authorization", self.production_auth))
        elif auth is not None:
            forward.append((b"authorization", auth))

        if length is not None and length.isdigit() and int(length) > self.max_body:
            await self._too_large(send, id_header, route_label)
            return
        try:
            body = await _read_body(receive, self.max_body)
        except ClientGone:  # before its body ended (or the server's body timeout answered 408)
            return
        if body is None:
            await self._too_large(send, id_header, route_label)
            return

        captured = method == "POST" and path in CAPTURED_ROUTES
        if captured and self.mirror is not None:
            asyncio.get_running_loop().call_soon(self.mirror.submit, exchange_id, path, body, scope["headers"], created)
        cap = (ProductionCapture(exchange_id, path, created, t0, body, tags_header, Capture(),
                                 context_header=context_header, owner=self.proxy_keys.get(presented) if presented is not None else None)
               if captured and self.store else None)

        try:
            resp = await self.pool.request(method, target, forward, body)
        except UpstreamError as exc:
            await self._upstream_failed(send, exc, cap, id_header, route_label)
            return

        answer = cap.answer if cap else None
        headers = [h for h in resp.headers if h[0] not in _HOP_RESPONSE]
        headers.append(id_header)
        ctype = b""
        sized = False
        for name, value in resp.headers:
            if name == b"content-type":
                ctype = value
            elif name == b"content-length":
                sized = True
        if answer is not None:
            answer.status = resp.status
            answer.content_type = ctype.decode("latin-1")
            answer.content_encoding = next((v.decode("latin-1") for k, v in resp.headers if k == b"content-encoding"), None)

        if sized and not ctype.startswith(b"text/event-stream"):
            try:
                data = await resp.read()
            except UpstreamError as exc:
                await resp.aclose()
                await self._upstream_failed(send, exc, cap, id_header, route_label)
                return
            await resp.aclose()
            if cap is not None and answer is not None:
                # the whole body is one piece already read: kept by reference, cut in the writer
                answer.pieces.append(data)
                answer.times.append(time.perf_counter())
                answer.size = len(data)
                if _client_left(receive):  # before the first byte: it never got this answer
                    cap.outcome, cap.error = "cancelled", CLIENT_LEFT_BEFORE_ANSWER
                if self.strict and cap.outcome == "ok":
                    cap.t_end = time.perf_counter()
                    await self._capture_durably(cap)
            if cap is None or cap.outcome == "ok":
                await send({"type": "http.response.start", "status": resp.status, "headers": headers})
                await send({"type": "http.response.body", "body": data})
            broken = None
        else:
            broken = await self._stream(resp, headers, receive, send, cap)
        self.metrics.inc("shadoweval_requests_total", route=route_label, code=f"{resp.status // 100}xx")
        if cap is not None and not cap.stored:
            cap.t_end = cap.t_end or time.perf_counter()
            self._capture(cap)
        if broken is not None:
            self.metrics.inc("shadoweval_production_errors_total", kind="stream_broken")
            raise ProductionStreamBroken(str(broken), exchange_id) from None

    async def _stream(self, resp: Any, headers: list[tuple[bytes, bytes]], receive: Receive, send: Send,
                      cap: ProductionCapture | None) -> UpstreamError | None:
        """Pass the answer through piece by piece; stop reading production if the client leaves.

        Returns the error that broke production's stream, if one did."""
        task = asyncio.current_task()
        assert task is not None
        finished = False
        client_gone = False
        broken: UpstreamError | None = None

        async def wait_for_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        def on_disconnect(fut: asyncio.Future[None]) -> None:
            nonlocal client_gone
            if not finished and not fut.cancelled() and fut.exception() is None:
                client_gone = True
                task.cancel()

        watcher = asyncio.ensure_future(wait_for_disconnect())
        watcher.add_done_callback(on_disconnect)
        answer = cap.answer if cap else None
        try:
            await send({"type": "http.response.start", "status": resp.status, "headers": headers})
            async for piece in resp:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                if answer is not None:
                    answer.size += len(piece)
                    if answer.size <= self.capture_cap:
                        answer.pieces.append(piece)
                        answer.times.append(time.perf_counter())
                    else:  # the copy stops growing; the client still gets every byte
                        answer.truncated = True
            finished = True
            if self.strict and cap is not None:  # the response ends once its exchange is committed
                cap.t_end = time.perf_counter()
                await self._capture_durably(cap)
            await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            if not client_gone:
                raise
            task.uncancel()
            if cap is not None:
                cap.outcome, cap.error = "cancelled", "client disconnected mid-stream"
        except UpstreamError as exc:
            # Headers are gone already. The client must see the same broken stream it would have
            # seen from production, not a clean end: the caller records it and aborts.
            finished = True
            if cap is not None:
                cap.outcome, cap.error = "error", f"production stream broke: {exc}"
            broken = exc
        finally:
            finished = True
            watcher.remove_done_callback(on_disconnect)
            watcher.cancel()
            await resp.aclose()
        if cap is not None:
            cap.t_end = time.perf_counter()
        return broken

    def _capture(self, cap: ProductionCapture) -> None:
        if self.store is not None:
            self.store.submit(lambda: production_records(cap, self.context))

    async def _capture_durably(self, cap: ProductionCapture) -> None:
        """`[store] durability = "strict"`: hand the exchange over and wait (at most strict_timeout)
        until it is committed. A full queue or a slow disk never holds the answer back longer."""
        if self.store is None:
            return
        loop = asyncio.get_running_loop()
        committed: asyncio.Future[bool] = loop.create_future()

        def done(ok: bool) -> None:  # in the writer thread
            def settle() -> None:
                if not committed.done():
                    committed.set_result(ok)

            loop.call_soon_threadsafe(settle)

        cap.stored = True
        if not self.store.submit_durable(lambda: production_records(cap, self.context), done):
            return  # counted as queue_full by the store
        try:
            await asyncio.wait_for(committed, self.strict_timeout)
        except TimeoutError:
            self.metrics.inc("shadoweval_store_strict_timeouts_total")

    async def _upstream_failed(self, send: Send, exc: UpstreamError, cap: ProductionCapture | None,
                               id_header: tuple[bytes, bytes], route_label: str) -> None:
        if isinstance(exc, UpstreamTimeout):
            status, code, message = 504, "upstream_timeout", f"Production did not answer in time: {exc}"
        elif isinstance(exc, ConnectError):
            status, code, message = 502, "upstream_unreachable", f"Production is unreachable: {exc}"
        else:
            status, code, message = 502, "upstream_protocol_error", f"Production sent an invalid answer: {exc}"
        self.metrics.inc("shadoweval_production_errors_total", kind=code)
        log.warning("production failed", extra={"exchange_id": id_header[1].decode(), "status": status,
                                                "code": code, "error": str(exc)})
        await self._error(send, status, message, "upstream_error", code, id_header, route_label)
        if cap is not None:
            cap.outcome = "timeout" if status == 504 else "error"
            cap.error = message
            cap.answer.status = status
            cap.t_end = time.perf_counter()
            self._capture(cap)

    async def _too_large(self, send: Send, id_header: tuple[bytes, bytes], route_label: str) -> None:
        await self._error(send, 413, f"Request body is larger than the proxy's limit of {self.max_body} bytes.",
                          "invalid_request_error", "request_too_large", id_header, route_label)

    async def _error(self, send: Send, status: int, message: str, type_: str, code: str,
                     id_header: tuple[bytes, bytes], route_label: str) -> None:
        body = error_body(message, type_, code)
        headers = [_JSON, (b"content-length", str(len(body)).encode()), id_header]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.inc("shadoweval_requests_total", route=route_label, code=f"{status // 100}xx")


def _client_left(receive: Receive) -> bool:
    """Whether the client has disconnected, without waiting: once the request body has been read,
    `receive()` only returns `http.disconnect`, and returns it at once when the client is gone
    (uvicorn), else it waits. Step the coroutine once instead of running it in a task (a task costs
    ~8-13 us a request, this ~2-3 us); a server whose receive() never answers at once is never seen
    as disconnected here, which is how it was before."""
    step = receive()
    try:
        step.send(None)  # type: ignore[attr-defined]  # Receive says Awaitable; servers give a coroutine
    except StopIteration as done:
        return isinstance(done.value, dict) and done.value.get("type") == "http.disconnect"
    except Exception:
        return False
    step.close()  # type: ignore[attr-defined]  # a coroutine, as above; it waits: the client is still there
    return False


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it exceeds `limit` bytes; ClientGone if the client left."""
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body if len(body) <= limit else None
    parts = [body]
    size = len(body)
    while message.get("more_body"):
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
    return b"".join(parts)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    pool: Pool | None = None,
    callers: Mapping[str, Caller] | None = None,
    metrics: Metrics | None = None,
    ui: Callable[[Store | None], ASGIApp] | None = None,
) -> ProxyApp:
    """The whole proxy as one ASGI app. Pass `store`, `pool` or `callers` to replace the real ones.

    `ui` builds the grading page's app from the store (the CLI passes datasets' `grading_app`; the
    proxy itself never imports it, so serving traffic never loads what only the page needs)."""
    metrics = metrics or standard_metrics()
    if store is None and settings.store.capture:
        r = settings.redaction
        store = Store(
            settings.store_target, journal=settings.store.path, queue_size=settings.store.queue_size, batch_size=settings.store.batch_size,
            flush_interval_ms=settings.store.flush_interval_ms, retention_days=settings.store.retention_days,
            recover=True, max_capture_bytes=settings.store.max_capture_bytes,
            redactor=Redactor(emails=r.emails, card_numbers=r.card_numbers, phone_numbers=r.phone_numbers,
                              patterns=r.patterns),
            metrics=metrics,
        )
    pool = pool or Pool(
        settings.production.base_url, max_connections=settings.production.max_connections,
        connect_timeout=settings.production.connect_timeout_s, read_timeout=settings.production.timeout_s,
        **production_route(settings).pool_kwargs(),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        _check_keys(settings)
        if store is not None:
            store.start()
        mirror = Mirror.from_settings(settings, store=store, metrics=metrics, callers=callers)
        await mirror.start()
        # what startup loaded (litellm, psycopg with a PostgreSQL store, ...) lives as long as the
        # process: out of the collector's way, so that collecting each request's short-lived objects
        # stays cheap (with psycopg loaded a capture took 30 us instead of 25 in the writer)
        gc.collect()
        gc.freeze()
        proxy.mirror = mirror
        log.info("proxy ready", extra={"production": settings.production.base_url,
                                       "candidates": [t.name for t in mirror.targets],
                                       "store": store.location if store else None})
        try:
            yield
        finally:
            proxy.mirror = None
            await mirror.stop(settings.mirror.drain_timeout_s)
            await pool.aclose()
            if store is not None:
                await asyncio.to_thread(store.stop, settings.mirror.drain_timeout_s)
            log.info("proxy stopped", extra={"store_lost": store.status().lost if store else 0})

    access = Access(proxy_keys=settings.proxy_keys(), admin_keys=settings.admin_keys(), ops_keys=settings.ops_keys())
    # the mirror is set once startup has finished and unset when shutdown begins: that is readiness
    api = ops_api(store=store, metrics=metrics, mirror=lambda: proxy.mirror, access=access, lifespan=lifespan,
                  ready=lambda: proxy.mirror is not None,
                  context=settings.context, ui=ui(store) if ui is not None else None)
    proxy = ProxyApp(settings, pool=pool, store=store, mirror=None, metrics=metrics, fallback=api)
    return proxy


def _check_keys(settings: Settings) -> None:
    """Refuse to start without proxy keys when `[server] require_keys` says so; warn loudly when
    anyone who can reach the port may send traffic through production's key and read what the
    store holds about it. See docs/access.md."""
    if settings.proxy_keys():
        return
    if settings.server.require_keys:
        message = (f"[server] require_keys is set but no proxy keys are configured: set [server] proxy_keys_env "
                   f"to an environment variable holding comma-separated keys "
                   f"(now {settings.server.proxy_keys_env or 'unset'!r}).")
        log.error("refusing to start", extra={"reason": message})
        raise RuntimeError(message)
    if listens_beyond_loopback(settings.server.host):
        log.warning("the proxy listens beyond this host without proxy keys: anyone who can reach the port can send "
                    "traffic through it. Configure [server] proxy_keys_env (and require_keys = true); stored "
                    "exchanges, feedback and metrics stay loopback-only until then (docs/access.md).",
                    extra={"host": settings.server.host, "port": settings.server.port})
