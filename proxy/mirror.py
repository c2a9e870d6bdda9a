"""Mirroring: send copies of production requests to candidates (and the production twin).

`submit()` is called from the request path and never awaits: it samples, filters, checks the
budget and does a `put_nowait` into the target's bounded queue; a full queue drops the job and
counts it. Each target has its own queue and `concurrency` worker tasks, and every call runs under
its own timeout, so a slow, hanging, failing or garbage-returning candidate only ever fills its
own queue. Results, errors included, become outputs in the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from shadoweval.core.metrics import Metrics
from shadoweval.core.settings import CandidateSettings, Settings
from shadoweval.core.store import Store
from shadoweval.core.types import Role

from .candidates import Attempt, Caller, DirectCaller, attempt, build_caller, output_of
from .capture import CAPTURED_ROUTES, parse_request, parse_tags
from .netconf import production_route

log = logging.getLogger("shadoweval.mirror")

# Fields that do not change what is asked: the same question sent streaming or not, by another
# user or to another model, samples the same way.
_NOT_CONTENT = frozenset({"model", "stream", "stream_options", "user", "metadata", "store", "service_tier"})

TWIN = "production-twin"


def sample_unit(request: Mapping[str, Any], override: str | None = None) -> float:
    """A number in [0, 1) fixed by the request's content (or by `override`, e.g. a conversation id).

    Targets compare it with their rate, so targets with the same rate see the same requests, and a
    replay of the same traffic samples the same way."""
    if override:
        key = override.encode()
    else:
        key = orjson.dumps({k: v for k, v in request.items() if k not in _NOT_CONTENT}, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass(frozen=True, slots=True)
class MirrorJob:
    exchange_id: str
    route: str
    request: dict[str, Any]
    stream: bool
    created_at: float
    # Only the twin uses the client's credentials, and only in memory: they are never stored.
    auth: list[tuple[bytes, bytes]] = field(default_factory=list, repr=False)


@dataclass
class Target:
    name: str
    role: Role
    caller: Caller
    sample_rate: float
    concurrency: int
    timeout_s: float
    routes: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    mirror_responses: bool = True
    daily_requests: int = 0
    daily_usd: float = 0.0
    queue: asyncio.Queue[MirrorJob] | None = None
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    day: str = ""
    requests_today: int = 0
    usd_today: float = 0.0

    def wants(self, route: str, tags: Mapping[str, str], unit: float) -> bool:
        if unit >= self.sample_rate:
            return False
        if self.routes and route not in self.routes:
            return False
        if route == "/v1/responses" and not self.mirror_responses:
            return False
        return all(tags.get(k) == v for k, v in self.tags.items())

    def within_budget(self, today: str) -> bool:
        if today != self.day:
            self.day, self.requests_today, self.usd_today = today, 0, 0.0
        if self.daily_requests and self.requests_today >= self.daily_requests:
            return False
        return not (self.daily_usd and self.usd_today >= self.daily_usd)


def _utc_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


class Mirror:
    def __init__(self, targets: list[Target], *, store: Store | None, metrics: Metrics, sample_header: str | None = None) -> None:
        self.targets = targets
        self.store = store
        self.metrics = metrics
        self.sample_header = sample_header.lower().encode() if sample_header else None
        self._accepting = False
        self._pending: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: Settings, *, store: Store | None, metrics: Metrics,
                      callers: Mapping[str, Caller] | None = None) -> Mirror:
        """Targets from the configuration; `callers` replaces the real callers by name (tests)."""
        callers = callers or {}
        targets = [_target(c, callers.get(c.name) or build_caller(c, settings.secret(c.api_key_env), settings))
                   for c in settings.candidates] if settings.mirror.enabled else []
        if settings.twin.sample_rate > 0:
            caller = callers.get(TWIN) or DirectCaller(
                settings.production.base_url, None, api_key=settings.secret(settings.production.api_key_env),
                read_timeout=settings.twin.timeout_s, max_connections=settings.twin.concurrency,
                via=production_route(settings),
            )
            targets.append(Target(TWIN, "twin", caller, settings.twin.sample_rate, settings.twin.concurrency,
                                  settings.twin.timeout_s))
        key = settings.mirror.sample_key
        header = key.split(":", 1)[1].strip() if key.startswith("header:") else None
        mirror = cls(targets, store=store, metrics=metrics, sample_header=header)
        for t in mirror.targets:
            t.queue = asyncio.Queue(maxsize=settings.mirror.queue_size)
        return mirror

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        now = time.time()
        day_start = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        for t in self.targets:
            if t.queue is None:
                t.queue = asyncio.Queue(maxsize=1000)
            t.day = _utc_day(now)
            if self.store is not None and (t.daily_requests or t.daily_usd):
                # Budgets survive restarts: count what today's stored outputs already used.
                t.requests_today, t.usd_today = await asyncio.to_thread(self.store.spend_since, t.name, day_start.timestamp())
            t.workers = [asyncio.get_running_loop().create_task(self._work(t), name=f"mirror-{t.name}-{i}")
                         for i in range(t.concurrency)]
        self._accepting = True

    async def stop(self, deadline_s: float) -> None:
        """Stop accepting, let queued work finish within the deadline, then cancel the rest."""
        self._accepting = False
        queues = [t.queue.join() for t in self.targets if t.queue is not None]
        if queues:
            try:
                await asyncio.wait_for(asyncio.gather(*queues), deadline_s)
            except TimeoutError:
                log.warning("mirror drain deadline reached", extra={"deadline_s": deadline_s})
        for t in self.targets:
            for w in t.workers:
                w.cancel()
            await asyncio.gather(*t.workers, return_exceptions=True)
            left = t.queue.qsize() if t.queue is not None else 0
            if left:
                self.metrics.inc("shadoweval_mirror_dropped_total", left, candidate=t.name, reason="shutdown")
            await t.caller.aclose()

    def queue_depths(self) -> dict[str, int]:
        return {t.name: t.queue.qsize() if t.queue is not None else 0 for t in self.targets}

    # -- the request path's entry point -----------------------------------------------------------

    def submit(self, exchange_id: str, route: str, body: bytes, headers: list[tuple[bytes, bytes]],
               created_at: float) -> None:
        """Hand a production request to the targets that want it. Never blocks, never raises."""
        if not self._accepting or not self.targets or route not in CAPTURED_ROUTES:
            return
        try:
            self._submit(exchange_id, route, body, headers, created_at)
        except Exception:  # mirroring must never break the request that triggered it
            log.exception("mirror submit failed")

    def _submit(self, exchange_id: str, route: str, body: bytes, headers: list[tuple[bytes, bytes]],
                created_at: float) -> None:
        request = parse_request(body)
        if request is None:
            return
        tags_header = override = None
        auth: list[tuple[bytes, bytes]] = []
        for k, v in headers:
            if k == b"x-shadoweval-tags":
                tags_header = v.decode("latin-1")
            elif k == b"authorization":
                auth = [(k, v)]
            elif k == self.sample_header:
                override = v.decode("latin-1")
        tags = parse_tags(tags_header, request)
        unit = sample_unit(request, override)
        job = MirrorJob(exchange_id, route, request, request.get("stream") is True, created_at)
        today = _utc_day(created_at)
        for t in self.targets:
            if not t.wants(route, tags, unit):
                continue
            if not t.within_budget(today):
                self.metrics.inc("shadoweval_mirror_dropped_total", candidate=t.name, reason="budget")
                continue
            assert t.queue is not None
            try:
                t.queue.put_nowait(replace(job, auth=auth) if t.role == "twin" else job)
            except asyncio.QueueFull:
                self.metrics.inc("shadoweval_mirror_dropped_total", candidate=t.name, reason="queue_full")
                continue
            t.requests_today += 1
            self.metrics.inc("shadoweval_mirrored_total", candidate=t.name)

    # -- workers ----------------------------------------------------------------------------------

    async def _work(self, t: Target) -> None:
        assert t.queue is not None
        while True:
            job = await t.queue.get()
            try:
                await self._call(t, job)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("mirror worker error", extra={"candidate": t.name})
            finally:
                t.queue.task_done()

    async def _call(self, t: Target, job: MirrorJob) -> None:
        started, t0 = time.time(), time.perf_counter()
        try:
            a = await attempt(t.caller, job.request, route=job.route, stream=job.stream, timeout_s=t.timeout_s,
                              headers=job.auth)
        except asyncio.CancelledError:
            self._record(t, job, Attempt(None, "cancelled", "shutdown", None, started,
                                         (time.perf_counter() - t0) * 1000))
            raise
        if a.status != "ok":
            self.metrics.inc("shadoweval_candidate_errors_total", candidate=t.name, kind=a.status)
        elif a.result is not None and a.result.cost_usd:
            t.usd_today += a.result.cost_usd
        self._record(t, job, a)

    def _record(self, t: Target, job: MirrorJob, a: Attempt) -> None:
        self.metrics.inc("shadoweval_candidate_outputs_total", candidate=t.name, status=a.status)
        if self.store is None:
            return
        self.store.submit(output_of(a, exchange_id=job.exchange_id, role=t.role, name=t.name,
                                    model=t.caller.model, stream=job.stream))


def _target(c: CandidateSettings, caller: Caller) -> Target:
    return Target(
        name=c.name, role="candidate", caller=caller, sample_rate=c.sample_rate, concurrency=c.concurrency,
        timeout_s=c.timeout_s, routes=c.routes, tags=c.tags, mirror_responses=c.responses,
        daily_requests=c.daily_requests, daily_usd=c.daily_usd,
    )
