"""The official openai client against the proxy: answers must be what production itself gives."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from shadoweval.cli.mockllm import MockLLM, ThreadedServer

from .conftest import running_proxy, stored

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is shadow mode?"}]


def _wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_sync_non_streaming_matches_direct(production, tmp_path):
    mock, server = production
    direct = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-client")
    with running_proxy(tmp_path, server.url) as proxy:
        via = openai.OpenAI(base_url=proxy.url, api_key="sk-client")
        raw = via.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.2)
        got = raw.parse()
        want = direct.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, temperature=0.2)
        assert got.choices[0].message.content == want.choices[0].message.content
        assert got.model_dump(exclude={"created"}) == want.model_dump(exclude={"created"})
        exchange_id = raw.headers["x-shadoweval-exchange-id"]
        assert len(exchange_id) == 26

        # the body reached production unchanged, with the client's own key
        received = mock.requests[0]
        assert received.json["temperature"] == 0.2 and received.json["messages"] == MESSAGES
        assert received.headers["authorization"] == "Bearer sk-client"

        assert proxy.store.flush()
        ex, outputs, _ = proxy.store.get_exchange(exchange_id)
        assert ex.route == "/v1/chat/completions" and ex.request["messages"] == MESSAGES and not ex.stream
        (prod,) = outputs
        assert prod.role == "production" and prod.status == "ok"
        assert prod.text == want.choices[0].message.content
        assert prod.usage.total_tokens == want.usage.total_tokens
        assert prod.latency_ms > 0 and prod.finish_reason == "stop"


def test_unknown_fields_and_tools_pass_through_unchanged(production, tmp_path):
    mock, server = production
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    with running_proxy(tmp_path, server.url) as proxy:
        body = {"model": "m", "messages": MESSAGES, "tools": tools, "n": 1, "logprobs": False,
                "response_format": {"type": "text"}, "x_vendor_field": {"nested": [1, 2]}}
        raw_bytes = json.dumps(body, indent=1).encode()  # odd formatting must survive byte for byte
        r = httpx.post(proxy.url + "/chat/completions", content=raw_bytes,
                       headers={"content-type": "application/json", "authorization": "Bearer k"})
        assert r.status_code == 200
        assert mock.requests[-1].body == raw_bytes
        assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"
        assert proxy.store.flush()
        _, outputs, _ = proxy.store.get_exchange(r.headers["x-shadoweval-exchange-id"])
        assert outputs[0].tool_calls[0]["function"]["name"] == "lookup"
        assert outputs[0].finish_reason == "tool_calls"


def test_streaming_matches_direct_and_is_captured(tmp_path):
    mock = MockLLM(name="prod-model", chunk_delay_s=0.001)
    with ThreadedServer(mock) as server, running_proxy(tmp_path, server.url) as proxy:
        direct = openai.OpenAI(base_url=server.url + "/v1", api_key="k")
        via = openai.OpenAI(base_url=proxy.url, api_key="k")
        kwargs = dict(model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
        want = [c.model_dump(exclude={"created"}) for c in direct.chat.completions.create(**kwargs)]
        with via.chat.completions.with_streaming_response.create(**kwargs) as resp:
            exchange_id = resp.headers["x-shadoweval-exchange-id"]
            got = [c.model_dump(exclude={"created"}) for c in resp.parse()]
        assert got == want
        # the capture is handed to the store just after the last byte, so it may trail the client
        ex, (prod,), _ = stored(proxy.store, exchange_id)
        assert ex.stream and prod.stream
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in want if c["choices"])
        assert prod.text == text and prod.status == "ok"
        assert prod.usage.completion_tokens == want[-1]["usage"]["completion_tokens"]
        assert 0 < prod.ttft_ms <= prod.latency_ms


def test_stream_chunks_are_forwarded_as_they_arrive(tmp_path):
    """The second chunk is held back by production until the client has seen the first."""
    import threading

    release = threading.Event()

    class Gated(MockLLM):
        async def _sse(self, send, chunks, behaviour):
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
            await send({"type": "http.response.body", "body": chunks[0], "more_body": True})
            while not release.is_set():
                await asyncio.sleep(0.005)
            for c in chunks[1:]:
                await send({"type": "http.response.body", "body": c, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    with ThreadedServer(Gated()) as server, running_proxy(tmp_path, server.url) as proxy:
        via = openai.OpenAI(base_url=proxy.url, api_key="k", timeout=10)
        stream = via.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        first = next(iter(stream))  # would hang (timeout) if the proxy buffered the stream
        assert first.choices[0].delta.role == "assistant"
        release.set()
        rest = list(stream)
        assert rest[-1].choices[0].finish_reason == "stop"


@pytest.mark.asyncio
async def test_async_client_concurrent_requests(production, tmp_path):
    mock, server = production
    with running_proxy(tmp_path, server.url) as proxy:
        client = openai.AsyncOpenAI(base_url=proxy.url, api_key="k")
        questions = [f"question {i}" for i in range(20)]
        results = await asyncio.gather(*[
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}]) for q in questions
        ])
        assert [r.choices[0].message.content for r in results] == [f"prod-model says: {q}" for q in questions]
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "prod-model says: What is shadow mode?"
        await client.close()
        assert proxy.store.flush()
        assert len(proxy.store.exchange_ids()) == 21


def test_responses_api_forwarded_and_captured(production, tmp_path):
    mock, server = production
    with running_proxy(tmp_path, server.url) as proxy:
        via = openai.OpenAI(base_url=proxy.url, api_key="k")
        raw = via.responses.with_raw_response.create(model="gpt-4.1", input="Hello there")
        resp = raw.parse()
        assert resp.output_text == "prod-model says: Hello there"
        with via.responses.with_streaming_response.create(model="gpt-4.1", input="Stream it", stream=True) as s:
            sid = s.headers["x-shadoweval-exchange-id"]
            events = list(s.parse())
        assert events[-1].type == "response.completed"
        assert proxy.store.flush()
        _, (out,), _ = proxy.store.get_exchange(raw.headers["x-shadoweval-exchange-id"])
        assert out.text == "prod-model says: Hello there" and out.usage.total_tokens == 6
        ex, (sout,), _ = proxy.store.get_exchange(sid)
        assert ex.route == "/v1/responses" and ex.stream and sout.text == "prod-model says: Stream it"
        assert sout.ttft_ms is not None


def test_other_routes_forwarded_transparently(production, tmp_path):
    mock, server = production
    with running_proxy(tmp_path, server.url) as proxy:
        via = openai.OpenAI(base_url=proxy.url, api_key="k")
        assert [m.id for m in via.models.list()] == ["prod-model"]
        emb = via.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        assert len(emb.data) == 2
        comp = via.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
        assert comp.choices[0].text == "prod-model says: Say hi"
        r = httpx.get(proxy.url + "/models?limit=5", headers={"authorization": "Bearer k"})
        assert mock.requests[-1].path == "/v1/models"
        assert r.headers["x-shadoweval-exchange-id"]
        assert proxy.store.flush()
        assert proxy.store.exchange_ids() == []  # only chat completions and responses are stored


def test_tags_from_header_user_and_metadata(production, tmp_path):
    mock, server = production
    with running_proxy(tmp_path, server.url) as proxy:
        via = openai.OpenAI(base_url=proxy.url, api_key="k")
        raw = via.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, user="u-42", metadata={"feature": "search"},
            extra_headers={"x-shadoweval-tags": "route=billing, tenant=acme"},
        )
        assert "x-shadoweval-tags" not in mock.requests[-1].headers  # the proxy's own headers stay here
        assert proxy.store.flush()
        ex, _, _ = proxy.store.get_exchange(raw.headers["x-shadoweval-exchange-id"])
        assert ex.tags == {"route": "billing", "tenant": "acme", "user": "u-42", "feature": "search"}
