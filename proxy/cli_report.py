"""`shadoweval report` and `shadoweval gate`: the comparison with production, and the switch decision."""

from __future__ import annotations

import logging
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import click
import orjson

from .cli_common import _settings, _since, opened_store

log = logging.getLogger("shadoweval.report")


def _report(settings: Any, since: str | None, until: str | None, candidates: tuple[str, ...], *,
            clusters: bool = False, record: bool = False) -> dict[str, Any]:
    """The report over the store; with `record`, its alerts are kept in the store as well (the
    proxy's /metrics shows the latest run's)."""
    from shadoweval.datasets.report import build_report

    from .types import ReportRun, new_id

    with opened_store(settings.store.path) as store:
        embed = None
        if clusters:  # the losses' questions are embedded to group them; the model loads in a second
            from shadoweval.judges.embed import get_embedder

            embed = get_embedder(settings.judges.embedder).encode
        body = build_report(store.exchange_bundles(since=_since(since), until=_since(until)), settings.report,
                            candidates=candidates, embed=embed)
        if record:
            alerts = tuple((c["candidate"], kind, m) for c in body["candidates"]
                           for kind, key in (("drift", "alerts"), ("reward_gaming", "reward_gaming"))
                           for m in c.get(key) or [])
            store.submit(ReportRun(new_id(), time.time(), alerts))
            store.flush()
    return body


@click.command()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML configuration file.")
@click.option("--db", help="SQLite file (default: the configuration's store.path).")
@click.option("--candidate", "candidates", multiple=True, help="Only these candidates (repeatable; default: all).")
@click.option("--since", help="Exchanges since 7d, 24h, 30m or an ISO date.")
@click.option("--until", help="Exchanges before this.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Also write the report as one "
              "self-contained HTML file (plots included).")
@click.option("--clusters/--no-clusters", default=True, show_default=True,
              help="Group each candidate's losses by similar questions (loads the embedding model).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def report(config: str | None, db: str | None, candidates: tuple[str, ...], since: str | None, until: str | None,
           html_path: str | None, clusters: bool, as_json: bool) -> None:
    """Compare candidates with production on real queries: win rates with 95% intervals (judges,
    people, both), length-controlled win rate, judge scores, latency, cost and errors, per slice,
    against the noise floor of production's twin."""
    from shadoweval.datasets.report_text import format_report

    settings = _settings(config, db=db)
    body = _report(settings, since, until, candidates, clusters=clusters, record=True)
    alerts = [*body["alerts"], *body["reward_gaming"]]
    for a in alerts:
        log.warning("report alert: %s", a, extra={"alert": a})
    if alerts and settings.report.webhook_url:
        _post_alerts(settings.report.webhook_url, alerts)
    if html_path:
        from shadoweval.datasets.report_html import write_html

        write_html(body, Path(html_path))
    missing = set(candidates) - {c["candidate"] for c in body["candidates"] if c["pairs"]}
    if as_json:
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY).decode())
    else:
        click.echo(format_report(body))
    if html_path and not as_json:
        click.echo(f"\nHTML report: {Path(html_path).resolve()}")
    if missing:
        click.echo(f"no pairs for: {', '.join(sorted(missing))}", err=True)


def _post_alerts(url: str, alerts: list[str]) -> None:
    """Alerts to the configured webhook (Slack-compatible `text`, plus the list); a failure is logged,
    never fatal: the report itself was produced."""
    import httpx

    try:
        httpx.post(url, json={"text": "shadoweval: " + "; ".join(alerts), "alerts": alerts}, timeout=10).raise_for_status()
    except httpx.HTTPError as exc:
        log.error("alert webhook failed", extra={"url": url, "error": str(exc)})


@click.command()
@click.option("--candidate", required=True, help="The candidate to decide on.")
@click.option("--policy", type=click.Path(exists=True, dir_okay=False),
              help="TOML file with [gate] limits (default: the configuration's [gate]).")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML configuration file.")
@click.option("--db", help="SQLite file (default: the configuration's store.path).")
@click.option("--since", help="Exchanges since 7d, 24h, 30m or an ISO date.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def gate(candidate: str, policy: str | None, config: str | None, db: str | None, since: str | None,
         as_json: bool) -> None:
    """Exit 1 unless CANDIDATE is safe to switch to, printing why: a quality interval that does not
    exclude a regression, a slice regressing beyond the threshold, a judge below the reliability
    bar, latency, cost or errors beyond their limits. Exit 0 prints what it checked."""
    from shadoweval.datasets.gate import reasons_to_fail

    from .settings import GateSettings

    settings = _settings(config, db=db)
    rules = settings.gate
    if policy:
        try:
            data = tomllib.loads(Path(policy).read_text(encoding="utf-8"))
            rules = GateSettings.model_validate({**settings.gate.model_dump(), **data.get("gate", data)})
        except (tomllib.TOMLDecodeError, ValueError) as exc:
            raise click.ClickException(f"{policy}: {exc}") from None
    body = _report(settings, since, None, (candidate,), clusters=False)
    (entry,) = body["candidates"]
    reasons = reasons_to_fail(entry, rules)
    if as_json:
        click.echo(orjson.dumps({"candidate": candidate, "pass": not reasons, "reasons": reasons,
                                 "decided_by": entry.get("decided_by"), "call": entry.get("call"),
                                 "policy": rules.model_dump()}, option=orjson.OPT_INDENT_2).decode())
    elif reasons:
        click.echo(f"FAIL: {candidate} is not safe to switch to:")
        for r in reasons:
            click.echo(f"  - {r}")
    else:
        w = entry["win_rate"][entry["decided_by"]]
        click.echo(f"PASS: {candidate} is {entry['call']} than production by {entry['decided_by']} "
                   f"({w['value']:.3f} [{w['low']:.3f}, {w['high']:.3f}] on {w['n']}); no slice, latency, cost or "
                   "error limit crossed")
    sys.exit(1 if reasons else 0)
