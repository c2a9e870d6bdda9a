"""The PostgreSQL test infrastructure: scripts/postgres (a throwaway cluster) and the postgres_url fixture."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from .conftest import postgres_database

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "postgres"


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def test_fixture_gives_an_empty_writable_database(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (database_of(postgres_url),)
        assert conn.execute("SELECT count(*) FROM information_schema.tables "
                            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')").fetchone() == (0,)
        conn.execute("CREATE TABLE t (id integer PRIMARY KEY, name text)")
        conn.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
    with psycopg.connect(postgres_url) as conn:  # a second connection sees the committed rows
        assert conn.execute("SELECT id, name FROM t ORDER BY id").fetchall() == [(1, "one"), (2, "two")]


def test_each_use_gets_its_own_database_dropped_afterwards(postgres_url: str) -> None:
    server = os.environ["SHADOWEVAL_TEST_POSTGRES"]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE only_here (x integer)")
    with postgres_database(server) as other:
        assert database_of(other) != database_of(postgres_url)
        with psycopg.connect(other) as conn:
            assert conn.execute("SELECT to_regclass('only_here')").fetchone() == (None,)
    with psycopg.connect(server) as admin:
        names = {row[0] for row in admin.execute("SELECT datname FROM pg_database")}
    assert database_of(postgres_url) in names
    assert database_of(other) not in names


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_script_starts_and_stops_a_cluster_from_scratch() -> None:
    # the cluster's owner (user postgres when run as root) must reach DIR, so not under pytest's private tmp_path
    parent = Path(tempfile.mkdtemp(prefix="shadoweval-pg-test-"))
    parent.chmod(0o755)
    cluster, port = parent / "cluster", free_port()
    try:
        started = subprocess.run([str(SCRIPT), "start", str(cluster), str(port)], capture_output=True, text=True,
                                 timeout=600)
        if started.returncode != 0 and "cannot be installed" in started.stderr:
            pytest.skip(f"PostgreSQL is not installed and cannot be installed: {started.stderr.strip()}")
        assert started.returncode == 0, started.stderr
        url = started.stdout.strip()
        assert url == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user, inet_server_addr()::text").fetchone() == ("postgres",
                                                                                                  "127.0.0.1/32")
        again = subprocess.run([str(SCRIPT), "start", str(cluster)], capture_output=True, text=True, timeout=60)
        assert (again.returncode, again.stdout.strip()) == (0, url)  # already running: same URL
    finally:
        stopped = subprocess.run([str(SCRIPT), "stop", str(cluster)], capture_output=True, text=True, timeout=120)
        if not cluster.exists():
            parent.rmdir()
    assert stopped.returncode == 0, stopped.stderr
    assert not cluster.exists()
    assert refuses(port)


def test_script_stop_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    stopped = subprocess.run([str(SCRIPT), "stop", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert stopped.returncode != 0 and "not made by scripts/postgres" in stopped.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"
