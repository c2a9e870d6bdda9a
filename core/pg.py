"""PostgreSQL under the store: the part of sqlite_utils' `Database` that the store's modules use,
over psycopg 3, so that one set of SQL and one set of migrations serve both engines.

The store's SQL is written in the subset both engines read (`case when` rather than summed
booleans, `skipped = 0` rather than `not skipped`, quoted `"left"`). What still differs in spelling is
translated here, once per statement: placeholders (`?`, `?1` -> `%s`, `%(p1)s`), SQLite's
`insert or replace` / `insert or ignore` (-> `on conflict ... do update` / `do nothing`), `[name]`
quoting, and the one JSON lookup (`json_extract(x, '$.' || json_quote(?))` -> `x::jsonb ->> ?`).
Every table gets a `rowid` identity column, so "break ties by rowid" (the order rows were written)
means the same thing on both.

Migrations run through `Database.table(...).create / create_index / add_column / transform`, the
same calls as on SQLite, turned into PostgreSQL DDL; several replicas starting at once take turns
under an advisory lock (`migrate_lock`).
"""

from __future__ import annotations

import re
import threading
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.rows import dict_row

__all__ = ["Database", "Error", "OperationalError", "PgConnection", "Pool", "safe_url", "translate"]

Error = psycopg.Error
OperationalError = psycopg.OperationalError
_TYPES = {str: "text", int: "bigint", float: "double precision", bytes: "bytea", bool: "bigint"}
_LOCK_KEY = 0x5AD0E7A1  # pg_advisory_lock key of the store's migrations


def safe_url(url: str) -> str:
    """The URL with any password replaced by `***`, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


# -- SQL spelling ------------------------------------------------------------------------------

_JSON_KEY = re.compile(r"json_extract\((\w+(?:\.\w+)?), '\$\.' \|\| json_quote\(\?\)\)")
_INSERT = re.compile(r"^\s*insert\s+or\s+(replace|ignore)\s+into\s+(\w+)\s*\(([^)]*)\)", re.I | re.S)
_NUMBERED = re.compile(r"\?(\d+)")
_PLACEHOLDER = re.compile(r"\?(\d*)")


_VALUES = re.compile(r"^\s*insert\s+into\s+(\w+)\s*\(([^)]*)\)\s*values\s*\(\s*%s(?:\s*,\s*%s)*\s*\)(.*)$",
                     re.I | re.S)
COPY_FROM_ROWS = 16  # a batch of at least this many rows goes through COPY (below, row by row is as quick)


@dataclass(frozen=True, slots=True)
class Bulk:
    """How a one-row `insert ... values (?, ...)` takes a batch: COPY into a temporary table
    shaped like its columns, then one `insert ... select` from it with the same conflict rule.
    COPY is what PostgreSQL reads fastest, and the client barely works to send it."""

    stage: str  # the temporary table (one per connection, emptied as it is read)
    create: str
    copy: str
    insert: str
    key: tuple[int, ...] | None  # where rows replace each other: positions of the conflict key


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    numbered: bool  # parameters given by position, referenced as ?N: bind them by name
    bulk: Bulk | None = None  # set for an insert of one row of values


def translate(sql: str, conflict_keys: Mapping[str, Sequence[str]] | None = None) -> Statement:
    """The PostgreSQL spelling of one statement of the store's SQL. `conflict_keys`: per table, the
    columns whose clash `insert or replace` resolves (the key a row is replaced by)."""
    out = sql.replace("%", "%%")
    out = _JSON_KEY.sub(r"(\1::jsonb ->> ?)", out)
    out = re.sub(r"\[(\w+)\]", r'"\1"', out)
    m = _INSERT.match(out)
    key: tuple[int, ...] | None = None
    if m:
        verb, table, cols = m.group(1).lower(), m.group(2), [c.strip().strip('"') for c in m.group(3).split(",")]
        out = out[: m.start()] + f"insert into {table} ({m.group(3)})" + out[m.end():]
        if verb == "ignore":
            out += " on conflict do nothing"
        else:
            keys = list((conflict_keys or {}).get(table) or ())
            if not keys:
                raise ValueError(f"no conflict key known for table {table}")
            rest = [c for c in cols if c not in keys]
            if rest and all(k in cols for k in keys):
                key = tuple(cols.index(k) for k in keys)
            action = ("do update set " + ", ".join(f'"{c}" = excluded."{c}"' for c in rest)) if rest else "do nothing"
            out += f" on conflict ({', '.join(chr(34) + k + chr(34) for k in keys)}) {action}"
    numbered = bool(_NUMBERED.search(out))
    if not numbered:
        out = out.replace("?", "%s")
        return Statement(out, False, _bulk(out, key))
    last = 0

    def name(m: re.Match[str]) -> str:  # SQLite's rule: a bare ? is one more than the largest so far
        nonlocal last
        n = int(m.group(1)) if m.group(1) else last + 1
        last = max(last, n)
        return f"%(p{n})s"

    return Statement(_PLACEHOLDER.sub(name, out), True)


def _bulk(sql: str, key: tuple[int, ...] | None) -> Bulk | None:
    v = _VALUES.match(sql)
    if v is None or "%s" in v.group(3):
        return None
    table, cols, tail = v.group(1), v.group(2).strip(), v.group(3)
    stage = f"_in_{table}_{zlib.crc32(cols.encode()):08x}"
    return Bulk(stage,
                # `_n`: the order rows came in, which the new rows' rowid keeps
                f"create temporary table if not exists {stage} on commit delete rows as "
                f"select {cols} from {table} with no data; "
                f"alter table {stage} add column if not exists _n bigserial",
                f"copy {stage} ({cols}) from stdin",
                f"with rows as (delete from {stage} returning *) "
                f"insert into {table} ({cols}) select {cols} from rows order by _n{tail}",
                key)


def _param(value: Any) -> Any:
    return int(value) if isinstance(value, bool) else value


def _params(stmt: Statement, params: Sequence[Any] | Mapping[str, Any] | None) -> Any:
    if params is None:
        return ()  # never None: psycopg would then send the query untouched, `%%` included
    if isinstance(params, Mapping):
        return {k: _param(v) for k, v in params.items()}
    values = [_param(v) for v in params]
    return {f"p{i}": v for i, v in enumerate(values, 1)} if stmt.numbered else values


# -- connections -------------------------------------------------------------------------------


class PgConnection:
    """A psycopg connection that behaves like sqlite3's where the store relies on it: `with conn:`
    is one transaction (commit, or rollback on error), `execute`/`executemany` take the store's SQL.
    Outside `with`, each statement commits on its own (autocommit)."""

    def __init__(self, raw: psycopg.Connection[Any], db: Database, release: Any = None) -> None:
        self.raw = raw
        self._db = db
        self._release = release
        self._tx: list[Any] = []
        # the staging tables (`Bulk`) made on this connection; temporary tables live as long as it
        # does. A pool's connection gets a new wrapper per checkout: it then makes them again (if
        # not exists), which costs a statement, not a mistake
        self._stages: set[str] = set()

    def __enter__(self) -> PgConnection:
        tx = self.raw.transaction()
        tx.__enter__()
        self._tx.append(tx)
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is not None:
            self._stages.clear()  # a rollback may have undone their creation
        self._tx.pop().__exit__(*exc)

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> psycopg.Cursor[Any]:
        stmt = self._db.statement(sql)
        return self.raw.execute(stmt.sql, _params(stmt, params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run the statement once per row; return the rows affected, all together. An insert of
        values with many rows goes through COPY (`Bulk`), with the same outcome as row by row."""
        stmt = self._db.statement(sql)
        rows = rows if isinstance(rows, list) else list(rows)
        if stmt.bulk is not None and len(rows) >= COPY_FROM_ROWS:
            if self._tx:
                return self._copy(stmt.bulk, rows)
            with self:
                return self._copy(stmt.bulk, rows)
        with self.raw.cursor() as cur:
            cur.executemany(stmt.sql, [_params(stmt, r) for r in rows])
            return max(cur.rowcount, 0)

    def _copy(self, bulk: Bulk, rows: list[Sequence[Any]]) -> int:
        if bulk.key is not None:
            # one statement may not update a row twice: of rows replacing each other, the last
            # one's values win, in the first one's place, as row by row
            key = bulk.key
            latest = {tuple(r[i] for i in key): r for r in rows}
            if len(latest) < len(rows):
                rows = list(latest.values())
        with self.raw.cursor() as cur:
            if bulk.stage not in self._stages:
                cur.execute(bulk.create)
                self._stages.add(bulk.stage)
            with cur.copy(bulk.copy) as copy:
                for r in rows:
                    copy.write_row([_param(v) for v in r])
            cur.execute(bulk.insert)
            return max(cur.rowcount, 0)

    @property
    def broken(self) -> bool:
        return self.raw.closed or self.raw.broken

    def close(self) -> None:
        if self._release is not None:
            self._release(self.raw)
        else:
            self.raw.close()


class Pool:
    """Reader connections for one database URL, kept open between reads (psycopg_pool)."""

    def __init__(self, url: str, max_size: int = 4) -> None:
        from psycopg_pool import ConnectionPool

        self.url = url
        # checked when handed out: after a restart of the server, a read gets a fresh connection
        self._pool = ConnectionPool(url, min_size=0, max_size=max_size, open=True, timeout=10,
                                    kwargs={"autocommit": True, "connect_timeout": 5},
                                    check=ConnectionPool.check_connection)
        self._keys: dict[str, list[str]] = {}
        self._statements: dict[str, Statement] = {}
        self._lock = threading.Lock()
        self._reached = False

    def database(self) -> Database:
        if not self._reached:
            # once, directly: an unreachable server fails now with its own reason ("connection
            # refused"), not after the pool's 10 s wait with "couldn't get a connection"
            psycopg.connect(self.url, connect_timeout=5).close()
            self._reached = True
        raw = self._pool.getconn()
        db = Database.__new__(Database)
        db._init(raw, self._keys, self._lock, release=self._pool.putconn, statements=self._statements)
        return db

    def close(self) -> None:
        self._pool.close()


class Database:
    """What the store uses of sqlite_utils.Database, on one PostgreSQL connection."""

    def __init__(self, url: str) -> None:
        raw = psycopg.connect(url, autocommit=True, connect_timeout=5)
        self._init(raw, {}, threading.Lock())

    def _init(self, raw: psycopg.Connection[Any], keys: dict[str, list[str]], lock: threading.Lock,
              release: Any = None, statements: dict[str, Statement] | None = None) -> None:
        self.conn = PgConnection(raw, self, release)
        # shared by a pool's connections, so each statement is translated once per process
        self._keys = keys  # conflict keys do not change
        self._keys_lock = lock
        self._statements = {} if statements is None else statements

    # -- SQL ---------------------------------------------------------------------------------

    def statement(self, sql: str) -> Statement:
        stmt = self._statements.get(sql)
        if stmt is None:
            m = _INSERT.match(sql)
            keys = {m.group(2): self.conflict_key(m.group(2))} if m and m.group(1).lower() == "replace" else None
            stmt = self._statements[sql] = translate(sql, keys)
        return stmt

    def conflict_key(self, table: str) -> list[str]:
        """The columns `insert or replace` replaces a row by: the table's one unique index other
        than its primary key if it has one (a grader's grade of an item, a judge's verdict on an
        output), else its primary key, as SQLite's replace-on-any-conflict does in practice here."""
        with self._keys_lock:
            if table not in self._keys:
                rows = self.conn.raw.execute(
                    """select i.indisprimary, array_agg(a.attname order by k.n)
                       from pg_index i
                       join unnest(i.indkey) with ordinality k(attnum, n) on true
                       join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
                       where i.indrelid = %s::regclass and i.indisunique
                       group by i.indexrelid, i.indisprimary""", [table]).fetchall()
                other = [cols for primary, cols in rows if not primary]
                primary = [cols for is_pk, cols in rows if is_pk]
                self._keys[table] = list(other[0] if len(other) == 1 else primary[0] if primary else [])
            return self._keys[table]

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> psycopg.Cursor[Any]:
        return self.conn.execute(sql, params)

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        stmt = self.statement(sql)
        with self.conn.raw.cursor(row_factory=dict_row) as cur:
            cur.execute(stmt.sql, _params(stmt, params))
            yield from cur

    def table(self, name: str) -> Table:
        return Table(self, name)

    def __getitem__(self, name: str) -> Table:
        return Table(self, name)

    def table_names(self) -> list[str]:
        return [r[0] for r in self.conn.raw.execute(
            "select table_name from information_schema.tables where table_schema = current_schema()")]

    # -- migrations --------------------------------------------------------------------------

    def migrate_lock(self) -> Any:
        """Held while migrating: replicas starting together apply each migration once."""
        return _AdvisoryLock(self.conn.raw)


class _AdvisoryLock:
    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def __enter__(self) -> None:
        self.raw.execute("select pg_advisory_lock(%s)", [_LOCK_KEY])

    def __exit__(self, *exc: Any) -> None:
        if not self.raw.closed:
            self.raw.execute("select pg_advisory_unlock(%s)", [_LOCK_KEY])


@dataclass(frozen=True, slots=True)
class Index:
    name: str
    columns: list[str]


class Table:
    """sqlite_utils' Table, as far as the store and its migrations use it."""

    def __init__(self, db: Database, name: str) -> None:
        self.db = db
        self.name = name

    def rows_where(self, where: str | None = None, where_args: Sequence[Any] | None = None, *,
                   order_by: str | None = None, limit: int | None = None) -> Iterator[dict[str, Any]]:
        sql = f"select * from {_q(self.name)}" + (f" where {where}" if where else "")
        sql += (f" order by {order_by}" if order_by else "") + (f" limit {int(limit)}" if limit else "")
        return self.db.query(sql, where_args)

    @property
    def rows(self) -> Iterator[dict[str, Any]]:
        return self.rows_where()

    def insert(self, row: Mapping[str, Any]) -> None:
        self.insert_all([row])

    def insert_all(self, rows: Sequence[Mapping[str, Any]], *, replace: bool = False) -> None:
        if not rows:
            return
        cols = list(rows[0])
        verb = "insert or replace" if replace else "insert"
        sql = f"{verb} into {self.name} ({', '.join(_q(c) for c in cols)}) values ({', '.join('?' * len(cols))})"
        self.db.conn.executemany(sql, [tuple(r[c] for c in cols) for r in rows])

    # DDL: the calls the migrations make

    def create(self, columns: Mapping[str, type], *, pk: str | tuple[str, ...] | None = None) -> None:
        keys = [pk] if isinstance(pk, str) else list(pk or ())
        body = ["rowid bigint generated by default as identity"]
        body += [f"{_q(c)} {_TYPES[t]}" + (" not null" if c in keys else "") for c, t in columns.items()]
        if keys:
            body.append(f"primary key ({', '.join(_q(k) for k in keys)})")
        self.db.conn.raw.execute(f"create table {_q(self.name)} ({', '.join(body)})")

    def create_index(self, columns: Sequence[str], *, unique: bool = False) -> None:
        name = f"idx_{self.name}_{'_'.join(columns)}"
        self.db.conn.raw.execute(
            f"create {'unique ' if unique else ''}index {_q(name)} on {_q(self.name)} "
            f"({', '.join(_q(c) for c in columns)})")

    def add_column(self, name: str, col_type: type) -> None:
        self.db.conn.raw.execute(f"alter table {_q(self.name)} add column {_q(name)} {_TYPES[col_type]}")

    def transform(self, *, rename: Mapping[str, str]) -> None:
        for old, new in rename.items():
            self.db.conn.raw.execute(f"alter table {_q(self.name)} rename column {_q(old)} to {_q(new)}")

    @property
    def indexes(self) -> list[Index]:
        rows = self.db.conn.raw.execute(
            """select c.relname, array_agg(a.attname order by k.n)
               from pg_index i join pg_class c on c.oid = i.indexrelid
               join unnest(i.indkey) with ordinality k(attnum, n) on true
               join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
               where i.indrelid = %s::regclass and not i.indisprimary
               group by c.relname""", [self.name]).fetchall()
        return [Index(name, list(cols)) for name, cols in rows]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
