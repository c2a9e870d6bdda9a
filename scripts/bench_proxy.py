"""Proxy overhead benchmark: shadoweval next to direct, LiteLLM and a plain forwarder, in one run.

The numbers that matter for a shadow proxy are relative: how much it adds on top of calling
production directly, compared with what a 40-line forwarder and LiteLLM's proxy add on the same
machine in the same minutes. The shared harness (`run_overhead.py`, see its README) already
measures that fairly: one mock upstream, pinned CPUs, interleaved cells, rotating order, CPU per
request from /proc. This script only drives it:

1. overhead: direct, LiteLLM (1 worker), `examples/passthrough_proxy.py`, and `shadoweval serve`
   with capture to SQLite on and mirroring off;
2. mirror check: `shadoweval serve` with mirroring off against the same config with mirroring on
   to two candidates that are not the production mock: a fast mock (a second
   `mock_upstream.py`) and one that accepts connections and never answers. Production latency
   must not move;
3. tail (optional): C=1 only, with longer cells, so that p99 rests on more than a few requests.

Then it prints the harness's tables, a compact side-by-side table and each target, met or not.

    .venv/bin/python scripts/bench_proxy.py                     # parts 1 and 2, ~6 minutes
    .venv/bin/python scripts/bench_proxy.py --tail-check        # and part 3, ~4 minutes more
    .venv/bin/python scripts/bench_proxy.py --skip-mirror-check # overhead only
    .venv/bin/python scripts/bench_proxy.py --mirror-check      # mirror check only
    .venv/bin/python scripts/bench_proxy.py --duration 2 --repeat 1   # quicker, noisier

Arguments it does not know are passed to every harness run (e.g. `--latency-ms 50`).
See scripts/bench_proxy.md for how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED_BENCH = Path("/work/shared/bench")
BENCH_COPY = REPO / "results" / "bench-copy"  # results/ is git-ignored
SHADOWEVAL = REPO / ".venv" / "bin" / "shadoweval"
OURS = "shadoweval"
PASSTHROUGH = "passthrough"
MIRROR_OFF = "ours-mirror-off"
MIRROR_ON = "ours-mirror-on"

# Targets, stated once.
TTFB_BUDGET_MS = 2.0
THROUGHPUT_VS_LITELLM = 10.0
P99_OVER_P50 = 3.0
MIRROR_TOLERANCE = 1.10


def log(msg: str) -> None:
    print(f"[bench_proxy] {msg}", file=sys.stderr, flush=True)


# -- the harness folder -----------------------------------------------------------------------------


def prepare_bench(source: Path, run_setup: bool) -> Path:
    """The harness folder to run from: `source` if it is meant to be written (the harness creates
    venvs and results inside itself), else a copy under results/bench-copy, refreshed file by file.
    Mode bits decide, not os.access(): as root, access() says yes to a folder marked read-only."""
    writable = bool(source.stat().st_mode & 0o222) and os.access(source, os.W_OK)
    bench = source if writable else BENCH_COPY
    if bench != source:
        for src in [*source.glob("*.py"), *source.glob("*.sh"), *source.glob("*.md"), *source.glob("examples/*")]:
            dst = bench / src.relative_to(source)
            if not dst.exists() or dst.read_bytes() != src.read_bytes():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                dst.chmod(0o755 if os.access(src, os.X_OK) else 0o644)
        log(f"{source} is read-only: running the harness from the copy in {bench}")
    ready = (bench / ".venv-bench/bin/python").exists() and (bench / ".venv-litellm/bin/litellm").exists()
    if not ready:
        if not run_setup:
            raise SystemExit(f"{bench}: venvs missing; run {bench}/setup.sh (or drop --no-setup)")
        log(f"creating the harness venvs: {bench}/setup.sh (~2 min, once)")
        subprocess.run(["bash", str(bench / "setup.sh")], check=True)
    return bench


# -- processes this script starts itself (candidate upstreams for the mirror check) ----------------


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    port: int

    def cpu_s(self) -> float:
        """CPU seconds used so far (user + sys), from /proc."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM the process group we created for it (pgid == its pid), SIGKILL if it lingers."""
        if self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def start_child(name: str, argv: list[str], port_file: Path, log_file: Path, cpus: str | None) -> Child:
    port_file.unlink(missing_ok=True)
    prefix = ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(prefix + argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            port = int(port_file.read_text())
            log(f"started {name} pid={proc.pid} on 127.0.0.1:{port}")
            return Child(name, proc, port)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    Child(name, proc, 0).stop()
    raise SystemExit(f"{name} did not start; see {log_file}")


def serve_hanging(port_file: str, max_seconds: float) -> None:
    """A candidate that accepts every connection, reads the request and never answers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
        await asyncio.sleep(max_seconds)

    asyncio.run(main())


# -- configs and harness runs -----------------------------------------------------------------------


def write_config(path: Path, *, mirror: bool, candidates: list[dict[str, Any]]) -> None:
    """A shadoweval config; production's URL comes from SHADOWEVAL_PRODUCTION_BASE_URL at start,
    because only the harness knows the mock's port. Redaction keeps its defaults (on), as a real
    deployment would run it."""
    lines = [
        "# generated by scripts/bench_proxy.py",
        "[server]", 'log_level = "warning"', "",
        "[store]", "capture = true", "",
        "[mirror]", f"enabled = {'true' if mirror else 'false'}",
        # The harness gives a proxy 8 s to exit after SIGTERM; a hanging candidate must not
        # hold the drain past that, or the store's last batch is killed with the process.
        "drain_timeout_s = 2", "",
    ]
    for c in candidates:
        lines.append("[[candidates]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in c.items()]
        lines.append("")
    path.write_text("\n".join(lines))


def ours_cmd(config: Path, db: Path) -> str:
    return (f"SHADOWEVAL_PRODUCTION_BASE_URL={{upstream}} exec {shlex.quote(str(SHADOWEVAL))} serve "
            f"--config {shlex.quote(str(config))} --host {{host}} --port {{port}} --db {shlex.quote(str(db))}")


def passthrough_cmd() -> str:
    return ("exec {bench_dir}/.venv-litellm/bin/python {bench_dir}/examples/passthrough_proxy.py "
            "--host {host} --port {port} --upstream {upstream}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_harness(bench: Path, out: Path, candidates: list[tuple[str, str]], harness_args: list[str]) -> dict[str, Any]:
    """Run run_overhead.py with the given (name, command) candidates; return its results.json."""
    argv = [sys.executable, str(bench / "run_overhead.py"), "--out", str(out)]
    for name, cmd in candidates:
        argv += ["--candidate-name", name, "--candidate-url", f"http://127.0.0.1:{free_port()}",
                 "--candidate-cmd", cmd]
    argv += harness_args
    log("running: " + " ".join(shlex.quote(a) for a in argv))
    # Same process group as us: Ctrl-C reaches the harness, which cleans up what it started.
    rc = subprocess.run(argv, cwd=bench).returncode
    results = out / "results.json"
    if rc != 0 or not results.exists():
        raise SystemExit(f"harness failed (rc={rc}); logs in {out}")
    data: dict[str, Any] = json.loads(results.read_text())
    return data


# -- reading the results ----------------------------------------------------------------------------


Cells = dict[tuple[str, str, int], dict[str, Any]]


def cells(data: dict[str, Any]) -> Cells:
    return {(a["system"], a["mode"], a["concurrency"]): a for a in data["aggregate"]}


def pct(cell: dict[str, Any] | None, what: str, q: str) -> float | None:
    if not cell or not cell.get(what):
        return None
    value = cell[what].get(q)
    return float(value) if value is not None else None


def added(by: Cells, system: str, mode: str, c: int, what: str = "latency_ms", q: str = "p50") -> float | None:
    mine, direct = pct(by.get((system, mode, c)), what, q), pct(by.get(("direct", mode, c)), what, q)
    return None if mine is None or direct is None else mine - direct


def fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cols: "| " + " | ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i])  # noqa: E731
                                          for i, c in enumerate(cols)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)])


def verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else ("MET " if ok else "MISS")


def compact_table(by: Cells, systems: list[str], modes: list[str], concurrency: list[int]) -> str:
    headers = ["mode", "C", "direct p50 ms", "direct req/s"]
    for s in systems:
        headers += [f"{s} +p50/+p99 ms", f"{s} +ttfb50", f"{s} req/s", f"{s} cpu ms/req"]
    rows = []
    for m in modes:
        for c in concurrency:
            d = by.get(("direct", m, c))
            row = [m, str(c), fmt(pct(d, "latency_ms", "p50")), fmt(d["rps"] if d else None, ".1f")]
            for s in systems:
                cell = by.get((s, m, c))
                err = f" err{cell['errors']}" if cell and cell.get("errors") else ""
                row += [f"{fmt(added(by, s, m, c), '+.2f')} / {fmt(added(by, s, m, c, q='p99'), '+.2f')}{err}",
                        fmt(added(by, s, m, c, 'ttfb_ms'), '+.2f') if m == "stream" else "-",
                        fmt(cell["rps"] if cell else None, ".1f"),
                        fmt(cell.get("proxy_cpu_ms_per_req") if cell else None)]
            rows.append(row)
    return table(headers, rows)


def tail_lines(data: dict[str, Any], modes: list[str], label: str = "") -> list[str]:
    """The C=1 tail target, pooled over repeats, with each repeat's p99 next to direct's and the
    forwarder's: a tail that all systems show in the same repeat is the host, not the proxy."""
    by, out = cells(data), []
    for m in modes:
        a50, a99 = added(by, OURS, m, 1), added(by, OURS, m, 1, q="p99")
        cell = by.get((OURS, m, 1))
        p50, p99 = pct(cell, "latency_ms", "p50"), pct(cell, "latency_ms", "p99")
        ok = None if a50 is None or a99 is None else a99 < P99_OVER_P50 * max(a50, 0.0)
        n = cell["ok"] if cell else 0
        out.append(f"- [{verdict(ok)}] {m} C=1 tail{label}: ours added p99 {fmt(a99, '+.2f')} ms vs {P99_OVER_P50:g}x "
                   f"added p50 = {fmt(None if a50 is None else P99_OVER_P50 * a50, '.2f')} ms "
                   f"(end-to-end p99/p50 = {fmt(None if not p50 or p99 is None else p99 / p50, '.2f')}x; {n} requests)")
        runs = [r for r in data["runs"] if r["mode"] == m and r["concurrency"] == 1]
        for rep in sorted({r["rep"] for r in runs}):
            got = {r["system"]: r for r in runs if r["rep"] == rep}
            p99s = [f"{s} {fmt(pct(got[s], 'latency_ms', 'p99'))}" for s in ("direct", PASSTHROUGH, OURS) if s in got]
            speed = got[OURS]["speed_ns_per_iter"] if OURS in got else None
            out.append(f"    - repeat {rep}: p99 ms {', '.join(p99s)} "
                       f"(speed probe before ours: {fmt(speed, '.0f')} ns)")
    return out


def overhead_summary(data: dict[str, Any], modes: list[str], concurrency: list[int]) -> list[str]:
    by = cells(data)
    litellm = next((s for s, _, _ in by if s.startswith("litellm")), None)
    systems = [s for s in (litellm, PASSTHROUGH, OURS) if s]
    out = ["## Overhead: side by side (added = minus direct, same mode and C)", "",
           compact_table(by, systems, modes, concurrency), "", "## Targets", ""]
    for m in modes:
        ours, fwd = added(by, OURS, m, 1), added(by, PASSTHROUGH, m, 1)
        ok = None if ours is None or fwd is None else ours <= fwd
        out.append(f"- [{verdict(ok)}] {m} C=1 added p50: ours {fmt(ours, '+.2f')} ms vs plain forwarder "
                   f"{fmt(fwd, '+.2f')} ms (target: ours <= forwarder)")
    out += tail_lines(data, modes)
    c_max = max(concurrency)
    for m in modes if litellm else []:
        ours, ref = by.get((OURS, m, c_max)), by.get((litellm, m, c_max)) if litellm else None
        direct = by.get(("direct", m, c_max))
        ratio = ours["rps"] / ref["rps"] if ours and ref and ref["rps"] else None
        cap = f"; direct (closed-loop cap) {direct['rps']:.0f} req/s" if direct else ""
        out.append(f"- [{verdict(None if ratio is None else ratio >= THROUGHPUT_VS_LITELLM)}] {m} C={c_max} "
                   f"throughput: ours {fmt(ours['rps'] if ours else None, '.0f')} req/s vs {litellm} "
                   f"{fmt(ref['rps'] if ref else None, '.0f')} = {fmt(ratio, '.1f')}x (target >= "
                   f"{THROUGHPUT_VS_LITELLM:g}x{cap})")
    if "stream" in modes:
        for c in concurrency:
            t = added(by, OURS, "stream", c, "ttfb_ms")
            judged = c == min(concurrency)
            ok = (t <= TTFB_BUDGET_MS if t is not None else None) if judged else None
            label = verdict(ok) if judged else "info"
            out.append(f"- [{label}] stream C={c} added TTFB p50: ours {fmt(t, '+.2f')} ms, forwarder "
                       f"{fmt(added(by, PASSTHROUGH, 'stream', c, 'ttfb_ms'), '+.2f')} ms"
                       + (f" (target <= {TTFB_BUDGET_MS:g} ms)" if judged else " (queueing under load, not judged)"))
    return out


def mirror_summary(by: Cells, modes: list[str], concurrency: list[int], db_on: Path,
                   cand_cpu: dict[str, float]) -> list[str]:
    headers = ["mode", "C", "off p50", "on p50", "on/off p50", "off p99", "on p99", "on/off p99",
               "off +p50", "on +p50", "off cpu ms/req", "on cpu ms/req", "on req/s", "off req/s"]
    rows, verdicts = [], []
    for m in modes:
        for c in concurrency:
            off, on = by.get((MIRROR_OFF, m, c)), by.get((MIRROR_ON, m, c))
            r = {}
            for q in ("p50", "p99"):
                a, b = pct(off, "latency_ms", q), pct(on, "latency_ms", q)
                r[q] = (a, b, b / a if a and b is not None else None)
            rows.append([m, str(c), fmt(r["p50"][0]), fmt(r["p50"][1]), fmt(r["p50"][2], ".3f", "x"),
                         fmt(r["p99"][0]), fmt(r["p99"][1]), fmt(r["p99"][2], ".3f", "x"),
                         fmt(added(by, MIRROR_OFF, m, c), "+.2f"), fmt(added(by, MIRROR_ON, m, c), "+.2f"),
                         fmt(off.get("proxy_cpu_ms_per_req") if off else None),
                         fmt(on.get("proxy_cpu_ms_per_req") if on else None),
                         fmt(on["rps"] if on else None, ".1f"), fmt(off["rps"] if off else None, ".1f")])
            for q in ("p50", "p99"):
                ratio = r[q][2]
                ok = None if ratio is None else ratio <= MIRROR_TOLERANCE
                verdicts.append(f"- [{verdict(ok)}] {m} C={c} production {q} with mirroring on / off = "
                                f"{fmt(ratio, '.3f', 'x')} (target <= {MIRROR_TOLERANCE:.2f}x)")
    out = ["## Mirror check: production latency with mirroring to a fast and a hanging candidate "
           "(absolute ms, end to end)", "", table(headers, rows), "", *verdicts, ""]
    out += mirror_outputs(db_on)
    if cand_cpu:
        out.append("- CPU used by the candidate upstreams (CPU 0, with the load generator): "
                   + ", ".join(f"{k} {v:.1f} s" for k, v in cand_cpu.items()))
    return out


def mirror_outputs(db: Path) -> list[str]:
    """What the mirrored candidates answered, as stored (mirror queue drops are only counted in
    /metrics, which is gone with the process)."""
    if not db.exists():
        return [f"- (no store at {db})"]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        n = conn.execute("select count(*) from exchanges").fetchone()[0]
        rows = conn.execute("select name, status, count(*) from outputs "
                            "group by name, status order by name, status").fetchall()
    finally:
        conn.close()
    return [f"- mirror-on store: {n} exchanges; outputs by model/status: "
            + ", ".join(f"{name}/{status} {count}" for name, status, count in rows)]


def store_line(db: Path, system: str, data: dict[str, Any]) -> str:
    """Exchanges stored against requests the load sent (plus readiness and warm-up requests)."""
    if not db.exists():
        return f"- {system}: no store at {db}"
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        n = conn.execute("select count(*) from exchanges").fetchone()[0]
    finally:
        conn.close()
    sent = sum(r["total_sent"] for r in data["runs"] if r["system"] == system)
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    return (f"- {system} store: {n} exchanges written for {sent} measured-cell requests (+~32 readiness/warm-up); "
            f"{size / 1e6:.1f} MB ({db})")


# -- main ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="overhead,mirror",
                    help="comma list of overhead (part 1), mirror (part 2), tail (optional C=1 tail run)")
    ap.add_argument("--mirror-check", action="store_true", help="shortcut for --parts mirror")
    ap.add_argument("--skip-mirror-check", action="store_true", help="drop mirror from --parts")
    ap.add_argument("--tail-check", action="store_true",
                    help="add tail to --parts: the C=1 tail with more samples (direct, forwarder, ours; ~4 min)")
    ap.add_argument("--tail-duration", type=float, default=10.0, help="seconds per cell and repeat of the tail run")
    ap.add_argument("--concurrency", default="1,16,64", help="part 1 concurrency levels")
    ap.add_argument("--modes", default="nonstream,stream")
    ap.add_argument("--mirror-concurrency", default="1,16", help="part 2 concurrency levels")
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per cell and repeat")
    ap.add_argument("--repeat", type=int, default=2, help="interleaved repeats per cell")
    ap.add_argument("--budget-s", type=float, default=480, help="hard time budget of part 1")
    ap.add_argument("--mirror-budget-s", type=float, default=300, help="hard time budget of part 2")
    ap.add_argument("--bench-dir", type=Path, default=SHARED_BENCH, help="the shared harness folder")
    ap.add_argument("--out", type=Path, default=None, help="default results/bench_proxy/<stamp>")
    ap.add_argument("--no-setup", action="store_true", help="fail instead of running setup.sh")
    ap.add_argument("--pin", choices=["auto", "none"], default="auto",
                    help="harness CPU pinning; with auto the candidate upstreams share --aux-cpus with the load")
    ap.add_argument("--aux-cpus", default="0", help="CPUs of the load generator, mocks and candidate upstreams")
    ap.add_argument("--hang-server", metavar="PORT_FILE", help=argparse.SUPPRESS)
    ap.add_argument("--hang-seconds", type=float, default=3600, help=argparse.SUPPRESS)
    args, passthrough = ap.parse_known_args()
    if args.hang_server:
        serve_hanging(args.hang_server, args.hang_seconds)
        return 0
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    if args.mirror_check:
        parts = {"mirror"}
    if args.skip_mirror_check:
        parts.discard("mirror")
    if args.tail_check:
        parts.add("tail")
    if not parts or parts - {"overhead", "mirror", "tail"}:
        ap.error(f"--parts: nothing to run or unknown part in {sorted(parts)}")
    if not SHADOWEVAL.exists():
        raise SystemExit(f"{SHADOWEVAL} not found: run scripts/install first")

    bench = prepare_bench(args.bench_dir, not args.no_setup)
    out = (args.out or REPO / "results" / "bench_proxy" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    modes = [m for m in args.modes.split(",") if m]
    pin = ["--pin", args.pin, "--aux-cpus", args.aux_cpus, "--modes", args.modes]
    common = [*pin, "--duration", str(args.duration), "--repeat", str(args.repeat), *passthrough]
    report: list[str] = [f"# shadoweval proxy benchmark {time.strftime('%Y-%m-%d %H:%M:%S')}", ""]

    if "overhead" in parts:
        conc = [int(c) for c in args.concurrency.split(",")]
        part = out / "overhead"
        part.mkdir(exist_ok=True)
        config = part / "shadoweval.toml"
        write_config(config, mirror=False, candidates=[])
        db = part / "shadoweval.db"
        data = run_harness(bench, part, [(PASSTHROUGH, passthrough_cmd()), (OURS, ours_cmd(config, db))],
                           ["--concurrency", args.concurrency, "--budget-s", str(args.budget_s), *common])
        report += overhead_summary(data, modes, conc)
        report += [store_line(db, OURS, data), f"- harness report: {part}/results.md", ""]

    if "tail" in parts:
        part = out / "tail"
        part.mkdir(exist_ok=True)
        config = part / "shadoweval.toml"
        write_config(config, mirror=False, candidates=[])
        budget = 3 * 3 * len(modes) * (args.tail_duration + 4) + 60  # systems x repeats x cells, + start-up
        data = run_harness(bench, part, [(PASSTHROUGH, passthrough_cmd()),
                                         (OURS, ours_cmd(config, part / "shadoweval.db"))],
                           [*pin, "--concurrency", "1", "--duration", str(args.tail_duration), "--repeat", "3",
                            "--no-litellm", "--budget-s", str(budget), *passthrough])
        report += [f"## C=1 tail with more samples ({args.tail_duration:g} s x 3 repeats per cell)", ""]
        report += tail_lines(data, modes, " (long run)") + [f"- harness report: {part}/results.md", ""]

    if "mirror" in parts:
        conc = [int(c) for c in args.mirror_concurrency.split(",")]
        part = out / "mirror"
        part.mkdir(exist_ok=True)
        children: list[Child] = []
        aux = args.aux_cpus if args.pin == "auto" and (os.cpu_count() or 1) >= 2 else None
        try:
            children.append(start_child("candidate mock (fast)", [
                str(bench / ".venv-bench/bin/python"), str(bench / "mock_upstream.py"), "--port", "0",
                "--port-file", str(part / "fast.port"), "--latency-ms", "20", "--models", "cand-model",
                "--max-seconds", str(int(args.mirror_budget_s + 300))],
                part / "fast.port", part / "candidate-fast.log", aux))
            children.append(start_child("candidate (hanging)", [
                sys.executable, str(Path(__file__).resolve()), "--hang-server", str(part / "hang.port"),
                "--hang-seconds", str(int(args.mirror_budget_s + 300))],
                part / "hang.port", part / "candidate-hanging.log", aux))
            fast, hang = children
            candidates = [
                {"name": "fast", "model": "cand-model", "base_url": f"http://127.0.0.1:{fast.port}/v1",
                 "concurrency": 8, "timeout_s": 5},
                {"name": "hanging", "model": "x", "base_url": f"http://127.0.0.1:{hang.port}/v1",
                 "concurrency": 4, "timeout_s": 2},
            ]
            write_config(part / "mirror-off.toml", mirror=False, candidates=candidates)
            write_config(part / "mirror-on.toml", mirror=True, candidates=candidates)
            db_on = part / "mirror-on.db"
            cpu0 = {c.name: c.cpu_s() for c in children}
            data = run_harness(bench, part, [
                (MIRROR_OFF, ours_cmd(part / "mirror-off.toml", part / "mirror-off.db")),
                (MIRROR_ON, ours_cmd(part / "mirror-on.toml", db_on)),
            ], ["--no-litellm", "--ref", MIRROR_OFF, "--concurrency", args.mirror_concurrency,
                "--budget-s", str(args.mirror_budget_s), *common])
            cand_cpu = {c.name: c.cpu_s() - cpu0[c.name] for c in children}
        finally:
            for c in children:
                c.stop()
        report += mirror_summary(cells(data), modes, conc, db_on, cand_cpu)
        report += [f"- harness report: {part}/results.md", ""]

    text = "\n".join(report)
    (out / "summary.md").write_text(text + "\n")
    print("\n" + text)
    log(f"wrote {out}/summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
