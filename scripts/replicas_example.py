#!/usr/bin/env python3
"""The example of docs/replicas.md, run for real: two `shadoweval serve` replicas on one PostgreSQL
database, a load balancer in front, the demo's app traffic through it, then what the store holds.

- PostgreSQL: `--db postgresql://...` (an empty database you own), or a throwaway cluster that
  `scripts/postgres` creates on a loopback port and removes at the end (it installs PostgreSQL
  from Debian's packages when missing, as root).
- The models: the built-in demo's scripted production and its `careful` candidate, on 127.0.0.1.
- The load balancer: nginx with the configuration the docs show, when `nginx` is installed;
  otherwise (or with `--no-nginx`) the app itself alternates between the replicas (round robin).
- The app: the official openai client, pointed at the front by `base_url` only; every third
  request streamed.

At the end it checks that every answered request was stored exactly once, with production's
answer and the candidate's, and that both replicas took a share; it prints what each replica's
/healthz says and `shadoweval stats`. Exit status 0 when all holds.

    .venv/bin/python scripts/replicas_example.py                 # ~30 s
    .venv/bin/python scripts/replicas_example.py --no-nginx -n 60
    .venv/bin/python scripts/replicas_example.py --db postgresql://me@127.0.0.1/shadoweval_try --keep
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import openai
import psycopg

from shadoweval.cli.demo.run import PERSONAS, PRODUCTION_MODEL, build_messages, load_demo, scripted
from shadoweval.cli.mockllm import ThreadedServer, free_port

REPO = Path(__file__).resolve().parent.parent
SHADOWEVAL = Path(sys.executable).with_name("shadoweval")

NGINX_CONF = """\
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log;
events {{}}
http {{
  access_log off;
  client_body_temp_path {work}/nginx-body; proxy_temp_path {work}/nginx-proxy;
  fastcgi_temp_path {work}/nginx-f; uwsgi_temp_path {work}/nginx-u; scgi_temp_path {work}/nginx-s;
  upstream shadoweval {{ server 127.0.0.1:{p1}; server 127.0.0.1:{p2}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{front};
    location / {{ proxy_pass http://shadoweval; proxy_buffering off;
                 proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""


def log(msg: str) -> None:
    print(f"[replicas_example] {msg}", flush=True)


def wait_http(url: str, proc: subprocess.Popen[bytes] | None, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited with status {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{what} did not answer {url} within {timeout:g} s")


def start(argv: list[str], logfile: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(logfile, "ab") as f:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, **(env or {})})


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="", help="an empty PostgreSQL database (default: a throwaway cluster)")
    ap.add_argument("-n", "--requests", type=int, default=30, help="requests the app sends")
    ap.add_argument("--no-nginx", action="store_true", help="round robin in the app instead of nginx")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (configuration, logs)")
    a = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="shadoweval-replicas-"))
    os.chmod(work, 0o755)  # a throwaway cluster inside belongs to the postgres user when run as root
    procs: list[subprocess.Popen[bytes]] = []
    cluster: Path | None = None
    try:
        url = a.db
        if not url:
            cluster = work / "pg"
            r = subprocess.run([str(REPO / "scripts" / "postgres"), "start", str(cluster)], capture_output=True,
                               text=True)
            if r.returncode != 0:
                raise SystemExit(f"scripts/postgres start failed: {r.stderr.strip()}")
            url = r.stdout.strip().splitlines()[-1]
        log(f"PostgreSQL: {url}")
        data = load_demo()
        with ExitStack() as stack:
            production = stack.enter_context(ThreadedServer(scripted(data, "production")))
            careful = stack.enter_context(ThreadedServer(scripted(data, "careful")))
            config = work / "shadoweval.toml"
            config.write_text("\n".join([
                "[production]", f'base_url = "{production.url}/v1"', "",
                "[store]", 'url_env = "SHADOWEVAL_DATABASE_URL"', f'path = "{work}/local.db"', "",
                "[judges]", "background = false", "",
                "[[candidates]]", 'name = "careful"', f'model = "{PERSONAS["careful"][0]}"',
                f'base_url = "{careful.url}/v1"', "sample_rate = 1.0", "",
            ]))
            env = {"SHADOWEVAL_DATABASE_URL": url, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
            ports = [free_port(), free_port()]
            for i, port in enumerate(ports, 1):
                procs.append(start([str(SHADOWEVAL), "serve", "--config", str(config), "--port", str(port)],
                                   work / f"replica{i}.log", env))
                log(f"replica {i}: shadoweval serve --config {config} --port {port}")
            for i, (port, proc) in enumerate(zip(ports, procs, strict=True), 1):
                wait_http(f"http://127.0.0.1:{port}/healthz", proc, f"replica {i} (log: {work}/replica{i}.log)")

            nginx = None if a.no_nginx else shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
            if nginx:
                front = free_port()
                (work / "nginx.conf").write_text(NGINX_CONF.format(work=work, p1=ports[0], p2=ports[1], front=front))
                procs.append(start([nginx, "-c", str(work / "nginx.conf"), "-p", str(work), "-g", "daemon off;"],
                                   work / "nginx.log"))
                wait_http(f"http://127.0.0.1:{front}/healthz", procs[-1], f"nginx (log: {work}/nginx-error.log)")
                log(f"nginx on 127.0.0.1:{front}, round robin to both replicas ({work}/nginx.conf)")
                clients = [openai.OpenAI(base_url=f"http://127.0.0.1:{front}/v1", api_key="sk-example")]
            else:
                log("no nginx (or --no-nginx): the app alternates between the two replicas itself")
                clients = [openai.OpenAI(base_url=f"http://127.0.0.1:{p}/v1", api_key="sk-example") for p in ports]

            questions = list(itertools.islice(itertools.cycle(data.questions), a.requests))
            ids, streamed, first_chunk_ms = [], 0, []
            t0 = time.perf_counter()
            for i, (q, client) in enumerate(zip(questions, itertools.cycle(clients))):
                messages = build_messages(data, q)
                if i % 3 == 2:
                    s0 = time.perf_counter()
                    with client.chat.completions.with_streaming_response.create(
                            model=PRODUCTION_MODEL, messages=messages, stream=True) as resp:
                        chunks = 0
                        for _ in resp.parse():
                            if chunks == 0:
                                first_chunk_ms.append((time.perf_counter() - s0) * 1000)
                            chunks += 1
                        ids.append(resp.headers["x-shadoweval-exchange-id"])
                    streamed += 1
                else:
                    raw = client.chat.completions.with_raw_response.create(model=PRODUCTION_MODEL, messages=messages)
                    assert raw.parse().choices[0].message.content
                    ids.append(raw.headers["x-shadoweval-exchange-id"])
            log(f"the app sent {len(ids)} requests ({streamed} streamed) in {time.perf_counter() - t0:.1f} s; "
                f"streamed answers' first chunk after {sorted(first_chunk_ms)[len(first_chunk_ms) // 2]:.0f} ms "
                "(p50; the scripted production waits 120 ms)")

            # wait until both writers are idle and every candidate answer is in
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with psycopg.connect(url) as conn:
                    row = conn.execute("select count(*) from outputs where name = 'careful'").fetchone()
                if row and row[0] >= len(ids):
                    break
                time.sleep(0.3)
            health = [httpx.get(f"http://127.0.0.1:{p}/healthz").json() for p in ports]
            for i, h in enumerate(health, 1):
                log(f"replica {i} /healthz store: {json.dumps(h['store'])}")
            with psycopg.connect(url) as conn:
                stored, distinct = conn.execute("select count(*), count(distinct id) from exchanges").fetchone() or (0, 0)
                answers = dict(conn.execute(
                    "select name, count(*) from outputs where exchange_id = any(%s) group by name", (ids,)).fetchall())
            subprocess.run([str(SHADOWEVAL), "stats", "--config", str(config)], env={**os.environ, **env}, check=False)
            shares = [int(h["store"]["written"]) for h in health]
            checks = {
                f"every answered request stored exactly once ({len(ids)} sent, {stored} stored, {distinct} distinct)":
                    stored == distinct == len(ids) and len(set(ids)) == len(ids),
                f"production and candidate answers for each ({answers})":
                    answers.get("production") == len(ids) and answers.get("careful") == len(ids),
                f"both replicas took a share (records written: {shares})": all(shares),
                "no loss counted": all(not h["store"]["lost"] for h in health),
            }
            for what, ok in checks.items():
                log(f"{'ok  ' if ok else 'FAIL'} {what}")
            return 0 if all(checks.values()) else 1
    finally:
        for p in reversed(procs):
            stop(p)
        if cluster is not None:
            subprocess.run([str(REPO / "scripts" / "postgres"), "stop", str(cluster)], capture_output=True)
        if a.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
