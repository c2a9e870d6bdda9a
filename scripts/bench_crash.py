"""What a SIGKILL of `shadoweval serve` loses, and whether the proxy then says so.

Runs `serve` against the mock production (cli/mockllm.py), sends N requests (C at a time),
kills the proxy with SIGKILL the moment the last answer arrived, restarts it on the same database
and prints: answered, stored, lost (answered - stored), what `/healthz` reports as lost and what
`shadoweval stats` reports, which must all agree. Once per durability mode asked for.

    .venv/bin/python scripts/bench_crash.py                          # 500 requests, both modes
    .venv/bin/python scripts/bench_crash.py --latency-ms 20 --n 500 --concurrency 16
    .venv/bin/python scripts/bench_crash.py --durability batched --flush-interval-ms 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from shadoweval.cli.mockllm import MockLLM, ThreadedServer, free_port
from shadoweval.core.store import Store

BIN = Path(sys.executable).parent / "shadoweval"


def wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited with {proc.returncode}")
        try:
            return httpx.get(url + "/healthz", timeout=1).json()  # type: ignore[no-any-return]
        except (httpx.HTTPError, ValueError):
            time.sleep(0.1)
    raise SystemExit("serve did not start")


async def send(url: str, n: int, concurrency: int) -> tuple[int, list[float]]:
    answered = 0
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(i: int) -> None:
            nonlocal answered
            async with sem:
                t0 = time.perf_counter()
                r = await client.post("/v1/chat/completions", json={
                    "model": "m", "messages": [{"role": "user", "content": f"question {i}"}]})
                if r.status_code == 200:
                    answered += 1
                    latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(one(i) for i in range(n)))
    return answered, latencies


def run(mode: str, args: argparse.Namespace, production_url: str, work: Path) -> dict:
    db = work / f"crash-{mode}.db"
    cfg = work / f"crash-{mode}.toml"
    cfg.write_text(f'[production]\nbase_url = "{production_url}/v1"\n'
                   f'[store]\ndurability = "{mode}"\nflush_interval_ms = {args.flush_interval_ms}\n'
                   f'[judges]\nbackground = false\n[mirror]\nenabled = false\n')
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(BIN), "serve", "--config", str(cfg), "--port", str(port), "--db", str(db)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_healthy(url, proc)
    answered, lat = asyncio.run(send(url, args.n, args.concurrency))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = Store(db).stats()[0]

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        health = wait_healthy(url, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    stats = json.loads(subprocess.run([str(BIN), "stats", "--db", str(db), "--json"], capture_output=True,
                                      check=True).stdout)
    lat.sort()
    return {"mode": mode, "answered": answered, "stored": stored, "lost": answered - stored,
            "healthz_lost": health["store"]["lost"], "healthz_by_reason": health["store"].get("lost_by_reason"),
            "stats_lost": stats["store_lost"],
            "p50_ms": lat[len(lat) // 2] if lat else None, "p99_ms": lat[int(len(lat) * 0.99)] if lat else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="requests sent before the kill")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency-ms", type=float, default=0, help="production's think time")
    ap.add_argument("--flush-interval-ms", type=int, default=100, help="[store] flush_interval_ms")
    ap.add_argument("--durability", choices=["batched", "strict", "both"], default="both")
    args = ap.parse_args()
    modes = ["batched", "strict"] if args.durability == "both" else [args.durability]
    print(f"n={args.n} concurrency={args.concurrency} production latency={args.latency_ms} ms "
          f"flush_interval_ms={args.flush_interval_ms}")
    print(f"{'mode':8} {'answered':>8} {'stored':>7} {'lost':>5} {'/healthz lost':>13} {'stats lost':>18} "
          f"{'p50 ms':>7} {'p99 ms':>7}  agree")
    with tempfile.TemporaryDirectory() as tmp, ThreadedServer(MockLLM(name="prod", latency_s=args.latency_ms / 1000)
                                                              ) as prod:
        for mode in modes:
            r = run(mode, args, prod.url, Path(tmp))
            stats_lost = int(sum(r["stats_lost"].values()))
            agree = r["lost"] == r["healthz_lost"] == stats_lost == (r["healthz_by_reason"] or {}).get("crash", 0)
            shown = ", ".join(f"{k} {int(v)}" for k, v in r["stats_lost"].items()) or "none"
            print(f"{mode:8} {r['answered']:8} {r['stored']:7} {r['lost']:5} {r['healthz_lost']:13} {shown:>18} "
                  f"{r['p50_ms']:7.1f} {r['p99_ms']:7.1f}  {'yes' if agree else 'NO'}")


if __name__ == "__main__":
    main()
