"""Real RAG traffic (../shared/data/replay_rag_requests.jsonl) replayed through the proxy."""

from __future__ import annotations

import asyncio
import json
import time

import openai
import pytest

from shadoweval.cli.mockllm import MockLLM, ThreadedServer

from .conftest import SHARED_DATA, running_proxy

REPLAY = SHARED_DATA / "replay_rag_requests.jsonl"
pytestmark = pytest.mark.skipif(not REPLAY.exists(), reason="shared data not present")


def _rows(n: int) -> list[dict]:
    with REPLAY.open() as f:
        return [json.loads(line) for _, line in zip(range(n), f, strict=False)]


@pytest.mark.asyncio
async def test_replayed_rag_traffic_is_forwarded_captured_and_mirrored(production, tmp_path):
    prod_mock, prod = production
    cand = MockLLM(name="cand")
    rows = _rows(60)
    with ThreadedServer(cand) as cs:
        candidates = [{"name": "cand", "model": "cand-model", "base_url": cs.url + "/v1", "concurrency": 8}]
        # redaction off: the stored request must equal what the app sent, byte for byte in JSON terms
        off = {"emails": False, "card_numbers": False, "phone_numbers": False}
        with running_proxy(tmp_path, prod.url, candidates=candidates, redaction=off) as proxy:
            client = openai.AsyncOpenAI(base_url=proxy.url, api_key="k")
            sem = asyncio.Semaphore(8)

            async def send(row: dict) -> str:
                async with sem:
                    req = row["request"]
                    tags = f"collection={row['meta']['collection']},answerable={row['meta']['answerability'][0]}"
                    raw = await client.chat.completions.with_raw_response.create(
                        model=req["model"], messages=req["messages"], extra_headers={"x-shadoweval-tags": tags})
                    assert raw.parse().choices[0].message.content.startswith("prod-model says:")
                    return raw.headers["x-shadoweval-exchange-id"]

            ids = await asyncio.gather(*[send(r) for r in rows])
            await client.close()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and len(cand.requests) < len(rows):
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            assert proxy.store.flush()
            for row, eid in zip(rows, ids, strict=True):
                ex, outputs, _ = proxy.store.get_exchange(eid)
                assert ex.request["messages"] == row["request"]["messages"]
                assert ex.tags["collection"] == row["meta"]["collection"]
                assert {o.name: o.status for o in outputs} == {"production": "ok", "cand": "ok"}
            sent_to_candidate = sorted(json.dumps(r.json["messages"]) for r in cand.requests)
            assert sent_to_candidate == sorted(json.dumps(r["request"]["messages"]) for r in rows)
            assert len(prod_mock.requests) == len(rows)
