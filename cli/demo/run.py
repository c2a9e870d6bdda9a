"""The built-in demo: a RAG support app's traffic through the proxy, all on 127.0.0.1, no API keys.

Three local stand-ins play the models, with answers scripted in `northwind.json`: production,
a `careful` candidate that stays grounded and cites well but is slower, and a `drifting`
candidate that is fast and cheap but adds facts the documents do not hold and cites sources that
do not say what it claims. The app is the official `openai` client, pointed at the proxy by
base_url only; it tags each request with its route and tenant, streams a third of them, and
sends a thumbs-down on a couple of answers. Then it prints what was captured.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletionMessageParam

from shadoweval.core.errors import ShadowevalError
from shadoweval.core.messages import last_user_text
from shadoweval.core.settings import is_postgres_url, load_settings
from shadoweval.core.store import Store
from shadoweval.proxy.app import create_app

from ..common import store_setting
from ..mockllm import MockLLM, ThreadedServer

# Which real model each stand-in pretends to be, so cost estimates use real prices.
PRODUCTION_MODEL = "gpt-4o"
PERSONAS = {
    # name: (model, latency before first byte, delay between stream chunks)
    "production": (PRODUCTION_MODEL, 0.12, 0.004),
    "careful": ("gpt-4.1", 0.30, 0.008),
    "drifting": ("gpt-4o-mini", 0.06, 0.002),
}


@dataclass(frozen=True)
class DemoData:
    company: str
    system_prompt: str
    documents: dict[str, dict[str, str]]
    questions: list[dict[str, Any]]


def load_demo() -> DemoData:
    raw = json.loads(resources.files(__package__).joinpath("northwind.json").read_text(encoding="utf-8"))
    return DemoData(raw["company"], raw["system_prompt"], {d["id"]: d for d in raw["documents"]}, raw["questions"])


def build_messages(data: DemoData, question: dict[str, Any]) -> list[ChatCompletionMessageParam]:
    """What the app sends: the retrieved documents numbered [1]..[n] in the system message."""
    docs = "\n\n".join(
        f"[{i}] {data.documents[d]['title']}\n{data.documents[d]['text']}" for i, d in enumerate(question["doc_ids"], 1)
    )
    return [{"role": "system", "content": data.system_prompt.replace("{documents}", docs)},
            {"role": "user", "content": question["question"]}]


def scripted(data: DemoData, persona: str) -> MockLLM:
    by_question = {q["question"]: q["answers"][persona] for q in data.questions}
    model, latency, chunk_delay = PERSONAS[persona]

    def answer(request: dict[str, Any]) -> str:
        return by_question.get(last_user_text(request), "I can only answer Northwind Robotics support questions.")

    return MockLLM(name=model, answer=answer, latency_s=latency, chunk_delay_s=chunk_delay)


def _send_traffic(client: openai.OpenAI, data: DemoData, questions: list[dict[str, Any]]) -> Iterator[str]:
    for i, q in enumerate(questions):
        headers = {"x-shadoweval-tags": f"route={q['route']},tenant={q['tenant']}"}
        messages = build_messages(data, q)
        if i % 3 == 2:
            with client.chat.completions.with_streaming_response.create(
                model=PRODUCTION_MODEL, messages=messages, stream=True, temperature=0.2,
                stream_options={"include_usage": True}, extra_headers=headers, user=f"customer-{i % 7}",
            ) as resp:
                for _ in resp.parse():
                    pass
                yield resp.headers["x-shadoweval-exchange-id"]
        else:
            raw = client.chat.completions.with_raw_response.create(
                model=PRODUCTION_MODEL, messages=messages, temperature=0.2, extra_headers=headers,
                user=f"customer-{i % 7}",
            )
            raw.parse()
            yield raw.headers["x-shadoweval-exchange-id"]


def _cited_out_of_range(text: str | None, n_docs: int) -> int:
    return sum(1 for m in re.findall(r"\[(\d+)\]", text or "") if not 1 <= int(m) <= n_docs)


def run_demo(db: str | Path, *, limit: int | None = None, judge: bool = True, out: Any = print) -> int:
    """The demo into `db`: a SQLite file (made anew) or a PostgreSQL URL (an empty database)."""
    data = load_demo()
    questions = data.questions[:limit] if limit else data.questions
    postgres = is_postgres_url(str(db))
    if postgres:
        _must_be_empty(str(db))
    elif Path(db).exists():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    shown = _safe(str(db)) if postgres else str(db)
    out(f"shadoweval demo: the support assistant of {data.company}, {len(questions)} questions, "
        f"{len(data.documents)} knowledge-base documents")
    with ExitStack() as stack:
        servers = {p: stack.enter_context(ThreadedServer(scripted(data, p))) for p in PERSONAS}
        store = {**store_setting(str(db)), "flush_interval_ms": 20}
        if postgres:
            store["path"] = "shadoweval-demo.db"  # with a URL it only places this machine's crash journal
        settings = load_settings(None, env={}, overrides={
            "production": {"base_url": servers["production"].url + "/v1"},
            "store": store,
            "twin": {"sample_rate": 0.25},
            "candidates": [
                {"name": "careful", "model": PERSONAS["careful"][0], "base_url": servers["careful"].url + "/v1",
                 "concurrency": 4, "timeout_s": 30},
                {"name": "drifting", "model": PERSONAS["drifting"][0], "base_url": servers["drifting"].url + "/v1",
                 "concurrency": 4, "timeout_s": 30},
            ],
        })
        app = create_app(settings)
        proxy = stack.enter_context(ThreadedServer(app))
        out(f"proxy on {proxy.url}/v1 -> production {settings.production.base_url}; "
            f"mirroring to careful ({PERSONAS['careful'][0]}), drifting ({PERSONAS['drifting'][0]}) "
            f"and a 25% production twin")
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="sk-demo-not-a-real-key")
        t0 = time.perf_counter()
        ids = list(_send_traffic(client, data, questions))
        elapsed = time.perf_counter() - t0
        out(f"sent {len(ids)} requests through the proxy in {elapsed:.1f} s "
            f"({sum(1 for i in range(len(ids)) if i % 3 == 2)} streamed)")
        # End users complain about a couple of answers: feedback lands on the exchange.
        for eid, comment in zip(ids[1:8:5], ["That is not what the warranty page says.", "Didn't answer my question."], strict=False):
            httpx.post(proxy.url + "/shadoweval/feedback", json={"exchange_id": eid, "rating": "down", "comment": comment})
        _wait_for_mirrors(app.store, ids, expected=3, timeout=60)
    code = _report(db, shown, data, questions, ids, out)
    if judge:
        _judge(db, ids, out)
        _compare(db, shown, out)
    out("")
    look = f"psql {shown} -c" if postgres else f"sqlite3 {shown}"
    out(f"explore it: shadoweval stats --db {shown}   |   {look} 'select name, status, text from outputs limit 5'")
    out(f"judge it again, or with an LLM tier: shadoweval judge run --db {shown}   (see docs/judges.md)")
    again = " --db <another empty database>" if postgres else ""
    out(f"grade pairs yourself in the browser: ./scripts/demo{again} --grade   (see docs/grading.md)")
    return code


def _safe(url: str) -> str:
    from shadoweval.core.pg import safe_url  # psycopg loads only for PostgreSQL

    return safe_url(url)


def _must_be_empty(url: str) -> None:
    """The demo writes into a PostgreSQL database only when it holds no traffic yet: it never deletes."""
    store = Store(url)
    store.start()
    try:
        n, _ = store.stats()
    finally:
        store.stop()
    if n:
        raise ShadowevalError(f"the demo needs an empty database: {_safe(url)} already holds {n} exchanges "
                              "(create another database for it)")


def _judge(db: str | Path, ids: list[str], out: Any) -> None:
    """Run the offline judges on the demo traffic and show what they found, per model."""
    import asyncio

    from shadoweval.judges.config import build
    from shadoweval.judges.runner import run_cascade

    out("")
    out("judging every answer offline (checks, groundedness, citations; no LLM, no API key)...")
    store = Store(db)
    store.start()
    try:
        configured = build(load_settings(None, env={}), store=store)
        t0 = time.perf_counter()
        asyncio.run(run_cascade(store, configured.offline, [], policy=configured.policy, concurrency=2))
        elapsed = time.perf_counter() - t0
    finally:
        store.stop()
    per: dict[str, dict[str, list[Any]]] = {}
    weakest: dict[str, tuple[float, str]] = {}
    names = {}
    for eid in ids:
        found = store.get_exchange(eid)
        if not found:
            continue
        names.update({o.id: o.name for o in found[1]})
        for v in store.verdicts(eid):
            if v.error is not None:
                continue
            row = per.setdefault(names[v.output_id], {})
            row.setdefault(v.judge, []).append(v)
            if v.judge == "grounded":
                for u in v.evidence.get("unsupported", []):
                    if len(u["sentence"].split()) >= 8 and u["support"] < weakest.get(names[v.output_id], (2.0, ""))[0]:
                        weakest[names[v.output_id]] = (u["support"], u["sentence"])
    out(f"judged in {elapsed:.1f} s; per model (`shadoweval calibrate` measures these judges against human labels):")
    out(f"  {'model':16} {'grounded':>9} {'mean score':>10} {'citations ok':>12} {'cites missing source':>20} "
        f"{'checks ok':>9}")
    order = ["production", "production-twin", "careful", "drifting"]
    for name in sorted(per, key=lambda n: order.index(n) if n in order else 9):
        row = per[name]
        g, c, k = row.get("grounded", []), row.get("citations", []), row.get("checks", [])
        cited = [v for v in c if v.label != "uncited"]
        missing = sum(len(v.evidence.get("nonexistent", [])) for v in cited)
        out(f"  {name:16} {_share(g, 'grounded'):>9} {_mean(g):>10} {_share(cited, 'supported'):>12} "
            f"{missing:>20} {_share(k, 'ok'):>9}")
    if "drifting" in weakest:
        out(f"  least supported sentence of drifting: {weakest['drifting'][1]!r}")


def _compare(db: str | Path, shown: str, out: Any) -> None:
    """The switch decision's summary: each candidate against production (`shadoweval report`)."""
    from shadoweval.datasets.report.build import build_report
    from shadoweval.datasets.report.html import write_html
    from shadoweval.judges.embed import get_embedder

    body = build_report(Store(db).exchange_bundles(), load_settings(None, env={}).report,
                        embed=get_embedder("minilm").encode)
    page = write_html(body, Path("shadoweval-demo-report.html") if is_postgres_url(str(db))
                      else Path(db).with_name(Path(db).stem + "-report.html"))
    out("")
    out("compared with production (offline judges' preference, 95% intervals; nobody has graded yet):")
    for c in body["candidates"]:
        w = c["win_rate"].get(c["decided_by"] or "", {})
        lat = c["ops"]["latency_p95_ms"]
        win = f"win rate {w['value']:.2f} [{w['low']:.2f}, {w['high']:.2f}]" if w.get("value") is not None else "-"
        out(f"  {c['candidate']:10} {c['call']:14} {win}, p95 latency {lat['candidate']:.0f} ms vs "
            f"{lat['production']:.0f} ms" + (f"; {len(c['flags'])} slices worse" if c["flags"] else ""))
        lost = c.get("failure_clusters") or {}
        if lost.get("losses"):
            n = lost["losses"]
            out(f"  {'':10} {n} loss{'es' if n != 1 else ''}, {lost.get('passing', 0)} of them answers every judge "
                "passes (lost on a lower score, nothing failed)")
    out(f"  the full report (plots, slices, where each loses): {page.resolve()}")
    out(f"  the same in the terminal: shadoweval report --db {shown}   |   the switch decision: shadoweval gate "
        f"--db {shown} --candidate careful")


def _share(vs: list[Any], label: str) -> str:
    return f"{sum(v.label == label for v in vs)}/{len(vs)}" if vs else "-"


def _mean(vs: list[Any]) -> str:
    scores = [v.score for v in vs if v.score is not None]
    return f"{sum(scores) / len(scores):.3f}" if scores else "-"


def _wait_for_mirrors(store: Store | None, ids: list[str], *, expected: int, timeout: float) -> None:
    assert store is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        store.flush()
        done = sum(1 for eid in ids if (found := store.get_exchange(eid)) and len(found[1]) >= expected)
        if done == len(ids):
            return
        time.sleep(0.2)


def _report(db: str | Path, shown: str, data: DemoData, questions: list[dict[str, Any]], ids: list[str],
            out: Any) -> int:
    store = Store(db)
    n, rows = store.stats()
    out("")
    out(f"captured {n} exchanges in {shown}")
    out(f"  {'model':16} {'answers':>7} {'ok':>4} {'errors':>6} {'mean ms':>8} {'p95 ms':>7} {'est. cost $':>11}")
    for r in rows:
        out(f"  {r.name:16} {r.outputs:7} {r.ok:4} {r.errors + r.timeouts:6} {r.mean_latency_ms or 0:8.0f} "
            f"{r.p95_latency_ms or 0:7.0f} {r.cost_usd:11.5f}")
    bad_cites: dict[str, int] = {}
    ttft: dict[str, list[float]] = {}
    feedback = 0
    for q, eid in zip(questions, ids, strict=True):
        found = store.get_exchange(eid)
        if not found:
            continue
        _, outputs, fbs = found
        feedback += len(fbs)
        for o in outputs:
            bad_cites[o.name] = bad_cites.get(o.name, 0) + _cited_out_of_range(o.text, len(q["doc_ids"]))
            if o.ttft_ms is not None:
                ttft.setdefault(o.name, []).append(o.ttft_ms)
    out("  median time to first token (streamed requests): " + ", ".join(
        f"{k} {sorted(v)[len(v) // 2]:.0f} ms" for k, v in sorted(ttft.items())))
    out("  citations to documents that were not retrieved: " + ", ".join(
        f"{k} {v}" for k, v in sorted(bad_cites.items())))
    out(f"  end-user feedback stored: {feedback}")
    q = next((q for q in questions if q["id"] == "q02"), questions[0])
    found = store.get_exchange(ids[questions.index(q)])
    if found:
        ex, outputs, _ = found
        out("")
        out(f"one exchange, side by side ({ex.id}, tags {ex.tags}):")
        out(f"  question: {q['question']}")
        for o in sorted(outputs, key=lambda o: ["production", "production-twin", "careful", "drifting"].index(o.name)
                        if o.name in ("production", "production-twin", "careful", "drifting") else 9):
            out(f"  [{o.name} · {o.model} · {o.latency_ms or 0:.0f} ms] {o.text}")
    return 0
