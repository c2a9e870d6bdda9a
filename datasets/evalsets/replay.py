"""Replaying stored requests to a candidate in batch: `shadoweval replay SOURCE --candidate NAME`.

The answers land as the candidate's outputs of the same exchanges, so judges, grading and reports
treat them exactly like mirrored live pairs. A replay is resumable: exchanges the candidate has
already answered are skipped, so an interrupted run picks up where it stopped. Concurrency is
bounded, and a spending cap stops sending new requests once the candidate's cost reaches it.

An eval set can outlive its traffic (retention): an item whose exchange is gone is restored as an
exchange with production's recorded answer first, so the pair is whole again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shadoweval.core.store import Store
from shadoweval.core.types import EvalSet, Exchange, Output, new_id
from shadoweval.proxy.candidates import Caller, attempt, output_of

from .conversation import api_route

ROUTES = ("/v1/chat/completions", "/v1/responses")


@dataclass(frozen=True, slots=True)
class Job:
    exchange_id: str
    route: str
    request: dict


@dataclass(slots=True)
class ReplayResult:
    planned: int  # requests in the source
    already: int = 0  # answered by this candidate before: skipped
    sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # ok / error / timeout -> count
    cost_usd: float = 0.0
    stopped: str | None = None  # why it stopped early (the spending cap)
    restored: int = 0  # exchanges re-created from an eval set


def jobs_from_evalset(store: Store, es: EvalSet) -> tuple[list[Job], int]:
    """One job per item with a replayable request; re-creates exchanges retention removed."""
    jobs: list[Job] = []
    restored: list[Exchange | Output] = []
    for it in es.items:
        route = api_route(it.request)
        ex_id = it.exchange_id
        if ex_id is None or not store.exchange_exists(ex_id):
            ex = Exchange(id=ex_id or new_id(), created_at=it.meta.get("created_at") or time.time(), route=route,
                          request=it.request, tags={**it.meta.get("tags", {}), "evalset": es.ref},
                          contexts=it.contexts)
            restored.append(ex)
            prod = it.meta.get("production") or "production"  # imported items name production's model
            if prod in it.outputs:
                restored.append(Output(id=new_id(), exchange_id=ex.id, role="production", name="production",
                                       model=None if prod == "production" else prod, status="ok",
                                       started_at=ex.created_at, text=it.outputs[prod]))
            ex_id = ex.id
        jobs.append(Job(ex_id, route, it.request))
    for record in restored:
        if not store.submit(record):
            raise RuntimeError("the store's queue is full; try again")
    if restored and not store.flush(60):
        raise RuntimeError("the store did not confirm the restored exchanges")
    return jobs, sum(isinstance(r, Exchange) for r in restored)


def jobs_from_traffic(store: Store, *, since: float | None, until: float | None,
                      routes: tuple[str, ...] = ()) -> list[Job]:
    """Stored exchanges in a window (chat and Responses API requests)."""
    return [Job(b.exchange.id, b.exchange.route, b.exchange.request)
            for b in store.exchange_bundles(since=since, until=until)
            if b.exchange.request is not None and b.exchange.route in ROUTES
            and (not routes or b.exchange.tags.get("route") in routes or b.exchange.route in routes)]


async def replay(store: Store, jobs: list[Job], caller: Caller, *, name: str, concurrency: int = 4,
                 timeout_s: float = 120.0, max_usd: float = 0.0, restored: int = 0,
                 on_done: Callable[[int], None] | None = None) -> ReplayResult:
    """Send each job's request to the candidate (not streamed) and store its answer as `name`'s output."""
    done = store.answered_by(name, [j.exchange_id for j in jobs])
    todo = [j for j in jobs if j.exchange_id not in done]
    result = ReplayResult(planned=len(jobs), already=len(jobs) - len(todo), restored=restored)
    if on_done and result.already:
        on_done(result.already)
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for j in todo:
        queue.put_nowait(j)

    async def worker() -> None:
        while not queue.empty():
            if max_usd and result.cost_usd >= max_usd:
                result.stopped = f"spending cap of ${max_usd:g} reached"
                return
            job = queue.get_nowait()
            a = await attempt(caller, job.request, route=job.route, stream=False, timeout_s=timeout_s)
            store.submit(output_of(a, exchange_id=job.exchange_id, role="candidate", name=name, model=caller.model,
                                   stream=False))
            result.sent += 1
            result.statuses[a.status] = result.statuses.get(a.status, 0) + 1
            if a.result is not None and a.result.cost_usd:
                result.cost_usd += a.result.cost_usd
            if on_done:
                on_done(1)

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    if not await asyncio.to_thread(store.flush, 60):
        raise RuntimeError("the store did not confirm the replayed answers were written")
    return result
