"""What every `shadoweval` command shares: the options most commands take (declared once here),
settings from the flags, the store opened and closed, `--since`/`--until` parsing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from shadoweval.core.settings import Settings, SettingsError, is_postgres_url, load_settings

F = TypeVar("F", bound=Callable[..., Any])

STORE_PATH_HELP = "SQLite file or postgresql:// URL (default: the configuration's store)."
WHEN_HELP = "7d, 24h, 30m or an ISO date"


def store_setting(target: str) -> dict[str, str]:
    """The `[store]` setting that names TARGET: `url` for a PostgreSQL URL, else `path` (a SQLite file)."""
    return {"url": target} if is_postgres_url(target) else {"path": target}


def settings_from_flags(config: str | None, host: str | None = None, port: int | None = None,
                        db: str | None = None) -> Settings:
    """The settings a command runs with: `--config`'s file (or the defaults), the environment, then
    the flags given; a settings error becomes a click error (exit 1, one line)."""
    overrides = {"server": {k: v for k, v in {"host": host, "port": port}.items() if v is not None},
                 "store": store_setting(db) if db else {}}
    try:
        return load_settings(config, overrides=overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def parse_time(value: str | None) -> float | None:
    """`7d`, `24h`, `30m` ago, or an ISO date/time (UTC when no zone is given), as a Unix time; None
    for no value. ValueError for anything else (`--since`/`--until` are checked by `TimeType` when
    the command line is parsed, so a command's body never sees one)."""
    import re
    import time
    from datetime import UTC, datetime

    if not value:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([dhm])", value.strip())
    if m:
        return time.time() - float(m.group(1)) * {"d": 86400, "h": 3600, "m": 60}[m.group(2)]
    dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


class TimeType(click.ParamType):
    """A point in time as `parse_time` reads it. The value stays the text the user typed, so that a
    relative one (`7d`) is measured from when it is used (`judge run --follow` moves its window on
    each pass); an invalid one is an error that names the flag given (`--since` or `--until`)."""

    name = "when"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            parse_time(value)
        except ValueError:
            self.fail(f"{value!r}: use 7d, 24h, 30m or an ISO date such as 2026-11-01", param, ctx)
        return value


WHEN = TimeType()


def config_option(f: F) -> F:
    """`--config FILE`: the TOML configuration file."""
    return click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML configuration file.")(f)


def db_option(help: str = STORE_PATH_HELP, **kwargs: Any) -> Callable[[F], F]:
    """`--db FILE`: the SQLite store (default: the configuration's)."""
    return click.option("--db", help=help, **kwargs)


def store_options(f: F) -> F:
    """`--config` and `--db`, which every command that reads the store takes."""
    return config_option(db_option()(f))


def json_option(f: F) -> F:
    """`--json`: print one JSON object instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")(f)


def since_option(help: str = f"Exchanges since: {WHEN_HELP}.") -> Callable[[F], F]:
    """`--since WHEN`, checked when the command line is parsed (see `TimeType`)."""
    return click.option("--since", type=WHEN, help=help)


def until_option(help: str = f"Exchanges before: {WHEN_HELP}.") -> Callable[[F], F]:
    """`--until WHEN`, checked when the command line is parsed (see `TimeType`)."""
    return click.option("--until", type=WHEN, help=help)


def must_exist_here(target: str | Path, must_exist: bool = True) -> None:
    """A clear error when the SQLite file does not exist (a PostgreSQL database is checked on use)."""
    if must_exist and not is_postgres_url(str(target)) and not Path(target).exists():
        raise click.ClickException(f"no store at {target}")


@contextlib.contextmanager
def opened_store(target: str | Path, *, must_exist: bool = True) -> Iterator[Any]:
    """The store at `target` (a SQLite file or a PostgreSQL URL: `Settings.store_target`), started
    (which applies new migrations to a store made by an older version) and stopped again; a clear
    error when a SQLite file must exist and does not."""
    from shadoweval.core.store import Store

    must_exist_here(target, must_exist)
    store = Store(target)
    store.start()
    try:
        yield store
    finally:
        store.stop()
