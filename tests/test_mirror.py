"""Mirroring to candidates: same requests, their own model names, never in production's way."""

from __future__ import annotations

import time

import openai
import pytest

from shadoweval.cli.mockllm import MockLLM, ThreadedServer, free_port
from shadoweval.proxy.mirror import sample_unit

from .conftest import running_proxy

MESSAGES = [{"role": "user", "content": "How do refunds work?"}]


def _outputs(proxy, exchange_id, n, timeout=15.0):
    """The exchange's outputs once `n` of them are stored."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proxy.store.flush()
        found = proxy.store.get_exchange(exchange_id)
        if found and len(found[1]) >= n:
            return {o.name: o for o in found[1]}
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} outputs for {exchange_id}")


def test_candidates_get_same_request_with_their_model(production, tmp_path):
    prod_mock, prod = production
    cand_mock = MockLLM(name="cand", chunk_delay_s=0.001)
    with ThreadedServer(cand_mock) as cand:
        candidates = [{"name": "small", "model": "small-model-v2", "base_url": cand.url + "/v1",
                       "api_key_env": "CAND_KEY"}]
        with running_proxy(tmp_path, prod.url, candidates=candidates, env={"CAND_KEY": "sk-cand"}) as proxy:
            client = openai.OpenAI(base_url=proxy.url, api_key="sk-client")
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=MESSAGES, temperature=0.3, max_tokens=50)
            outs = _outputs(proxy, raw.headers["x-shadoweval-exchange-id"], 2)
            sent = cand_mock.requests[0]
            assert sent.json["model"] == "small-model-v2"
            assert sent.json["messages"] == MESSAGES and sent.json["temperature"] == 0.3 and sent.json["max_tokens"] == 50
            assert sent.headers["authorization"] == "Bearer sk-cand"  # its own key, never the client's
            assert outs["small"].role == "candidate" and outs["small"].status == "ok"
            assert outs["small"].text == "cand says: How do refunds work?"
            assert outs["production"].text == "prod-model says: How do refunds work?"

            # a streaming request is mirrored as streaming, with its own time to first token
            with client.chat.completions.with_streaming_response.create(
                    model="gpt-4o", messages=MESSAGES, stream=True) as s:
                sid = s.headers["x-shadoweval-exchange-id"]
                list(s.parse())
            outs = _outputs(proxy, sid, 2)
            assert cand_mock.requests[1].json["stream"] is True
            assert outs["small"].stream and outs["small"].ttft_ms is not None
            assert outs["small"].usage.completion_tokens == 6


def test_tool_calls_are_recorded_not_executed(production, tmp_path):
    _, prod = production
    cand_mock = MockLLM(name="cand")
    tools = [{"type": "function", "function": {"name": "refund", "parameters": {"type": "object"}}}]
    with ThreadedServer(cand_mock) as cand:
        candidates = [{"name": "c", "model": "m2", "base_url": cand.url + "/v1"}]
        with running_proxy(tmp_path, prod.url, candidates=candidates) as proxy:
            client = openai.OpenAI(base_url=proxy.url, api_key="k")
            raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES, tools=tools)
            outs = _outputs(proxy, raw.headers["x-shadoweval-exchange-id"], 2)
            assert outs["c"].tool_calls[0]["function"]["name"] == "refund"
            assert len(cand_mock.requests) == 1  # nothing was called back with a tool result


@pytest.mark.parametrize("behaviour", ["hang", "garbage", "error500", "error400", "break_stream", "down"])
def test_bad_candidate_changes_nothing_for_production(production, tmp_path, behaviour):
    prod_mock, prod = production
    bad = MockLLM(name="bad", behaviour="ok" if behaviour == "down" else behaviour)
    with ThreadedServer(bad) as cand:
        url = f"http://127.0.0.1:{free_port()}/v1" if behaviour == "down" else cand.url + "/v1"
        candidates = [{"name": "bad", "model": "b", "base_url": url, "timeout_s": 1.0}]
        with running_proxy(tmp_path, prod.url, candidates=candidates) as proxy:
            client = openai.OpenAI(base_url=proxy.url, api_key="k", max_retries=0, timeout=5)
            stream = behaviour == "break_stream"
            t0 = time.monotonic()
            if stream:
                with client.chat.completions.with_streaming_response.create(
                        model="m", messages=MESSAGES, stream=True) as s:
                    eid = s.headers["x-shadoweval-exchange-id"]
                    text = "".join(c.choices[0].delta.content or "" for c in s.parse() if c.choices)
            else:
                raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
                eid = raw.headers["x-shadoweval-exchange-id"]
                text = raw.parse().choices[0].message.content
            assert time.monotonic() - t0 < 0.9  # production did not wait for the candidate
            assert text == "prod-model says: How do refunds work?"
            outs = _outputs(proxy, eid, 2)
            assert outs["production"].status == "ok"
            expected = "timeout" if behaviour == "hang" else "error"
            assert outs["bad"].status == expected and outs["bad"].error
            kind = "timeout" if behaviour == "hang" else "error"
            assert proxy.app.metrics.get("shadoweval_candidate_errors_total", candidate="bad", kind=kind) == 1
            if behaviour.startswith("error"):
                assert outs["bad"].http_status == int(behaviour[5:])


def test_full_queue_drops_and_counts(production, tmp_path):
    _, prod = production
    slow = MockLLM(name="slow", latency_s=2.0)
    with ThreadedServer(slow) as cand:
        candidates = [{"name": "slow", "model": "s", "base_url": cand.url + "/v1", "concurrency": 1}]
        with running_proxy(tmp_path, prod.url, candidates=candidates, mirror={"queue_size": 2}) as proxy:
            client = openai.OpenAI(base_url=proxy.url, api_key="k")
            for i in range(8):
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
            m = proxy.app.metrics
            # one in flight, two queued, the rest dropped and counted
            assert m.get("shadoweval_mirrored_total", candidate="slow") == 3
            assert m.get("shadoweval_mirror_dropped_total", candidate="slow", reason="queue_full") == 5


def test_sampling_is_deterministic_and_nested(production, tmp_path):
    _, prod = production
    a, b, c = MockLLM(name="a"), MockLLM(name="b"), MockLLM(name="c")
    with ThreadedServer(a) as sa, ThreadedServer(b) as sb, ThreadedServer(c) as sc:
        candidates = [
            {"name": "a", "model": "a", "base_url": sa.url + "/v1", "sample_rate": 0.3},
            {"name": "b", "model": "b", "base_url": sb.url + "/v1", "sample_rate": 0.3},
            {"name": "c", "model": "c", "base_url": sc.url + "/v1", "sample_rate": 0.6},
        ]
        with running_proxy(tmp_path, prod.url, candidates=candidates) as proxy:
            client = openai.OpenAI(base_url=proxy.url, api_key="k")
            questions = [f"question number {i}" for i in range(60)]
            for q in questions:
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": q}])
            units = {q: sample_unit({"messages": [{"role": "user", "content": q}]}) for q in questions}
            expected_a = [q for q in questions if units[q] < 0.3]
            expected_c = [q for q in questions if units[q] < 0.6]
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (len(a.requests) < len(expected_a) or len(b.requests) < len(
                    expected_a) or len(c.requests) < len(expected_c)):
                time.sleep(0.05)
            time.sleep(0.1)  # nothing more may arrive
            seen = {name: sorted(r.json["messages"][0]["content"] for r in m.requests) for name, m in
                    {"a": a, "b": b, "c": c}.items()}
            assert seen["a"] == seen["b"] == sorted(expected_a)  # same rate, same subset
            assert seen["c"] == sorted(expected_c) and set(seen["a"]) <= set(seen["c"])  # a higher rate: a superset
            assert 8 <= len(seen["a"]) <= 30 and len(seen["c"]) > len(seen["a"])
            # the model name, streaming flag and user do not change the sample
            base = {"messages": [{"role": "user", "content": "x"}]}
            assert sample_unit({**base, "model": "a", "stream": True, "user": "u"}) == sample_unit({**base, "model": "b"})


def test_filters_by_route_and_tags(production, tmp_path):
    _, prod = production
    billing, chat_only = MockLLM(name="billing"), MockLLM(name="chat-only")
    with ThreadedServer(billing) as sb, ThreadedServer(chat_only) as sc:
        candidates = [
            {"name": "billing", "model": "x", "base_url": sb.url + "/v1", "tags": {"route": "billing"}},
            {"name": "chat-only", "model": "y", "base_url": sc.url + "/v1", "routes": ["/v1/chat/completions"]},
        ]
        with running_proxy(tmp_path, prod.url, candidates=candidates) as proxy:
            client = openai.OpenAI(base_url=proxy.url, api_key="k")
            client.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-shadoweval-tags": "route=billing"})
            client.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-shadoweval-tags": "route=search"})
            client.responses.create(model="m", input="hi", extra_headers={"x-shadoweval-tags": "route=billing"})
            proxy.store.flush()
            time.sleep(0.3)
            assert len(billing.requests) == 2  # the billing chat request and the billing responses request
            assert billing.requests[1].path == "/v1/responses"
            assert [r.path for r in chat_only.requests] == ["/v1/chat/completions"] * 2


def test_daily_request_budget(production, tmp_path):
    _, prod = production
    cand_mock = MockLLM(name="cand")
    with ThreadedServer(cand_mock) as cand:
        candidates = [{"name": "capped", "model": "x", "base_url": cand.url + "/v1", "daily_requests": 3}]
        with running_proxy(tmp_path, prod.url, candidates=candidates) as proxy:
            client = openai.OpenAI(base_url=proxy.url, api_key="k")
            for i in range(5):
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
            m = proxy.app.metrics
            assert m.get("shadoweval_mirrored_total", candidate="capped") == 3
            assert m.get("shadoweval_mirror_dropped_total", candidate="capped", reason="budget") == 2


def test_production_twin_resends_to_production(production, tmp_path):
    prod_mock, prod = production
    with running_proxy(tmp_path, prod.url, twin={"sample_rate": 1.0}) as proxy:
        client = openai.OpenAI(base_url=proxy.url, api_key="sk-client")
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
        outs = _outputs(proxy, raw.headers["x-shadoweval-exchange-id"], 2)
        assert outs["production-twin"].role == "twin" and outs["production-twin"].status == "ok"
        assert len(prod_mock.requests) == 2
        twin_req = prod_mock.requests[1]
        assert twin_req.json["model"] == "gpt-4o"  # production's own model
        assert twin_req.headers["authorization"] == "Bearer sk-client"


def test_litellm_candidate_against_local_server(production, tmp_path):
    """The litellm path (aiohttp inside) talks real HTTP to a local OpenAI-compatible server."""
    _, prod = production
    cand_mock = MockLLM(name="via-litellm")
    with ThreadedServer(cand_mock) as cand:
        candidates = [{"name": "ll", "model": "openai/gpt-4o-mini", "api_base": cand.url + "/v1",
                       "api_key_env": "LL_KEY", "timeout_s": 30}]
        with running_proxy(tmp_path, prod.url, candidates=candidates, env={"LL_KEY": "sk-ll"}) as proxy:
            client = openai.OpenAI(base_url=proxy.url, api_key="k")
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, temperature=0)
            outs = _outputs(proxy, raw.headers["x-shadoweval-exchange-id"], 2, timeout=60)
            assert outs["ll"].status == "ok", outs["ll"].error
            assert outs["ll"].text == "via-litellm says: How do refunds work?"
            assert cand_mock.requests[0].json["model"] == "gpt-4o-mini"
            assert cand_mock.requests[0].headers["authorization"] == "Bearer sk-ll"
            assert outs["ll"].cost_usd is not None and outs["ll"].cost_usd > 0  # litellm's price table
            with client.chat.completions.with_streaming_response.create(model="gpt-4o", messages=MESSAGES, stream=True) as s:
                sid = s.headers["x-shadoweval-exchange-id"]
                list(s.parse())
            outs = _outputs(proxy, sid, 2, timeout=30)
            assert outs["ll"].status == "ok" and outs["ll"].stream and outs["ll"].ttft_ms is not None
            assert outs["ll"].text == "via-litellm says: How do refunds work?"


def test_litellm_candidate_mirrors_responses_api(production, tmp_path):
    _, prod = production
    cand_mock = MockLLM(name="via-litellm")
    with ThreadedServer(cand_mock) as cand:
        candidates = [{"name": "ll", "model": "openai/gpt-4o-mini", "api_base": cand.url + "/v1", "timeout_s": 30}]
        with running_proxy(tmp_path, prod.url, candidates=candidates, env={}) as proxy:
            client = openai.OpenAI(base_url=proxy.url, api_key="k")
            raw = client.responses.with_raw_response.create(model="gpt-4.1", input="Summarise the refund policy")
            outs = _outputs(proxy, raw.headers["x-shadoweval-exchange-id"], 2, timeout=60)
            assert outs["ll"].status == "ok", outs["ll"].error
            assert outs["ll"].text == "via-litellm says: Summarise the refund policy"
            assert cand_mock.requests[0].path == "/v1/responses"
