"""The proxy's own HTTP surface beside `/v1`: health, metrics, end-user feedback, stored exchanges.

A small FastAPI app; the OpenAI-compatible hot path (`app.ProxyApp`) hands every non-`/v1` request
to it. Its errors use the same OpenAI error JSON as the proxy's, so one client-side parser fits all.
Who may call what is decided in `access.py` (docs/access.md): `/livez`, `/readyz` and the bare
status of `/healthz` and `/healthz/capture` are open; metrics and health details need an ops key
(or, without ops keys, a loopback client); exchanges and feedback answer the key that sent them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from shadoweval.core.context import contexts_of
from shadoweval.core.metrics import Metrics
from shadoweval.core.settings import ContextSettings
from shadoweval.core.store import Store
from shadoweval.core.types import Feedback, new_id

from .access import Access, Denied, presented_key, scrub_paths
from .mirror import Mirror


def error_json(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The error OpenAI clients parse: {"error": {"message", "type", "param", "code"}}. Every endpoint
    shadoweval serves (proxy, grading page, replay server) answers errors in this one shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return orjson.dumps(error_json(message, type_, code, param))


class FeedbackIn(BaseModel):
    exchange_id: str = Field(min_length=26, max_length=26)
    rating: float | str | None = None
    comment: str | None = Field(None, max_length=20_000)
    source: str | None = Field(None, max_length=200)


_RATING_WORDS = {"up": 1.0, "thumbs_up": 1.0, "good": 1.0, "down": -1.0, "thumbs_down": -1.0, "bad": -1.0}


def ops_api(
    *,
    store: Store | None,
    metrics: Metrics,
    mirror: Callable[[], Mirror | None],
    access: Access,
    lifespan: Callable[[Any], AbstractAsyncContextManager[None]],
    ready: Callable[[], bool] = lambda: True,
    context: ContextSettings | None = None,
    ui: ASGIApp | None = None,
) -> FastAPI:
    """`ui`, when given, is the grading page's app (datasets/grading/web.py), served under `/grade`.
    `ready` says whether startup has finished and shutdown not begun (`/readyz`)."""
    api = FastAPI(title="shadoweval", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    if ui is not None:
        @api.get("/grade", include_in_schema=False)
        async def grade_slash() -> RedirectResponse:  # the page's relative links need the slash
            return RedirectResponse("/grade/", status_code=307)

        api.mount("/grade", ui)

    def mirror_depths() -> dict[tuple[tuple[str, str], ...], float]:
        current = mirror()
        depths = current.queue_depths() if current is not None else {}
        return {(("candidate", name),): float(n) for name, n in depths.items()}

    metrics.gauge("shadoweval_mirror_queue_depth", "Mirror jobs waiting, by candidate.", mirror_depths)
    metrics.gauge("shadoweval_store_queue_depth", "Records waiting for the store writer.",
                  lambda: {(): float(store.status().queue_depth)} if store else {})
    def report_alerts() -> dict[tuple[tuple[str, str], ...], float]:
        run = store.latest_report_run() if store else None
        counts: dict[tuple[tuple[str, str], ...], float] = {}
        for candidate, kind, _ in run.alerts if run else ():
            key = (("candidate", candidate), ("kind", kind))
            counts[key] = counts.get(key, 0.0) + 1
        return counts

    metrics.gauge("shadoweval_report_alerts", "Alerts (drift, reward gaming) the latest `shadoweval report` raised, "
                  "by candidate and kind.", report_alerts)
    metrics.gauge("shadoweval_store_lag_seconds", "Age of the oldest record waiting for the store writer.",
                  lambda: {(): store.status().lag_s} if store else {})

    def exchange_access(request: Request) -> tuple[str | None, JSONResponse | None]:
        """(owner filter, error): None filters nothing (admin key, or no keys and a loopback client)."""
        owner, denied = access.exchanges(presented_key(request.headers), _host(request))
        return owner, _denied(denied) if denied else None

    def ops_allowed(request: Request) -> Denied | None:
        return access.ops(presented_key(request.headers), _host(request))

    known_paths = _path_forms(store.path) if store is not None else ()

    def store_details() -> dict[str, Any] | None:
        """Whatever the store's status holds (other fields appear as they are added), with numbers
        rounded and any filesystem path scrubbed from its strings."""
        return _scrubbed(asdict(store.status()), known_paths) if store is not None else None

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _json_error(exc.status_code, str(exc.detail), "invalid_request_error", None)

    @api.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _json_error(400, f"Invalid request: {first.get('msg', 'bad body')}", "invalid_request_error",
                           "invalid_value", param)

    @api.get("/livez")
    async def livez() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @api.get("/readyz")
    async def readyz() -> JSONResponse:
        # production traffic flows whatever the store's state: a store problem never makes this fail
        if ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not_ready"}, status_code=503)

    @api.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        st = store.status() if store else None
        # degraded: production traffic still flows; the store is losing records
        body: dict[str, Any] = {"status": "ok" if st is None or st.ok else "degraded"}
        if ops_allowed(request) is None:
            if st is not None:
                body["store"] = store_details()
            current = mirror()
            if current is not None:
                body["mirror"] = current.queue_depths()
        return JSONResponse(body)

    @api.get("/healthz/capture")
    async def capture_health(request: Request) -> JSONResponse:
        """For alerting: 503 while the store is losing records, 200 otherwise (capture off included)."""
        st = store.status() if store else None
        status = "off" if st is None else "ok" if st.ok else "losing"
        body: dict[str, Any] = {"status": status}
        if st is not None and ops_allowed(request) is None:
            body["store"] = store_details()
        return JSONResponse(body, status_code=503 if status == "losing" else 200)

    @api.get("/metrics")
    async def metrics_text(request: Request) -> Response:
        denied = ops_allowed(request)
        if denied:
            return _denied(denied)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @api.post("/shadoweval/feedback")
    async def feedback(request: Request, item: FeedbackIn) -> JSONResponse:
        owner, denied = exchange_access(request)
        if denied:
            return denied
        rating = item.rating
        if isinstance(rating, str):
            if rating.lower() not in _RATING_WORDS:
                try:
                    rating = float(rating)
                except ValueError:
                    return _json_error(400, "rating must be a number or one of: " + ", ".join(_RATING_WORDS),
                                       "invalid_request_error", "invalid_value", "rating")
            else:
                rating = _RATING_WORDS[rating.lower()]
        if rating is None and not item.comment:
            return _json_error(400, "Send a rating, a comment or both.", "invalid_request_error", "invalid_value")
        if store is None:
            return _json_error(409, "Capture is off: feedback cannot be stored.", "invalid_request_error", "store_off")
        if not await asyncio.to_thread(_known, store, item.exchange_id, owner):
            return _json_error(404, f"No exchange {item.exchange_id}.", "invalid_request_error", "not_found", "exchange_id")
        fb = Feedback(new_id(), item.exchange_id, time.time(), rating=rating, comment=item.comment, source=item.source)
        if not store.submit(fb):
            return _json_error(503, "The store is overloaded; feedback was not kept.", "server_error", "store_full")
        metrics.inc("shadoweval_feedback_total")
        return JSONResponse({"id": fb.id, "exchange_id": fb.exchange_id, "rating": rating, "stored": True}, status_code=201)

    @api.get("/shadoweval/exchanges/{exchange_id}")
    async def exchange(request: Request, exchange_id: str) -> JSONResponse:
        owner, denied = exchange_access(request)
        if denied:
            return denied
        if store is None:
            return _json_error(404, "Capture is off.", "invalid_request_error", "store_off")
        # another key's exchange is "not found", exactly like a missing one: existence is not revealed
        found = await asyncio.to_thread(lambda: store.get_exchange(exchange_id, owner=owner))
        if found is None:
            return _json_error(404, f"No exchange {exchange_id}.", "invalid_request_error", "not_found")
        ex, outputs, fbs = found
        if ex.contexts is None:  # not judged yet: show the passages all the same
            ex = replace(ex, contexts=contexts_of(ex, settings=context))
        verdicts = await asyncio.to_thread(store.verdicts, exchange_id)
        return JSONResponse(orjson.loads(orjson.dumps(
            {"exchange": ex, "outputs": outputs, "feedback": fbs, "verdicts": verdicts})))

    return api


def _known(store: Store, exchange_id: str, owner: str | None = None, wait_s: float = 2.0) -> bool:
    """Whether the exchange exists (and, with `owner`, was sent with that key). One that just
    happened may still be in the writer's queue, or not even in it yet: a streamed answer is
    handed to the store after its last byte was sent."""
    deadline = time.monotonic() + wait_s
    while not store.exchange_exists(exchange_id, owner=owner):
        if time.monotonic() > deadline or not store.flush(wait_s):
            return False
        time.sleep(0.02)
    return True


def _json_error(status: int, message: str, type_: str, code: str | None, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_json(message, type_, code, param), status_code=status)


def _denied(d: Denied) -> JSONResponse:
    return _json_error(d.status, d.message, "invalid_request_error", d.code)


def _host(request: Request) -> str | None:
    return request.client.host if request.client else None


def _path_forms(path: Path) -> tuple[str, ...]:
    """The store's path as it may appear in an error: as given, absolute, resolved, and its folders."""
    forms = {str(path), str(path.absolute()), str(path.resolve())}
    for p in (path.absolute(), path.resolve()):
        forms |= {str(parent) for parent in p.parents}
    return tuple(forms)


def _scrubbed(value: Any, known: tuple[str, ...]) -> Any:
    if isinstance(value, str):
        return scrub_paths(value, known)
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _scrubbed(v, known) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v, known) for v in value]
    return value
