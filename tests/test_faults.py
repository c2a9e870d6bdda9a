"""Production's failures reach the client as production sent them or as OpenAI-shaped errors; the
proxy's own failures (store, oversized bodies, disconnects) never cost production traffic."""

from __future__ import annotations

import os
import sqlite3
import stat
import time

import httpx
import openai
import pytest

from shadoweval.cli.mockllm import MockLLM, ThreadedServer, free_port

from .conftest import running_proxy

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize("status", [400, 401, 429, 500, 503])
def test_production_errors_pass_through_unchanged(production, tmp_path, status):
    mock, server = production
    with running_proxy(tmp_path, server.url) as proxy:
        hdr = {"x-mock-behaviour": f"error{status}", "authorization": "Bearer k"}
        direct = httpx.post(server.url + "/v1/chat/completions", json={"model": "m", "messages": MESSAGES}, headers=hdr)
        via = httpx.post(proxy.url + "/chat/completions", json={"model": "m", "messages": MESSAGES}, headers=hdr)
        assert via.status_code == direct.status_code == status
        assert via.content == direct.content
        assert proxy.store.flush()
        ex, (out,), _ = proxy.store.get_exchange(via.headers["x-shadoweval-exchange-id"])
        assert ex.http_status == status and out.status == "error" and "failed on purpose" in out.error


def test_openai_client_sees_production_error_types(production, tmp_path):
    _, server = production
    with running_proxy(tmp_path, server.url) as proxy:
        client = openai.OpenAI(base_url=proxy.url, api_key="k", max_retries=0)
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-mock-behaviour": "error429"})
        assert err.value.body["code"] == "mock_429"


def test_production_unreachable_is_502(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    with running_proxy(tmp_path, dead) as proxy:
        client = openai.OpenAI(base_url=proxy.url, api_key="k", max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="m", messages=MESSAGES)
        assert err.value.status_code == 502
        assert err.value.body["code"] == "upstream_unreachable" and err.value.body["type"] == "upstream_error"
        assert proxy.store.flush()
        (eid,) = proxy.store.exchange_ids()
        ex, (out,), _ = proxy.store.get_exchange(eid)
        assert ex.status == "error" and out.http_status == 502


def test_production_timeout_is_504(production, tmp_path):
    _, server = production
    with running_proxy(tmp_path, server.url, production={"timeout_s": 0.5}) as proxy:
        client = openai.OpenAI(base_url=proxy.url, api_key="k", max_retries=0)
        t0 = time.monotonic()
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-mock-behaviour": "hang"})
        assert err.value.status_code == 504 and err.value.body["code"] == "upstream_timeout"
        assert time.monotonic() - t0 < 3
        assert proxy.store.flush()
        _, (out,), _ = proxy.store.get_exchange(proxy.store.exchange_ids()[0])
        assert out.status == "timeout"


def test_production_garbage_passes_through(production, tmp_path):
    _, server = production
    with running_proxy(tmp_path, server.url) as proxy:
        r = httpx.post(proxy.url + "/chat/completions", json={"model": "m", "messages": MESSAGES},
                       headers={"x-mock-behaviour": "garbage"})
        assert r.status_code == 200 and r.content == b"<html>this is not json{{"
        assert proxy.store.flush()
        _, (out,), _ = proxy.store.get_exchange(r.headers["x-shadoweval-exchange-id"])
        assert out.status == "error" and "not JSON" in out.error


def test_invalid_json_body_forwarded_as_is_and_not_mirrored(production, tmp_path):
    mock, server = production
    cand = MockLLM(name="cand")
    with ThreadedServer(cand) as cs:
        candidates = [{"name": "c", "model": "x", "base_url": cs.url + "/v1"}]
        with running_proxy(tmp_path, server.url, candidates=candidates) as proxy:
            body = b'{"model": "m", "messages": [oops'
            direct = httpx.post(server.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
            via = httpx.post(proxy.url + "/chat/completions", content=body, headers={"content-type": "application/json"})
            assert via.status_code == direct.status_code == 400 and via.content == direct.content
            assert mock.requests[-1].body == body
            time.sleep(0.2)
            assert cand.requests == []
            assert proxy.store.flush()
            ex, _, _ = proxy.store.get_exchange(via.headers["x-shadoweval-exchange-id"])
            assert ex.request is None and ex.status == "error"


def test_oversized_body_is_413(production, tmp_path):
    mock, server = production
    with running_proxy(tmp_path, server.url, server={"max_body_bytes": 1000}) as proxy:
        client = openai.OpenAI(base_url=proxy.url, api_key="k", max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x" * 5000}])
        assert err.value.status_code == 413 and err.value.body["code"] == "request_too_large"
        assert mock.requests == []

        # a chunked body without content-length is cut off at the limit as well
        def gen():
            for _ in range(10):
                yield b"y" * 500

        r = httpx.post(proxy.url + "/chat/completions", content=gen())
        assert r.status_code == 413 and mock.requests == []


def test_client_disconnect_mid_stream_is_stored_as_cancelled(tmp_path):
    mock = MockLLM(name="slow-stream", chunk_delay_s=0.2)
    mock.answer = lambda req: " ".join(f"w{i}" for i in range(40))
    with ThreadedServer(mock) as server, running_proxy(tmp_path, server.url) as proxy:
        with httpx.stream("POST", proxy.url + "/chat/completions",
                          json={"model": "m", "messages": MESSAGES, "stream": True}) as r:
            eid = r.headers["x-shadoweval-exchange-id"]
            it = r.iter_raw()
            next(it)
            next(it)
        # leaving the block closes the connection mid-stream
        deadline = time.monotonic() + 10
        found = None
        while time.monotonic() < deadline:
            proxy.store.flush()
            found = proxy.store.get_exchange(eid)
            if found:
                break
            time.sleep(0.05)
        ex, (out,), _ = found
        assert ex.status == "cancelled" and out.status == "cancelled"
        assert out.text.startswith("w0") and len(out.text.split()) < 40
        assert out.latency_ms < 5000  # the proxy stopped reading production when the client left


def test_production_stream_breaking_is_recorded(tmp_path):
    mock = MockLLM(name="p", behaviour="break_stream")
    with ThreadedServer(mock) as server, running_proxy(tmp_path, server.url) as proxy:
        with httpx.stream("POST", proxy.url + "/chat/completions",
                          json={"model": "m", "messages": MESSAGES, "stream": True}) as r:
            eid = r.headers["x-shadoweval-exchange-id"]
            with pytest.raises(httpx.RemoteProtocolError):
                r.read()
        assert proxy.store.flush()
        ex, (out,), _ = proxy.store.get_exchange(eid)
        assert out.status == "error" and "broke" in out.error


def test_readonly_store_never_fails_production(production, tmp_path):
    _, server = production
    with running_proxy(tmp_path, server.url) as proxy:
        client = openai.OpenAI(base_url=proxy.url, api_key="k")
        client.chat.completions.create(model="m", messages=MESSAGES)
        assert proxy.store.flush()
        # Make the file read-only underneath the running writer: SQLite now refuses every write.
        db = proxy.store.path
        if os.geteuid() == 0:
            # root ignores file modes; lock the database from another connection instead
            lock = sqlite3.connect(db, timeout=5)  # waits out the writer's own upkeep after the flush
            lock.execute("BEGIN EXCLUSIVE")
        else:
            os.chmod(db, stat.S_IRUSR)
            lock = None
        t0 = time.monotonic()
        for i in range(5):
            r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
            assert r.choices[0].message.content == f"prod-model says: q{i}"
        assert time.monotonic() - t0 < 2  # production never waited for the store
        deadline = time.monotonic() + 15
        while proxy.app.metrics.total("shadoweval_store_lost_total") < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proxy.app.metrics.total("shadoweval_store_lost_total") == 10  # 5 exchanges + 5 outputs
        health = httpx.get(proxy.root + "/healthz").json()
        assert health["status"] == "degraded" and health["store"]["lost"] == 10
        metrics = httpx.get(proxy.root + "/metrics").text
        assert 'shadoweval_store_lost_total{reason="locked"} 10' in metrics or "readonly" in metrics
        if lock is not None:
            lock.rollback()
            lock.close()
        # once the store is usable again, capture resumes
        client.chat.completions.create(model="m", messages=MESSAGES)
        assert proxy.store.flush()
        assert len(proxy.store.exchange_ids()) == 2


def test_store_unavailable_at_start(production, tmp_path):
    _, server = production
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's folder should be")
    with running_proxy(tmp_path, server.url, store={"path": str(blocker / "shadow.db")}) as proxy:
        client = openai.OpenAI(base_url=proxy.url, api_key="k")
        r = client.chat.completions.create(model="m", messages=MESSAGES)
        assert r.choices[0].message.content == "prod-model says: hello"
        proxy.store.flush()
        assert proxy.app.metrics.get("shadoweval_store_lost_total", reason="unavailable") == 2
        assert httpx.get(proxy.root + "/healthz").json()["status"] == "degraded"
