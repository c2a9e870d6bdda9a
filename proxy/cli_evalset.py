"""`shadoweval evalset ...` (build, list, show, diff, export, import) and `shadoweval replay-server`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import orjson

from .cli_common import _settings, _since

_DB = click.option("--db", help="SQLite file (default: the configuration's store.path).")
_CONFIG = click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML configuration file.")
_JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


@contextlib.contextmanager
def _store(settings: Any, *, must_exist: bool = True) -> Iterator[Any]:
    from .store import Store

    path = Path(settings.store.path)
    if must_exist and not path.exists():
        raise click.ClickException(f"no store at {path}")
    store = Store(path)
    store.start()  # applies new migrations to a store made by an older version
    try:
        yield store
    finally:
        store.stop()


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
@_CONFIG
@_DB
@click.option("--since", help="Exchanges since: 7d, 24h, 30m or an ISO date.")
@click.option("--until", help="Exchanges before: 7d, 24h, 30m ago or an ISO date.")
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
@_JSON
def evalset_build(name: str, config: str | None, db: str | None, since: str | None, until: str | None,
                  routes: tuple[str, ...], tags: tuple[str, ...], candidates: tuple[str, ...], graded: bool,
                  kept: bool, complaints: bool, disagreement: bool, failed: tuple[str, ...],
                  human_targets_only: bool, limit: int | None, dedup: float, cluster_threshold: float,
                  as_json: bool) -> None:
    """Build a new version of eval set NAME from stored traffic (nothing new if it would be identical).

    Where and when (--since/--until, --route, --tag, --candidate) restrict; the signals (--graded,
    --kept, --complaints, --disagreement, --failed) add up: an exchange with any of them is in.
    Near-duplicate questions are dropped and the set is spread over clusters of similar questions."""
    from shadoweval.datasets.evalsets import Filters, build
    from shadoweval.judges.embed import get_embedder, limit_threads

    from .redact import Redactor

    settings = _settings(config, db=db)
    bad = [t for t in tags if "=" not in t]
    if bad:
        raise click.BadParameter(f"use KEY=VALUE, not {bad[0]!r}", param_hint="--tag")
    filters = Filters(since=_since(since), until=_since(until), routes=routes,
                      tags=dict(t.split("=", 1) for t in tags), candidates=candidates, graded=graded, kept=kept,
                      complaints=complaints, disagreement=disagreement, failed=failed,
                      human_targets_only=human_targets_only)
    r = settings.redaction
    redactor = Redactor(emails=r.emails, card_numbers=r.card_numbers, phone_numbers=r.phone_numbers,
                        patterns=r.patterns)
    limit_threads(settings.judges.threads or 0)
    embedder = get_embedder(settings.judges.embedder)
    t0 = time.monotonic()
    with _store(settings) as store:
        try:
            result = build(store, name, filters, limit=limit, dedup=dedup, cluster_threshold=cluster_threshold,
                           redactor=redactor, embed=embedder.encode, context=settings.context)
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
@_CONFIG
@_DB
@_JSON
def evalset_list(config: str | None, db: str | None, as_json: bool) -> None:
    """Every eval set version: name@version, id, items, when built."""
    settings = _settings(config, db=db)
    with _store(settings) as store:
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
@_CONFIG
@_DB
@_JSON
def evalset_show(ref: str, config: str | None, db: str | None, as_json: bool) -> None:
    """A version's manifest (REF: NAME for the latest, NAME@VERSION or its id)."""
    settings = _settings(config, db=db)
    with _store(settings) as store:
        es = _evalset(store, ref)
    body = {"ref": es.ref, "id": es.id, "created_at": es.created_at, "manifest": es.manifest}
    if as_json:
        body["items"] = [{"key": i.key, "target_source": i.target_source, "route": i.meta.get("route"),
                          "cluster": i.meta.get("cluster")} for i in es.items]
    click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())


@evalset.command("diff")
@click.argument("a")
@click.argument("b")
@_CONFIG
@_DB
@_JSON
def evalset_diff(a: str, b: str, config: str | None, db: str | None, as_json: bool) -> None:
    """What changed between two versions: items added, removed and changed (target, labels...)."""
    from shadoweval.datasets.evalsets import diff

    settings = _settings(config, db=db)
    with _store(settings) as store:
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
