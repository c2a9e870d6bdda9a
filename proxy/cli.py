"""The `shadoweval` command: serve the proxy, show what it captured, run the demo."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import orjson

from . import __version__
from .settings import SettingsError, load_settings


def _settings(config: str | None, host: str | None = None, port: int | None = None, db: str | None = None):  # type: ignore[no-untyped-def]
    overrides = {"server": {k: v for k, v in {"host": host, "port": port}.items() if v is not None},
                 "store": {"path": db} if db else {}}
    try:
        return load_settings(config, overrides=overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(__version__, prog_name="shadoweval")
def main() -> None:
    """Shadow-mode evaluation: mirror real LLM traffic to candidate models and compare."""


@main.command()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML configuration file.")
@click.option("--host", help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8080).")
@click.option("--db", help="SQLite file for captured exchanges.")
def serve(config: str | None, host: str | None, port: int | None, db: str | None) -> None:
    """Run the proxy: point your app's base_url at http://HOST:PORT/v1."""
    import uvicorn

    from .app import create_app
    from .logs import configure

    settings = _settings(config, host, port, db)
    configure(settings.server.log_level, settings.server.log_format)
    app = create_app(settings)

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after a graceful shutdown, so the process would die of
        the signal; after a completed drain, exit 0 instead, as services are expected to."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                getattr(self, "_captured_signals", []).clear()

    server = Server(uvicorn.Config(
        app, host=settings.server.host, port=settings.server.port, loop="auto", http="auto",
        access_log=False, log_level="warning", server_header=False, date_header=False,
        timeout_graceful_shutdown=int(settings.mirror.drain_timeout_s) + 5, lifespan="on",
    ))
    server.run()
    if not server.started:
        sys.exit(1)


@main.command()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML configuration file.")
@click.option("--db", help="SQLite file (default: the configuration's store.path).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def stats(config: str | None, db: str | None, as_json: bool) -> None:
    """Exchanges captured, and per model: answers, errors, timeouts, latency, cost."""
    from .store import Store

    settings = _settings(config, db=db)
    path = Path(settings.store.path)
    if not path.exists():
        raise click.ClickException(f"no store at {path}")
    store = Store(path)
    n, rows = store.stats()
    dropped: dict[str, dict[str, float]] = {}  # candidate -> reason -> count
    lost: dict[str, float] = {}  # reason -> count
    for (metric, labels), value in store.counters().items():
        label = dict(labels)
        if value and metric == "shadoweval_mirror_dropped_total":
            dropped.setdefault(label.get("candidate", ""), {})[label.get("reason", "")] = value
        elif value and metric == "shadoweval_store_lost_total":
            lost[label.get("reason", "")] = value
    if as_json:
        click.echo(orjson.dumps({"exchanges": n, "models": rows, "mirror_dropped": dropped, "store_lost": lost},
                                option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{n} exchanges in {path}")
    click.echo(f"{'model':24} {'role':10} {'answers':>7} {'ok':>5} {'errors':>6} {'timeouts':>8} {'cancelled':>9} "
               f"{'mean ms':>8} {'p95 ms':>8} {'cost $':>9}")
    for r in rows:
        mean = f"{r.mean_latency_ms:8.0f}" if r.mean_latency_ms is not None else f"{'-':>8}"
        p95 = f"{r.p95_latency_ms:8.0f}" if r.p95_latency_ms is not None else f"{'-':>8}"
        click.echo(f"{r.name:24} {r.role:10} {r.outputs:7} {r.ok:5} {r.errors:6} {r.timeouts:8} {r.cancelled:9} "
                   f"{mean} {p95} {r.cost_usd:9.4f}")
    click.echo("mirror drops (not sent to a candidate): " + (", ".join(
        f"{cand} {int(v)} ({reason})" for cand, reasons in sorted(dropped.items()) for reason, v in sorted(reasons.items())
    ) or "none"))
    click.echo("store losses (records not kept): " + (", ".join(f"{int(v)} ({k})" for k, v in sorted(lost.items())) or "none"))


def _since(value: str | None) -> float | None:
    """`7d`, `24h`, `30m` ago, or an ISO date/time (UTC when no zone is given)."""
    import re
    import time
    from datetime import UTC, datetime

    if not value:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([dhm])", value.strip())
    if m:
        return time.time() - float(m.group(1)) * {"d": 86400, "h": 3600, "m": 60}[m.group(2)]
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter("use 7d, 24h, 30m or an ISO date such as 2026-11-01", param_hint="--since") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


@main.group()
def judge() -> None:
    """Judge stored outputs."""


@judge.command("list")
def judge_list() -> None:
    """The judges that can be run."""
    from shadoweval import judges

    for name in judges.registered():
        j = judges.create(name)
        click.echo(f"{name:16} version {j.version}  {(type(j).__doc__ or '').strip().splitlines()[0]}")


@judge.command("run")
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML configuration file.")
@click.option("--db", help="SQLite file (default: the configuration's store.path).")
@click.option("--judge", "names", multiple=True, help="Judge to run (repeatable; default: all).")
@click.option("--since", help="Only outputs since: 7d, 24h, 30m or an ISO date.")
@click.option("--candidate", "candidates", multiple=True, help="Only these models' outputs (repeatable; "
              "`production` and `production-twin` are names too).")
@click.option("--limit", type=int, help="At most this many outputs per judge.")
@click.option("--concurrency", type=int, default=8, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def judge_run(config: str | None, db: str | None, names: tuple[str, ...], since: str | None,
              candidates: tuple[str, ...], limit: int | None, concurrency: int, as_json: bool) -> None:
    """Judge the outputs no judge of this name, version and arguments has judged yet (resumable)."""
    import asyncio

    from shadoweval import judges
    from shadoweval.judges.runner import plan, run_plan

    from .store import Store

    settings = _settings(config, db=db)
    path = Path(settings.store.path)
    if not path.exists():
        raise click.ClickException(f"no store at {path}")
    try:
        chosen = [judges.create(n) for n in (names or judges.registered())]
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from None
    store = Store(path)
    store.start()  # applies new migrations (verdicts) to a store made by an older version
    try:
        work = plan(store, chosen, since=_since(since), names=candidates, limit=limit)
        total = sum(len(todo) for _, todo in work)
        with click.progressbar(length=total, label="judging", file=sys.stderr,
                               hidden=as_json or not sys.stderr.isatty()) as bar:
            results = asyncio.run(run_plan(store, work, concurrency=concurrency, progress=bar.update))
    finally:
        store.stop()
    summary = store.verdict_summary()
    if as_json:
        click.echo(orjson.dumps({
            "run": [{"judge": r.judge_key, "judged": r.judged, "errors": r.errors} for r in results],
            "verdicts": [{"judge": k, "model": m, "verdicts": n, "errors": e, "mean_score": s}
                         for k, m, n, e, s in summary],
        }, option=orjson.OPT_INDENT_2).decode())
        return
    for r in results:
        click.echo(f"{r.judge_key}: judged {r.judged} outputs ({r.errors} could not be judged)")
    click.echo(f"{'judge':40} {'model':20} {'verdicts':>8} {'errors':>6} {'mean score':>10}")
    for k, m, n, e, s in summary:
        click.echo(f"{k:40} {m:20} {n:8} {e:6} {'-' if s is None else f'{s:.3f}':>10}")


@main.command()
@click.option("--db", default="shadoweval-demo.db", show_default=True, help="SQLite file the demo writes.")
@click.option("--questions", type=int, default=0, help="Send only the first N questions (0: all).")
def demo(db: str, questions: int) -> None:
    """Run the built-in demo: a RAG support app, production and two candidates, all local."""
    from .demo.run import run_demo

    sys.exit(run_demo(Path(db), limit=questions or None))


if __name__ == "__main__":
    main()
