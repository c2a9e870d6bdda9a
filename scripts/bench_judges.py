#!/usr/bin/env python3
"""How fast the offline judges are on this machine's CPU, and how much memory they take.

Judges N answers from the shared labeled data (or the demo's knowledge base when it is absent)
with each offline judge, one after the other, through the same code path as `shadoweval judge
run`, and prints answers per second, milliseconds per answer and the process's peak RSS.

    .venv/bin/python scripts/bench_judges.py [-n 200] [--concurrency 2] [--judge grounded --judge citations]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path

from shadoweval import judges
from shadoweval.judges.base import Subject, judge_safely
from shadoweval.proxy.types import Exchange, Output, new_id

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# answers with passages for each judge: citing answers for the citation judge
DATA = {"citations": SHARED / "attribution_claims.jsonl"}
DEFAULT = SHARED / "mtrag_responses.jsonl"


def subjects(n: int, judge: str) -> list[Subject]:
    path = DATA.get(judge, DEFAULT)
    if path.exists():
        rows = [json.loads(line) for line in path.open()]
        pairs = [(r["request"], r["contexts"], r["response"]) for r in rows if r["contexts"]]
    else:
        from shadoweval.proxy.demo.run import build_messages, load_demo

        data = load_demo()
        pairs = []
        for q in data.questions:
            contexts = [{"id": str(i), "title": data.documents[d]["title"], "text": data.documents[d]["text"]}
                        for i, d in enumerate(q["doc_ids"], 1)]
            pairs.append(({"messages": build_messages(data, q)}, contexts, q["answers"]["production"]))
    out = []
    for i in range(n):
        request, contexts, answer = pairs[i % len(pairs)]
        # distinct texts, so the embedding cache does not flatter repeated rows
        ex = Exchange(id=new_id(), created_at=time.time(), route="/v1/chat/completions", request=request,
                      contexts=[dict(c, text=f"{c['text']} ({i})") for c in contexts])
        o = Output(id=new_id(), exchange_id=ex.id, role="candidate", name="c", model="m", status="ok",
                   started_at=ex.created_at, text=f"{answer} ({i})")
        out.append(Subject(ex, o))
    return out


async def run(judge_name: str, items: list[Subject], concurrency: int) -> tuple[float, int]:
    j = judges.create(judge_name)
    sem = asyncio.Semaphore(concurrency)
    errors = 0

    async def one(s: Subject) -> None:
        nonlocal errors
        async with sem:
            v = await judge_safely(j, s)
        errors += v.error is not None

    t0 = time.perf_counter()
    await asyncio.gather(*(one(s) for s in items))
    return time.perf_counter() - t0, errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=200, help="answers per judge")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: every core; the background "
                    "judge uses [judges] threads, 1 by default)")
    ap.add_argument("--judge", action="append", help="judge to time (repeatable; default: checks, grounded, citations)")
    args = ap.parse_args()
    from shadoweval.judges.embed import get_embedder, limit_threads

    limit_threads(args.threads)
    t0 = time.perf_counter()
    get_embedder("minilm").encode(["warm up"])
    print(f"model load: {time.perf_counter() - t0:.1f} s; {args.n} answers per judge, concurrency {args.concurrency}, "
          f"torch threads {args.threads or 'all'}")
    print(f"{'judge':12} {'answers/s':>10} {'ms/answer':>10} {'errors':>7}  answers from")
    for name in args.judge or ["checks", "grounded", "citations"]:
        path = DATA.get(name, DEFAULT)
        seconds, errors = asyncio.run(run(name, subjects(args.n, name), args.concurrency))
        source = path.name if path.exists() else "the demo's knowledge base"
        print(f"{name:12} {args.n / seconds:10.1f} {1000 * seconds / args.n:10.1f} {errors:7}  {source}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
