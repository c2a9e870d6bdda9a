"""What every `shadoweval` command shares: settings from the flags, the store opened and closed,
`--since` parsing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from .settings import Settings, SettingsError, load_settings


def _settings(config: str | None, host: str | None = None, port: int | None = None, db: str | None = None) -> Settings:
    overrides = {"server": {k: v for k, v in {"host": host, "port": port}.items() if v is not None},
                 "store": {"path": db} if db else {}}
    try:
        return load_settings(config, overrides=overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


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


@contextlib.contextmanager
def opened_store(path: str | Path, *, must_exist: bool = True) -> Iterator[Any]:
    """The store at `path`, started (which applies new migrations to a store made by an older
    version) and stopped again; a clear error when it must exist and does not."""
    from .store import Store

    path = Path(path)
    if must_exist and not path.exists():
        raise click.ClickException(f"no store at {path}")
    store = Store(path)
    store.start()
    try:
        yield store
    finally:
        store.stop()
