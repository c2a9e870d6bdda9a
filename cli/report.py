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

from .common import (
    json_option,
    opened_store,
    parse_time,
    settings_from_flags,
    since_option,
    store_options,
    until_option,
)

log = logging.getLogger("shadoweval.report")


def report_body(settings: Any, since: str | None, until: str | None, candidates: tuple[str, ...], *,
            clusters: bool = False, record: bool = False, policy: Any = None) -> dict[str, Any]:
    """The report over the store; with `record`, its alerts are kept in the store as well (the
    proxy's /metrics shows the latest run's)."""
    from shadoweval.core.types import ReportRun, new_id
    from shadoweval.datasets.report.build import build_report

    with opened_store(settings.store_target) as store:
        embed = None
        if clusters:  # the losses' questions are embedded to group them; the model loads in a second
            from shadoweval.judges.embed import get_embedder

            embed = get_embedder(settings.judges.embedder).encode
        body = build_report(store.exchange_bundles(since=parse_time(since), until=parse_time(until)), settings.report,
                            candidates=candidates, embed=embed, policy=policy or settings.gate)
        if record:
            alerts = tuple((c["candidate"], kind, m) for c in body["candidates"]
                           for kind, key in (("drift", "alerts"), ("reward_gaming", "reward_gaming"))
                           for m in c.get(key) or [])
            store.submit(ReportRun(new_id(), time.time(), alerts))
            store.flush()
    return body


@click.command()
@store_options
@click.option("--candidate", "candidates", multiple=True, help="Only these candidates (repeatable; default: all).")
@since_option("Exchanges since 7d, 24h, 30m or an ISO date.")
@until_option("Exchanges before this.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Also write the report as one "
              "self-contained HTML file (plots included).")
@click.option("--clusters/--no-clusters", default=True, show_default=True,
              help="Group each candidate's losses by similar questions (loads the embedding model).")
@json_option
def report(config: str | None, db: str | None, candidates: tuple[str, ...], since: str | None, until: str | None,
           html_path: str | None, clusters: bool, as_json: bool) -> None:
    """Compare candidates with production on real queries: win rates with 95% intervals (judges,
    people, both), length-controlled win rate, judge scores, latency, cost and errors, per slice,
    against the noise floor of production's twin."""
    from shadoweval.datasets.report.text import format_report

    settings = settings_from_flags(config, db=db)
    body = report_body(settings, since, until, candidates, clusters=clusters, record=True)
    alerts = [*body["alerts"], *body["reward_gaming"]]
    for a in alerts:
        log.warning("report alert: %s", a, extra={"alert": a})
    if alerts and settings.report.webhook_url:
        _post_alerts(settings.report.webhook_url, alerts)
    if html_path:
        from shadoweval.datasets.report.html import write_html

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


class _BadPolicy(click.ClickException):
    """An unreadable or invalid --policy file: a usage error (exit 2), never read as the candidate failing (1)."""

    exit_code = 2


@click.command()
@click.option("--candidate", required=True, help="The candidate to decide on.")
@click.option("--policy", type=click.Path(exists=True, dir_okay=False),
              help="TOML file with [gate] limits (default: the configuration's [gate]).")
@store_options
@since_option("Exchanges since 7d, 24h, 30m or an ISO date.")
@json_option
def gate(candidate: str, policy: str | None, config: str | None, db: str | None, since: str | None,
         as_json: bool) -> None:
    """Decide whether CANDIDATE is safe to switch to, by the rule of `[gate] mode` ("not-worse", the
    default, or "better"), printing the rule in words and the evidence. Exit 0: pass. Exit 1: fail,
    with every reason. Exit 3: the evidence cannot decide yet (unknown candidate, no pairs, nothing
    graded while the rule needs people), with how many more pairs to grade. Exit 2: an unreadable or
    invalid --policy file."""
    from shadoweval.core.settings import GateSettings, is_postgres_url

    settings = settings_from_flags(config, db=db)
    rules = settings.gate
    if policy:
        try:
            data = tomllib.loads(Path(policy).read_text(encoding="utf-8"))
            rules = GateSettings.model_validate({**settings.gate.model_dump(), **data.get("gate", data)})
        except (tomllib.TOMLDecodeError, ValueError) as exc:
            raise _BadPolicy(f"{policy}: {exc}") from None
    if not is_postgres_url(settings.store_target) and not Path(settings.store.path).exists():
        _undecided(candidate, f"no store at {settings.store.path}: nothing has been captured yet", as_json)
    body = report_body(settings, since, None, (candidate,), clusters=False, policy=rules)
    (entry,) = body["candidates"]
    d = entry["decision"]
    if d["pass"] is None:
        known = body.get("known_candidates")
        extra = f" (candidates with answers stored: {', '.join(known)})" if known is not None and \
            candidate not in known else ""
        _undecided(candidate, d["cannot_decide"] + extra, as_json, d)
    exit_code = 0 if d["pass"] else 1
    if as_json:
        click.echo(orjson.dumps({"candidate": candidate, "pass": d["pass"], "exit": exit_code, "reasons": d["reasons"],
                                 "decided_by": entry.get("decided_by"), "call": entry.get("call"), "decision": d,
                                 "policy": rules.model_dump()}, option=orjson.OPT_INDENT_2).decode())
        sys.exit(exit_code)
    e = d["estimate"]
    click.echo(f"rule: {d['rule']}")
    click.echo(f"evidence: {e['described']}: win rate {e['value']:.3f} [{e['low']:.3f}, {e['high']:.3f}] on {e['n']}")
    if d["pass"]:
        click.echo(f"PASS: {candidate} may replace production under the {d['mode']} rule")
    else:
        click.echo(f"FAIL: {candidate} is not safe to switch to:")
        for r in d["reasons"]:
            click.echo(f"  - {r}")
        if d["plan"] and d["plan"]["text"] and any(r.startswith(("quality:", "judges:")) for r in d["reasons"]):
            click.echo(f"  more evidence: {d['plan']['text']}")
    sys.exit(exit_code)


def _undecided(candidate: str, why: str, as_json: bool, decision: dict[str, Any] | None = None) -> None:
    plan = (decision or {}).get("plan") or {}
    if as_json:
        click.echo(orjson.dumps({"candidate": candidate, "pass": None, "exit": 3, "reasons": [],
                                 "cannot_decide": why, "decision": decision}, option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(f"CANNOT DECIDE: {candidate}: {why}")
        if decision:
            click.echo(f"rule: {decision['rule']}")
        if plan.get("text"):
            click.echo(f"next: {plan['text']}")
    sys.exit(3)
