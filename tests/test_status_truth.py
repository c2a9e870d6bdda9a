"""What the store says happened is what happened: cancelled, partial, truncated; one JSON log line per event."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from shadoweval.cli.mockllm import MockLLM, ThreadedServer, free_port
from shadoweval.core.store import Store
from shadoweval.proxy.asgi import lifespan, read_body

from .conftest import running_proxy, stored

BIN = Path(sys.executable).parent / "shadoweval"
MESSAGES = [{"role": "user", "content": "hello"}]


def _only_exchange(store: Store, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert store.flush()
        ids = store.exchange_ids()
        if ids:
            (eid,) = ids
            return stored(store, eid)
        time.sleep(0.05)
    raise AssertionError("no exchange stored")


def test_client_that_leaves_before_the_answer_is_cancelled(tmp_path):
    mock = MockLLM(name="slow", latency_s=1.0)
    with ThreadedServer(mock) as server, running_proxy(tmp_path, server.url) as proxy:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(proxy.url + "/chat/completions", json={"model": "m", "messages": MESSAGES}, timeout=0.3)
        time.sleep(1.2)  # production answers after the client has gone
        ex, (out,), _ = _only_exchange(proxy.store)
        assert ex.status == "cancelled" and out.status == "cancelled"
        assert "before the answer was sent" in out.error
        # a client that waits still gets its answer, stored ok
        r = httpx.post(proxy.url + "/chat/completions", json={"model": "m", "messages": MESSAGES}, timeout=5)
        ex, (out,), _ = stored(proxy.store, r.headers["x-shadoweval-exchange-id"])
        assert out.status == "ok" and out.text == "slow says: hello"


class BadEvents:
    """Production whose stream has one event that is not JSON between good ones."""

    body = (b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{"content":"lo"\n\n'  # cut: not JSON
            b'data: {"choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}]}\n\n'
            b"data: [DONE]\n\n")

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        await read_body(receive)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for part in self.body.split(b"\n\n")[:-1]:
            await send({"type": "http.response.body", "body": part + b"\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})


def test_unparseable_stream_events_make_the_exchange_partial(tmp_path):
    with ThreadedServer(BadEvents()) as server, running_proxy(tmp_path, server.url) as proxy:
        with httpx.stream("POST", proxy.url + "/chat/completions",
                          json={"model": "m", "messages": MESSAGES, "stream": True}) as r:
            got = r.read()
            eid = r.headers["x-shadoweval-exchange-id"]
        assert got == BadEvents.body  # the client gets production's bytes as they were
        ex, (out,), _ = stored(proxy.store, eid)
        assert ex.status == "partial" and out.status == "partial"
        assert out.text == "Hel!" and "1 stream event(s) could not be parsed" in out.error
        rows = {r.name: r for r in proxy.store.stats()[1]}
        assert rows["production"].partial == 1 and rows["production"].ok == 0
    text = subprocess.run([str(BIN), "stats", "--db", str(proxy.store.path)], capture_output=True, text=True,
                          check=True).stdout
    assert "partial" in text.splitlines()[1]


def test_capture_is_capped_and_the_client_gets_everything(tmp_path):
    cap = 64 * 1024
    word = "x" * 10_000
    mock = MockLLM(name="big")
    mock.answer = lambda req: " ".join([word] * 100)  # ~1 MB, in 100 stream events of 10 kB
    expected = " ".join([word] * 100)
    with ThreadedServer(mock) as server, running_proxy(tmp_path, server.url,
                                                       store={"max_capture_bytes": cap}) as proxy:
        kept: list[int] = []
        capture = proxy.app._capture

        def measured(c):
            kept.append(sum(map(len, c.answer.pieces)))
            capture(c)

        proxy.app._capture = measured
        client = openai.OpenAI(base_url=proxy.url, api_key="k")
        for _ in range(10):
            r = client.chat.completions.create(model="m", messages=MESSAGES)
            assert r.choices[0].message.content == expected
            chunks = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected
        long_prompt = "y" * (cap * 3)
        r = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": long_prompt}], max_tokens=5)
        assert json.loads(mock.requests[-1].body)["messages"][0]["content"] == long_prompt  # production got it all
        prompt_id = r.headers["x-shadoweval-exchange-id"]
        assert proxy.store.flush()
        ids = proxy.store.exchange_ids()
        assert len(ids) == 21
        for eid in ids:
            ex, (out,), _ = stored(proxy.store, eid)
            assert out.truncated and len(out.text.encode()) <= cap
            assert out.original_bytes >= len(expected) and out.text == expected[:len(out.text)]
            if eid == prompt_id:
                assert ex.truncated and ex.request_bytes > cap * 3
                assert len(ex.request["messages"][0]["content"]) == cap
            else:
                assert not ex.truncated
        # the proxy's copy of a streamed answer stops growing at 4 x the cap (plus one piece)
        assert max(kept[1:20:2]) <= 4 * cap + 20_000
        assert Path(proxy.store.path).stat().st_size < 5 * 1024 * 1024


def test_broken_production_stream_logs_one_json_line(tmp_path):
    prod = MockLLM(name="p", behaviour="break_stream")
    with ThreadedServer(prod) as ps:
        cfg = tmp_path / "shadoweval.toml"
        cfg.write_text(f'[production]\nbase_url = "{ps.url}/v1"\n[server]\nlog_format = "json"\n'
                       '[judges]\nbackground = false\n')
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([str(BIN), "serve", "--config", str(cfg), "--port", str(port),
                                 "--db", str(tmp_path / "s.db")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(url + "/healthz", timeout=1)
                    break
                except httpx.HTTPError:
                    assert time.monotonic() < deadline and proc.poll() is None
                    time.sleep(0.1)
            for _ in range(3):
                with httpx.stream("POST", url + "/v1/chat/completions",
                                  json={"model": "m", "messages": MESSAGES, "stream": True}) as r:
                    with pytest.raises(httpx.RemoteProtocolError):
                        r.read()
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = err.decode().splitlines()
    entries = [orjson.loads(line) for line in lines]  # every line is one JSON object
    broke = [e for e in entries if e["event"] == "production stream broke; client connection aborted"]
    assert len(broke) == 3 and all(e["logger"] == "uvicorn.error" and len(e["exchange_id"]) == 26 for e in broke)
    assert not any("exception" in e for e in broke) and "Traceback" not in err.decode()
