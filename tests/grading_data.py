"""A store with queued, judged pairs and a configuration with two evaluators, for the grading tests."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from shadoweval.core.store import Store
from shadoweval.core.types import Exchange, GradingItem, Output, Verdict, new_id

# sign-in tokens strong enough for the configuration's check (16+ characters, varied, no common words)
ANN_TOKEN = "ann-Vq3xT9pLw2Rz7KmB"
BOB_TOKEN = "bob-H4nWc8YsJ1fQe6Ud"

# a hostile answer: shown as text, never run
NASTY = ('Sure! <script>window.pwned = 1</script> <img src=x onerror="window.pwned=2"> '
         '[click](javascript:window.pwned=3) **bold**')


def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "shadoweval.toml"
    cfg.write_text(f"""
[store]
path = "{tmp_path / 'grading.db'}"
flush_interval_ms = 5

[judges]
background = false

[[evaluators]]
name = "ann"
token_env = "TEST_TOKEN_ANN"
admin = true

[[evaluators]]
name = "bob"
token_sha256 = "{hashlib.sha256(BOB_TOKEN.encode()).hexdigest()}"
""")
    return cfg


def seed(store: Store, pairs: int = 3) -> list[GradingItem]:
    """`pairs` exchanges answered by production and candidate `secret-model`, judged, each queued."""
    items = []
    for i in range(pairs):
        ex = Exchange(id=new_id(), created_at=time.time() - 100 + i, route="/v1/chat/completions",
                      request={"model": "gpt-prod", "messages": [
                          {"role": "system", "content": "Answer from the documents.\n\n[1] Returns are free for 30 days."},
                          {"role": "user", "content": f"Question {i}: can I return it?"}]})
        prod = Output(id=new_id(), exchange_id=ex.id, role="production", name="production", model="gpt-prod",
                      status="ok", started_at=ex.created_at, text=f"Yes, within 30 days [1]. (production {i})")
        cand = Output(id=new_id(), exchange_id=ex.id, role="candidate", name="secret-model", model="secret-v2",
                      status="ok", started_at=ex.created_at, text=NASTY if i == 0 else f"No. (candidate {i})")
        for record in (ex, prod, cand):
            store.submit(record)
        for o, score in ((prod, 0.9), (cand, 0.2)):
            store.submit(Verdict(id=new_id(), output_id=o.id, exchange_id=ex.id, judge="grounded", version="1",
                                 args={"threshold": 0.5}, created_at=time.time(), score=score))
        item = GradingItem(id=new_id(), exchange_id=ex.id, candidate_output_id=cand.id,
                           production_output_id=prod.id, left="candidate" if i % 2 == 0 else "production",
                           policy="uniform", probability=1.0, inclusion_probability=1.0, evaluators=1,
                           slice="route=returns", created_at=ex.created_at, batch="b")
        store.submit(item)
        items.append(item)
    assert store.flush()
    return items
