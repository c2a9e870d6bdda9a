#!/usr/bin/env python3
"""How fast the offline judges are on this machine's CPU, and how much memory they take.

Two measurements, both through the code path of `shadoweval judge run` (`judge_safely` on each
judge):

1. latency: a typical RAG answer (5 passages of ~150 words, 5 sentences, 3 of them citing) judged
   by `grounded` then `citations`, one answer at a time on `--threads` torch threads (1 = one
   core): p50 and p95 per answer. Every answer has its own passages (distinct texts), so no cache
   flatters the figure; `--shared-passages` measures the shadow-mode case instead, where production
   and a candidate answer the same request and the second answer reuses the passages already read.
2. throughput: the same answers judged `--concurrency` at a time with every core, as answers per
   hour.

Prints figures and the process's peak RSS.

    .venv/bin/python scripts/bench_judges.py [-n 100] [--threads 1] [--concurrency 2] [--fp32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import statistics
import time

from shadoweval import judges
from shadoweval.core.types import Exchange, Output, new_id
from shadoweval.judges.base import Subject, judge_safely


def typical(n: int, *, shared: bool = False, salt: str = "") -> list[Subject]:
    """n answers on the demo's knowledge base: 5 passages (~120 words each, the demo's documents) and
    a 5-sentence answer, 3 sentences citing. Texts are made distinct per answer unless `shared`
    (then answers come in pairs on the same passages, as production and a candidate do)."""
    from shadoweval.cli.demo.run import load_demo

    data = load_demo()
    docs = list(data.documents.values())
    out = []
    for i in range(n):
        q = data.questions[i % len(data.questions)]
        ids = list(q["doc_ids"]) + [d["id"] for d in docs if d["id"] not in q["doc_ids"]]
        chosen = [data.documents[d] for d in ids[:5]]
        tag = f" (case {i // 2 if shared else i}{salt})"
        contexts = [{"id": str(k), "title": d["title"], "text": d["text"] + tag} for k, d in enumerate(chosen, 1)]
        cited = [s for s in re.split(r"(?<=[.!?])\s+", q["answers"]["production"]) if re.search(r"\[\d\]", s)][:3]
        plain = [re.sub(r"\s*\[\d\]", "", s) for s in re.split(r"(?<=[.!?])\s+", q["answers"]["careful"])]
        sentences = (cited + plain + ["Let me know if there is anything else I can help with."])[:5]
        answer = " ".join(sentences) + tag
        ex = Exchange(id=new_id(), created_at=time.time(), route="/v1/chat/completions",
                      request={"messages": [{"role": "user", "content": q["question"]}]}, contexts=contexts)
        o = Output(id=new_id(), exchange_id=ex.id, role="candidate", name="c", model="m", status="ok",
                   started_at=ex.created_at, text=answer)
        out.append(Subject(ex, o))
    return out


async def both(js: list, s: Subject) -> int:
    errors = 0
    for j in js:
        v = await judge_safely(j, s)
        errors += v.error is not None
    return errors


def latency(js: list, items: list[Subject]) -> tuple[list[float], int]:
    times, errors = [], 0
    for s in items:
        t0 = time.perf_counter()
        errors += asyncio.run(both(js, s))
        times.append(time.perf_counter() - t0)
    return times, errors


async def throughput(js: list, items: list[Subject], concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(s: Subject) -> None:
        async with sem:
            await both(js, s)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(s) for s in items))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100, help="answers per measurement")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for the latency run (1: one core)")
    ap.add_argument("--concurrency", type=int, default=2, help="answers judged at once in the throughput run")
    ap.add_argument("--shared-passages", action="store_true", help="answers in pairs on the same passages")
    ap.add_argument("--fp32", action="store_true", help="read in float32 even where the CPU has bfloat16")
    args = ap.parse_args()
    if args.fp32:
        os.environ["SHADOWEVAL_JUDGE_BF16"] = "0"
    import torch

    from shadoweval.judges.embed import bf16_reading, get_embedder, limit_threads

    limit_threads(args.threads)
    t0 = time.perf_counter()
    get_embedder("minilm").encode(["warm up"])
    js = [judges.create("grounded"), judges.create("citations")]
    asyncio.run(both(js, typical(1)[0]))
    print(f"model load and warm-up: {time.perf_counter() - t0:.1f} s; support model {js[0].args['model']}; "
          f"the model reads in {'bfloat16' if bf16_reading() else 'float32'}")
    items = typical(args.n, shared=args.shared_passages)
    times, errors = latency(js, items)
    ms = sorted(1000 * t for t in times)
    print(f"latency, grounded + citations per answer, {args.threads} torch thread(s), {args.n} answers"
          f"{' (pairs on shared passages)' if args.shared_passages else ' (distinct passages)'}: "
          f"p50 {statistics.median(ms):.0f} ms, p95 {ms[int(0.95 * (len(ms) - 1))]:.0f} ms, errors {errors}")
    torch.set_num_threads(max(1, torch.get_num_threads() if args.threads == 0 else 2))
    items = typical(args.n, shared=args.shared_passages, salt=", second run")  # nothing cached from the first run
    seconds = asyncio.run(throughput(js, items, args.concurrency))
    print(f"throughput, every core ({torch.get_num_threads()} torch threads), concurrency {args.concurrency}: "
          f"{args.n / seconds:.2f} answers/s = {3600 * args.n / seconds:,.0f} answers/hour")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
