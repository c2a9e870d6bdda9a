"""Access to the proxy's own surface: unguessable ids, exchanges scoped to the key that sent them,
loopback-only without keys, ops endpoints behind ops keys, no file paths in health answers.

A client on another host is played over real HTTP by a loopback client that sends
`X-Forwarded-For`: uvicorn trusts it from 127.0.0.1 (as from a reverse proxy on this host), so the
proxy sees the forwarded address, as it would behind nginx.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
import time
import types as pytypes
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai

from shadoweval.cli.mockllm import free_port
from shadoweval.core import types
from shadoweval.core.types import Exchange, key_id, new_id
from shadoweval.proxy.access import scrub_paths

from .conftest import running_proxy, stored

MESSAGES = [{"role": "user", "content": "my account number is 4471"}]
KEY_A, KEY_B, ADMIN, OPS = "pk-alpha-7f3a91", "pk-bravo-22c0d4", "adm-zulu-9e81b7", "ops-yankee-51d2aa"
KEYED = {"env": {"PKEYS": f"{KEY_A},{KEY_B}", "ADMINS": ADMIN, "OPSKEYS": OPS},
         "server": {"proxy_keys_env": "PKEYS", "admin_keys_env": "ADMINS", "ops_keys_env": "OPSKEYS"}}
REMOTE = {"x-forwarded-for": "203.0.113.7"}  # a client on another host, through a local reverse proxy


CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _random_part(ulid: str) -> int:
    value = 0
    for c in ulid:
        value = value * 32 + CROCKFORD.index(c)
    return value & ((1 << 80) - 1)


def _send(proxy, key: str | None) -> str:
    """One chat completion through the proxy with the official client; its exchange id."""
    client = openai.OpenAI(base_url=proxy.url, api_key="sk-app", max_retries=0,
                           default_headers={"x-shadoweval-key": key} if key else None)
    raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    return raw.headers["x-shadoweval-exchange-id"]


def _get(proxy, path: str, key: str | None = None, bearer: str | None = None, **headers: str) -> httpx.Response:
    if key:
        headers["x-shadoweval-key"] = key
    if bearer:
        headers["authorization"] = f"Bearer {bearer}"
    return httpx.get(proxy.root + path, headers=headers)


def _feedback(proxy, exchange_id: str, key: str | None = None, **headers: str) -> httpx.Response:
    if key:
        headers["x-shadoweval-key"] = key
    return httpx.post(proxy.root + "/shadoweval/feedback", json={"exchange_id": exchange_id, "rating": "down"},
                      headers=headers)


def _error(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["type"] and err["message"] and "param" in err
    return err["message"]


@contextmanager
def _logs(name: str) -> Iterator[list[logging.LogRecord]]:
    """Records of one logger (caplog misses them once the CLI's configure() stopped propagation)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


# -- ids ----------------------------------------------------------------------------------------------


def test_ids_minted_in_one_millisecond_are_not_sequential(monkeypatch):
    # the old ids counted up by one within a millisecond: knowing one exchange id gave the next ones
    frozen = pytypes.SimpleNamespace(time_ns=lambda: 1_767_225_600_123_456_789)
    monkeypatch.setattr(types, "time", frozen)
    ids = [new_id() for _ in range(400)]
    assert len({i[:10] for i in ids}) == 1 and all(len(i) == 26 for i in ids)  # one ms, ULID shape kept
    parts = sorted(_random_part(i) for i in ids)
    assert len(set(parts)) == 400
    # 400 fresh 80-bit draws: the closest two are ~2**62 apart, sequential ones 1
    assert min(b - a for a, b in zip(parts, parts[1:], strict=False)) > 2 ** 40
    monkeypatch.undo()
    # a real burst: ids still sort by millisecond, and no two of the same millisecond are neighbours
    burst = [new_id() for _ in range(400)]
    assert [i[:10] for i in burst] == sorted(i[:10] for i in burst)
    by_ms: dict[str, list[int]] = {}
    for i in burst:
        by_ms.setdefault(i[:10], []).append(_random_part(i))
    assert not [ms for ms, p in by_ms.items() for a in p for b in p if abs(a - b) == 1]


# -- exchanges and feedback, with keys ---------------------------------------------------------------


def test_exchanges_are_scoped_to_the_key_that_sent_them(production, tmp_path):
    _, server = production
    with running_proxy(tmp_path, server.url, **KEYED) as proxy:
        eid = _send(proxy, KEY_A)
        ex, _, _ = stored(proxy.store, eid)
        # key B: exactly the answer a missing exchange gets, so existence is not revealed
        other = _error(_get(proxy, f"/shadoweval/exchanges/{eid}", KEY_B), 404, "not_found")
        missing_id = new_id()
        missing = _error(_get(proxy, f"/shadoweval/exchanges/{missing_id}", KEY_B), 404, "not_found")
        assert other.replace(eid, "ID") == missing.replace(missing_id, "ID")
        assert "4471" not in _get(proxy, f"/shadoweval/exchanges/{eid}", KEY_B).text
        _error(_feedback(proxy, eid, KEY_B), 404, "not_found")
        assert ex.owner == key_id(KEY_A) == key_id(KEY_A.encode()) != key_id(KEY_B) and len(ex.owner) == 16
        # key A (header or bearer) and the admin key read it and post on it
        mine = _get(proxy, f"/shadoweval/exchanges/{eid}", KEY_A)
        assert mine.status_code == 200 and mine.json()["exchange"]["request"]["messages"] == MESSAGES
        assert _get(proxy, f"/shadoweval/exchanges/{eid}", bearer=KEY_A).status_code == 200
        assert _get(proxy, f"/shadoweval/exchanges/{eid}", KEY_A, **REMOTE).status_code == 200  # keys: any host
        assert _feedback(proxy, eid, KEY_A).status_code == 201
        assert _get(proxy, f"/shadoweval/exchanges/{eid}", ADMIN).status_code == 200
        assert _feedback(proxy, eid, ADMIN).status_code == 201
        # no key, or an ops key (ops keys see metrics, not prompts): 401
        _error(_get(proxy, f"/shadoweval/exchanges/{eid}"), 401, "invalid_api_key")
        _error(_get(proxy, f"/shadoweval/exchanges/{eid}", OPS), 401, "invalid_api_key")
        _error(_feedback(proxy, eid), 401, "invalid_api_key")
        assert proxy.store.flush()
        assert len(proxy.store.get_exchange(eid)[2]) == 2  # A's and the admin's feedback, not B's
        # B's own exchange is B's
        eid_b = _send(proxy, KEY_B)
        stored(proxy.store, eid_b)
        assert _get(proxy, f"/shadoweval/exchanges/{eid_b}", KEY_B).status_code == 200
        assert _get(proxy, f"/shadoweval/exchanges/{eid_b}", KEY_A).status_code == 404
        # an exchange stored before owners were kept (owner NULL): admins only
        legacy = Exchange(id=new_id(), created_at=time.time(), route="/v1/chat/completions", request={"messages": []})
        proxy.store.submit(legacy)
        assert proxy.store.flush()
        assert _get(proxy, f"/shadoweval/exchanges/{legacy.id}", KEY_A).status_code == 404
        assert _get(proxy, f"/shadoweval/exchanges/{legacy.id}", ADMIN).status_code == 200
        path = proxy.store.path
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())
    assert key_id(KEY_A).encode() in raw
    assert not [k for k in (KEY_A, KEY_B, ADMIN) if k.encode() in raw]  # the keys themselves never


def test_probing_neighbouring_ids_finds_nothing(production, tmp_path):
    # the reported attack: concurrent clients, then one tries the ids after its own
    _, server = production
    with running_proxy(tmp_path, server.url, **KEYED) as proxy, ThreadPoolExecutor(8) as pool:
        clients = {k: openai.OpenAI(base_url=proxy.url, api_key="sk-app", max_retries=0,
                                    default_headers={"x-shadoweval-key": k}) for k in (KEY_A, KEY_B)}

        def send(key: str) -> tuple[str, str]:
            raw = clients[key].chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
            return key, raw.headers["x-shadoweval-exchange-id"]

        sent = list(pool.map(send, [KEY_A if i % 2 else KEY_B for i in range(96)]))
        for _, eid in sent[-8:]:  # the last captures to reach the store
            stored(proxy.store, eid)
        mine = [eid for k, eid in sent if k == KEY_B]

        def after(eid: str, d: int) -> str:
            return eid[:10] + "".join(CROCKFORD[(_random_part(eid) + d) >> (5 * i) & 31] for i in range(15, -1, -1))

        probes = {after(eid, d) for eid in mine for d in (1, 2, 3)}
        assert not probes & {eid for _, eid in sent}  # neighbours of an id are nobody's
        with httpx.Client(base_url=proxy.root, headers={"x-shadoweval-key": KEY_B}) as http:
            found = [p for p in probes if http.get(f"/shadoweval/exchanges/{p}").status_code != 404]
        assert found == []


# -- no keys: loopback only ---------------------------------------------------------------------------


def test_without_keys_exchanges_and_feedback_answer_loopback_only(production, tmp_path):
    _, server = production
    with running_proxy(tmp_path, server.url) as proxy:
        eid = _send(proxy, None)
        stored(proxy.store, eid)
        message = _error(_get(proxy, f"/shadoweval/exchanges/{eid}", **REMOTE), 403, "loopback_only")
        assert "proxy_keys_env" in message
        assert "4471" not in _get(proxy, f"/shadoweval/exchanges/{eid}", **REMOTE).text
        _error(_feedback(proxy, eid, **REMOTE), 403, "loopback_only")
        # a key a remote client makes up changes nothing
        _error(_get(proxy, f"/shadoweval/exchanges/{eid}", "anything", **REMOTE), 403, "loopback_only")
        # this host's clients (the app's backend, an operator) still can
        assert _get(proxy, f"/shadoweval/exchanges/{eid}").status_code == 200
        assert _feedback(proxy, eid).status_code == 201


# -- ops endpoints ------------------------------------------------------------------------------------


def test_ops_endpoints_need_an_ops_key(production, tmp_path):
    _, server = production
    with running_proxy(tmp_path, server.url, **KEYED) as proxy:
        _send(proxy, KEY_A)
        assert proxy.store.flush()
        assert _get(proxy, "/livez").json() == {"status": "ok"}
        assert _get(proxy, "/readyz").json() == {"status": "ready"}
        bare = _get(proxy, "/healthz")
        assert bare.status_code == 200 and bare.json() == {"status": "ok"}
        _error(_get(proxy, "/metrics"), 401, "invalid_api_key")  # from loopback too: keys are configured
        _error(_get(proxy, "/metrics", KEY_A), 401, "invalid_api_key")  # a proxy key is not an ops key
        for who in ({"key": OPS}, {"bearer": OPS}, {"key": ADMIN}):  # Prometheus sends a bearer token
            r = _get(proxy, "/metrics", **who)
            assert r.status_code == 200 and "shadoweval_requests_total" in r.text
            detail = _get(proxy, "/healthz", **who).json()
            assert detail["status"] == "ok" and detail["store"]["ok"] and detail["store"]["written"] == 2
        capture = _get(proxy, "/healthz/capture")
        assert capture.status_code == 200 and capture.json() == {"status": "ok"}
        assert _get(proxy, "/healthz/capture", OPS).json()["store"]["lost"] == 0


def test_without_ops_keys_metrics_and_details_are_loopback_only(production, tmp_path):
    _, server = production
    with running_proxy(tmp_path, server.url) as proxy:
        _error(_get(proxy, "/metrics", **REMOTE), 403, "loopback_only")
        assert _get(proxy, "/healthz", **REMOTE).json() == {"status": "ok"}
        assert _get(proxy, "/livez", **REMOTE).json() == {"status": "ok"}
        assert _get(proxy, "/readyz", **REMOTE).status_code == 200
        assert _get(proxy, "/metrics").status_code == 200
        assert "store" in _get(proxy, "/healthz").json()


def test_broken_store_shows_no_path_keeps_ready_and_fails_capture_health(production, tmp_path):
    _, server = production
    blocker = tmp_path / "secret folder" / "not-a-dir"
    blocker.parent.mkdir()
    blocker.write_text("a file where the store's folder should be")
    with running_proxy(tmp_path, server.url, store={"path": str(blocker / "shadow.db")}, **KEYED) as proxy:
        assert str(blocker) in (proxy.store.status().last_error or "")  # the error does name the path
        answer = openai.OpenAI(base_url=proxy.url, api_key="sk-app", max_retries=0,
                               default_headers={"x-shadoweval-key": KEY_A}).chat.completions.create(
            model="m", messages=MESSAGES)
        assert answer.choices[0].message.content  # production traffic flows
        bare, detail = _get(proxy, "/healthz"), _get(proxy, "/healthz", OPS)
        assert bare.json() == {"status": "degraded"}
        assert detail.json()["status"] == "degraded" and detail.json()["store"]["ok"] is False
        error = detail.json()["store"]["last_error"]
        assert "Errno" in error and "<path>" in error  # the reason stays, the path goes
        for r in (bare, detail, _get(proxy, "/healthz/capture", OPS), _get(proxy, "/metrics", OPS)):
            assert str(tmp_path) not in r.text and "secret folder" not in r.text and "not-a-dir" not in r.text
        assert _get(proxy, "/readyz").status_code == 200  # a store problem never takes the proxy out
        capture = _get(proxy, "/healthz/capture")
        assert capture.status_code == 503 and capture.json() == {"status": "losing"}


def test_read_only_store_path_is_scrubbed(production, tmp_path):
    _, server = production
    with running_proxy(tmp_path, server.url, **KEYED) as proxy:
        _send(proxy, KEY_A)
        assert proxy.store.flush()
        lock = sqlite3.connect(proxy.store.path, timeout=5)
        lock.execute("BEGIN EXCLUSIVE")  # the writer now fails every commit ("database is locked")
        try:
            _send(proxy, KEY_A)
            deadline = time.monotonic() + 15
            while proxy.store.status().ok and time.monotonic() < deadline:
                time.sleep(0.05)
            capture = _get(proxy, "/healthz/capture", OPS)
            assert capture.status_code == 503 and capture.json()["store"]["lost"] >= 1
            assert str(tmp_path) not in capture.text
        finally:
            lock.rollback()
            lock.close()


def test_scrub_paths():
    known = ("/srv/my data/shadow.db", "/srv/my data", "/srv")
    text = "cannot open /srv/my data/shadow.db: [Errno 13] Permission denied: '/srv/my data/shadow.db'"
    assert scrub_paths(text, known) == "cannot open <path>: [Errno 13] Permission denied: '<path>'"
    assert scrub_paths("disk I/O error") == "disk I/O error"
    assert scrub_paths("unable to open ~/x/y.db or ./rel/z.db") == "unable to open <path> or <path>"
    assert scrub_paths('failed "/var/lib/a b/c.db"') == "failed <path>"


# -- startup ------------------------------------------------------------------------------------------


def test_startup_warns_when_listening_beyond_loopback_without_keys(production, tmp_path):
    _, server = production
    with _logs("shadoweval.proxy") as records, running_proxy(tmp_path, server.url, server={"host": "0.0.0.0"}):
        pass
    warned = [r for r in records if r.levelno == logging.WARNING and "without proxy keys" in r.getMessage()]
    assert len(warned) == 1 and warned[0].host == "0.0.0.0"
    with _logs("shadoweval.proxy") as records, running_proxy(tmp_path, server.url):
        pass  # loopback: no warning
    with _logs("shadoweval.proxy") as keyed, running_proxy(tmp_path, server.url, env=KEYED["env"],
                                                           server={**KEYED["server"], "host": "0.0.0.0"}):
        pass
    assert not [r for r in (*records, *keyed) if r.levelno >= logging.WARNING]


def test_require_keys_refuses_to_start_without_keys(production, tmp_path):
    _, server = production
    env = {**os.environ, "SHADOWEVAL_SERVER_REQUIRE_KEYS": "true", "SHADOWEVAL_SERVER_PROXY_KEYS_ENV": "PKEYS",
           "SHADOWEVAL_PRODUCTION_BASE_URL": server.url + "/v1"}
    env.pop("PKEYS", None)
    cmd = [str(Path(sys.executable).parent / "shadoweval"), "serve", "--port", str(free_port()),
           "--db", str(tmp_path / "refused.db")]
    done = subprocess.run(cmd, env=env, capture_output=True, timeout=60)
    assert done.returncode != 0
    assert b"require_keys is set but no proxy keys are configured" in done.stderr
    env = {**KEYED["env"], "SHADOWEVAL_SERVER_REQUIRE_KEYS": "true"}
    with running_proxy(tmp_path, server.url, env=env, server=KEYED["server"]) as proxy:
        assert proxy.settings.server.require_keys and _send(proxy, KEY_A)
