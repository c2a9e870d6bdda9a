"""Store write rate: how many exchanges a second the writer thread gets into SQLite, sustained.

The proxy never waits for the store, so the store's speed shows up elsewhere: when production
traffic outruns the writer, its queue fills and exchanges are dropped. This measures how much
traffic one writer thread keeps up with, on realistic records (a ~3 KB RAG prompt, a ~100-word
answer), with the settings `shadoweval serve` uses by default (queue, batch size, flush interval,
redaction on):

- records:     ready-made Exchange + Output dataclasses (two queue items per exchange), so only
               redaction, row shaping and SQLite are timed;
- capture-json and capture-sse: one builder per exchange, as the request path submits them:
               `production_records(ProductionCapture(...))` parses the raw request and the raw
               answer (one JSON body, or ~100 SSE chunks as they crossed the proxy) in the writer.

Everything is built before the clock starts; the clock runs from the first `submit()` to
`flush()` returning. The producer never lets the queue overflow (it pauses near the bound), so
nothing is dropped and the figure is the writer's rate.

    .venv/bin/python scripts/bench_store.py                 # 50,000 exchanges per scenario
    .venv/bin/python scripts/bench_store.py -n 20000 --scenarios capture-sse --no-redact
    .venv/bin/python scripts/bench_store.py --db postgresql://postgres@127.0.0.1:5432/bench   # PostgreSQL
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson

from shadoweval.core.redact import Redactor
from shadoweval.core.settings import RedactionSettings, StoreSettings
from shadoweval.core.store import Store
from shadoweval.core.types import Exchange, Output, Usage, new_id
from shadoweval.proxy.capture import ProductionCapture, production_records
from shadoweval.proxy.sse import Capture

TARGET_PER_S = 2000
ROUTE = "/v1/chat/completions"
MODEL = "gpt-4o-mini-2024-07-18"
WORDS = (
    "account billing invoice refund policy customer order shipping delivery warranty return plan "
    "subscription upgrade downgrade payment card charge credit support ticket agent escalation "
    "product feature release version update install configure settings password login security "
    "two-factor device browser mobile desktop error message timeout network region data export "
    "import report dashboard analytics team member role permission admin owner workspace project "
    "the a of to and in for on with by from is are was be this that it as at or which can will may "
    "should must not only also each every when if then within after before during between under"
).split()

Item = Exchange | Output | Callable[[], Iterable[Exchange | Output]]


# -- realistic traffic --------------------------------------------------------------------------------


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def rag_request(rng: random.Random, passages: list[str], stream: bool) -> dict[str, object]:
    """A support-bot RAG prompt of about 3 KB: instructions, four retrieved passages, a question.
    One in ten carries an e-mail address, as real support questions do."""
    picked = rng.sample(passages, 4)
    context = "\n\n".join(f"[doc {rng.randrange(10_000)}] {p}" for p in picked)
    question = sentence(rng, 18)
    if rng.random() < 0.1:
        question += f" My login is user{rng.randrange(10**6)}@example.com."
    body: dict[str, object] = {
        "model": MODEL,
        "temperature": 0.2,
        "max_tokens": 400,
        "user": f"user-{rng.randrange(5000)}",
        "messages": [
            {"role": "system", "content": "You are the support assistant of Acme Cloud. Answer only from the "
             "documents below and cite them as [doc N]. If the answer is not in them, say so and offer "
             "to open a ticket. Be concise and friendly."},
            {"role": "user", "content": f"Documents:\n{context}\n\nQuestion: {question}"},
        ],
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def answer_words(rng: random.Random, n: int = 100) -> list[str]:
    return [rng.choice(WORDS) for _ in range(n)]


def chat_json(cid: str, words: list[str]) -> bytes:
    return orjson.dumps({
        "id": cid, "object": "chat.completion", "created": 1_763_900_000, "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": " ".join(words), "refusal": None}}],
        "usage": {"prompt_tokens": 712, "completion_tokens": len(words) + 12, "total_tokens": 724 + len(words)},
        "system_fingerprint": "fp_bench",
    })


def chat_sse(cid: str, words: list[str]) -> list[bytes]:
    """The pieces of an OpenAI stream as they reach the proxy: one event per token."""

    def event(delta: dict[str, object], finish: str | None = None) -> bytes:
        chunk = {"id": cid, "object": "chat.completion.chunk", "created": 1_763_900_000, "model": MODEL,
                 "system_fingerprint": "fp_bench", "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                                "finish_reason": finish}]}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    pieces = [event({"role": "assistant", "content": ""})]
    pieces += [event({"content": (" " if i else "") + w}) for i, w in enumerate(words)]
    pieces.append(event({}, "stop"))
    usage = {"id": cid, "object": "chat.completion.chunk", "created": 1_763_900_000, "model": MODEL, "choices": [],
             "usage": {"prompt_tokens": 712, "completion_tokens": len(words) + 12, "total_tokens": 724 + len(words)}}
    pieces.append(b"data: " + orjson.dumps(usage) + b"\n\n")
    pieces.append(b"data: [DONE]\n\n")
    return pieces


def build_items(scenario: str, n: int, seed: int) -> tuple[list[Item], int, float]:
    """The queue items for n exchanges, the number of records they make, and the mean request size."""
    rng = random.Random(seed)
    passages = [" ".join(sentence(rng, rng.randint(8, 16)) for _ in range(8)) for _ in range(400)]
    items: list[Item] = []
    size = 0
    now = time.time()
    for i in range(n):
        stream = scenario == "capture-sse"
        request = rag_request(rng, passages, stream)
        words = answer_words(rng)
        eid = new_id()
        created = now + i * 0.001
        if scenario == "records":
            size += len(orjson.dumps(request))
            items.append(Exchange(eid, created, ROUTE, request, tags={"user": str(request["user"])},
                                  stream=False, status="ok", http_status=200))
            items.append(Output(new_id(), eid, "production", "production", MODEL, "ok", created,
                                text=" ".join(words), finish_reason="stop", usage=Usage(712, 112, 824),
                                latency_ms=812.5, http_status=200, cost_usd=0.00017))
            continue
        body = orjson.dumps(request)
        size += len(body)
        cid = f"chatcmpl-{eid}"
        t0 = 1000.0 + i
        if stream:
            pieces = chat_sse(cid, words)
            times = [t0 + 0.3 + 0.02 * k for k in range(len(pieces))]
            answer = Capture(200, "text/event-stream", None, pieces, times)
        else:
            answer = Capture(200, "application/json", None, [chat_json(cid, words)], [t0 + 0.8])
        cap = ProductionCapture(eid, ROUTE, created, t0, body, None, answer, t_end=t0 + 2.5)
        items.append(lambda cap=cap: production_records(cap))
    records = 2 * n
    return items, records, size / n


# -- measuring ------------------------------------------------------------------------------------------


def thread_cpu_s(native_id: int | None) -> float:
    """CPU seconds of one thread of this process, from /proc (0 when it is gone)."""
    try:
        fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rpartition(")")[2].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(scenario: str, n: int, folder: Path, redact: bool, seed: int, db: str | None = None) -> dict[str, float]:
    items, records, req_bytes = build_items(scenario, n, seed)
    s, r = StoreSettings(), RedactionSettings()
    redactor = (Redactor(emails=r.emails, card_numbers=r.card_numbers, phone_numbers=r.phone_numbers)
                if redact else Redactor(emails=False, card_numbers=False, phone_numbers=False))
    path = folder / f"{scenario}.db"
    store = Store(db or path, journal=path if db else None, queue_size=s.queue_size, batch_size=s.batch_size, flush_interval_ms=s.flush_interval_ms,
                  redactor=redactor)
    store.start()
    writer = next((t for t in threading.enumerate() if t.name == "shadoweval-store-writer"), None)
    writer_id = writer.native_id if writer else None
    high_water = s.queue_size - 2 * s.batch_size
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:  # written records over time, to see whether the rate holds as the file grows
        while not done.wait(0.25):
            samples.append((time.perf_counter(), store.status().written))

    sampler = threading.Thread(target=sample, daemon=True)
    # as `shadoweval serve` does after startup: what exists now (modules, the pre-built items, which in
    # serve would not exist) stays out of the collector's way, so that only records in flight are scanned
    gc.collect()
    gc.freeze()
    cpu_w0, cpu_p0 = thread_cpu_s(writer_id), time.process_time()
    t0 = time.perf_counter()
    sampler.start()
    for i, item in enumerate(items):
        if i % 256 == 0:
            while store.status().queue_depth > high_water:
                time.sleep(0.002)
        if not store.submit(item):
            raise SystemExit("the queue overflowed: the producer's pacing is wrong")
    flushed = store.flush(timeout=600)
    wall = time.perf_counter() - t0
    cpu_w, cpu_p = thread_cpu_s(writer_id) - cpu_w0, time.process_time() - cpu_p0
    done.set()
    sampler.join()
    st = store.status()
    store.stop()
    gc.unfreeze()
    files = sum(p.stat().st_size for p in folder.glob(path.name + "*"))
    half = st.written / 2
    t_half = next((t for t, w in samples if w >= half), None)
    second = (st.written - half) / 2 / (t0 + wall - t_half) if t_half and t0 + wall > t_half else float("nan")
    first = half / 2 / (t_half - t0) if t_half else float("nan")
    return {
        "exchanges": n, "records": records, "written": st.written, "lost": st.lost, "flushed": float(flushed),
        "wall_s": wall, "per_s": n / wall, "first_half_per_s": first, "second_half_per_s": second,
        "writer_cpu_ms": 1000 * cpu_w / n, "process_cpu_ms": 1000 * cpu_p / n,
        "file_mb": files / 1e6, "bytes_per_exchange": files / n, "request_bytes": req_bytes,
    }


def _safe(url: str) -> str:
    from shadoweval.core.pg import safe_url  # only with --db: psycopg loaded slows the SQLite figures

    return safe_url(url)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--exchanges", type=int, default=50_000, help="exchanges per scenario")
    ap.add_argument("--scenarios", default="records,capture-json,capture-sse")
    ap.add_argument("--no-redact", action="store_true", help="redaction off (the proxy's default is on)")
    ap.add_argument("--dir", type=Path, default=None, help="where the SQLite files go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the SQLite files")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--db", metavar="URL", default=None,
                    help="write to this PostgreSQL URL instead of a SQLite file per scenario (rows accumulate)")
    args = ap.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench_store-", dir=args.dir))
    print(f"store bench: {args.exchanges} exchanges per scenario, redaction {'off' if args.no_redact else 'on'}, "
          f"settings as `shadoweval serve` (queue {StoreSettings().queue_size}, batch {StoreSettings().batch_size}, "
          f"flush {StoreSettings().flush_interval_ms} ms), "
          f"{'into ' + _safe(args.db) if args.db else 'files in ' + str(folder)}", flush=True)
    rows = []
    try:
        for scenario in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
            r = run(scenario, args.exchanges, folder, not args.no_redact, args.seed, args.db)
            rows.append((scenario, r))
            print(f"  {scenario:12} {r['per_s']:8.0f} exchanges/s ({r['wall_s']:.1f} s)", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)

    head = ("scenario", "exchanges/s", "1st half/s", "2nd half/s", "writer CPU ms/ex", "process CPU ms/ex",
            "written", "lost", "file MB", "bytes/ex", "request B", "target")
    lines = [head]
    for name, r in rows:
        lines.append((name, f"{r['per_s']:.0f}", f"{r['first_half_per_s']:.0f}", f"{r['second_half_per_s']:.0f}",
                      f"{r['writer_cpu_ms']:.3f}", f"{r['process_cpu_ms']:.3f}", f"{r['written']:.0f}",
                      f"{r['lost']:.0f}", f"{r['file_mb']:.1f}", f"{r['bytes_per_exchange']:.0f}",
                      f"{r['request_bytes']:.0f}", "MET" if r["per_s"] >= TARGET_PER_S else "MISS"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    print()
    for k, line in enumerate(lines):
        print("| " + " | ".join(str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i])
                                for i, c in enumerate(line)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    print(f"\ntarget: >= {TARGET_PER_S} exchanges/s written (wall time from the first submit to flush() "
          "returning; one exchange = the exchange row + production's output row)")
    return 0 if all(r["per_s"] >= TARGET_PER_S for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
