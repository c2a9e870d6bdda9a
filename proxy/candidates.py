"""Calling candidate models: any provider through litellm, or an OpenAI-compatible URL directly.

The only module that imports litellm, and only when a litellm candidate is first called: the
proxy starts in well under a second and the request path never loads it. Candidates with a
`base_url` (and the production twin) go through the same lean HTTP client as production, so they
are measured the same way and cost little CPU. A caller returns what the candidate answered or
raises; the mirror turns exceptions into error outputs.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from shadoweval.core.errors import ShadowevalError
from shadoweval.core.settings import CandidateSettings, Settings
from shadoweval.core.types import Output, OutputStatus, Role, Usage, new_id

from .http1 import Pool
from .netconf import DIRECT, Route, route
from .pricing import cost_usd
from .sse import (
    ChatStreamAccumulator,
    Parsed,
    ResponsesStreamAccumulator,
    parse_body,
    parse_chat_json,
    parse_responses_json,
    parse_stream,
)

log = logging.getLogger("shadoweval.candidates")

# Request fields a candidate must not receive as they were sent to production: the model is the
# candidate's own, and `stream`/`stream_options` are set by the caller.
_REPLACED = ("model", "stream", "stream_options")


@dataclass(frozen=True, slots=True)
class CallResult:
    parsed: Parsed
    model: str
    http_status: int | None
    latency_ms: float
    ttft_ms: float | None
    cost_usd: float | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One call to a candidate and how it went: its result, or why there is none."""

    result: CallResult | None
    status: OutputStatus  # ok | error | timeout (cancelled: the mirror stopped it)
    error: str | None
    http_status: int | None
    started: float  # unix seconds
    elapsed_ms: float


async def attempt(caller: Caller, request: dict[str, Any], *, route: str, stream: bool, timeout_s: float,
                  headers: list[tuple[bytes, bytes]] | None = None) -> Attempt:
    """Call a candidate within `timeout_s`; whatever goes wrong becomes an error attempt, never an
    exception (cancellation excepted). The mirror and `shadoweval replay` both call through here."""
    started, t0 = time.time(), time.perf_counter()
    result: CallResult | None = None
    status: OutputStatus = "ok"
    error: str | None = None
    http_status: int | None = None
    try:
        async with asyncio.timeout(timeout_s):
            result = await caller(request, route=route, stream=stream, headers=headers)
    except TimeoutError:
        status, error = "timeout", f"no complete answer within {timeout_s:g} s"
    except CandidateError as exc:
        status, error, http_status = "error", str(exc), exc.http_status
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # connection refused, garbage, a bug in a provider adapter...
        status, error = "error", f"{type(exc).__name__}: {exc}"
    return Attempt(result, status, error, http_status, started, (time.perf_counter() - t0) * 1000)


def output_of(a: Attempt, *, exchange_id: str, role: Role, name: str, model: str | None, stream: bool) -> Output:
    """The stored output of an attempt (an error output when it failed)."""
    r = a.result
    p = r.parsed if r else None
    return Output(
        id=new_id(), exchange_id=exchange_id, role=role, name=name, model=r.model if r else model or None,
        status=a.status, started_at=a.started,
        text=p.text if p else None, tool_calls=p.tool_calls if p else None,
        finish_reason=p.finish_reason if p else None, usage=p.usage if p else Usage(),
        latency_ms=r.latency_ms if r else a.elapsed_ms, ttft_ms=r.ttft_ms if r else None,
        http_status=r.http_status if r else a.http_status, error=a.error, cost_usd=r.cost_usd if r else None,
        stream=stream,
    )


class CandidateError(ShadowevalError):
    """The candidate answered with an error; `http_status` when it was an HTTP error."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class Caller(Protocol):
    model: str

    async def __call__(
        self, request: dict[str, Any], *, route: str, stream: bool, headers: list[tuple[bytes, bytes]] | None = None
    ) -> CallResult: ...

    async def aclose(self) -> None: ...


class DirectCaller:
    """POSTs to an OpenAI-compatible base URL and reads the answer with the proxy's own parsers."""

    def __init__(
        self,
        base_url: str,
        model: str | None,
        *,
        api_key: str | None = None,
        params: dict[str, Any] | None = None,
        read_timeout: float = 600.0,
        max_connections: int = 64,
        via: Route | None = None,
    ) -> None:
        self.model = model or ""
        self._keep_model = model is None  # the twin sends production's own model name
        self._pool = Pool(base_url, max_connections=max_connections, read_timeout=read_timeout,
                          **(via.pool_kwargs() if via else {}))
        self._auth = [(b"authorization", b"Bearer " + api_key.encode())] if api_key else []
        self._params = params or {}

    async def __call__(
        self, request: dict[str, Any], *, route: str, stream: bool, headers: list[tuple[bytes, bytes]] | None = None
    ) -> CallResult:
        body = {k: v for k, v in request.items() if k not in _REPLACED}
        model = request.get("model") if self._keep_model else self.model
        body["model"] = model
        body.update(self._params)
        responses_api = route == "/v1/responses"
        if stream:
            body["stream"] = True
            if not responses_api:
                body["stream_options"] = {"include_usage": True}
        hdrs = [(b"content-type", b"application/json"), (b"accept", b"application/json")]
        hdrs += self._auth or [h for h in headers or [] if h[0] == b"authorization"]
        path = self._pool.base_path + route.removeprefix("/v1")
        t0 = time.perf_counter()
        resp = await self._pool.request("POST", path, hdrs, orjson.dumps(body))
        ttft = None
        try:
            if resp.status >= 400:
                raw = await resp.read()
                parsed = parse_body(raw, responses_api=responses_api)
                raise CandidateError(parsed.error or f"HTTP {resp.status}", resp.status)
            ctype = next((v for k, v in resp.headers if k == b"content-type"), b"").decode("latin-1")
            if stream and ctype.startswith("text/event-stream"):
                pieces: list[bytes] = []
                times: list[float] = []
                async for piece in resp:
                    pieces.append(piece)
                    times.append(time.perf_counter())
                parsed = parse_stream(pieces, responses_api=responses_api)
                if parsed.first_token_index is not None:
                    ttft = (times[parsed.first_token_index] - t0) * 1000
            else:
                parsed = parse_body(await resp.read(), responses_api=responses_api)
        finally:
            await resp.aclose()
        latency = (time.perf_counter() - t0) * 1000
        if parsed.error:
            raise CandidateError(parsed.error, resp.status)
        model_name = parsed.model or str(model)
        return CallResult(parsed, model_name, resp.status, latency, ttft, cost_usd(model_name, parsed.usage))

    async def aclose(self) -> None:
        await self._pool.aclose()


class LiteLLMCaller:
    """Any provider litellm knows, called with the request's own messages and parameters."""

    def __init__(self, cand: CandidateSettings, *, api_key: str | None = None) -> None:
        self.model = cand.model
        self._api_key = api_key
        self._api_base = cand.api_base or None
        self._timeout = cand.timeout_s
        self._params = dict(cand.params)

    async def __call__(
        self, request: dict[str, Any], *, route: str, stream: bool, headers: list[tuple[bytes, bytes]] | None = None
    ) -> CallResult:
        litellm = _litellm()
        # OpenAI's `metadata` and `store` are about OpenAI-side storage; litellm reads `metadata` as
        # its own logging argument, so neither is passed on.
        kwargs = {k: v for k, v in request.items() if k not in (*_REPLACED, "metadata", "store")}
        kwargs.update(self._params)
        if self._api_key:
            kwargs["api_key"] = self._api_key
        if self._api_base:
            kwargs["api_base"] = self._api_base
        kwargs["timeout"] = self._timeout
        t0 = time.perf_counter()
        ttft = None
        try:
            if route == "/v1/responses":
                resp = await litellm.aresponses(model=self.model, stream=stream, drop_params=True, **kwargs)
                if stream:
                    parsed, ttft = await _accumulate(resp, ResponsesStreamAccumulator(), t0)
                else:
                    parsed = parse_responses_json(_as_dict(resp))
            else:
                if stream:
                    kwargs["stream_options"] = {"include_usage": True}
                resp = await litellm.acompletion(
                    model=self.model, stream=stream, drop_params=True, num_retries=0, **kwargs
                )
                if stream:
                    parsed, ttft = await _accumulate(resp, ChatStreamAccumulator(), t0)
                else:
                    parsed = parse_chat_json(_as_dict(resp))
        except Exception as exc:
            if isinstance(exc, (TimeoutError, CandidateError)):
                raise
            status = getattr(exc, "status_code", None)
            raise CandidateError(f"{type(exc).__name__}: {exc}", status if isinstance(status, int) else None) from exc
        latency = (time.perf_counter() - t0) * 1000
        if parsed.error:
            raise CandidateError(parsed.error)
        return CallResult(parsed, self.model, 200, latency, ttft, cost_usd(self.model, parsed.usage))

    async def aclose(self) -> None:
        return None


async def _accumulate(
    events: Any, acc: ChatStreamAccumulator | ResponsesStreamAccumulator, t0: float
) -> tuple[Parsed, float | None]:
    """Read a litellm stream to the end: the answer, and when its first content arrived (ms)."""
    ttft = None
    async for event in events:
        if acc.feed(_as_dict(event)) and ttft is None:
            ttft = (time.perf_counter() - t0) * 1000
    return acc.finish(), ttft


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    dump = getattr(obj, "model_dump", None)
    # litellm's own models do not always match their declared types; their dumps are still right
    return dump(warnings=False) if callable(dump) else dict(obj)


@functools.lru_cache(maxsize=1)
def _litellm() -> Any:
    """litellm, imported on first use (seconds, and memory the proxy does not otherwise need)."""
    # Use the price table bundled with litellm instead of fetching it from the network.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    return litellm


def build_caller(cand: CandidateSettings, api_key: str | None, settings: Settings | None = None) -> Caller:
    """The caller of one candidate. `settings` supplies `[network]` and the proxy environment for
    `base_url` candidates (without it they connect directly); litellm candidates follow the
    environment through litellm itself."""
    if cand.base_url:
        via = route(settings or Settings(), cand.base_url, ca_file=cand.ca_file, client_cert=cand.client_cert,
                    client_key=cand.client_key)
        return DirectCaller(
            cand.base_url, cand.model, api_key=api_key, params=dict(cand.params),
            read_timeout=cand.timeout_s, max_connections=max(cand.concurrency, 1), via=via,
        )
    net = settings.network if settings else None
    if net is not None and ((net.proxy and net.proxy.lower() not in DIRECT) or net.ca_file):
        # litellm takes neither a proxy nor a CA per call for every provider; say so rather than pretend
        log.warning("litellm candidate ignores [network] proxy and ca_file; it follows the environment "
                    "(HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE)", extra={"candidate": cand.name})
    return LiteLLMCaller(cand, api_key=api_key)
