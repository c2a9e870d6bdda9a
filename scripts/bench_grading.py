#!/usr/bin/env python3
"""How the grading page's API holds up with several graders at once: latency of "next pair" (which
takes a lease through the store's writer) and of posting a grade, and whether any pair got more
grades than it needs.

    .venv/bin/python scripts/bench_grading.py [--pairs 300] [--graders 8]

Everything is local: a temporary store, the page served by uvicorn on 127.0.0.1, graders as threads
speaking HTTP.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shadoweval.cli.grade import grading_server  # noqa: E402
from shadoweval.cli.mockllm import ThreadedServer  # noqa: E402
from shadoweval.core.settings import load_settings  # noqa: E402
from shadoweval.core.store import Store  # noqa: E402
from shadoweval.core.types import Exchange, GradingItem, Output, new_id  # noqa: E402


def seed(store: Store, pairs: int) -> None:
    for i in range(pairs):
        ex = Exchange(id=new_id(), created_at=time.time(), route="/v1/chat/completions",
                      request={"messages": [{"role": "system", "content": "Docs:\n[1] Returns are free for 30 days."},
                                            {"role": "user", "content": f"Question {i}?"}]})
        outs = [Output(id=new_id(), exchange_id=ex.id, role=role, name=role, model="m", status="ok",
                       started_at=ex.created_at, text=f"**Answer** {i} from {role} [1].")
                for role in ("production", "candidate")]
        store.submit(ex)
        for o in outs:
            store.submit(o)
        store.submit(GradingItem(id=new_id(), exchange_id=ex.id, candidate_output_id=outs[1].id,
                                 production_output_id=outs[0].id, left="production", policy="uniform",
                                 probability=1.0, inclusion_probability=1.0, evaluators=2 if i % 5 == 0 else 1,
                                 slice="route=a", created_at=ex.created_at + i * 1e-6, batch="bench"))
    assert store.flush(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--graders", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        people = "\n".join(f'[[evaluators]]\nname = "g{i}"\ntoken_sha256 = "{hashlib.sha256(f"t{i}".encode()).hexdigest()}"\n'
                           for i in range(args.graders))
        cfg = Path(tmp) / "c.toml"
        cfg.write_text(f'[store]\npath = "{tmp}/bench.db"\n\n{people}')
        settings = load_settings(cfg)
        store = Store(settings.store.path)
        store.start()
        seed(store, args.pairs)
        store.stop()
        nexts: list[float] = []
        posts: list[float] = []
        lock = threading.Lock()

        def grader(i: int, url: str) -> None:
            with httpx.Client(base_url=f"{url}/grade/", timeout=30) as c:
                c.post("api/signin", json={"token": f"t{i}"}).raise_for_status()
                while True:
                    t0 = time.perf_counter()
                    item = c.get("api/next").json()["item"]
                    t1 = time.perf_counter()
                    if item is None:
                        return
                    c.post("api/grades", json={"item_id": item["id"], "preference": "tie"}).raise_for_status()
                    t2 = time.perf_counter()
                    with lock:
                        nexts.append(t1 - t0)
                        posts.append(t2 - t1)

        with ThreadedServer(grading_server(settings)) as server:
            t0 = time.perf_counter()
            threads = [threading.Thread(target=grader, args=(i, server.url)) for i in range(args.graders)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
        store = Store(settings.store.path)
        needed = {i.id: i.evaluators for i in store.grading_items()}
        got = Counter(g.item_id for g in store.grades())
    over = sum(1 for item, n in got.items() if n > needed[item])
    short = sum(1 for item, n in needed.items() if got[item] < n)

    def ms(xs: list[float], q: float) -> str:
        return f"{statistics.quantiles(xs, n=100)[int(q) - 1] * 1000:.1f}" if len(xs) > 1 else "-"

    print(f"{args.pairs} pairs ({sum(needed.values())} grades needed), {args.graders} graders in parallel")
    print(f"grades posted: {len(posts)} in {wall:.1f} s ({len(posts) / wall:.0f}/s)")
    print(f"next pair (lease):  p50 {ms(nexts, 50)} ms  p95 {ms(nexts, 95)} ms")
    print(f"post grade:         p50 {ms(posts, 50)} ms  p95 {ms(posts, 95)} ms")
    print(f"pairs with more grades than needed: {over}; pairs left short: {short}")


if __name__ == "__main__":
    main()
