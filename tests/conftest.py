"""Shared fixtures: real uvicorn servers on 127.0.0.1, real SQLite files under tmp_path."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shadoweval.cli.mockllm import MockLLM, ThreadedServer
from shadoweval.core.settings import Settings, load_settings
from shadoweval.core.store import Store
from shadoweval.proxy.app import create_app

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def production() -> Iterator[tuple[MockLLM, ThreadedServer]]:
    mock = MockLLM(name="prod-model")
    with ThreadedServer(mock) as server:
        yield mock, server


@dataclass
class Proxy:
    url: str  # base URL ending in /v1, what an app puts in base_url
    root: str
    settings: Settings
    store: Store
    app: Any


@contextmanager
def running_proxy(
    tmp_path: Path,
    production_url: str,
    *,
    candidates: list[dict[str, Any]] | None = None,
    env: dict[str, str] | None = None,
    **sections: dict[str, Any],
) -> Iterator[Proxy]:
    data: dict[str, Any] = {"production": {"base_url": production_url + "/v1", **sections.pop("production", {})},
                            "store": {"path": str(tmp_path / "shadow.db"), "flush_interval_ms": 10,
                                      **sections.pop("store", {})}}
    data.update(sections)
    if candidates:
        data["candidates"] = candidates
    settings = load_settings(None, overrides=data, env=env or {})
    app = create_app(settings)
    with ThreadedServer(app) as server:
        assert app.store is not None
        yield Proxy(server.url + "/v1", server.url, settings, app.store, app)


@pytest.fixture
def proxy_factory(tmp_path: Path) -> Callable[..., Any]:
    return lambda production_url, **kw: running_proxy(tmp_path, production_url, **kw)


def stored(store: Store, exchange_id: str, timeout: float = 5.0) -> Any:
    """The exchange with its outputs and feedback once the store has it (a streamed answer's capture
    is submitted after its last byte reaches the client, so it can trail the client a little)."""
    deadline = time.monotonic() + timeout
    while True:
        assert store.flush()
        found = store.get_exchange(exchange_id)
        if found is not None or time.monotonic() > deadline:
            assert found is not None, f"exchange {exchange_id} never reached the store"
            return found
        time.sleep(0.02)


@contextmanager
def postgres_database(server: str) -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL server at URL `server`, as a URL; dropped on exit.
    Skips the test when the server is unreachable."""
    import uuid
    from urllib.parse import urlsplit

    import psycopg

    try:
        admin = psycopg.connect(server, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        reason = " ".join(str(e).split())
        pytest.skip(f"PostgreSQL tests: SHADOWEVAL_TEST_POSTGRES={server} is unreachable: {reason}")
    name = f"shadoweval_test_{uuid.uuid4().hex[:16]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(server)._replace(path="/" + name).geturl()
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a fresh database on the server named by SHADOWEVAL_TEST_POSTGRES (scripts/test starts a
    throwaway cluster and sets it), dropped after the test. Skips when there is no server."""
    server = os.environ.get("SHADOWEVAL_TEST_POSTGRES")
    if not server:
        pytest.skip("PostgreSQL tests need SHADOWEVAL_TEST_POSTGRES (scripts/test starts a throwaway cluster): not set")
    with postgres_database(server) as url:
        yield url
