"""Judge stored outputs: resumable, idempotent, concurrent, with progress.

The store hands out only outputs that have no verdict under the judge's key (name, version,
arguments), so running again after an interruption continues where it stopped and never judges
the same output twice. Verdicts go through the store's writer like everything else.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from shadoweval.core.context import extract_contexts
from shadoweval.core.settings import ContextSettings
from shadoweval.core.store import Store
from shadoweval.core.types import ContextsFound, Exchange, Feedback, Output, Verdict

from .base import Judge, Subject, judge_safely, key_of
from .cascade import CascadePolicy, select

Todo = list[tuple[Exchange, Output, Output | None]]


@dataclass(frozen=True, slots=True)
class RunResult:
    judge_key: str
    judged: int
    errors: int


def plan(store: Store, judges: Sequence[Judge], *, since: float | None = None, names: tuple[str, ...] = (),
         limit: int | None = None, context: ContextSettings | None = None,
         worker: str | None = None) -> list[tuple[Judge, Todo]]:
    """For each judge, the outputs it has not judged yet (and no other `worker` is on), their
    exchanges' passages found."""
    work = [(j, _to_judge(store, j, since=since, names=names, limit=limit, worker=worker)) for j in judges]
    return with_contexts(store, work, context)


def _to_judge(store: Store, j: Judge, *, since: float | None, names: tuple[str, ...], limit: int | None,
              worker: str | None) -> Todo:
    """The outputs `j` has not judged yet; for a judge comparing with production (`needs_production`),
    not production's own answers, which it has nothing to compare with."""
    return [(ex, out, prod) for ex, out, prod in store.outputs_to_judge(key_of(j), since=since, names=names,
                                                                        limit=limit, worker=worker)
            if prod is not None or not getattr(j, "needs_production", False)]


def with_contexts(store: Store, work: list[tuple[Judge, Todo]],
                  context: ContextSettings | None = None) -> list[tuple[Judge, Todo]]:
    """Search the requests not searched yet for their retrieved passages (the store's writer only
    reads what the app supplied, to stay fast) and save what was found with each exchange, so that
    graders and reports see it too."""
    found: dict[str, Exchange] = {}
    out = []
    for j, todo in work:
        filled: Todo = []
        for ex, o, prod in todo:
            if ex.contexts is None:
                if ex.id not in found:
                    passages = extract_contexts(ex.request, settings=context) or []
                    found[ex.id] = replace(ex, contexts=passages)
                    while not store.submit(ContextsFound(ex.id, passages)):
                        time.sleep(0.05)
                ex = found[ex.id]
            filled.append((ex, o, prod))
        out.append((j, filled))
    return out


async def run_plan(store: Store, work: list[tuple[Judge, Todo]], *, concurrency: int = 8,
                   progress: Callable[[int], None] | None = None, worker: str | None = None) -> list[RunResult]:
    """Judge everything in the plan; the store must be started. Returns counts per judge.

    The work goes exchange by exchange, every judge on every output of one exchange before the next:
    the offline judges read an exchange's passages once (a cache keeps what was read), and the
    outputs of one exchange share them, so grouping roughly halves what the embedding model does.

    With `worker` (one id per judging process), outputs are claimed in the store a chunk at a time
    before they are judged (Store.claim_outputs), and only the ones this worker got are judged: judge
    workers of several replicas on one store share the work and never judge an output twice."""
    sem = asyncio.Semaphore(max(1, concurrency))
    counts = [[0, 0] for _ in work]  # judged, errors, per judge

    async def one(k: int, j: Judge, ex: Exchange, out: Output, prod: Output | None) -> None:
        async with sem:
            v = await judge_safely(j, Subject(ex, out, prod))
        counts[k][0] += 1
        counts[k][1] += v.error is not None
        while not store.submit(v):  # the writer is behind: wait rather than lose verdicts
            await asyncio.sleep(0.05)
        if progress:
            progress(1)

    items = [(ex.id, k, j, ex, out, prod) for k, (j, todo) in enumerate(work) for ex, out, prod in todo]
    items.sort(key=lambda t: (t[0], t[1]))  # stable: within a judge, the planned order
    step = CLAIM_CHUNK if worker is not None else max(len(items), 1)
    for start in range(0, len(items), step):
        chunk = items[start:start + step]
        if worker is not None:
            chunk = await asyncio.to_thread(_claimed, store, chunk, worker)
        await asyncio.gather(*(one(k, j, ex, out, prod) for _, k, j, ex, out, prod in chunk))
    await asyncio.to_thread(store.flush, 60.0)
    return [RunResult(key_of(j), counts[k][0], counts[k][1]) for k, (j, _) in enumerate(work)]


CLAIM_CHUNK = 64  # outputs claimed at a time: small enough that a claim outlives the chunk's judging


def _claimed(store: Store, chunk: list[Any], worker: str) -> list[Any]:
    """The items of `chunk` whose output this worker could claim for the item's judge."""
    by_key: dict[str, list[str]] = {}
    for _, _, j, _, out, _ in chunk:
        by_key.setdefault(key_of(j), []).append(out.id)
    held = {(key, o) for key, ids in by_key.items() for o in store.claim_outputs(key, ids, worker)}
    return [item for item in chunk if (key_of(item[2]), item[4].id) in held]


async def run_cascade(store: Store, offline: Sequence[Judge], llm: Sequence[Judge], *, policy: CascadePolicy,
                      context: ContextSettings | None = None,
                      since: float | None = None, names: tuple[str, ...] = (), limit: int | None = None,
                      concurrency: int = 8, llm_concurrency: int = 4,
                      progress: Callable[[int], None] | None = None,
                      planned: Callable[[str, int], None] | None = None,
                      worker: str | None = None) -> list[RunResult]:
    """Offline judges on everything not judged yet, then each LLM judge on what the policy selects.

    `planned(phase, n)` is told how many outputs each phase will judge (for a progress bar).
    `worker`: claim outputs before judging them (see run_plan), for workers sharing one store."""
    work = plan(store, offline, since=since, names=names, limit=limit, context=context, worker=worker)
    if planned:
        planned("offline", sum(len(t) for _, t in work))
    results = await run_plan(store, work, concurrency=concurrency, progress=progress, worker=worker)
    if not llm or policy.share == "none":
        return results
    seen: dict[str, tuple[list[Verdict], list[Feedback]]] = {}

    def looked_up(exchange_id: str) -> tuple[list[Verdict], list[Feedback]]:
        if exchange_id not in seen:
            found = store.get_exchange(exchange_id)
            seen[exchange_id] = (store.verdicts(exchange_id), found[2] if found else [])
        return seen[exchange_id]

    offline_keys = {key_of(j) for j in offline}
    llm_work: list[tuple[Judge, Todo]] = []
    for j in llm:
        chosen: Todo = []
        for ex, out, prod in _to_judge(store, j, since=since, names=names, limit=limit, worker=worker):
            verdicts, feedback = looked_up(ex.id)
            verdicts = [v for v in verdicts if v.judge_key in offline_keys]
            theirs = [v for v in verdicts if prod is not None and v.output_id == prod.id]
            if select(out, verdicts, production=theirs, feedback=feedback, policy=policy):
                chosen.append((ex, out, prod))
        llm_work.extend(with_contexts(store, [(j, chosen)], context))
    if planned:
        planned("llm", sum(len(t) for _, t in llm_work))
    return results + await run_plan(store, llm_work, concurrency=llm_concurrency, progress=progress, worker=worker)
