"""The grading page: evaluators sign in and grade queued pairs blind, in the browser.

Served under `/grade` by `shadoweval serve` (the proxy mounts what `grading_app` returns) and by
`shadoweval grade` on its own. Nothing here is reachable without signing in with a token from the
configuration's `[[evaluators]]`. Sign-in attempts are paced and failures lock an address out
(signin.py). A session is an id kept in memory and a cookie signed with a per-process key
and the evaluator's token hash; signing out ends the session, so a copied cookie stops working. The
cookie is HttpOnly and SameSite=Strict, and every change is a JSON POST, which a cross-site form
cannot send. See docs/grading-signin.md.

Blindness: the page gets the two answers as "A" (left) and "B" (right) in the order the queue drew
for the item; model names, output ids and the exchange id never reach the browser.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import time
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from shadoweval.core.context import contexts_of
from shadoweval.core.settings import Settings
from shadoweval.core.store import Store, StoreUnavailable
from shadoweval.core.types import AnswerLabels, Grade, GradingItem, Output, new_id
from shadoweval.proxy.api import error_json

from .render import answer_html, markdown_html, turns
from .signin import Refusal, Sessions, SignInGuard

COOKIE = "shadoweval_grading"
# No inline script or style, nothing fetched from elsewhere: model text cannot run or phone home.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")

_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer",
            "cache-control": "no-store", "x-frame-options": "DENY"}


@dataclass(frozen=True, slots=True)
class Evaluator:
    name: str
    token_sha256: str
    admin: bool


def evaluators_of(settings: Settings) -> list[Evaluator]:
    """The configured evaluators whose token is known (a `token_env` that is unset signs nobody in)."""
    out = []
    for e in settings.evaluators:
        token = (settings.secret(e.token_env) or "").strip() if e.token_env else None
        digest = e.token_sha256 or (hashlib.sha256(token.encode()).hexdigest() if token else "")
        if digest:
            out.append(Evaluator(e.name, digest, e.admin))
    return out


class SignIn(BaseModel):
    token: str = Field(min_length=1, max_length=500)


class Labels(BaseModel):
    grounded: Literal["yes", "partly", "no"] | None = None
    citations_correct: bool | None = None
    meets_intent: bool | None = None


class GradeIn(BaseModel):
    item_id: str = Field(min_length=26, max_length=26)
    preference: Literal["left", "right", "tie"] | None = None
    left: Labels = Labels()
    right: Labels = Labels()
    note: str = Field("", max_length=20_000)
    keep: bool = False
    corrected_answer: str | None = Field(None, max_length=100_000)
    seconds: float | None = Field(None, ge=0)
    skipped: bool = False


def grading_app(settings: Settings, store: Store | None) -> FastAPI:
    """The grading UI and its JSON API; mount it at `/grade`."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    people = {e.token_sha256: e for e in evaluators_of(settings)}
    by_name = {e.name: e for e in people.values()}
    key = secrets.token_bytes(32)
    g = settings.grading
    session_s = g.session_hours * 3600
    lease_s = g.lease_minutes * 60
    guard = SignInGuard(max_failures=g.signin_max_failures, lockout_s=g.signin_lockout_minutes * 60,
                        per_s=g.signin_global_per_s)
    sessions = Sessions(session_s)

    def sign(name: str, expires: int, sid: str) -> str:
        msg = f"{name}|{expires}|{sid}|{by_name[name].token_sha256}".encode()
        return hmac.new(key, msg, hashlib.sha256).hexdigest()

    def session_of(request: Request) -> tuple[Evaluator, str] | None:
        """The evaluator and session id of a valid cookie (`name:expires:session.mac`), else None."""
        body, _, mac = request.cookies.get(COOKIE, "").rpartition(".")
        parts = body.rsplit(":", 2)
        if len(parts) != 3:
            return None
        name, expires, sid = parts
        if name not in by_name or not expires.isdigit() or int(expires) < time.time():
            return None
        if not hmac.compare_digest(mac, sign(name, int(expires), sid)):
            return None
        live = sessions.who(sid)
        return (by_name[name], sid) if live is not None and live[0] == name else None

    def signed_in(request: Request) -> Evaluator | None:
        found = session_of(request)
        return found[0] if found else None

    def evaluator(request: Request) -> Evaluator:
        who = signed_in(request)
        if who is None:
            raise StarletteHTTPException(401, "Sign in first.")
        if request.method == "POST" and not _same_origin_json(request):
            raise StarletteHTTPException(403, "Changes must be JSON sent from the grading page itself.")
        return who

    def page(name: str) -> HTMLResponse:
        return HTMLResponse(_static(name))

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for k, v in _HEADERS.items():
            if k not in response.headers:  # a page may bring its own, stricter or looser, policy
                response.headers[k] = v
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), "unauthorized" if exc.status_code == 401 else None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return _error(400, f"Invalid request: {first.get('msg', 'bad body')}", "invalid_value", param)

    @app.get("/", response_model=None)
    async def grade_page(request: Request) -> Response:
        if not request.url.path.endswith("/"):  # the page's links are relative to /grade/
            return RedirectResponse(request.url.path + "/", status_code=307)
        if signed_in(request) is None:
            return RedirectResponse(request.url_for("signin_page").path, status_code=303)
        return page("grade.html")

    @app.get("/signin")
    async def signin_page() -> HTMLResponse:
        return page("signin.html")

    @app.get("/agreement", response_model=None)
    async def agreement_page(request: Request) -> Response:
        if signed_in(request) is None:
            return RedirectResponse(request.url_for("signin_page").path, status_code=303)
        return page("agreement.html")

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
        kind = next((t for ext, t in types.items() if name.endswith(ext)), None)
        if kind is None or "/" in name or name.startswith("."):
            return _error(404, "Not found.", "not_found")
        try:
            return Response(_static(name), media_type=kind)
        except FileNotFoundError:
            return _error(404, "Not found.", "not_found")

    @app.post("/api/signin")
    async def signin(body: SignIn, request: Request) -> JSONResponse:
        if not _same_origin_json(request):
            return _error(403, "Sign in from the grading page.", "forbidden")
        address = request.client.host if request.client else ""
        refusal = await guard.admit(address)  # before the token is looked at: a refusal tells nothing about it
        if refusal is not None:
            return _too_many(refusal)
        who = people.get(hashlib.sha256(body.token.strip().encode()).hexdigest())
        guard.done(address, ok=who is not None)
        if who is None:
            return _error(401, "Unknown token." if people else "No evaluators are configured: add "
                          "[[evaluators]] to the configuration.", "invalid_token")
        sid, expires = sessions.open(who.name)
        resp = JSONResponse({"evaluator": who.name, "admin": who.admin})
        resp.set_cookie(COOKIE, f"{who.name}:{expires}:{sid}.{sign(who.name, expires, sid)}",
                        max_age=math.ceil(session_s),
                        path=request.scope.get("root_path", "") or "/", httponly=True, samesite="strict",
                        secure=settings.grading.secure_cookies)
        return resp

    @app.post("/api/signout")
    async def signout(request: Request) -> JSONResponse:
        found = session_of(request)
        if found is not None:
            sessions.close(found[1])  # the cookie is refused from now on, wherever a copy of it is
        resp = JSONResponse({"signed_out": True})
        resp.delete_cookie(COOKIE, path=request.scope.get("root_path", "") or "/")
        return resp

    @app.get("/api/me")
    async def me(who: Evaluator = Depends(evaluator)) -> JSONResponse:
        return JSONResponse({"evaluator": who.name, "admin": who.admin})

    @app.get("/api/next")
    async def next_pair(exclude: str = "", who: Evaluator = Depends(evaluator)) -> JSONResponse:
        live = _live(store)
        skip = tuple(x for x in exclude.split(",") if x)[:20]
        try:
            item = await asyncio.to_thread(live.next_item, who.name, lease_s=lease_s, exclude=skip)
        except StoreUnavailable as exc:
            return _error(503, str(exc), "store_unavailable")
        progress = await asyncio.to_thread(_progress, live, who.name)
        if item is None:
            return JSONResponse({"item": None, "progress": progress})
        return JSONResponse({"item": await asyncio.to_thread(_item_view, live, item, settings),
                             "progress": progress})

    @app.post("/api/grades", status_code=201)
    async def grade(body: GradeIn, who: Evaluator = Depends(evaluator)) -> JSONResponse:
        live = _live(store)
        item = await asyncio.to_thread(live.grading_item, body.item_id)
        if item is None:
            return _error(404, f"No grading item {body.item_id}.", "not_found", "item_id")
        if not body.skipped and body.preference is None:
            return _error(400, "Choose A, B or tie (or skip).", "invalid_value", "preference")
        g = Grade(
            id=new_id(), item_id=item.id, evaluator=who.name, created_at=time.time(),
            preference=None if body.skipped else body.preference,
            left_labels=AnswerLabels(**body.left.model_dump()) if not body.skipped else AnswerLabels(),
            right_labels=AnswerLabels(**body.right.model_dump()) if not body.skipped else AnswerLabels(),
            note=body.note.strip(), keep=body.keep and not body.skipped,
            corrected_answer=(body.corrected_answer or "").strip() or None,
            seconds=None if body.seconds is None else min(body.seconds, 86_400.0), skipped=body.skipped,
        )
        if not live.submit(g) or not await asyncio.to_thread(live.flush, 5.0):
            return _error(503, "The store did not confirm the grade; it was not kept. Try again.", "store_unavailable")
        return JSONResponse({"id": g.id, "item_id": item.id, "skipped": g.skipped}, status_code=201)

    @app.post("/api/release")
    async def release(body: dict[str, str], who: Evaluator = Depends(evaluator)) -> JSONResponse:
        item_id = body.get("item_id", "")
        if len(item_id) == 26:
            _live(store).release(item_id, who.name)
        return JSONResponse({"released": item_id})

    @app.get("/api/progress")
    async def progress(who: Evaluator = Depends(evaluator)) -> JSONResponse:
        return JSONResponse(await asyncio.to_thread(_progress, _live(store), who.name))

    @app.get("/report", response_model=None)
    async def report_page(request: Request, since: str | None = None) -> Response:
        who = signed_in(request)
        if who is None:
            return RedirectResponse(request.url_for("signin_page").path, status_code=303)
        if not who.admin:
            return _error(403, "Only evaluators with `admin = true` see the comparison report.", "forbidden")
        html = await asyncio.to_thread(_report_html, _live(store), settings)
        # the report is one self-contained file: inline styles and SVG, no script at all
        return HTMLResponse(html, headers={"content-security-policy":
                                           "default-src 'none'; style-src 'unsafe-inline'; img-src data:"})

    @app.get("/api/agreement")
    async def agreement(batch: str | None = None, who: Evaluator = Depends(evaluator)) -> JSONResponse:
        if not who.admin:
            return _error(403, "Only evaluators with `admin = true` see the agreement report.", "forbidden")
        return JSONResponse(await asyncio.to_thread(_agreement, _live(store), batch, settings))

    return app


def _report_html(store: Store, settings: Settings) -> str:
    # imported here, like the agreement: the statistics are loaded only when someone asks
    from shadoweval.datasets.report.build import build_report
    from shadoweval.datasets.report.html import render_html

    return render_html(build_report(store.exchange_bundles(), settings.report))


def _agreement(store: Store, batch: str | None, settings: Settings) -> dict[str, Any]:
    # imported here: the statistics pull in the judges package, which the proxy loads only on demand
    from shadoweval.datasets.report.agreement import from_store

    return from_store(store, batch, settings.report).to_dict()


def _live(store: Store | None) -> Store:
    if store is None:
        raise StarletteHTTPException(409, "Capture is off: there is no store to grade from.")
    return store


def _item_view(store: Store, item: GradingItem, settings: Settings) -> dict[str, Any]:
    """What the page shows for one item: conversation, passages and answers as sanitized HTML."""
    found = store.get_exchange(item.exchange_id)
    if found is None:
        raise StarletteHTTPException(410, "This pair's exchange is gone (retention).")
    exchange, outputs, _ = found
    by_id: dict[str | None, Output] = {o.id: o for o in outputs}  # a side with no answer has no id
    left_id, right_id = item.output_ids()
    passages = exchange.contexts if exchange.contexts is not None else contexts_of(exchange, settings=settings.context)
    answers = {}
    for side, output_id in (("a", left_id), ("b", right_id)):
        o = by_id.get(output_id)
        answers[side] = {"html": answer_html(o.text if o else None, o.tool_calls if o else None),
                         "text": (o.text or "") if o else ""}
    return {
        "id": item.id,
        "evaluators": item.evaluators,
        "turns": [{"role": t["role"], "html": markdown_html(t["text"]) if t["text"] else ""}
                  for t in turns(exchange.request)],
        "context": [{"id": str(p.get("id", "")), "title": str(p.get("title") or ""),
                     "html": markdown_html(str(p.get("text", "")))} for p in passages],
        "answers": answers,
    }


def _progress(store: Store, evaluator: str) -> dict[str, Any]:
    p = store.grading_progress()
    return {"graded_by_you": p.grades_by_evaluator.get(evaluator, 0),
            "skipped_by_you": p.skipped_by_evaluator.get(evaluator, 0),
            "queued": p.queued, "fully_graded": p.fully_graded}


def _same_origin_json(request: Request) -> bool:
    if not request.headers.get("content-type", "").startswith("application/json"):
        return False
    origin = request.headers.get("origin")
    return origin is None or origin.split("://", 1)[-1] == request.headers.get("host")


def _static(name: str) -> bytes:
    return resources.files("shadoweval.datasets.grading").joinpath("static", name).read_bytes()


def _too_many(refusal: Refusal) -> JSONResponse:
    # OpenAI's rate-limit shape; the sign-in page shows the message as it is
    return JSONResponse(error_json(refusal.message, "requests", "rate_limit_exceeded"), status_code=429,
                        headers={"retry-after": str(refusal.retry_after)})


def _error(status: int, message: str, code: str | None, param: str | None = None) -> JSONResponse:
    type_ = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(error_json(message, type_, code, param), status_code=status)
