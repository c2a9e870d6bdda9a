"""The `shadoweval` command: serve the proxy, show what it captured, run the demo."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from shadoweval.core.settings import is_postgres_url
from shadoweval.proxy import __version__

from .common import (
    config_option,
    db_option,
    json_option,
    must_exist_here,
    parse_time,
    settings_from_flags,
    since_option,
    store_options,
)
from .evalset import evalset, replay, replay_server
from .grade import agreement, grade
from .report import gate, report
from .store import store

if TYPE_CHECKING:
    from shadoweval.judges.calibrate import CalibrationReport
    from shadoweval.judges.metrics import Calibration


class _Group(click.Group):
    """Errors shadoweval raises on purpose (ShadowevalError: the store unreachable, a bad setting...)
    carry a message written for the reader: shown as one line, exit 1, not as a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from shadoweval.core.errors import ShadowevalError

        try:
            return super().invoke(ctx)
        except ShadowevalError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="shadoweval")
def main() -> None:
    """Shadow-mode evaluation: mirror real LLM traffic to candidate models and compare."""


# Commands that live beside this module, registered here with the group, so that every way of
# running it (`shadoweval`, `python -m shadoweval.cli`, `python -m shadoweval.cli.main`) has all.
for _command in (grade, agreement, evalset, replay, replay_server, report, gate, store):
    main.add_command(_command)


@main.command()
@config_option
@click.option("--host", help="Interface to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8080).")
@db_option("Where captured exchanges go: a SQLite file or a postgresql:// URL (default: the configuration's store).")
def serve(config: str | None, host: str | None, port: int | None, db: str | None) -> None:
    """Run the proxy: point your app's base_url at http://HOST:PORT/v1."""
    import uvicorn

    from shadoweval.core.logs import configure
    from shadoweval.proxy.app import create_app
    from shadoweval.proxy.server import limited_protocol

    settings = settings_from_flags(config, host, port, db)
    configure(settings.server.log_level, settings.server.log_format)
    app = create_app(settings, ui=_grading_ui(settings) if settings.grading.enabled else None)

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after a graceful shutdown, so the process would die of
        the signal; after a completed drain, exit 0 instead, as services are expected to."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                getattr(self, "_captured_signals", []).clear()

    server = Server(uvicorn.Config(
        app, host=settings.server.host, port=settings.server.port, loop="auto",
        http=limited_protocol(settings.server),  # httptools with header/URL limits and timeouts (docs/limits.md)
        access_log=False, log_level="warning", server_header=False, date_header=False,
        log_config=None,  # uvicorn's loggers use ours (logs.configure): JSON lines when log_format = "json"
        timeout_graceful_shutdown=int(settings.mirror.drain_timeout_s) + 5, lifespan="on",
    ))
    judging = _start_judging(settings, config) if settings.judges.background else None
    try:
        server.run()
    finally:
        if judging is not None:
            _stop_judging(judging)
    if not server.started:
        sys.exit(1)


def _grading_ui(settings: Any) -> Any:
    """The grading page's app, built around the proxy's store once the proxy has made it."""
    from shadoweval.datasets.grading.web import grading_app

    return lambda store: grading_app(settings, store)


def _start_judging(settings: Any, config: str | None) -> Any:
    """The background judges: `shadoweval judge run --follow` as a child process, so that embedding
    models and judge calls never compete with the proxy's event loop (or its GIL)."""
    import subprocess

    cmd = [sys.executable, "-m", "shadoweval.cli", "judge", "run", "--follow", "--parent-pid", str(os.getpid())]
    env = dict(os.environ)
    if is_postgres_url(settings.store_target):
        # the URL may carry a password: in the child's environment, not on its command line
        env["SHADOWEVAL_STORE_URL"] = settings.store_target
        env.pop("SHADOWEVAL_STORE_URL_ENV", None)
    cmd += ["--db", settings.store.path]  # the SQLite file, or with PostgreSQL the local lock's folder
    if config:
        cmd += ["--config", config]
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent())


def _die_with_parent() -> Any:
    """On Linux, a function for the child (run between fork and exec) that asks the kernel to send
    it SIGTERM when this process dies, even by SIGKILL. The child also watches `--parent-pid`, which
    covers other systems and a parent that died before the request took effect."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    try:  # loaded here, in the parent: the child only makes the one call
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, int(signal.SIGTERM))


def _stop_judging(child: Any) -> None:
    import subprocess

    child.terminate()  # the pass under way finishes, at most 500 outputs per judge
    try:
        child.wait(30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


@main.command()
@store_options
@json_option
def stats(config: str | None, db: str | None, as_json: bool) -> None:
    """Exchanges captured, and per model: answers, errors, timeouts, latency, cost."""
    from shadoweval.core.pg import safe_url
    from shadoweval.core.store import Store

    settings = settings_from_flags(config, db=db)
    must_exist_here(settings.store_target)
    store = Store(settings.store_target)
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
    click.echo(f"{n} exchanges in {safe_url(settings.store_target)}")
    click.echo(f"{'model':24} {'role':10} {'answers':>7} {'ok':>5} {'errors':>6} {'timeouts':>8} {'cancelled':>9} "
               f"{'partial':>7} {'mean ms':>8} {'p95 ms':>8} {'cost $':>9}")
    for r in rows:
        mean = f"{r.mean_latency_ms:8.0f}" if r.mean_latency_ms is not None else f"{'-':>8}"
        p95 = f"{r.p95_latency_ms:8.0f}" if r.p95_latency_ms is not None else f"{'-':>8}"
        click.echo(f"{r.name:24} {r.role:10} {r.outputs:7} {r.ok:5} {r.errors:6} {r.timeouts:8} {r.cancelled:9} "
                   f"{r.partial:7} {mean} {p95} {r.cost_usd:9.4f}")
    click.echo("mirror drops (not sent to a candidate): " + (", ".join(
        f"{cand} {int(v)} ({reason})" for cand, reasons in sorted(dropped.items()) for reason, v in sorted(reasons.items())
    ) or "none"))
    click.echo("store losses (records not kept): " + (
        f"{int(sum(lost.values()))} (" + ", ".join(f"{k} {int(v)}" for k, v in sorted(lost.items())) + ")"
        if lost else "none"))


@main.group()
def judge() -> None:
    """Judge stored outputs."""


@judge.command("list")
def judge_list() -> None:
    """The judges that can be run."""
    from shadoweval import judges

    names = judges.registered()
    width = max(len(n) for n in names)
    for name in names:
        j = judges.create(name)
        click.echo(f"{name:{width}} version {j.version}  {(type(j).__doc__ or '').strip().splitlines()[0]}")


@judge.command("run")
@store_options
@click.option("--judge", "names", multiple=True,
              help="Judge to run (repeatable; default: the configured offline judges, then the LLM tier).")
@since_option("Only outputs since: 7d, 24h, 30m or an ISO date.")
@click.option("--candidate", "candidates", multiple=True, help="Only these models' outputs (repeatable; "
              "`production` and `production-twin` are names too).")
@click.option("--limit", type=int, help="At most this many outputs per judge.")
@click.option("--concurrency", type=int, help="Outputs judged at once (default: [judges] concurrency).")
@click.option("--follow", is_flag=True, help="Keep running: judge new outputs every --interval seconds.")
@click.option("--interval", type=float, help="Seconds between passes with --follow (default: [judges] interval_s).")
@click.option("--parent-pid", type=int, hidden=True, help="With --follow: exit once this process is gone (serve).")
@json_option
def judge_run(config: str | None, db: str | None, names: tuple[str, ...], since: str | None,
              candidates: tuple[str, ...], limit: int | None, concurrency: int | None, follow: bool,
              interval: float | None, parent_pid: int | None, as_json: bool) -> None:
    """Judge the outputs no judge of this name, version and arguments has judged yet (resumable).

    Offline judges see every output; the LLM tier (when [judges] llm_model is set) sees the share
    [judges] llm_share selects."""
    import asyncio

    from shadoweval import judges
    from shadoweval.core.store import Store
    from shadoweval.judges.config import build
    from shadoweval.judges.runner import RunResult, run_cascade

    settings = settings_from_flags(config, db=db)
    path = Path(settings.store.path)  # with PostgreSQL: where this machine's follower lock lives
    must_exist_here(settings.store_target, not follow)
    if follow:
        from shadoweval.core.logs import configure

        configure(settings.server.log_level, settings.server.log_format)
        _one_follower(path, parent_pid)
    unknown = [n for n in names if n not in judges.registered()]
    if unknown:
        raise click.ClickException(f"no judge named {unknown[0]!r}; known: {', '.join(judges.registered())}")
    store = Store(settings.store_target, journal=path)
    store.start()  # applies new migrations (verdicts) to a store made by an older version
    try:
        configured = build(settings, store=store, only=names)
    except (KeyError, TypeError, ValueError) as exc:
        store.stop()
        raise click.ClickException(str(exc)) from None
    for why in configured.skipped:
        click.echo(f"skipped {why}", err=True)
    width = concurrency or settings.judges.concurrency
    from shadoweval.judges.embed import limit_threads

    limit_threads(settings.judges.threads)

    from shadoweval.core.types import new_id

    worker = new_id()  # this process's claims on outputs: judges of other replicas leave them alone

    async def one_pass(bar: Any = None) -> list[RunResult]:
        def planned(phase: str, n: int) -> None:
            if bar is not None:
                bar.length = (bar.length or 0) + n
        return await run_cascade(store, configured.offline, configured.llm, policy=configured.policy,
                                 context=settings.context,
                                 since=parse_time(since), names=candidates, limit=limit, concurrency=width,
                                 llm_concurrency=settings.judges.llm_concurrency,
                                 progress=bar.update if bar is not None else None, planned=planned,
                                 worker=worker)

    try:
        if follow:
            os.nice(10)  # judging in the background must never take CPU from a proxy on the same machine
            limit = limit or 500  # per judge and pass, so that a stop signal is heeded soon
            asyncio.run(_follow(one_pass, interval or settings.judges.interval_s, parent_pid))
            return
        with click.progressbar(length=0, label="judging", file=sys.stderr,
                               hidden=as_json or not sys.stderr.isatty()) as bar:
            results = asyncio.run(one_pass(bar))
    finally:
        store.stop()
    summary = store.verdict_summary()
    if as_json:
        click.echo(orjson.dumps({
            "run": [{"judge": r.judge_key, "judged": r.judged, "errors": r.errors} for r in results],
            "skipped": configured.skipped,
            "verdicts": [{"judge": k, "model": m, "verdicts": n, "errors": e, "mean_score": s}
                         for k, m, n, e, s in summary],
        }, option=orjson.OPT_INDENT_2).decode())
        return
    for r in results:
        click.echo(f"{r.judge_key}: judged {r.judged} outputs ({r.errors} could not be judged)")
    click.echo(f"{'judge':40} {'model':20} {'verdicts':>8} {'errors':>6} {'mean score':>10}")
    for k, m, n, e, s in summary:
        click.echo(f"{k:40} {m:20} {n:8} {e:6} {'-' if s is None else f'{s:.3f}':>10}")


def _one_follower(db: Path, parent_pid: int | None) -> None:
    """Hold the database's judge lock for the rest of this process, waiting while another follower
    holds it (a restarted proxy's new follower takes over once the old one has finished its pass).
    Exits while waiting if `parent_pid` is gone."""
    import fcntl
    import logging

    log = logging.getLogger("shadoweval.judges")
    db.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(db.with_name(db.name + ".judge-lock"), os.O_RDWR | os.O_CREAT, 0o600)
    waiting = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return  # held until this process exits: the descriptor is never closed
        except OSError:
            pass
        if not waiting:
            log.info("another judge follower runs on this database; waiting for it to stop", extra={"db": str(db)})
            waiting = True
        if _orphaned(parent_pid):
            log.info("the proxy that started this judge follower is gone; exiting")
            sys.exit(0)
        time.sleep(0.5)


def _orphaned(parent_pid: int | None) -> bool:
    return parent_pid is not None and os.getppid() != parent_pid


async def _follow(one_pass: Any, interval: float, parent_pid: int | None = None) -> None:
    """Judge passes every `interval` seconds until SIGTERM or SIGINT, or until `parent_pid` is gone;
    the pass under way finishes first."""
    import asyncio
    import logging
    import signal

    log = logging.getLogger("shadoweval.judges")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        started = time.monotonic()
        try:
            results = await one_pass()
        except Exception:  # a pass that fails (store locked, model error) is retried next time
            log.exception("judging pass failed")
        else:
            judged = {r.judge_key: r.judged for r in results if r.judged}
            if judged:
                log.info("judged", extra={"judged": judged, "errors": sum(r.errors for r in results),
                                          "seconds": round(time.monotonic() - started, 2)})
        deadline = time.monotonic() + interval
        while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if _orphaned(parent_pid):
                log.info("the proxy that started this judge follower is gone; exiting")
                return
            try:
                await asyncio.wait_for(stop.wait(), min(left, 1.0))
            except TimeoutError:
                pass


class _BadInput(click.ClickException):
    exit_code = 2


def _fmt(x: float | None, width: int = 6) -> str:
    return f"{'-' if x is None else f'{x:.3f}':>{width}}"


@main.command()
@click.option("--labels", "labels_file", required=True, metavar="FILE",
              help="Labeled records (JSONL): responses or pairs.")
@click.option("--judge", "judge_name", required=True, metavar="NAME",
              help="Judge to calibrate (see `shadoweval judge list`).")
@click.option("--label", "label", required=True, metavar="KEY", help="Human label to compare with: `grounded` "
              "means `labels.grounded`; paths starting with labels. or meta. are read as they are.")
@click.option("--by", "by", metavar="FIELD", help="Break results down by this field, e.g. meta.src_dataset.")
@click.option("--threshold", type=float, metavar="X", help="Score at or above which the judge says positive "
              "(default: the judge's own threshold, else 0.5).")
@click.option("--positive-min", type=float, metavar="X",
              help="For numeric labels: the lowest positive value (e.g. 3).")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Only the first N records.")
@click.option("--arg", "judge_args", multiple=True, metavar="KEY=VALUE",
              help="Argument for the judge (repeatable; the value is read as JSON when it parses).")
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True, metavar="N",
              help="Records judged at the same time.")
@json_option
def calibrate(labels_file: str, judge_name: str, label: str, by: str | None, threshold: float | None,
              positive_min: float | None, limit: int | None, judge_args: tuple[str, ...], concurrency: int,
              as_json: bool) -> None:
    """Run a judge on human-labeled records and report how well it agrees with the labels.

    Binary labels (yes/no, or numbers with --positive-min) give accuracy, precision, recall,
    specificity, F1, macro-F1, balanced accuracy, ROC AUC and Cohen's kappa at the threshold, a
    threshold sweep and the best thresholds, and, for scores in 0..1, how far they hold as
    probabilities (expected calibration error, Brier score, reliability table) and a rescaling to
    the labels (Platt scaling, measured on records it was not fitted on); pair files
    (labels.preference a/b/tie) and other string labels give accuracy, macro-F1, kappa and a
    confusion matrix.
    """
    import asyncio

    from shadoweval import judges
    from shadoweval.judges.calibrate import CalibrationError, load_records, parse_judge_args, prepare
    from shadoweval.judges.calibrate import calibrate as run_calibration

    try:
        records = load_records(labels_file, limit=limit)
        args = parse_judge_args(judge_args)
        _, items, _ = prepare(records, label=label, by=by, positive_min=positive_min)
    except CalibrationError as exc:
        raise _BadInput(str(exc)) from None
    # the LLM tier's key, read from the variable `--arg api_key_env=NAME` names (as `[judges] llm_api_key_env`
    # is read for `judge run`); passed apart, so that no message below can show it
    secret: dict[str, Any] = {}
    env = args.get("api_key_env")
    if isinstance(env, str) and env and "api_key" not in args:
        if not os.environ.get(env):
            raise _BadInput(f"--arg api_key_env={env}: the environment variable {env} is not set")
        secret["api_key"] = os.environ[env]
    try:
        j = judges.create(judge_name, **args, **secret)
    except KeyError as exc:
        raise _BadInput(str(exc.args[0])) from None
    except (TypeError, ValueError) as exc:
        raise _BadInput(f"judge {judge_name!r} does not accept {args}: {exc}") from None
    with click.progressbar(length=len(items), label="judging", file=sys.stderr,
                           hidden=as_json or not sys.stderr.isatty()) as bar:
        report = asyncio.run(run_calibration(records, j, label=label, by=by, threshold=threshold,
                                             positive_min=positive_min, concurrency=concurrency,
                                             progress=bar.update))
    if as_json:
        click.echo(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
    else:
        _print_calibration(report)
    if report.errors and not report.overall.n:
        raise click.ClickException(f"no verdict could be compared with a label; first: {report.error_examples[0]}")


def _print_calibration(report: CalibrationReport) -> None:
    from shadoweval.judges.metrics import BinaryMetrics, MulticlassMetrics

    click.echo(f"{report.judge} against {report.label}"
               + (f" >= {report.positive_min:g}" if report.positive_min is not None else "")
               + f": {report.records} records, {report.unlabeled} without the label, {report.errors} not judged"
               + (f" (first: {report.error_examples[0]})" if report.error_examples else ""))
    rows = [("all", report.overall), *report.by.items()]
    width = max(len(report.by_field or ""), *(len(name) for name, _ in rows))
    if report.kind == "binary":
        calibrations = {"all": report.calibration, **report.by_calibration}
        click.echo(f"{report.by_field or '':{width}} {'n':>6} {'base':>6} {'acc':>6} {'prec':>6} {'recall':>6} "
                   f"{'spec':>6} {'F1':>6} {'mF1':>6} {'balacc':>6} {'AUC':>6} {'kappa':>6} {'ECE':>6}")
        for name, m in rows:
            assert isinstance(m, BinaryMetrics)  # a binary report's metrics all are
            c = calibrations.get(name)
            click.echo(f"{name:{width}} {m.n:6} " + " ".join(_fmt(x) for x in (
                m.base_rate, m.accuracy, m.precision, m.recall, m.specificity, m.f1, m.macro_f1,
                m.balanced_accuracy, m.roc_auc, m.kappa, c.ece if c else None)))
        assert report.threshold is not None and report.threshold_source is not None  # both set when binary
        source = {"flag": "--threshold", "judge": "the judge's own", "default": "default"}[report.threshold_source]
        click.echo(f"threshold {report.threshold:g} ({source}); a score at or above it counts as positive")
        best = report.best_threshold
        for key, title in (("macro_f1", "macro-F1"), ("balanced_accuracy", "balanced accuracy")):
            if key in best:
                b = best[key]
                click.echo(f"best threshold by {title}: {b.threshold:g} (macro-F1 {b.macro_f1:.3f}, "
                           f"balanced accuracy {b.balanced_accuracy:.3f}, kappa {b.kappa:.3f})")
        if "balanced_accuracy" in best and report.judge.split("@")[0] in ("grounded", "citations"):
            name = report.judge.split("@")[0]
            click.echo(f"to judge your traffic at the best balanced-accuracy threshold without retraining, put this in "
                       f"your configuration's [judges] section: thresholds = {{ {name} = "
                       f"{best['balanced_accuracy'].threshold:.4g} }}")
        _print_reliability(report.calibration, scored=report.overall.n)
        _print_rescaling(report)
        sweep = report.sweep
        if sweep:
            keep = {round(k * (len(sweep) - 1) / 9) for k in range(10)} if len(sweep) > 10 else set(range(len(sweep)))
            shown = {sweep[i].threshold: sweep[i] for i in keep} | {b.threshold: b for b in best.values()}
            click.echo(f"sweep ({len(shown)} of {len(sweep)} thresholds; * best):")
            click.echo(f"{'threshold':>10} {'pred+':>6} {'acc':>6} {'prec':>6} {'recall':>6} {'spec':>6} "
                       f"{'F1':>6} {'mF1':>6} {'balacc':>6} {'kappa':>6}")
            marked = {b.threshold for b in best.values()}
            for t, r in sorted(shown.items()):
                click.echo(f"{t:>9.4g}{'*' if t in marked else ' '} {r.predicted:6} " + " ".join(_fmt(x) for x in (
                    r.accuracy, r.precision, r.recall, r.specificity, r.f1, r.macro_f1, r.balanced_accuracy,
                    r.kappa)))
        return
    click.echo(f"{report.by_field or '':{width}} {'n':>6} {'acc':>6} {'mF1':>6} {'kappa':>6}")
    for name, m in rows:
        click.echo(f"{name:{width}} {m.n:6} {_fmt(m.accuracy)} {_fmt(m.macro_f1)} {_fmt(m.kappa)}")
    overall = report.overall
    assert isinstance(overall, MulticlassMetrics)  # every report that is not binary is multiclass
    classes = overall.classes
    if classes:
        cw = max(6, *(len(c) for c in classes))
        click.echo("confusion (rows: human label, columns: judge's):")
        click.echo(f"{'':{cw}} " + " ".join(f"{c:>{cw}}" for c in classes))
        for h in classes:
            click.echo(f"{h:{cw}} " + " ".join(f"{overall.confusion[h][p]:>{cw}}" for p in classes))


def _print_rescaling(report: CalibrationReport) -> None:
    """The scores rescaled to these labels (Platt scaling), measured on records each fold's scale did not see."""
    r = report.rescaling
    if r is None:
        return
    click.echo(f"rescaled to these labels (Platt scaling; each record rescaled by a scale fitted on the other "
               f"{r.folds - 1} of {r.folds} folds): ECE {r.before.ece:.3f} -> {r.after.ece:.3f}, Brier "
               f"{r.before.brier:.3f} -> {r.after.brier:.3f}, mean score {r.after.mean_score:.3f} against "
               f"{r.after.base_rate:.3f}")
    name = report.judge.split("@")[0]
    if r.after.ece >= r.before.ece:
        click.echo("rescaling does not bring the scores closer to these labels on records it was not fitted on: "
                   "keep the scores as they are")
    elif name in ("grounded", "citations"):
        click.echo(f"to read the {name} judge's scores as probabilities of labels like these (the same answers pass "
                   f"and fail: the threshold moves with the scale), put this in your configuration's [judges] section: "
                   f"calibration = {{ {name} = {r.scale.as_list()} }}")


def _print_reliability(c: Calibration | None, *, scored: int) -> None:
    """The scores read as probabilities: which way they lean, and the reliability table."""
    if c is None:
        click.echo("calibration: not measured (" + ("some score lies outside 0..1, so the scores are no probabilities)"
                                                    if scored else "no score to measure)"))
        return
    gap = c.mean_score - c.base_rate
    lean = ("the scores run low: they understate how often people said yes" if gap < -0.05 else
            "the scores run high: they overstate how often people said yes" if gap > 0.05 else
            "on average the scores match how often people said yes")
    click.echo(f"calibration, scores read as probabilities: ECE {c.ece:.3f}, Brier {c.brier:.3f}; mean score "
               f"{c.mean_score:.3f} against a positive rate of {c.base_rate:.3f}: {lean}")
    click.echo(f"{'score':>11} {'n':>6} {'mean':>6} {'people':>6}")
    for b in c.bins:
        click.echo(f"{b.low:>4.2f}-{b.high:<4.2f}{'':2} {b.n:6} {b.mean_score:6.3f} {b.positive_rate:6.3f}")


@main.command()
@db_option("SQLite file the demo writes anew, or a PostgreSQL URL (an empty database).",
           default="shadoweval-demo.db", show_default=True)
@click.option("--questions", type=int, default=0, help="Send only the first N questions (0: all).")
@click.option("--judge/--no-judge", default=True, show_default=True, help="Run the offline judges at the end.")
@click.option("--grade", is_flag=True, help="Then queue pairs and serve the grading page (Ctrl-C stops it).")
@click.option("--grade-port", type=int, default=8090, show_default=True, help="Port of the grading page.")
def demo(db: str, questions: int, judge: bool, grade: bool, grade_port: int) -> None:
    """Run the built-in demo: a RAG support app, production and two candidates, all local."""
    from .demo.run import run_demo

    code = run_demo(db, limit=questions or None, judge=judge)
    if code == 0 and grade:
        from .grade import serve_demo_grading

        serve_demo_grading(db, grade_port)
    sys.exit(code)


if __name__ == "__main__":
    main()

