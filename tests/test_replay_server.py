"""The replay server through the official openai client, over a real uvicorn server on 127.0.0.1.

The server's whole point is that an app's tests can use it in place of a model, so every behaviour
is checked the way an app would see it: through `openai.OpenAI` / `openai.AsyncOpenAI`, streaming
included, and through raw httpx only where the client would hide the wire format.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
import pytest

from shadoweval.cli.mockllm import ThreadedServer
from shadoweval.core.types import EvalItem, EvalSet
from shadoweval.datasets.evalsets.keys import request_key
from shadoweval.datasets.evalsets.replay_server import replay_app

REFUND = [{"role": "system", "content": "You answer questions about the shop's policies."},
          {"role": "user", "content": "How long do I have to return an item?"}]
SHIPPING = [{"role": "user", "content": "Do you ship to Norway?"}]
WARRANTY = [{"role": "user", "content": "Is there a warranty on laptops?"}]
RESPONSES_REQUEST = {"model": "prod-model", "instructions": "Be brief.", "input": "Summarize the refund policy."}


def _item(request: dict[str, Any], target: str | None, outputs: dict[str, str]) -> EvalItem:
    return EvalItem(key=request_key(request), request=request, target=target, outputs=outputs)


def _evalset() -> EvalSet:
    items = (
        _item({"model": "prod-model", "messages": REFUND, "temperature": 0},
              "You have 30 days to return an item, with the receipt.",
              {"production": "Returns are accepted for 30 days.", "cand-a": "30 days."}),
        # No target: "target" falls back to production's answer.
        _item({"model": "prod-model", "messages": SHIPPING}, None,
              {"production": "Yes, we ship to Norway.", "cand-a": "We ship across Europe."}),
        # No cand-a output: asking for cand-a's answer to this one must fail loudly, not answer "".
        _item({"model": "other-prod-model", "messages": WARRANTY}, "Two years on all laptops.",
              {"production": "Laptops have a 2-year warranty."}),
        _item(RESPONSES_REQUEST, "Refunds within 30 days with a receipt.", {"production": "30-day refunds."}),
    )
    return EvalSet(id="es_test", name="support", version=3, created_at=1_700_000_000.0, manifest={}, items=items)


@contextmanager
def served(answer: str = "target") -> Iterator[tuple[str, Any]]:
    app = replay_app(_evalset(), answer=answer)
    with ThreadedServer(app) as server:
        yield server.url, app


@contextmanager
def client_for(answer: str = "target") -> Iterator[tuple[openai.OpenAI, Any]]:
    with served(answer) as (url, app), openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client:
        yield client, app


def test_known_request_gets_its_target_with_key_header_and_usage() -> None:
    with client_for() as (client, app):
        raw = client.chat.completions.with_raw_response.create(model="prod-model", messages=REFUND)
        completion = raw.parse()
    assert raw.headers["x-shadoweval-replay-key"] == request_key({"messages": REFUND})
    assert completion.object == "chat.completion"
    assert completion.model == "prod-model"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "You have 30 days to return an item, with the receipt."
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 11  # whitespace words
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 11
    assert app.counters.served == 1


def test_streaming_joins_to_the_target_and_ends_with_usage() -> None:
    with client_for() as (client, _):
        stream = client.chat.completions.create(model="prod-model", messages=REFUND, stream=True,
                                                stream_options={"include_usage": True})
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You have 30 days to return an item, with the receipt."
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # really streamed, word by word
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 11


@pytest.mark.asyncio
async def test_async_streaming_without_usage() -> None:
    with served() as (url, _):
        async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client:
            stream = await client.chat.completions.create(model="prod-model", messages=SHIPPING, stream=True)
            chunks = [c async for c in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Yes, we ship to Norway."  # production fallback
    assert all(c.usage is None and c.choices for c in chunks)  # no usage chunk unless asked for


def test_model_name_and_sampling_do_not_change_the_match() -> None:
    with client_for() as (client, _):
        completion = client.chat.completions.create(model="gpt-something-else", messages=REFUND, temperature=0.9,
                                                    top_p=0.5, max_tokens=7, seed=1)
    assert completion.choices[0].message.content == "You have 30 days to return an item, with the receipt."
    assert completion.model == "gpt-something-else"  # echoes what was asked for, as a real API would


def test_unknown_request_is_a_404_naming_the_key() -> None:
    other = [{"role": "user", "content": "What is the meaning of life?"}]
    with client_for() as (client, app):
        with pytest.raises(openai.NotFoundError) as info:
            client.chat.completions.create(model="prod-model", messages=other)
    key = request_key({"messages": other})
    assert info.value.code == "not_found"
    assert f"(key {key})" in info.value.message
    assert "The eval set support@3 has 4 items." in info.value.message
    assert info.value.response.headers["x-shadoweval-replay-key"] == key
    assert (app.counters.served, app.counters.unknown) == (0, 1)


@pytest.mark.parametrize(("answer", "expected"), [
    ("target", ["You have 30 days to return an item, with the receipt.", "Yes, we ship to Norway."]),
    ("production", ["Returns are accepted for 30 days.", "Yes, we ship to Norway."]),
    ("cand-a", ["30 days.", "We ship across Europe."]),
])
def test_answer_chooses_which_recorded_text(answer: str, expected: list[str]) -> None:
    with client_for(answer) as (client, _):
        got = [client.chat.completions.create(model="m", messages=m).choices[0].message.content
               for m in (REFUND, SHIPPING)]
    assert got == expected


def test_known_request_without_the_chosen_answer_is_a_404() -> None:
    with client_for("cand-a") as (client, app):
        with pytest.raises(openai.NotFoundError, match="no recorded 'cand-a' answer"):
            client.chat.completions.create(model="m", messages=WARRANTY)
    assert app.counters.unanswered == 1


def test_an_answer_name_no_item_has_is_refused_up_front() -> None:
    with pytest.raises(ValueError, match="cand-typo"):
        replay_app(_evalset(), answer="cand-typo")


def test_responses_api_answers_non_streaming_and_refuses_streaming() -> None:
    with client_for() as (client, _):
        response = client.responses.create(model="prod-model", instructions="Be brief.",
                                           input="Summarize the refund policy.")
        with pytest.raises(openai.BadRequestError, match="Streaming is not supported for /v1/responses"):
            client.responses.create(model="prod-model", instructions="Be brief.",
                                    input="Summarize the refund policy.", stream=True)
    assert response.status == "completed"
    assert response.output_text == "Refunds within 30 days with a receipt."
    assert response.model == "prod-model"
    assert response.usage is not None and response.usage.output_tokens == 7


def test_models_lists_the_evalset_then_the_recorded_models() -> None:
    with client_for() as (client, _):
        ids = [m.id for m in client.models.list()]
    assert ids == ["support@3", "prod-model", "other-prod-model"]


def test_bad_requests_get_openai_shaped_400s() -> None:
    with served() as (url, app), httpx.Client(base_url=url) as http:
        bad_json = http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        no_messages = http.post("/v1/chat/completions", json={"model": "prod-model"})
        no_input = http.post("/v1/responses", json={"model": "prod-model"})
        wrong_url = http.post("/v1/embeddings", json={"input": "x"})
        health = http.get("/healthz").json()
    for r in (bad_json, no_messages, no_input):
        assert r.status_code == 400
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
    assert no_messages.json()["error"]["param"] == "messages"
    assert no_input.json()["error"]["param"] == "input"
    assert wrong_url.status_code == 404 and wrong_url.json()["error"]["code"] == "unknown_url"
    assert app.counters.invalid == 3
    assert health == {"status": "ok", "evalset": "support@3", "items": 4, "answer": "target", "served": 0,
                      "unknown": 0, "unanswered": 0, "invalid": 3}
