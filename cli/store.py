"""`shadoweval store ...`: moving a store between engines."""

from __future__ import annotations

import click

from shadoweval.core.settings import is_postgres_url


@click.group()
def store() -> None:
    """The store itself: copy a SQLite store into PostgreSQL."""


@store.command("copy")
@click.option("--from", "source", required=True, metavar="FILE",
              help="The SQLite store to copy (brought to the current schema first, as by any command that opens it).")
@click.option("--to", "target", required=True, metavar="URL",
              help="The PostgreSQL database, postgresql://... (or the name of an environment variable holding it, "
                   "as $NAME, so no password is typed on the command line).")
@click.option("--batch", default=2000, show_default=True, help="Rows per transaction.")
def store_copy(source: str, target: str, batch: int) -> None:
    """Copy a SQLite store into PostgreSQL: every exchange, output, verdict, grade and eval set, in the
    order written. Idempotent: rows already there are skipped, so an interrupted copy is resumed by
    running it again, and a later run copies only what is new."""
    import os

    from shadoweval.core.pg import Error, safe_url
    from shadoweval.core.store_copy import copy_store

    if target.startswith("$"):
        name, target = target[1:], os.environ.get(target[1:], "")
        if not target:
            raise click.ClickException(f"--to ${name}: the environment variable {name} is not set")
    if not is_postgres_url(target):
        raise click.ClickException("--to must be a postgresql:// URL (the SQLite file is --from)")
    shown: dict[str, int] = {}

    def progress(table: str, done: int, total: int) -> None:
        step = max(total // 10, 1)
        if done == total or done // step != shown.get(table, -1):
            shown[table] = done // step
            click.echo(f"  {table}: {done:,} / {total:,}", err=True)

    click.echo(f"copying {source} -> {safe_url(target)}", err=True)
    try:
        result = copy_store(source, target, batch=batch, progress=progress)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    except Error as exc:
        raise click.ClickException(f"PostgreSQL: {' '.join(str(exc).split())}") from None
    for c in result:
        click.echo(f"{c.table:15} {c.source:>9,} rows: {c.copied:,} copied, {c.present:,} already there")
