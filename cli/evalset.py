"""`shadoweval evalset ...` (build, list, show, diff, export, import) and `shadoweval replay-server`."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import click
import orjson

from .common import (
    json_option,
    opened_store,
    parse_time,
    settings_from_flags,
    since_option,
    store_options,
    until_option,
)


def _evalset(store: Any, ref: str) -> Any:
    found = store.evalset(ref)
    if found is None:
        names = sorted({e.name for e in store.evalsets()})
        raise click.ClickException(f"no eval set {ref!r}" + (f"; there are: {', '.join(names)}" if names else
                                                             "; build one with `shadoweval evalset build NAME`"))
    return found


@click.group()
def evalset() -> None:
    """Eval sets from production traffic: build, list, show, diff, export, import."""


@evalset.command("build")
@click.argument("name")
@store_options
@since_option()
@until_option("Exchanges before: 7d, 24h, 30m ago or an ISO date.")
@click.option("--route", "routes", multiple=True, help="Only these routes (route tag or API path; globs; repeatable).")
@click.option("--tag", "tags", multiple=True, metavar="KEY=VALUE", help="Only exchanges with this tag (repeatable).")
@click.option("--candidate", "candidates", multiple=True, help="Only these candidates' answers (repeatable).")
@click.option("--graded", is_flag=True, help="Select exchanges graded by people.")
@click.option("--kept", is_flag=True, help="Select exchanges a grader marked worth keeping.")
@click.option("--complaints", is_flag=True, help="Select exchanges with an end-user complaint.")
@click.option("--disagreement", is_flag=True, help="Select exchanges where a judge disagrees with people.")
@click.option("--failed", multiple=True, metavar="JUDGE", help="Select exchanges with an answer failing JUDGE.")
@click.option("--human-targets-only", is_flag=True, help="Keep only items whose target came from people.")
@click.option("--limit", type=click.IntRange(min=1), help="At most N items, spread over clusters of questions.")
@click.option("--dedup", type=click.FloatRange(0, 1), default=0.95, show_default=True,
              help="Drop a question this similar to one kept (cosine; 0 or 1: exact repeats only).")
@click.option("--cluster-threshold", type=click.FloatRange(0, 1), default=0.8, show_default=True,
              help="Questions this similar share a cluster.")
@json_option
def evalset_build(name: str, config: str | None, db: str | None, since: str | None, until: str | None,
                  routes: tuple[str, ...], tags: tuple[str, ...], candidates: tuple[str, ...], graded: bool,
                  kept: bool, complaints: bool, disagreement: bool, failed: tuple[str, ...],
                  human_targets_only: bool, limit: int | None, dedup: float, cluster_threshold: float,
                  as_json: bool) -> None:
    """Build a new version of eval set NAME from stored traffic (nothing new if it would be identical).

    Where and when (--since/--until, --route, --tag, --candidate) restrict; the signals (--graded,
    --kept, --complaints, --disagreement, --failed) add up: an exchange with any of them is in.
    Near-duplicate questions are dropped and the set is spread over clusters of similar questions."""
    from shadoweval.core.redact import Redactor
    from shadoweval.datasets.evalsets.build import Filters, build
    from shadoweval.judges.embed import get_embedder

    settings = settings_from_flags(config, db=db)
    bad = [t for t in tags if "=" not in t]
    if bad:
        raise click.BadParameter(f"use KEY=VALUE, not {bad[0]!r}", param_hint="--tag")
    filters = Filters(since=parse_time(since), until=parse_time(until), routes=routes,
                      tags=dict(t.split("=", 1) for t in tags), candidates=candidates, graded=graded, kept=kept,
                      complaints=complaints, disagreement=disagreement, failed=failed,
                      human_targets_only=human_targets_only)
    r = settings.redaction
    redactor = Redactor(emails=r.emails, card_numbers=r.card_numbers, phone_numbers=r.phone_numbers,
                        patterns=r.patterns)
    embedder = get_embedder(settings.judges.embedder)
    t0 = time.monotonic()
    with opened_store(settings.store_target) as store:
        bar_cm = contextlib.nullcontext(None) if as_json else click.progressbar(length=1, label="embedding questions")

        def progress(n: int, total: int) -> None:
            if bar is not None:
                bar.length = total
                bar.update(n)

        try:
            with bar_cm as bar:
                result = build(store, name, filters, limit=limit, dedup=dedup, cluster_threshold=cluster_threshold,
                               redactor=redactor, embed=embedder.encode, context=settings.context, progress=progress)
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
    es = result.evalset
    if as_json:
        click.echo(orjson.dumps({"created": result.created, "ref": es.ref, "id": es.id, "items": len(es.items),
                                 "manifest": es.manifest}, option=orjson.OPT_INDENT_2).decode())
        return
    counts = es.manifest.get("counts", {})
    if result.created:
        click.echo(f"built {es.ref} ({es.id}): {len(es.items)} items in {time.monotonic() - t0:.1f} s")
    else:
        click.echo(f"unchanged: {es.ref} ({es.id}) already holds exactly this content")
    click.echo(f"  {counts.get('exchanges', 0)} exchanges read, {counts.get('selected', 0)} selected, "
               f"{counts.get('near_duplicates', 0)} near-duplicates dropped, {counts.get('clusters', 0)} clusters")
    excluded = counts.get("excluded") or {}
    if excluded:
        click.echo("  left out: " + ", ".join(f"{n} ({why})" for why, n in sorted(excluded.items())))
    click.echo("  targets: " + ", ".join(f"{n} {src}" for src, n in sorted((counts.get("targets") or {}).items())))


@evalset.command("list")
@store_options
@json_option
def evalset_list(config: str | None, db: str | None, as_json: bool) -> None:
    """Every eval set version: name@version, id, items, when built."""
    settings = settings_from_flags(config, db=db)
    with opened_store(settings.store_target) as store:
        sets = store.evalsets()
    if as_json:
        click.echo(orjson.dumps([{"ref": e.ref, "id": e.id, "items": e.manifest.get("counts", {}).get("items"),
                                  "created_at": e.created_at} for e in sets], option=orjson.OPT_INDENT_2).decode())
        return
    if not sets:
        click.echo("no eval sets yet: shadoweval evalset build NAME")
    for e in sets:
        built = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e.created_at))
        click.echo(f"{e.ref:24} {e.id}  {e.manifest.get('counts', {}).get('items', 0):6} items  built {built} UTC")


@evalset.command("show")
@click.argument("ref")
@store_options
@json_option
def evalset_show(ref: str, config: str | None, db: str | None, as_json: bool) -> None:
    """A version's manifest (REF: NAME for the latest, NAME@VERSION or its id)."""
    settings = settings_from_flags(config, db=db)
    with opened_store(settings.store_target) as store:
        es = _evalset(store, ref)
    body = {"ref": es.ref, "id": es.id, "created_at": es.created_at, "manifest": es.manifest}
    if as_json:
        body["items"] = [{"key": i.key, "target_source": i.target_source, "route": i.meta.get("route"),
                          "cluster": i.meta.get("cluster")} for i in es.items]
    click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())


@evalset.command("diff")
@click.argument("a")
@click.argument("b")
@store_options
@json_option
def evalset_diff(a: str, b: str, config: str | None, db: str | None, as_json: bool) -> None:
    """What changed between two versions: items added, removed and changed (target, labels...)."""
    from shadoweval.datasets.evalsets.build import diff

    settings = settings_from_flags(config, db=db)
    with opened_store(settings.store_target) as store:
        d = diff(_evalset(store, a), _evalset(store, b))
    if as_json:
        click.echo(orjson.dumps(d, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{d['from']['ref']} ({d['from']['items']} items) -> {d['to']['ref']} ({d['to']['items']} items): "
               f"{len(d['added'])} added, {len(d['removed'])} removed, {len(d['changed'])} changed")
    for sign, rows in (("+", d["added"]), ("-", d["removed"])):
        for row in rows:
            click.echo(f"  {sign} {row['key']}  {row['question']}")
    for row in d["changed"]:
        click.echo(f"  ~ {row['key']}  {', '.join(row['fields'])}  {row['question']}")
    if d["filters"]["from"] != d["filters"]["to"]:
        click.echo(f"filters: {d['filters']['from']} -> {d['filters']['to']}")


@evalset.command("export")
@click.argument("ref")
@click.option("--format", "fmt", required=True, metavar="FORMAT",
              help="inspect, openai-evals, promptfoo, dpo, responses, pairs or replay.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="File to write.")
@store_options
@json_option
def evalset_export(ref: str, fmt: str, out: str, config: str | None, db: str | None, as_json: bool) -> None:
    """Write eval set REF in a format other tools run: Inspect AI samples, OpenAI Evals, promptfoo tests,
    DPO preference pairs, or the labeled record formats (responses, pairs, replay)."""
    from collections import Counter

    from shadoweval.datasets.evalsets.exports import FORMATS, export

    if fmt not in FORMATS:
        raise click.BadParameter(f"{fmt!r}; one of: " + ", ".join(FORMATS), param_hint="--format")
    settings = settings_from_flags(config, db=db)
    with opened_store(settings.store_target) as store:
        es = _evalset(store, ref)
    skipped: Counter[str] = Counter()
    n = export(es, fmt, Path(out), skipped=skipped)
    if as_json:
        click.echo(orjson.dumps({"ref": es.ref, "id": es.id, "format": fmt, "out": out, "records": n,
                                 "skipped": dict(skipped)}, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"wrote {n} {fmt} records from {es.ref} ({es.id}) to {out}"
               + (f"; left out: {', '.join(f'{c} ({why})' for why, c in sorted(skipped.items()))}" if skipped else ""))


@evalset.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@store_options
@click.option("--source", help="Name recorded with what is imported (default: the file's name).")
@click.option("--production", help="The model whose answers count as production's (default: the first one).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the requests of the first N records.")
@json_option
def evalset_import(file: str, config: str | None, db: str | None, source: str | None, production: str | None,
                   limit: int | None, as_json: bool) -> None:
    """Import labeled records (labeled responses, labeled pairs or replay requests, JSONL) into the
    store as exchanges, outputs and human grades: judges, agreement, eval sets and replay then work on
    them. Importing the same file again adds nothing."""
    from shadoweval.datasets.evalsets.imports import import_records

    settings = settings_from_flags(config, db=db)
    with opened_store(settings.store_target, must_exist=False) as store:
        try:
            r = import_records(store, Path(file), source=source, production=production, limit=limit)
        except (ValueError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from None
    body = {"kind": r.kind, "source": r.source, "read": r.read, "exchanges": r.exchanges, "outputs": r.outputs,
            "items": r.items, "grades": r.grades, "skipped": r.skipped,
            "invalid": [{"line": i.line, "reason": i.reason} for i in r.invalid]}
    if as_json:
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{file}: {r.read} {r.kind or 'unknown'} records -> {r.exchanges} exchanges, {r.outputs} outputs, "
               f"{r.items} grading items, {r.grades} grades; {r.skipped} already imported")
    for bad in r.invalid[:10]:
        click.echo(f"  line {bad.line}: {bad.reason}")
    if len(r.invalid) > 10:
        click.echo(f"  ... {len(r.invalid) - 10} more invalid lines")


@click.command()
@click.argument("source", required=False)
@click.option("--candidate", "candidate", required=True, help="A candidate from the configuration's [[candidates]].")
@store_options
@since_option("Without SOURCE: stored exchanges since 7d, 24h, 30m or an ISO date.")
@until_option("Without SOURCE: stored exchanges before this.")
@click.option("--route", "routes", multiple=True, help="Without SOURCE: only these routes (repeatable).")
@click.option("--concurrency", type=click.IntRange(min=1), help="Requests in flight (default: the candidate's).")
@click.option("--max-usd", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Stop sending once the candidate's estimated cost reaches this (0: no cap).")
@json_option
def replay(source: str | None, candidate: str, config: str | None, db: str | None, since: str | None,
           until: str | None, routes: tuple[str, ...], concurrency: int | None, max_usd: float, as_json: bool) -> None:
    """Send stored requests to a candidate: SOURCE is an eval set (NAME, NAME@VERSION or id); without
    it, the stored traffic in --since/--until. Answers are stored as the candidate's outputs of those
    exchanges, so judges, grading and reports use them like mirrored pairs. Resumable: exchanges the
    candidate already answered are skipped."""
    import asyncio

    from shadoweval.datasets.evalsets.replay import jobs_from_evalset, jobs_from_traffic
    from shadoweval.datasets.evalsets.replay import replay as run
    from shadoweval.proxy.candidates import build_caller

    settings = settings_from_flags(config, db=db)
    cand = next((c for c in settings.candidates if c.name == candidate), None)
    if cand is None:
        names = ", ".join(c.name for c in settings.candidates) or "none configured"
        raise click.BadParameter(f"no candidate {candidate!r} in the configuration ({names})", param_hint="--candidate")
    with opened_store(settings.store_target) as store:
        if source:
            jobs, restored = jobs_from_evalset(store, _evalset(store, source))
        else:
            jobs, restored = jobs_from_traffic(store, since=parse_time(since), until=parse_time(until), routes=routes), 0
        caller = build_caller(cand, settings.secret(cand.api_key_env), settings)

        async def go(bar: Any) -> Any:
            try:
                return await run(store, jobs, caller, name=cand.name, concurrency=concurrency or cand.concurrency,
                                 timeout_s=cand.timeout_s, max_usd=max_usd, restored=restored,
                                 on_done=bar.update if bar else None)
            finally:
                await caller.aclose()

        bar_cm = (contextlib.nullcontext(None) if as_json
                  else click.progressbar(length=len(jobs), label=f"replaying to {cand.name}"))
        with bar_cm as bar:
            result = asyncio.run(go(bar))
    body = {"source": source or "traffic", "candidate": cand.name, "planned": result.planned,
            "already_answered": result.already, "sent": result.sent, "statuses": result.statuses,
            "cost_usd": round(result.cost_usd, 6), "stopped": result.stopped, "restored": result.restored}
    if as_json:
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{result.planned} requests: {result.already} answered before, {result.sent} sent "
               f"({', '.join(f'{n} {s}' for s, n in sorted(result.statuses.items())) or 'none'}), "
               f"est. ${result.cost_usd:.4f}" + (f"; {result.restored} exchanges restored" if result.restored else ""))
    if result.stopped:
        click.echo(f"stopped: {result.stopped}; run again with a higher --max-usd to go on")


@click.command("replay-server")
@click.argument("ref")
@store_options
@click.option("--answer", default="target", show_default=True,
              help="What to answer with: target (falls back to production's), production, or a model name.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8070, show_default=True)
def replay_server(ref: str, config: str | None, db: str | None, answer: str, host: str, port: int) -> None:
    """Serve eval set REF as an OpenAI-compatible model that answers with the recorded answers: a
    deterministic stand-in for a model in an app's own tests (base_url http://HOST:PORT/v1)."""
    import uvicorn

    from shadoweval.datasets.evalsets.replay_server import replay_app

    settings = settings_from_flags(config, db=db)
    with opened_store(settings.store_target) as store:
        es = _evalset(store, ref)
    try:
        app = replay_app(es, answer=answer)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--answer") from None
    click.echo(f"{es.ref}: {len(es.items)} recorded answers at http://{host}:{port}/v1")
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
