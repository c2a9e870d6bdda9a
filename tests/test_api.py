"""The proxy's own surface: feedback, proxy keys, health, metrics, secrets and redaction."""

from __future__ import annotations

import asyncio
import sqlite3

import httpx
import openai
import pytest

from shadoweval import judges
from shadoweval.judges.runner import plan, run_plan

from .conftest import running_proxy

MESSAGES = [{"role": "user", "content": "hello"}]


def _exchange_id(proxy, **kw):
    client = openai.OpenAI(base_url=proxy.url, api_key=kw.pop("api_key", "sk-client"))
    raw = client.chat.completions.with_raw_response.create(model="m", messages=kw.pop("messages", MESSAGES), **kw)
    return raw.headers["x-shadoweval-exchange-id"]


def test_feedback_is_stored_against_the_exchange(production, tmp_path):
    _, server = production
    with running_proxy(tmp_path, server.url) as proxy:
        eid = _exchange_id(proxy)  # posted at once: the exchange may still be in the writer's queue
        r = httpx.post(proxy.root + "/shadoweval/feedback", json={"exchange_id": eid, "rating": "down",
                                                                    "comment": "Wrong refund window.", "source": "widget"})
        assert r.status_code == 201, r.text
        r2 = httpx.post(proxy.root + "/shadoweval/feedback", json={"exchange_id": eid, "rating": 4})
        assert r2.status_code == 201
        assert proxy.store.flush()
        _, _, fbs = proxy.store.get_exchange(eid)
        assert sorted((f.rating, f.comment) for f in fbs) == [(-1.0, "Wrong refund window."), (4.0, None)]
        shown = httpx.get(proxy.root + f"/shadoweval/exchanges/{eid}").json()
        assert shown["exchange"]["id"] == eid and len(shown["feedback"]) == 2 and shown["outputs"][0]["role"] == "production"
        assert shown["verdicts"] == []
        # verdicts appear once a judge has run
        asyncio.run(run_plan(proxy.store, plan(proxy.store, [judges.create("checks")])))
        shown = httpx.get(proxy.root + f"/shadoweval/exchanges/{eid}").json()
        assert [(v["judge"], v["label"]) for v in shown["verdicts"]] == [("checks", "ok")]
        assert 'shadoweval_feedback_total 2' in httpx.get(proxy.root + "/metrics").text


@pytest.mark.parametrize("body, status, code", [
    ({"exchange_id": "01" + "0" * 24, "rating": 1}, 404, "not_found"),
    ({"exchange_id": "short", "rating": 1}, 400, "invalid_value"),
    ({"rating": 1}, 400, "invalid_value"),
    ({"exchange_id": "01" + "0" * 24}, 400, "invalid_value"),
    ({"exchange_id": "01" + "0" * 24, "rating": "meh"}, 400, "invalid_value"),
])
def test_feedback_bad_input_gets_openai_errors(production, tmp_path, body, status, code):
    _, server = production
    with running_proxy(tmp_path, server.url) as proxy:
        r = httpx.post(proxy.root + "/shadoweval/feedback", json=body)
        assert r.status_code == status
        err = r.json()["error"]
        assert err["code"] == code and err["message"] and "type" in err


def test_proxy_keys_required_when_configured(production, tmp_path):
    mock, server = production
    env = {"PKEYS": "pk-one, pk-two"}
    with running_proxy(tmp_path, server.url, env=env, server={"proxy_keys_env": "PKEYS"}) as proxy:
        client = openai.OpenAI(base_url=proxy.url, api_key="sk-client", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as err:
            client.chat.completions.create(model="m", messages=MESSAGES)
        assert err.value.body["code"] == "invalid_api_key"
        assert mock.requests == []
        ok = client.chat.completions.create(model="m", messages=MESSAGES, extra_headers={"x-shadoweval-key": "pk-two"})
        assert ok.choices[0].message.content == "prod-model says: hello"
        assert "x-shadoweval-key" not in mock.requests[0].headers
        assert mock.requests[0].headers["authorization"] == "Bearer sk-client"
        assert httpx.post(proxy.root + "/shadoweval/feedback", json={"exchange_id": "x" * 26, "rating": 1}).status_code == 401


def test_production_key_from_config_replaces_client_key(production, tmp_path):
    mock, server = production
    env = {"PROD_KEY": "sk-prod-secret", "PKEYS": "pk-app"}
    with running_proxy(tmp_path, server.url, env=env, production={"api_key_env": "PROD_KEY"},
                       server={"proxy_keys_env": "PKEYS"}) as proxy:
        client = openai.OpenAI(base_url=proxy.url, api_key="pk-app")  # the proxy key as bearer token
        client.chat.completions.create(model="m", messages=MESSAGES)
        assert mock.requests[0].headers["authorization"] == "Bearer sk-prod-secret"


def test_secrets_never_stored(production, tmp_path):
    _, server = production
    env = {"CAND_KEY": "sk-candidate-secret-123"}
    cands = [{"name": "c", "model": "x", "base_url": server.url + "/v1", "api_key_env": "CAND_KEY"}]
    with running_proxy(tmp_path, server.url, env=env, candidates=cands, twin={"sample_rate": 1.0}) as proxy:
        _exchange_id(proxy, api_key="sk-client-secret-456")
        import time
        time.sleep(0.5)
        assert proxy.store.flush()
        path = proxy.store.path
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert b"sk-client-secret-456" not in raw and b"sk-candidate-secret-123" not in raw
    assert b"prod-model says: hello" in raw  # the file does hold the captured exchange


def test_redaction_before_storage(production, tmp_path):
    _, server = production
    with running_proxy(tmp_path, server.url, redaction={"patterns": [r"ACME-\d{6}"]}) as proxy:
        text = "I am jane.doe@example.com, card 4242 4242 4242 4242, phone +1 (415) 555-0132, account ACME-123456."
        eid = _exchange_id(proxy, messages=[{"role": "user", "content": text}])
        assert proxy.store.flush()
        ex, (out,), _ = proxy.store.get_exchange(eid)
        stored = ex.request["messages"][0]["content"]
        assert stored == "I am [EMAIL], card [CARD], phone [PHONE], account [REDACTED]."
        assert "jane.doe" not in out.text and "[EMAIL]" in out.text  # the echoed answer too
        con = sqlite3.connect(proxy.store.path)
        assert not con.execute("select count(*) from outputs where text like '%4242%'").fetchone()[0]


def test_healthz_and_metrics(production, tmp_path):
    _, server = production
    with running_proxy(tmp_path, server.url) as proxy:
        _exchange_id(proxy)
        httpx.get(proxy.url + "/models")
        health = httpx.get(proxy.root + "/healthz").json()
        assert health["status"] == "ok" and health["store"]["ok"]
        assert proxy.store.flush()
        text = httpx.get(proxy.root + "/metrics").text
        assert 'shadoweval_requests_total{code="2xx",route="/v1/chat/completions"} 1' in text
        assert 'shadoweval_requests_total{code="2xx",route="/v1/models"} 1' in text
        assert 'shadoweval_store_written_total{kind="exchanges"} 1' in text
        assert "shadoweval_store_queue_depth 0" in text
        r = httpx.get(proxy.root + "/nope")
        assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
