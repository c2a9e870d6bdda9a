"""`shadoweval grade` (the grading page, the queue, tokens) and `shadoweval agreement`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click
import orjson

from .common import (
    config_option,
    db_option,
    json_option,
    must_exist_here,
    opened_store,
    parse_time,
    settings_from_flags,
    since_option,
    store_options,
    store_setting,
)


@click.group(invoke_without_command=True)
@config_option
@click.option("--host", help="Interface to listen on (default: the configuration's server.host).")
@click.option("--port", type=int, default=8090, show_default=True, help="Port to listen on.")
@db_option()
@click.pass_context
def grade(ctx: click.Context, config: str | None, host: str | None, port: int, db: str | None) -> None:
    """Human grading. On its own: serve the grading page (http://HOST:PORT/grade/) without the proxy.

    `shadoweval serve` serves the same page at /grade/ beside the proxy; this is for grading from a
    copy of the store, or on another machine."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    settings = settings_from_flags(config, host, port, db)
    if not settings.evaluators:
        raise click.ClickException("no [[evaluators]] in the configuration: nobody could sign in "
                                   "(`shadoweval grade token NAME` makes a token)")
    must_exist_here(settings.store_target)
    click.echo(f"grading page: http://{settings.server.host}:{settings.server.port}/grade/")
    uvicorn.run(grading_server(settings), host=settings.server.host, port=settings.server.port,
                log_level="warning", server_header=False)


def grading_server(settings: Any) -> Any:
    """The grading page alone, as one ASGI app (the proxy's store is opened read-write for grades)."""
    from fastapi import FastAPI
    from fastapi.responses import RedirectResponse

    from shadoweval.core.store import Store
    from shadoweval.datasets.grading.web import grading_app

    store = Store(settings.store_target, journal=settings.store.path)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        store.start()
        try:
            yield
        finally:
            await asyncio.to_thread(store.stop, 5.0)

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/")
    @app.get("/grade")
    async def to_page() -> RedirectResponse:
        return RedirectResponse("/grade/", status_code=307)

    app.mount("/grade", grading_app(settings, store))
    return app


def serve_demo_grading(db: str | Path, port: int) -> None:
    """After the demo: queue a sample of its pairs and serve the grading page with a one-off token."""
    import uvicorn

    from shadoweval.core.settings import is_postgres_url, load_settings
    from shadoweval.datasets.grading.queue import build_queue
    from shadoweval.datasets.grading.sampling import SamplingPlan

    with opened_store(db) as store:
        result = build_queue(store, SamplingPlan(30, seed=1, double_rate=0.2), slice_by=("route",))
    token = secrets.token_urlsafe(12)
    settings = load_settings(None, overrides={
        "store": store_setting(str(db)), "server": {"port": port},
        "evaluators": [{"name": "you", "token_sha256": hashlib.sha256(token.encode()).hexdigest(), "admin": True}]})
    click.echo(f"\nqueued {len(result.items)} pairs for grading (policies and probabilities recorded)")
    click.echo(f"grading page: http://127.0.0.1:{port}/grade/   sign in with: {token}")
    shown = db if not is_postgres_url(str(db)) else "<the same URL>"
    click.echo(f"afterwards: shadoweval agreement --db {shown}   |   Ctrl-C stops the page")
    uvicorn.run(grading_server(settings), host="127.0.0.1", port=port, log_level="warning", server_header=False)


@grade.command("token")
@click.argument("name")
def grade_token(name: str) -> None:
    """Make a sign-in token for evaluator NAME and print it with the configuration lines to add."""
    token = secrets.token_urlsafe(24)
    digest = hashlib.sha256(token.encode()).hexdigest()
    click.echo(f"token for {name} (give it to them; it is not stored anywhere): {token}\n")
    click.echo("add to the configuration:\n")
    click.echo(f'[[evaluators]]\nname = "{name}"\ntoken_sha256 = "{digest}"')


@grade.command("queue")
@store_options
@click.option("-n", "n", type=click.IntRange(min=0), default=50, show_default=True,
              help="Pairs to queue, in expectation.")
@click.option("--seed", type=int, help="Random seed (default: from the clock; printed, so a run can be repeated).")
@click.option("--uniform", type=click.FloatRange(min=0), default=0.3, show_default=True,
              help="Share of the budget drawn uniformly (unbiased estimates).")
@click.option("--stratified", type=click.FloatRange(min=0), default=0.3, show_default=True,
              help="Share drawn equally per slice (every slice seen).")
@click.option("--informative", type=click.FloatRange(min=0), default=0.4, show_default=True,
              help="Share drawn by informativeness (near threshold, flipped, disagreeing judges, gap, complaint).")
@click.option("--double-rate", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Share of queued pairs graded by several evaluators (inter-rater agreement).")
@click.option("--double-evaluators", type=click.IntRange(min=2), default=2, show_default=True,
              help="How many evaluators grade those pairs.")
@since_option("Only outputs since: 7d, 24h, 30m or an ISO date.")
@click.option("--candidate", "candidates", multiple=True, help="Only these candidates' outputs (repeatable).")
@click.option("--slice-by", "slice_by", multiple=True, metavar="route|TAGKEY",
              help="Slices for the stratified share (repeatable; default: route).")
@json_option
def grade_queue(config: str | None, db: str | None, n: int, seed: int | None, uniform: float, stratified: float,
                informative: float, double_rate: float, double_evaluators: int, since: str | None,
                candidates: tuple[str, ...],
                slice_by: tuple[str, ...], as_json: bool) -> None:
    """Queue production/candidate pairs for human grading; a pair is never queued twice.

    Each queued pair records the policy that chose it and its inclusion probability, so grades can
    be reweighted into estimates over all pairs."""
    from shadoweval.datasets.grading.queue import build_queue
    from shadoweval.datasets.grading.sampling import POLICIES, SamplingPlan

    settings = settings_from_flags(config, db=db)
    if seed is None:
        seed = time.time_ns() % 2**32
    total = uniform + stratified + informative
    if total <= 0:
        raise click.BadParameter("at least one share must be > 0", param_hint="--uniform/--stratified/--informative")
    shares = {"uniform": uniform / total, "stratified": stratified / total, "informative": informative / total}
    plan = SamplingPlan(n, seed=seed, shares=shares, double_rate=double_rate, double_evaluators=double_evaluators)
    with opened_store(settings.store_target) as store:
        try:
            result = build_queue(store, plan, since=parse_time(since), names=candidates,
                                 slice_by=slice_by or ("route",))
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
    by_policy = {p: sum(i.policy == p for i in result.items) for p in POLICIES}
    doubled = sum(i.evaluators > 1 for i in result.items)
    plans = _plans(settings, since, candidates)
    if as_json:
        click.echo(orjson.dumps({
            "batch": result.batch, "seed": seed, "eligible": result.eligible, "queued": len(result.items),
            "expected": result.expected, "by_policy": by_policy, "double_graded": doubled,
            "shares": shares, "slices": {k: {"eligible": e, "queued": q} for k, (e, q) in result.slices.items()},
            "evidence": plans,
        }, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"seed {seed}, batch {result.batch}")
    click.echo(f"{result.eligible} pairs not queued before; queued {len(result.items)} "
               f"(expected {result.expected:.1f}), {doubled} for {double_evaluators} evaluators")
    click.echo("by policy: " + ", ".join(f"{p} {c}" for p, c in by_policy.items()))
    if result.slices:
        width = max(5, *(len(k) for k in result.slices))
        click.echo(f"{'slice':{width}} {'eligible':>8} {'queued':>6}")
        for k, (e, q) in result.slices.items():
            click.echo(f"{k:{width}} {e:8} {q:6}")
    for name, p in plans.items():
        click.echo(f"evidence for {name} ({p['mode']} rule): {p['text']}")


def _plans(settings: Any, since: str | None, candidates: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per candidate, how many more graded pairs its decision needs (the report's evidence plan)."""
    from .report import report_body

    body = report_body(settings, since, None, candidates, clusters=False)
    return {c["candidate"]: {"mode": c["decision"]["mode"], **(c["decision"]["plan"] or {}),
                             "text": (c["decision"]["plan"] or {}).get("text") or c["decision"]["cannot_decide"]}
            for c in body["candidates"] if c.get("decision")}


@click.command()
@store_options
@click.option("--batch", help="Only the items of this `grade queue` batch.")
@json_option
def agreement(config: str | None, db: str | None, batch: str | None, as_json: bool) -> None:
    """How far each judge agrees with human grades (overall and per slice), how far evaluators agree
    with each other (Cohen's kappa, Krippendorff's alpha), and evaluators' position bias."""
    from shadoweval.datasets.report.agreement import from_store
    from shadoweval.datasets.report.agreement_text import format_report

    settings = settings_from_flags(config, db=db)
    with opened_store(settings.store_target) as store:
        report = from_store(store, batch, settings.report)
    if as_json:
        click.echo(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(format_report(report))
