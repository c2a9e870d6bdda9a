"""`shadoweval store copy`: an existing SQLite store into PostgreSQL, so that a team can start
embedded and grow onto several replicas.

Table by table, in the order rows were written (rowid), in batches of one transaction each. A row
whose key is there already is left as it is, so a copy can be run again: an interrupted copy
resumes (the rows it had committed are skipped), and a later run copies only what the SQLite file
gained since. Grading leases are not copied: they last minutes and belong to
the page that granted them. The target gets the schema first, through the same migrations.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import pg
from .settings import is_postgres_url
from .store import Store

# parents before children, so a reader of a half-done copy never sees an output without its exchange
TABLES = ("exchanges", "outputs", "feedback", "verdicts", "grading_items", "grades", "evalsets", "evalset_items",
          "report_runs", "counters")


@dataclass(frozen=True, slots=True)
class Copied:
    table: str
    source: int  # rows in the SQLite table
    copied: int  # rows this run inserted
    present: int  # rows of the source already in the target before this run (skipped)


def copy_store(source: str | Path, target: str, *, batch: int = 2000,
               progress: Callable[[str, int, int], None] | None = None) -> list[Copied]:
    """Copy every table of the SQLite store `source` into the PostgreSQL database `target`."""
    if not is_postgres_url(target):
        raise ValueError("the target of a copy is a postgresql:// URL")
    src_path = Path(source)
    if not src_path.exists():
        raise FileNotFoundError(f"no store at {src_path}")
    for where in (src_path, target):  # the source at the current schema (as any command opening it), the
        store = Store(where)          # target's schema by the same migrations
        store.start()
        store.stop()
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
    dst = pg.Database(target)
    done = []
    try:
        present_tables = {r[0] for r in src.execute("select name from sqlite_master where type = 'table'")}
        for table in TABLES:
            if table not in present_tables:
                continue
            cols = [r[1] for r in src.execute(f"pragma table_info({table})")]
            (total,) = src.execute(f"select count(*) from {table}").fetchone()
            names = ", ".join(f'"{c}"' for c in cols)
            insert = f"insert or ignore into {table} ({names}) values ({', '.join('?' * len(cols))})"
            copied, last, last_seen = 0, -1, 0
            while True:
                rows = src.execute(f"select rowid, {names} from {table} where rowid > ? order by rowid limit ?",
                                   (last, batch)).fetchall()
                if not rows:
                    break
                last = rows[-1][0]
                with dst.conn:
                    copied += dst.conn.executemany(insert, [r[1:] for r in rows])
                last_seen += len(rows)
                if progress:
                    progress(table, last_seen, total)
            done.append(Copied(table, total, copied, total - copied))
    finally:
        src.close()
        dst.conn.close()
    return done
