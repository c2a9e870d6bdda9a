"""One run of the scenario suite: one seed, every chosen scenario as a candidate of one proxy.

The run goes through the product the way a team would use it, with the world of
`scenario_world` playing production, the candidates and the judge model:

1. `shadoweval serve` with a configuration written here (background judging off);
2. the app's traffic: the official `openai` client, a thread pool, every question tagged with its
   route, one request in five streamed; then a wait until every candidate has answered;
3. `shadoweval judge run` (the cheap offline `checks` judge and the LLM `pairwise` judge on every pair);
4. `shadoweval grade queue --candidate NAME -n GRADED` per candidate (the product's own sampling);
5. simulated graders through the grading page's JSON API (/grade/api/signin, /api/next, /api/grades);
6. the proxy stops, and the harness (never the product) spreads the exchanges' times over two
   past ISO weeks, first half of the questions in week 1, second half in week 2;
7. `shadoweval report --json` and `shadoweval gate --candidate NAME --json` per candidate.

`run_seed` returns what happened per scenario; `scenario_table` turns many of them into the table.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
from scenario_world import PRODUCTION_MODEL, SCENARIOS, World

from shadoweval.cli.mockllm import ThreadedServer, free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin" / "shadoweval"
GRADERS = {f"grader{i}": f"scenario-token-for-grader-{i}" for i in range(4)}
JUDGE_KEY_ENV = "SCENARIO_JUDGE_KEY"


def config_text(world_url: str, port: int, db: Path, names: list[str]) -> str:
    lines = [f"""[server]
port = {port}
log_level = "warning"

[production]
base_url = "{world_url}/p/production/v1"

[store]
path = "{db}"
flush_interval_ms = 50

[judges]
background = false
offline = ["checks"]          # cheap and deterministic; the MiniLM judges would cost ~0.2 s an answer
llm = ["pairwise"]
llm_model = "openai/judge"    # the world plays the judge model too
llm_api_base = "{world_url}/p/judge/v1"
llm_api_key_env = "{JUDGE_KEY_ENV}"
llm_share = "all"
llm_concurrency = 16
llm_daily_usd = 0

[report]
slice_by = ["route"]
drift_period = "week"
alert_min_win_rate = 0.45

[gate]
mode = "not-worse"
margin = 0.05
"""]
    for name in names:
        s = SCENARIOS[name]
        lines.append(f'[[candidates]]\nname = "{name}"\nmodel = "{s.model}"\nbase_url = "{world_url}/p/{name}/v1"\n'
                     "concurrency = 8\ntimeout_s = 30\n")
    for grader, token in GRADERS.items():
        lines.append(f'[[evaluators]]\nname = "{grader}"\ntoken_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n')
    return "\n".join(lines)


def _env() -> dict[str, str]:
    return {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1",
            JUDGE_KEY_ENV: "sk-scenario-judge-not-a-real-key"}


def cli(*args: str, ok: tuple[int, ...] = (0,), timeout: float = 600) -> tuple[int, Any]:
    """Run `shadoweval ARGS...` and parse its JSON output."""
    out = subprocess.run([str(BIN), *args], capture_output=True, text=True, env=_env(), timeout=timeout)
    if out.returncode not in ok:
        raise RuntimeError(f"shadoweval {' '.join(args[:2])} exited {out.returncode}: {out.stderr[-2000:]}")
    try:
        return out.returncode, json.loads(out.stdout)
    except ValueError:
        raise RuntimeError(f"shadoweval {' '.join(args[:2])} printed no JSON: {out.stdout[-500:]} "
                           f"{out.stderr[-1500:]}") from None


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def send_traffic(url: str, world: World, threads: int = 16) -> dict[str, int]:
    """The app: every question once, in order, through the proxy; exchange id -> question index."""
    local = threading.local()

    def one(i: int) -> tuple[str, int]:
        if not hasattr(local, "client"):
            local.client = openai.OpenAI(base_url=url + "/v1", api_key="sk-scenario-app", max_retries=0)
        q = world.questions[i]
        kw: dict[str, Any] = {"model": PRODUCTION_MODEL, "temperature": 0.2,
                              "messages": [{"role": "system", "content": "You are the support assistant."},
                                           {"role": "user", "content": q.text}],
                              "extra_headers": {"x-shadoweval-tags": f"route={q.slice}"}}
        if i % 5 == 4:
            with local.client.chat.completions.with_streaming_response.create(stream=True, **kw) as resp:
                for _ in resp.parse():
                    pass
                return resp.headers["x-shadoweval-exchange-id"], i
        raw = local.client.chat.completions.with_raw_response.create(**kw)
        raw.parse()
        return raw.headers["x-shadoweval-exchange-id"], i

    with ThreadPoolExecutor(threads) as pool:
        return dict(pool.map(one, range(world.n)))


def _answered(db: Path, names: list[str], n: int) -> bool:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        counts = dict(con.execute("select name, count(*) from outputs group by name").fetchall())
    return all(counts.get(name, 0) >= n for name in ["production", *names])


def grade_all(url: str, world: World, graders: int = 4) -> int:
    """Simulated graders through the grading page's API until nothing is left to grade; grades given."""
    given = [0]
    lock = threading.Lock()

    def grader(name: str) -> None:
        with httpx.Client(base_url=url + "/grade", timeout=30) as c:
            c.post("/api/signin", json={"token": GRADERS[name]}).raise_for_status()
            while True:
                item = c.get("/api/next").raise_for_status().json()["item"]
                if item is None:
                    return
                pref = world.grade(item["answers"]["a"]["text"], item["answers"]["b"]["text"])
                body = {"item_id": item["id"], **({"preference": pref} if pref else {"skipped": True})}
                c.post("/api/grades", json=body).raise_for_status()
                with lock:
                    given[0] += 1

    names = list(GRADERS)[:graders]
    with ThreadPoolExecutor(len(names)) as pool:
        list(pool.map(grader, names))
    for name in names:  # pairs wanting two graders that were leased while the others finished
        grader(name)
    return given[0]


def spread_over_two_weeks(db: Path, ids: dict[str, int], world: World, now: datetime | None = None) -> None:
    """TEST HARNESS ONLY, never done by the product: traffic was sent in real time (seconds), so the
    exchanges' times are rewritten to spread the first half of the questions evenly over one ISO
    week and the second half over the next, both complete and in the past, as two weeks of real
    traffic would be. Written straight into the stopped proxy's SQLite file."""
    now = now or datetime.now(UTC)
    monday = (now - timedelta(days=now.weekday() + 14)).replace(hour=0, minute=0, second=0, microsecond=0)
    half = world.n // 2
    sizes = {1: half, 2: world.n - half}
    rows = []
    for eid, i in ids.items():
        q = world.questions[i]
        pos = i if q.week == 1 else i - half
        t = monday + timedelta(weeks=q.week - 1) + timedelta(days=7) * (pos + 0.5) / sizes[q.week]
        rows.append((t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z", eid))
    with sqlite3.connect(db) as con:
        con.executemany("update exchanges set created_at = ? where id = ?", rows)
        con.executemany("update outputs set created_at = ? where exchange_id = ?", rows)


def classify(name: str, entry: dict[str, Any], gate_rc: int, gate: dict[str, Any]) -> dict[str, Any]:
    """What the product said about one scenario's candidate, against what it should have said."""
    s = SCENARIOS[name]
    reasons = list(gate.get("reasons") or [])
    verdict = "undecided" if gate_rc == 3 else "pass" if gate.get("pass") and gate_rc == 0 else "fail"
    if verdict == "undecided":
        outcome = "undecided"
    elif s.expect == "pass":
        outcome = "right" if verdict == "pass" else "wrong fail"
    elif verdict == "pass":
        outcome = "wrong pass"
    else:
        outcome = "right" if any(r.startswith(s.expect) for r in reasons) else "wrong reason"
    source = entry.get("decided_by")
    win = (entry.get("win_rate") or {}).get(source) or {}
    return {"verdict": verdict, "outcome": outcome, "reasons": reasons,
            "kinds": sorted({r.split(":", 1)[0] for r in reasons}),
            "alarms": {"drift": bool(entry.get("alerts")), "reward_gaming": bool(entry.get("reward_gaming")),
                       # which of the report's two reward-gaming alarms: the judge rising while people stay
                       # flat (over time), or the judge favouring the candidate more than people do
                       "gaming_rise": any("rose from" in m for m in entry.get("reward_gaming") or []),
                       "gaming_judge_vs_people": any("more than people do" in m for m in entry.get("reward_gaming") or [])},
            "alerts": list(entry.get("alerts") or []), "reward_gaming": list(entry.get("reward_gaming") or []),
            "flags": list(entry.get("flags") or []), "decided_by": source,
            "more_graded": ((gate.get("decision") or {}).get("plan") or {}).get("more_graded"),
            "win_rate": {k: win.get(k) for k in ("value", "low", "high", "n")}}


def run_seed(seed: int, names: list[str], *, graded: int = 200, exchanges: int | None = None,
             judge_accuracy: float = 0.85, grader_accuracy: float = 0.8, workdir: str | None = None) -> dict[str, Any]:
    """One run: every scenario in `names` as a candidate of one proxy, on `exchanges` questions."""
    t0 = time.perf_counter()
    n = exchanges or max(2 * graded, 100)
    world = World([SCENARIOS[x] for x in names], n, seed, judge_accuracy=judge_accuracy,
                  grader_accuracy=grader_accuracy)
    timings: dict[str, float] = {}

    def lap(what: str) -> None:
        timings[what] = round(time.perf_counter() - t0 - sum(timings.values()), 2)

    with ExitStack() as stack:
        tmp = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scenarios-")))
        tmp.mkdir(parents=True, exist_ok=True)
        ws = stack.enter_context(ThreadedServer(world.app()))
        db, cfg, port = tmp / "shadoweval.db", tmp / "shadoweval.toml", free_port()
        cfg.write_text(config_text(ws.url, port, db, names), encoding="utf-8")
        for mode in ("not-worse", "better"):
            (tmp / f"gate-{mode}.toml").write_text(f'[gate]\nmode = "{mode}"\n', encoding="utf-8")
        url = f"http://127.0.0.1:{port}"
        log = stack.enter_context((tmp / "serve.log").open("wb"))
        serve = subprocess.Popen([str(BIN), "serve", "--config", str(cfg)], env=_env(), stdout=log, stderr=log)
        try:
            _wait(lambda: _healthy(url) or serve.poll() is not None, 60, "the proxy to start")
            if serve.poll() is not None:
                raise RuntimeError(f"shadoweval serve exited: {(tmp / 'serve.log').read_text()[-2000:]}")
            lap("start")
            ids = send_traffic(url, world)
            _wait(lambda: _answered(db, names, n), 120, "every candidate to answer")
            lap("traffic")
            cli("judge", "run", "--config", str(cfg), "--json")
            lap("judge")
            queued = {x: cli("grade", "queue", "--config", str(cfg), "-n", str(graded), "--seed", str(seed),
                             "--candidate", x, "--json")[1]["queued"] for x in names}
            grades = grade_all(url, world)
            lap("grade")
        finally:
            serve.terminate()
            serve.wait(60)
        spread_over_two_weeks(db, ids, world)
        _, report = cli("report", "--config", str(cfg), "--json", "--no-clusters")
        entries = {e["candidate"]: e for e in report["candidates"]}
        lap("report")
        out: dict[str, Any] = {}
        for x in names:
            s = SCENARIOS[x]
            rc, gate = cli("gate", "--candidate", x, "--config", str(cfg), "--policy", str(tmp / f"gate-{s.mode}.toml"),
                           "--json", ok=(0, 1, 3))
            truth = [world.truth[(x, q.index)] for q in world.questions]
            out[x] = {**classify(x, entries.get(x, {}), rc, gate), "mode": s.mode, "queued": queued[x],
                      "truth": round(sum(truth) / len(truth), 3)}
        lap("gate")
    return {"seed": seed, "exchanges": n, "graded": graded, "grades": grades,
            "seconds": round(time.perf_counter() - t0, 1), "timings": timings, "scenarios": out}
