#!/usr/bin/env python3
"""Replicas on one PostgreSQL store vs one proxy on SQLite, measured on this machine.

Four parts, each printed as it finishes, then a sizing summary:

1. load: c64, non-streaming and streaming, against (a) one `shadoweval serve` on SQLite, (b) two
   `shadoweval serve` replicas on one PostgreSQL database, the load split round robin by running
   two loadgen processes at c32 each (one per replica), and the mock upstream directly, to
   compute the latency the proxy adds. Two more systems separate the store from the second
   process: (c) two replicas on a SQLite file each and (d) one replica on PostgreSQL; (b)/(c)
   and (d)/(a) compare the engines with as many proxy processes on each side. After each run: answered (loadgen's successes) vs rows
   stored, distinct ids (duplicates), and what /metrics counts as lost.
2. writer rate: scripts/bench_store.py on SQLite and on PostgreSQL (`--db URL`): exchanges/s
   and CPU seconds per 1,000 exchanges of the writer thread and process, plus PostgreSQL's CPU.
3. outage: c16 non-streaming on one replica; PostgreSQL stopped (pg_ctl -m fast) for 10 s, then
   started again. Latency before/during/after, client errors, answered vs stored vs counted loss,
   and whether writing resumes by itself.
4. kill -9: two replicas at c32 each; one is killed mid-run. The other's errors, and the killed
   one's loss (its answered minus its stored, by the tag each replica's load sends) against its
   batch bound; then the killed replica is restarted to see what it counts as `crash`.

CPU pinning (--pin auto, 2+ cores): load generators, the mock and bench_store's producer on CPU 0;
the proxies and PostgreSQL on CPU 1, so that SQLite's writing (inside the proxy) and
PostgreSQL's (in its server) are charged to the same core (`--pg-cpu load` moves PostgreSQL
to CPU 0: a database with a core of its own, as in production). Loss counters count records (an
exchange is two: the exchange row and production's output row); the script converts.
Figures only: it never asserts. Everything it starts (processes, the PostgreSQL cluster) is
stopped on exit, Ctrl-C included.

    .venv/bin/python scripts/bench_replicas.py            # ~5-10 minutes
    .venv/bin/python scripts/bench_replicas.py --quick    # ~3 minutes, noisier
    .venv/bin/python scripts/bench_replicas.py --parts load,outage --duration 5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

REPO = Path(__file__).resolve().parent.parent
SHARED_BENCH = Path("/work/shared/bench")
BENCH_COPY = REPO / "results" / "bench-copy"
SHADOWEVAL = REPO / ".venv" / "bin" / "shadoweval"
PG_SCRIPT = REPO / "scripts" / "postgres"
BENCH_STORE = REPO / "scripts" / "bench_store.py"
TICK = os.sysconf("SC_CLK_TCK")
TOLERANCE = 0.10  # (b) within 10% of (a)


def log(msg: str) -> None:
    print(f"[bench_replicas {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def out(line: str = "") -> None:
    print(line, flush=True)


# -- processes --------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
        """Signal the process group we created for it (pgid == pid), SIGKILL if it lingers."""
        for s, w in ((sig, wait), (signal.SIGKILL, 5.0)):
            if self.popen.poll() is not None:
                return
            try:
                os.killpg(self.pid, s)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(w)
                return
            except subprocess.TimeoutExpired:
                continue


class Runner:
    """Starts processes in their own process groups and remembers them, to stop them all at exit."""

    def __init__(self, work: Path, pin: bool, pg_cpu: str = "server") -> None:
        self.work = work
        self.pin = pin
        self.pg_cpu = pg_cpu  # where PostgreSQL runs: with the proxies ("server") or the load ("load")
        self.procs: list[Proc] = []
        self.clusters: list[Path] = []

    def cpus(self, which: str) -> list[str]:
        if not self.pin or not shutil.which("taskset"):
            return []
        if which == "pg":
            which = self.pg_cpu
        return ["taskset", "-c", "0" if which == "load" else "1"]

    def start(self, name: str, argv: list[str], *, cpus: str, env: dict[str, str] | None = None) -> Proc:
        logf = open(self.work / f"{name}.log", "ab")
        try:
            popen = subprocess.Popen(self.cpus(cpus) + argv, stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(env or {})})
        finally:
            logf.close()
        p = Proc(name, popen)
        self.procs.append(p)
        return p

    def cleanup(self) -> None:
        for p in reversed(self.procs):
            p.stop(wait=5.0)
        self.procs.clear()
        for d in self.clusters:
            subprocess.run([str(PG_SCRIPT), "stop", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.clusters.clear()


def proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def tree_pids(root: int) -> list[int]:
    """root and every live descendant."""
    parents: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(d.name))
    pids, todo = [], [root]
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo += parents.get(pid, [])
    return pids


def tree_cpu_s(root: int) -> float:
    return sum(proc_cpu_s(p) for p in tree_pids(root))


def cpu_times() -> dict[str, tuple[float, float, float]]:
    """Per CPU from /proc/stat: (total, busy, steal) jiffies."""
    times = {}
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *vals = line.split()
            v = [float(x) for x in vals]
            total = sum(v[:8])
            times[name] = (total, total - v[3] - v[4], v[7] if len(v) > 7 else 0.0)
    return times


def cpu_busy(t0: dict[str, tuple[float, float, float]], t1: dict[str, tuple[float, float, float]]) -> str:
    parts = []
    for name in sorted(t1):
        dt = t1[name][0] - t0[name][0]
        if dt > 0:
            parts.append(f"{name} {100 * (t1[name][1] - t0[name][1]) / dt:.0f}% busy"
                         + (f" ({100 * (t1[name][2] - t0[name][2]) / dt:.0f}% steal)" if t1[name][2] > t0[name][2] else ""))
    return ", ".join(parts)


class CpuSampler:
    """CPU seconds used by a process tree over a span, counting children that exit within it (a
    PostgreSQL backend ends with its client's connection and takes its /proc times along): samples
    every 0.1 s and keeps each pid's last reading."""

    def __init__(self, root: Callable[[], int]) -> None:
        self.root = root
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, into: dict[int, float]) -> None:
        root = self.root()
        if root:
            for pid in tree_pids(root):
                into[pid] = proc_cpu_s(pid)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._sample(self.last)

    def __enter__(self) -> CpuSampler:
        self._sample(self.first)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(self.last)

    @property
    def seconds(self) -> float:
        return sum(max(0.0, v - self.first.get(pid, 0.0)) for pid, v in self.last.items())


# -- PostgreSQL -------------------------------------------------------------------------------------


@dataclass
class Cluster:
    dir: Path
    url: str  # of the `postgres` database
    port: int
    runner: Runner

    def postmaster(self) -> int:
        try:
            return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def cpu_s(self) -> float:
        pm = self.postmaster()
        return tree_cpu_s(pm) if pm else 0.0

    def database(self, name: str) -> str:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"drop database if exists {name}")
            conn.execute(f"create database {name}")
        return self.url.rsplit("/", 1)[0] + "/" + name

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        binary = self.bin() / "pg_ctl"
        owner = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        return subprocess.run(self.runner.cpus("pg") + owner + [str(binary), "-D", str(self.dir / "data"), *args],
                              cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @staticmethod
    def bin() -> Path:
        found = shutil.which("initdb")
        if found:
            return Path(found).resolve().parent
        return sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))[-1]

    def stop_server(self) -> float:
        t0 = time.monotonic()
        r = self.pg_ctl("-m", "fast", "-w", "stop")
        if r.returncode:
            log(f"pg_ctl stop failed: {r.stderr.decode(errors='replace').strip()}")
        return time.monotonic() - t0

    def start_server(self) -> float:
        """The same options as scripts/postgres uses."""
        t0 = time.monotonic()
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        r = self.pg_ctl("-l", str(self.dir / "log"), "-w", "-t", "60", "-o", opts, "start")
        if r.returncode:
            log(f"pg_ctl start failed: {r.stderr.decode(errors='replace').strip()}")
        return time.monotonic() - t0


def start_cluster(runner: Runner) -> Cluster:
    d = runner.work / "pg"
    runner.clusters.append(d)
    r = subprocess.run(runner.cpus("pg") + [str(PG_SCRIPT), "start", str(d)], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"scripts/postgres start failed: {r.stderr.strip()}")
    url = r.stdout.strip().splitlines()[-1]
    return Cluster(d, url, int(url.rsplit(":", 1)[1].split("/")[0]), runner)


def pg_counts(url: str, tag: str | None = None) -> tuple[int, int]:
    where = f" where tags_json::jsonb ->> 'replica' = '{tag}'" if tag else ""
    with psycopg.connect(url) as conn:
        row = conn.execute(f"select count(*), count(distinct id) from exchanges{where}").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def sqlite_counts(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        row = conn.execute("select count(*), count(distinct id) from exchanges").fetchone()
    finally:
        conn.close()
    return int(row[0]), int(row[1])


# -- the proxy --------------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback only)
        return str(r.read().decode())


@dataclass
class Replica:
    name: str
    proc: Proc
    port: int
    config: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metrics(self) -> dict[str, Any]:
        """Store counters from /metrics: records written by kind, records lost by reason."""
        text = http_get(self.url + "/metrics")
        written: dict[str, float] = {}
        lost: dict[str, float] = {}
        for m in re.finditer(r'^shadoweval_store_(written|lost)_total\{(\w+)="([^"]*)"\} ([0-9.e+]+)$', text, re.M):
            (written if m.group(1) == "written" else lost)[m.group(3)] = float(m.group(4))
        return {"written": written, "lost": lost}

    def cpu_s(self) -> float:
        return tree_cpu_s(self.proc.pid)


def write_config(path: Path, *, upstream: str, store: str, batch_size: int, flush_ms: int) -> None:
    # with a URL, `path` only places this host's crash journal: in the work folder, removed with it
    target = (f"url = {json.dumps(store)}\npath = {json.dumps(str(path.with_suffix('.journal.db')))}"
              if store.startswith("postgresql://") else f"path = {json.dumps(store)}")
    path.write_text("\n".join([
        "# generated by scripts/bench_replicas.py",
        "[server]", 'log_level = "warning"', "",
        "[production]", f"base_url = {json.dumps(upstream)}", "",
        "[store]", target, "capture = true", f"batch_size = {batch_size}", f"flush_interval_ms = {flush_ms}", "",
        "[mirror]", "enabled = false", "",
        "[judges]", "background = false", "",
    ]))


def start_replica(runner: Runner, name: str, config: Path, port: int | None = None) -> Replica:
    port = port or free_port()
    proc = runner.start(name, [str(SHADOWEVAL), "serve", "--config", str(config), "--host", "127.0.0.1",
                               "--port", str(port)], cpus="server")
    rep = Replica(name, proc, port, config)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.popen.returncode}; see {runner.work / (name + '.log')}")
        try:
            http_get(rep.url + "/healthz", 1.0)
            return rep
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{name} did not answer /healthz within 60 s")


def settle(reps: list[Replica], timeout: float = 20.0) -> list[dict[str, Any]]:
    """Wait until every replica's written+lost counters stop moving (the writer caught up)."""
    deadline = time.monotonic() + timeout
    last: list[Any] = []
    while True:
        time.sleep(0.4)
        now = [r.metrics() for r in reps]
        if now == last or time.monotonic() > deadline:
            return now
        last = now


def exchanges_written(m: dict[str, Any]) -> int:
    return int(m["written"].get("exchanges", 0))


def records_lost(m: dict[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in m["lost"].items() if v}


# Reasons counted per row of a failed batch (an exchange is two rows: the exchange and production's
# output); the others (crash, queue_full, shutdown, build_error) count hand-overs, one per exchange.
# docs/durability.md, "A record is one hand-over to the store".
ROW_REASONS = {"unavailable", "postgres_error", "locked", "readonly", "disk_full", "sqlite_error"}


def lost_exchanges(lost: dict[str, int]) -> float:
    return sum(v / 2 if k in ROW_REASONS else v for k, v in lost.items())


# -- load -------------------------------------------------------------------------------------------


@dataclass
class Load:
    ok: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    rps: float = 0.0
    samples: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)

    def add(self, o: dict[str, Any], *, measured: bool = True) -> None:
        self.ok += o["ok"]
        self.errors += o["errors"]
        for k, v in (o.get("error_kinds") or {}).items():
            self.error_kinds[k] = self.error_kinds.get(k, 0) + v
        if measured:
            self.rps += o["rps"]
            self.samples += o.get("samples", {}).get("latency_ms", [])
            self.ttfb += o.get("samples", {}).get("ttfb_ms", [])

    def pct(self, q: float, ttfb: bool = False) -> float | None:
        vals = sorted(self.ttfb if ttfb else self.samples)
        if not vals:
            return None
        k = (len(vals) - 1) * q / 100
        f = int(k)
        c = min(f + 1, len(vals) - 1)
        return vals[f] + (vals[c] - vals[f]) * (k - f)


class Loadgen:
    def __init__(self, runner: Runner, bench: Path) -> None:
        self.runner = runner
        self.bench = bench
        self.n = 0

    def start(self, url: str, *, c: int, d: float, stream: bool, tag: str | None) -> tuple[Proc, Path]:
        self.n += 1
        js = self.runner.work / f"load-{self.n}.json"
        argv = [str(self.bench / ".venv-bench/bin/python"), str(self.bench / "loadgen.py"), "--url", url,
                "-c", str(c), "-d", str(d), "--warmup", "0", "--raw", "--quiet", "--json", str(js),
                "--timeout", "10"]
        if stream:
            argv.append("--stream")
        if tag:
            argv += ["-H", f"x-shadoweval-tags: replica={tag}"]
        return self.runner.start(f"load-{self.n}", argv, cpus="load"), js

    @staticmethod
    def result(p: Proc, js: Path, timeout: float) -> dict[str, Any]:
        try:
            p.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            p.stop()
        if not js.exists():
            raise SystemExit(f"loadgen {p.name} wrote no result (rc={p.popen.returncode})")
        data: dict[str, Any] = json.loads(js.read_text())
        return data

    def run(self, targets: list[tuple[str, str | None]], *, c: int, d: float, stream: bool) -> list[dict[str, Any]]:
        started = [self.start(url, c=c, d=d, stream=stream, tag=tag) for url, tag in targets]
        return [self.result(p, js, d + 30) for p, js in started]


@dataclass(frozen=True)
class System:
    label: str
    replicas: int
    engine: str  # "sqlite" (a file per replica) or "pg" (one database for all)


SYSTEMS = {"a": System("(a) 1x SQLite", 1, "sqlite"), "b": System("(b) 2x PostgreSQL", 2, "pg"),
           "c": System("(c) 2x SQLite", 2, "sqlite"), "d": System("(d) 1x PostgreSQL", 1, "pg")}
# (numerator, denominator, what the ratio isolates)
COMPARISONS = [("b", "a", "the target: two replicas on PostgreSQL vs one on SQLite"),
               ("b", "c", "the store alone, two replicas each"),
               ("d", "a", "the store alone, one replica each"),
               ("c", "a", "a second replica process alone, SQLite each")]


def compare(num: Cell, den: Cell, direct: Cell, n: str, d: str) -> str:
    """`num` against `den`: req/s, end-to-end p50/p99 ratios (within 10%?), added latency."""
    ratio = num.load.rps / den.load.rps if den.load.rps else None
    e2e = [(num.load.pct(q) or 0) / (den.load.pct(q) or 1) for q in (50, 99)]
    add_n = [(num.load.pct(q) or 0) - (direct.load.pct(q) or 0) for q in (50, 99)]
    add_d = [(den.load.pct(q) or 0) - (direct.load.pct(q) or 0) for q in (50, 99)]

    def verdict(ok: bool) -> str:
        return "within" if ok else "NOT within"

    return (f"({n})/({d}) req/s = {fmt(ratio, '.3f')} -> {verdict(ratio is not None and ratio >= 1 - TOLERANCE)} 10%; "
            f"end-to-end p50 = {e2e[0]:.3f} -> {verdict(e2e[0] <= 1 + TOLERANCE)}; p99 = {e2e[1]:.3f} -> "
            f"{verdict(e2e[1] <= 1 + TOLERANCE)}; added p50 {add_n[0]:+.2f} vs {add_d[0]:+.2f} ms, added p99 "
            f"{add_n[1]:+.2f} vs {add_d[1]:+.2f} ms")


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else f"{x:{spec}}"


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cols: list[str]) -> str:
        return "| " + " | ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(cols)) + " |"

    return [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)]


# -- part 1: load -----------------------------------------------------------------------------------


@dataclass
class Cell:
    mode: str
    system: str
    load: Load
    proxy_cpu_s: float = 0.0
    pg_cpu_s: float = 0.0
    answered: int = 0
    stored: int | None = None
    distinct: int | None = None
    lost_records: dict[str, int] = field(default_factory=dict)
    per_replica: str = ""
    busy: str = ""
    rep: int = 0


class Bench:
    def __init__(self, args: argparse.Namespace, runner: Runner, bench: Path) -> None:
        self.args = args
        self.runner = runner
        self.load = Loadgen(runner, bench)
        self.bench = bench
        self.cluster: Cluster | None = None
        self.mock_url = ""
        self.figures: dict[str, Any] = {}
        self.db_n = 0

    def pg(self) -> Cluster:
        if self.cluster is None:
            self.cluster = start_cluster(self.runner)
            log(f"PostgreSQL at {self.cluster.url}")
        return self.cluster

    def new_db(self) -> str:
        self.db_n += 1
        return self.pg().database(f"bench{self.db_n}")

    def start_mock(self) -> None:
        pf = self.runner.work / "mock.port"
        self.runner.start("mock", [str(self.bench / ".venv-bench/bin/python"), str(self.bench / "mock_upstream.py"),
                                   "--port", "0", "--port-file", str(pf), "--latency-ms", str(self.args.latency_ms),
                                   "--chunks", "20", "--chunk-delay-ms", str(self.args.chunk_delay_ms),
                                   "--max-seconds", "3600"], cpus="load")
        deadline = time.monotonic() + 15
        while not (pf.exists() and pf.read_text().strip()):
            if time.monotonic() > deadline:
                raise SystemExit("mock upstream did not start")
            time.sleep(0.05)
        self.mock_url = f"http://127.0.0.1:{int(pf.read_text())}"

    def config(self, name: str, store: str) -> Path:
        path = self.runner.work / f"{name}.toml"
        write_config(path, upstream=self.mock_url + "/v1", store=store, batch_size=self.args.batch_size,
                     flush_ms=self.args.flush_interval_ms)
        return path

    # one cell: warm-up (counted as answered), then the measured run
    def measure(self, targets: list[tuple[str, str | None]], c: int, stream: bool, cell: Cell,
                reps: list[Replica], pg: bool = False) -> None:
        a = self.args
        for o in self.load.run(targets, c=c, d=a.warmup, stream=stream):
            cell.load.add(o, measured=False)
        cpu0 = [r.cpu_s() for r in reps]
        cluster = self.cluster
        busy0 = cpu_times()
        with CpuSampler(cluster.postmaster if cluster and pg else lambda: 0) as pg_cpu:
            for o in self.load.run(targets, c=c, d=a.duration, stream=stream):
                cell.load.add(o)
        cell.busy = cpu_busy(busy0, cpu_times())
        cell.proxy_cpu_s = sum(r.cpu_s() - c0 for r, c0 in zip(reps, cpu0, strict=True))
        cell.pg_cpu_s = pg_cpu.seconds
        cell.answered = cell.load.ok

    @property
    def systems(self) -> list[str]:
        return self.args.systems.split(",")

    def run_system(self, letter: str, rep: int, mode: str) -> Cell:
        """One cell of part 1: start the system's replicas on a fresh store, load them, count."""
        system = SYSTEMS[letter]
        n, engine = system.replicas, system.engine
        stream, c_all = mode == "stream", self.args.concurrency
        names = [f"{letter}{i if n > 1 else ''}-{rep}-{mode}" for i in range(n)]
        tags = [f"{letter}{i}" if n > 1 else "single" for i in range(n)]
        cell = Cell(mode, system.label, Load(), rep=rep)
        if engine == "pg":
            url = self.new_db()
            cfg = self.config(f"{letter}-{rep}-{mode}.pg", url)
            reps = [start_replica(self.runner, name, cfg) for name in names]
        else:
            dbs = [self.runner.work / f"{name}.db" for name in names]
            reps = [start_replica(self.runner, name, self.config(name, str(db))) for name, db in zip(names, dbs, strict=True)]
        self.measure([(x.url, tag) for x, tag in zip(reps, tags, strict=True)], c_all // n, stream, cell, reps,
                     pg=engine == "pg")
        for m in settle(reps):
            for k, v in records_lost(m).items():
                cell.lost_records[k] = cell.lost_records.get(k, 0) + v
        for x in reps:
            x.proc.stop()
        if engine == "pg":
            cell.stored, cell.distinct = pg_counts(url)
            per = [pg_counts(url, tag)[0] for tag in tags]
        else:
            counts = [sqlite_counts(db) for db in dbs]
            cell.stored, cell.distinct = sum(c[0] for c in counts), sum(c[1] for c in counts)
            per = [c[0] for c in counts]
        if n > 1:
            cell.per_replica = ", ".join(f"{tag} stored {k}" for tag, k in zip(tags, per, strict=True))
        return cell

    def part_load(self) -> None:
        a = self.args
        cells: list[Cell] = []
        for rep in range(a.repeat):
            for mode in ("nonstream", "stream"):
                stream = mode == "stream"
                c_all = a.concurrency
                log(f"part 1, repeat {rep + 1}, {mode}: direct")
                direct = Cell(mode, "direct (mock)", Load(), rep=rep)
                self.measure([(self.mock_url, None)], c_all, stream, direct, [])
                cells.append(direct)

                for letter in self.systems:
                    log(f"part 1, repeat {rep + 1}, {mode}: {SYSTEMS[letter].label}")
                    cells.append(self.run_system(letter, rep, mode))

        # pooled over repeats
        pooled: dict[tuple[str, str], Cell] = {}
        for cell in cells:
            p = pooled.setdefault((cell.mode, cell.system), Cell(cell.mode, cell.system, Load(), stored=0,
                                                                 distinct=0))
            p.load.ok += cell.load.ok
            p.load.errors += cell.load.errors
            p.load.rps += cell.load.rps / a.repeat
            p.load.samples += cell.load.samples
            p.load.ttfb += cell.load.ttfb
            p.proxy_cpu_s += cell.proxy_cpu_s
            p.pg_cpu_s += cell.pg_cpu_s
            p.answered += cell.answered
            if cell.stored is not None:
                p.stored = (p.stored or 0) + cell.stored
                p.distinct = (p.distinct or 0) + (cell.distinct or 0)
            else:
                p.stored = p.distinct = None
            for k, v in cell.lost_records.items():
                p.lost_records[k] = p.lost_records.get(k, 0) + v
        out(f"## 1. Load: c{a.concurrency}, {a.duration:g} s measured per cell x {a.repeat} repeat(s), "
            f"mock latency {a.latency_ms:g} ms (stream: 20 chunks, {a.chunk_delay_ms:g} ms apart)")
        out()
        out(f"Two replicas = two loadgen processes at c{a.concurrency // 2} each, one per replica (round robin by process). "
            "Added = this row minus the direct row, same mode; percentiles pooled over repeats.")
        out()
        rows = []
        for mode in ("nonstream", "stream"):
            d = pooled[(mode, "direct (mock)")]
            for system in ("direct (mock)", *(SYSTEMS[k].label for k in self.systems)):
                cp = pooled[(mode, system)]
                measured = len(cp.load.samples) or 1
                p50, p99 = cp.load.pct(50), cp.load.pct(99)
                dup = None if cp.stored is None or cp.distinct is None else cp.stored - cp.distinct
                lost_ex = lost_exchanges(cp.lost_records)
                rows.append([
                    mode, system, fmt(p50), fmt(p99),
                    "-" if cp is d else fmt((p50 or 0) - (d.load.pct(50) or 0), "+.2f"),
                    "-" if cp is d else fmt((p99 or 0) - (d.load.pct(99) or 0), "+.2f"),
                    fmt(cp.load.pct(50, True) - (d.load.pct(50, True) or 0), "+.2f")
                    if stream_mode(mode) and cp is not d and cp.load.ttfb else "-",
                    fmt(cp.load.rps, ".0f"), str(cp.load.errors),
                    "-" if cp is d else fmt(1000 * cp.proxy_cpu_s / measured, ".3f"),
                    fmt(1000 * cp.pg_cpu_s / measured, ".3f") if cp.pg_cpu_s else "-",
                    str(cp.answered) if cp is not d else "-",
                    "-" if cp.stored is None or cp is d else str(cp.stored),
                    "-" if cp is d else str(cp.answered - (cp.stored or 0)),
                    "-" if cp is d else f"{lost_ex:g}",
                    "-" if cp is d or dup is None else str(dup),
                ])
        out("\n".join(table(["mode", "system", "p50 ms", "p99 ms", "+p50", "+p99", "+ttfb50", "req/s", "errors",
                             "proxy cpu ms/req", "pg cpu ms/req", "answered", "stored", "answered-stored",
                             "lost (metrics, exchanges)", "duplicates"], rows)))
        out()
        out("Each cell (run order; CPU busy over its measured window, from /proc/stat):")
        for cell in cells:
            extra = f"; per replica: {cell.per_replica}, answered {cell.answered}" if cell.per_replica else ""
            out(f"- repeat {cell.rep + 1} {cell.mode:9} {cell.system:17}: {cell.load.rps:6.0f} req/s, p50 "
                f"{fmt(cell.load.pct(50))} p99 {fmt(cell.load.pct(99))} ms, errors {cell.load.errors}; "
                f"{cell.busy}{extra}")
        out()
        for mode in ("nonstream", "stream"):
            d = pooled[(mode, "direct (mock)")]
            for num, den, what in COMPARISONS:
                if (mode, SYSTEMS[num].label) in pooled and (mode, SYSTEMS[den].label) in pooled:
                    out(f"- {mode}: {compare(pooled[(mode, SYSTEMS[num].label)], pooled[(mode, SYSTEMS[den].label)], d, num, den)}"
                        f" ({what})")
            if (mode, SYSTEMS["b"].label) in pooled:
                self.figures[f"load_{mode}"] = {"b": pooled[(mode, SYSTEMS["b"].label)]}
        out()

    # -- part 2: writer rate ----------------------------------------------------------------------

    def part_writer(self) -> None:
        a = self.args
        results: dict[str, dict[str, float]] = {}
        for engine, scenario in [(e, s) for e in ("sqlite", "postgresql") for s in a.store_scenarios.split(",")]:
            log(f"part 2: bench_store on {engine}, {scenario}, {a.store_n} exchanges")
            argv = [sys.executable, str(BENCH_STORE), "-n", str(a.store_n), "--scenarios", scenario,
                    "--dir", str(self.runner.work)]
            if engine == "postgresql":
                argv += ["--db", self.new_db()]
            t0 = time.monotonic()
            with CpuSampler(self.pg().postmaster if engine == "postgresql" else lambda: 0) as sampler:
                r = subprocess.run(self.runner.cpus("load") + argv, capture_output=True, text=True)
            wall = time.monotonic() - t0
            pg_cpu = sampler.seconds
            for line in r.stdout.splitlines():
                cols = [c.strip() for c in line.strip().strip("|").split("|")]
                if len(cols) >= 8 and cols[0] in a.store_scenarios.split(","):
                    results[f"{engine}/{cols[0]}"] = {
                        "per_s": float(cols[1]), "writer_ms": float(cols[4]), "process_ms": float(cols[5]),
                        "lost": float(cols[7]), "pg_cpu_s": pg_cpu, "wall": wall}
            if r.returncode not in (0, 1):
                out(f"- bench_store on {engine} failed (rc={r.returncode}): {r.stderr.strip()[-500:]}")
        out(f"## 2. Writer rate: scripts/bench_store.py -n {a.store_n} --scenarios {a.store_scenarios} "
            "(bench_store on CPU 0, PostgreSQL on CPU 1; redaction on; serve's default queue/batch/flush)")
        out()
        rows = []
        for key, r in results.items():
            pg_per_1000 = (1000 * r["pg_cpu_s"] / a.store_n) if r["pg_cpu_s"] else None
            rows.append([key.split("/")[0], key.split("/")[1], f"{r['per_s']:.0f}", f"{r['writer_ms']:.3f}",
                         f"{r['process_ms']:.3f}", fmt(pg_per_1000, ".3f"), f"{r['lost']:.0f}"])
        out("\n".join(table(["store", "scenario", "exchanges/s", "writer thread CPU s/1000 ex",
                             "writer process CPU s/1000 ex", "PostgreSQL CPU s/1000 ex", "lost records"], rows)))
        out()
        out("- one bench_store run per row, a fresh database per PostgreSQL row; PostgreSQL CPU = its processes' "
            "/proc times over the run (bench_store's connection setup and migrations included); writer CPU "
            "s/1000 ex is bench_store's 'CPU ms/ex' (the same number).")
        out()
        self.figures["writer"] = results

    # -- part 3: outage ---------------------------------------------------------------------------

    def part_outage(self) -> None:
        a = self.args
        cluster = self.pg()
        url = self.new_db()
        r = start_replica(self.runner, "outage", self.config("outage.pg", url))
        c = a.outage_concurrency
        phases: dict[str, Load] = {"warm-up": Load(), "before": Load(), "PostgreSQL down": Load(), "after": Load()}
        log("part 3: outage: warm-up and before")
        for o in self.load.run([(r.url, "outage")], c=c, d=a.warmup, stream=False):
            phases["warm-up"].add(o)
        for o in self.load.run([(r.url, "outage")], c=c, d=a.outage_before, stream=False):
            phases["before"].add(o)
        m_before = r.metrics()
        rows_at_stop = pg_counts(url)[0]
        log(f"part 3: stopping PostgreSQL for {a.outage_s:g} s")
        proc, js = self.load.start(r.url, c=c, d=a.outage_s, stream=False, tag="outage")
        t_stop = time.monotonic()
        stop_took = cluster.stop_server()
        time.sleep(max(0.0, a.outage_s - (time.monotonic() - t_stop)))
        start_took = cluster.start_server()
        phases["PostgreSQL down"].add(Loadgen.result(proc, js, 60))
        m_down = r.metrics()
        log("part 3: PostgreSQL back; after")
        growth: list[tuple[float, int]] = []
        stop_poll = threading.Event()

        def poll() -> None:
            t0 = time.monotonic()
            while not stop_poll.wait(1.0):
                try:
                    growth.append((time.monotonic() - t0, pg_counts(url)[0]))
                except psycopg.Error:
                    growth.append((time.monotonic() - t0, -1))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        for o in self.load.run([(r.url, "outage")], c=c, d=a.outage_after, stream=False):
            phases["after"].add(o)
        stop_poll.set()
        poller.join()
        m_end = settle([r])[0]
        health = json.loads(http_get(r.url + "/healthz"))
        r.proc.stop()
        stored, distinct = pg_counts(url)
        answered = sum(p.ok for p in phases.values())
        errors = sum(p.errors for p in phases.values())
        lost = records_lost(m_end)
        lost_ex = lost_exchanges(lost)
        out(f"## 3. Outage: one replica on PostgreSQL, c{c} non-streaming; PostgreSQL stopped (pg_ctl -m fast, "
            f"took {stop_took:.2f} s) for {a.outage_s:g} s, started again (took {start_took:.2f} s)")
        out()
        rows = [[name, "", str(p.ok), str(p.errors), fmt(p.pct(50)), fmt(p.pct(99)), fmt(p.rps, ".0f")]
                for name, p in phases.items()]
        out("\n".join(table(["phase", "", "answered", "errors", "p50 ms", "p99 ms", "req/s"], rows)))
        out()
        b99, d99 = phases["before"].pct(99), phases["PostgreSQL down"].pct(99)
        out(f"- production p99 with PostgreSQL down vs before: {fmt(d99)} vs {fmt(b99)} ms "
            f"({fmt(d99 / b99 if b99 and d99 else None, '.2f')}x)")
        kinds: dict[str, int] = {}
        for p in phases.values():
            for k, v in p.error_kinds.items():
                kinds[k] = kinds.get(k, 0) + v
        out(f"- client errors: {errors} {kinds or ''}".rstrip())
        out(f"- answered {answered}, stored {stored} (distinct ids {distinct}), answered - stored = {answered - stored}")
        out(f"- counted loss (/metrics shadoweval_store_lost_total): {lost or 'none'} = {lost_ex:g} "
            f"exchanges -> answered - stored {'==' if answered - stored == lost_ex else '!='} counted loss")
        out(f"- loss counted during the down window: before {records_lost(m_before) or 'none'}, "
            f"after the down window {records_lost(m_down) or 'none'}")
        out(f"- rows when stopped: {rows_at_stop}; after restart, rows each second: "
            + ", ".join(f"{t:.0f}s:{n}" for t, n in growth[:12]))
        resumed = len(growth) >= 2 and growth[-1][1] > growth[0][1] > rows_at_stop
        out(f"- writing resumed by itself: {'yes' if resumed else 'NO'}; /healthz store after: "
            f"{json.dumps(health.get('store', {}))}")
        out()
        self.figures["outage"] = {"answered": answered, "stored": stored, "lost_ex": lost_ex}

    # -- part 4: kill -9 ---------------------------------------------------------------------------

    def part_kill(self) -> None:
        a = self.args
        url = self.new_db()
        cfg = self.config("kill.pg", url)
        victim = start_replica(self.runner, "kill-a", cfg)
        survivor = start_replica(self.runner, "kill-b", cfg)
        c = a.concurrency // 2
        log("part 4: kill -9: warm-up")
        warm = self.load.run([(victim.url, "ka"), (survivor.url, "kb")], c=c, d=a.warmup, stream=False)
        total = a.kill_before + a.kill_after
        pa, ja = self.load.start(victim.url, c=c, d=a.kill_before + 1.0, stream=False, tag="ka")
        pb, jb = self.load.start(survivor.url, c=c, d=total, stream=False, tag="kb")
        t_load = time.monotonic()
        time.sleep(a.kill_before)
        before_kill = pg_counts(url, "kb")[0]
        os.kill(victim.proc.pid, signal.SIGKILL)
        log("part 4: killed replica a with SIGKILL")
        victim.proc.popen.wait()
        t_kill = time.monotonic()
        kill_at = t_kill - t_load
        ra = Loadgen.result(pa, ja, 60)
        rb = Loadgen.result(pb, jb, total + 60)
        after_s = time.monotonic() - t_kill
        ms = settle([survivor])[0]
        stored_b_mid = before_kill
        answered_a = warm[0]["ok"] + ra["ok"]
        answered_b = warm[1]["ok"] + rb["ok"]
        stored_a, distinct_a = pg_counts(url, "ka")
        stored_b, distinct_b = pg_counts(url, "kb")
        lost_a = answered_a - stored_a
        # restart the killed one: on start it counts what its dead run lost (crash journal on this host)
        log("part 4: restarting the killed replica to read its crash count")
        again = start_replica(self.runner, "kill-a2", cfg)
        time.sleep(0.5)
        health = json.loads(http_get(again.url + "/healthz"))
        crash = int((health.get("store") or {}).get("lost_by_reason", {}).get("crash", 0))
        again.proc.stop()
        survivor.proc.stop()
        rate_a = ra["ok"] / kill_at  # a's rate while it was alive (loadgen's rps spans the dead second)
        bound_interval = rate_a * a.flush_interval_ms / 1000
        out(f"## 4. kill -9: two replicas on one PostgreSQL database, c{c} each, non-streaming; replica a "
            f"killed after {a.kill_before:g} s, replica b's load ran {after_s:.1f} s more")
        out()
        rows = [
            ["a (killed)", "", str(answered_a), str(ra["errors"]), json.dumps(ra.get("error_kinds") or {}),
             str(stored_a), str(stored_a - distinct_a), str(lost_a), fmt(rate_a, ".0f")],
            ["b (survivor)", "", str(answered_b), str(rb["errors"] + warm[1]["errors"]),
             json.dumps(rb.get("error_kinds") or {}), str(stored_b), str(stored_b - distinct_b),
             str(answered_b - stored_b), fmt(rb["rps"], ".0f")],
        ]
        out("\n".join(table(["replica", "", "answered", "errors", "error kinds", "stored", "duplicates",
                             "answered-stored", "req/s"], rows)))
        out()
        out(f"- survivor b: errors {rb['errors'] + warm[1]['errors']} over the whole run (so 0 after the kill if 0); "
            f"rows stored from b at the kill {stored_b_mid}, at the end {stored_b}; its /metrics loss "
            f"{records_lost(ms) or 'none'}")
        out(f"- killed a: answered {answered_a} (a's errors are the refused requests after the kill), stored {stored_a}, "
            f"lost {lost_a} exchanges")
        out(f"- a's bound: flush_interval_ms {a.flush_interval_ms} x {rate_a:.0f} req/s = {bound_interval:.0f} exchanges "
            f"queued at most between commits (+ the batch being committed), batch_size {a.batch_size} hand-overs "
            f"(= exchanges) per batch -> lost {lost_a} is "
            f"{'within' if lost_a <= max(2 * bound_interval, 1) else 'ABOVE'} 2 x the interval bound and "
            f"{'within' if lost_a <= a.batch_size else 'ABOVE'} one batch")
        out(f"- a restarted on the same host: /healthz lost_by_reason crash = {crash} (hand-overs = exchanges) vs "
            f"measured {lost_a} -> {'agrees' if crash == lost_a else 'DIFFERS'}")
        out()
        self.figures["kill"] = {"lost": lost_a}

    # -- sizing ----------------------------------------------------------------------------------

    def sizing(self) -> None:
        out("## Sizing (from the figures above; 1,000 and 10,000 req/s are EXTRAPOLATION, linear, "
            "not measured)")
        out()
        lines = []
        for mode in ("nonstream", "stream"):
            f = self.figures.get(f"load_{mode}")
            if not f:
                continue
            b: Cell = f["b"]
            n = len(b.load.samples)
            if not n or not b.proxy_cpu_s:
                continue
            per_replica_core = n / b.proxy_cpu_s
            per_pg_core = n / b.pg_cpu_s if b.pg_cpu_s else None
            lines.append(f"- {mode}: {per_replica_core:.0f} exchanges/s per replica core (proxy CPU busy 100%), "
                         f"{fmt(per_pg_core, '.0f')} exchanges/s per PostgreSQL core (from part 1 (b): "
                         f"{n} requests, replicas {b.proxy_cpu_s:.1f} CPU s, PostgreSQL {b.pg_cpu_s:.1f} CPU s)")
            for target in (1000, 10000):
                rc = target / per_replica_core
                pc = target / per_pg_core if per_pg_core else None
                lines.append(f"    - extrapolation, {target:,} req/s {mode}: ~{rc:.1f} replica cores "
                             f"(~{rc / 0.7:.1f} at 70% utilisation) and ~{fmt(pc, '.2f')} PostgreSQL cores "
                             f"(~{fmt(pc / 0.7 if pc else None, '.2f')} at 70%)")
        w = self.figures.get("writer") or {}
        for key, r in w.items():
            if key.startswith("postgresql") and r["pg_cpu_s"]:
                n = self.args.store_n
                lines.append(f"- writer bench ({key}): one writer thread sustains {r['per_s']:.0f} exchanges/s; "
                             f"PostgreSQL used {r['pg_cpu_s']:.1f} CPU s for {n} exchanges = {n / r['pg_cpu_s']:.0f} "
                             "exchanges/s per PostgreSQL core (insert path only)")
        lines.append("- part 1's requests are small (loadgen's 20-word prompt, 20-word answer); bench_store's are ~3 KB "
                     "RAG prompts with ~100-word answers, so its PostgreSQL figure is the one to size with.")
        lines.append("- replica cores: part 1's CPU per request includes HTTP in and out, capture and the writer thread; "
                     "the closed loop (c64 over a 20 ms upstream, load generators on one core) capped the rates, so "
                     "the replicas were not saturated and 'per core' is work per CPU second, not a measured maximum.")
        lines.append("- PostgreSQL here has fsync off, synchronous_commit off, loopback, one 2-core VM shared "
                     "with the load: a production server with durable commits and a network hop costs more.")
        out("\n".join(lines))
        out()


def stream_mode(mode: str) -> bool:
    return mode == "stream"


def prepare_bench() -> Path:
    bench = BENCH_COPY
    if not (bench / ".venv-bench/bin/python").exists():
        if (SHARED_BENCH / ".venv-bench/bin/python").exists():
            return SHARED_BENCH
        raise SystemExit(f"no harness venv: run `.venv/bin/python scripts/bench_proxy.py` once, or {bench}/setup.sh")
    for name in ("loadgen.py", "mock_upstream.py"):
        src, dst = SHARED_BENCH / name, bench / name
        if src.exists() and (not dst.exists() or dst.read_bytes() != src.read_bytes()):
            shutil.copyfile(src, dst)
    return bench


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="load,writer,outage,kill", help="comma list of load, writer, outage, kill")
    ap.add_argument("--systems", default="a,b,c,d",
                    help="part 1 systems: a = 1x SQLite, b = 2x PostgreSQL, c = 2x SQLite (two files), d = 1x PostgreSQL")
    ap.add_argument("--quick", action="store_true", help="shorter cells, one repeat, fewer store exchanges (~3 min)")
    ap.add_argument("--concurrency", type=int, default=64, help="part 1 and 4 total concurrency (split in two for replicas)")
    ap.add_argument("--duration", type=float, default=None, help="measured seconds per part 1 cell (default 10, quick 5)")
    ap.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each cell (answers counted)")
    ap.add_argument("--repeat", type=int, default=None, help="part 1 repeats (default 2, quick 1)")
    ap.add_argument("--latency-ms", type=float, default=20.0, help="mock upstream latency")
    ap.add_argument("--chunk-delay-ms", type=float, default=2.0, help="mock delay between 20 SSE chunks")
    ap.add_argument("--batch-size", type=int, default=1000, help="[store] batch_size of the proxies")
    ap.add_argument("--flush-interval-ms", type=int, default=100, help="[store] flush_interval_ms of the proxies")
    ap.add_argument("--store-n", type=int, default=None, help="part 2 exchanges per scenario (default 30000, quick 10000)")
    ap.add_argument("--store-scenarios", default="capture-json,capture-sse")
    ap.add_argument("--outage-concurrency", type=int, default=16)
    ap.add_argument("--outage-before", type=float, default=5.0)
    ap.add_argument("--outage-s", type=float, default=10.0, help="seconds PostgreSQL stays down")
    ap.add_argument("--outage-after", type=float, default=10.0)
    ap.add_argument("--kill-before", type=float, default=5.0, help="seconds of load before the kill -9")
    ap.add_argument("--kill-after", type=float, default=5.0, help="seconds the survivor's load runs after it")
    ap.add_argument("--pin", choices=["auto", "none"], default="auto")
    ap.add_argument("--pg-cpu", choices=["server", "load"], default="server",
                    help="with --pin auto: PostgreSQL on the proxies' CPU (default: SQLite's writing and "
                         "PostgreSQL's are charged to the same core) or on the load generators' (a database "
                         "host of its own, as in production)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, SQLite files)")
    args = ap.parse_args()
    args.duration = args.duration or (5.0 if args.quick else 10.0)
    args.repeat = args.repeat or (1 if args.quick else 2)
    args.store_n = args.store_n or (10_000 if args.quick else 30_000)
    if args.quick:
        args.outage_after = min(args.outage_after, 6.0)
        args.outage_before = min(args.outage_before, 4.0)
        args.kill_after = min(args.kill_after, 3.0)
        args.kill_before = min(args.kill_before, 3.0)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or set(parts) - {"load", "writer", "outage", "kill"}:
        ap.error(f"--parts: unknown part in {parts}")
    if not SHADOWEVAL.exists():
        raise SystemExit(f"{SHADOWEVAL} not found: run scripts/install first")

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_term)  # also when started with SIGINT ignored (a background job)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    work = Path(tempfile.mkdtemp(prefix="bench_replicas-"))
    os.chmod(work, 0o755)  # the cluster folder inside belongs to the postgres user
    pin = args.pin == "auto" and (os.cpu_count() or 1) >= 2
    runner = Runner(work, pin, args.pg_cpu)
    t0 = time.monotonic()
    try:
        bench = Bench(args, runner, prepare_bench())
        bench.start_mock()
        out(f"# shadoweval replicas benchmark {time.strftime('%Y-%m-%d %H:%M:%S')}")
        out()
        out(f"- machine: {os.cpu_count()} cores; pinning: "
            + ("load generators + mock + bench_store on CPU 0, proxies + PostgreSQL on CPU 1" if pin else "none"))
        out(f"- proxies: `shadoweval serve`, capture on, mirroring and background judges off, batch_size "
            f"{args.batch_size}, flush_interval_ms {args.flush_interval_ms}, durability batched")
        out("- PostgreSQL 15 from scripts/postgres (fsync=off, synchronous_commit=off), one database per run")
        out(f"- command: {' '.join(sys.argv)}")
        out()
        for part in parts:
            getattr(bench, f"part_{part}")()
        if "load" in parts:
            bench.sizing()
        out(f"(total {time.monotonic() - t0:.0f} s)")
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    finally:
        runner.cleanup()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
