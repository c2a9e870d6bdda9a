"""Building eval sets from a real store: filters, targets from people, near-duplicates, clusters,
redaction, content-hash versions, diff, and the `shadoweval evalset` commands."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shadoweval.core.redact import Redactor
from shadoweval.core.store import Store
from shadoweval.core.types import (
    AnswerLabels,
    Exchange,
    Feedback,
    Grade,
    GradingItem,
    Output,
    Verdict,
    new_id,
)
from shadoweval.datasets.evalsets.build import Filters, build, diff
from shadoweval.judges.embed import HashingEmbedder

BIN = Path(sys.executable).parent / "shadoweval"
EMBED = HashingEmbedder().encode


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "e.db", flush_interval_ms=5)
    s.start()
    yield s
    s.stop()


class Traffic:
    """Writes exchanges answered by production and candidate "cand", with what people said."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.t = time.time() - 3600
        self.items: dict[str, GradingItem] = {}  # a pair is queued once, then graded by several people

    def exchange(self, question: str, *, route: str = "billing", prod: str = "Production says.",
                 cand: str = "Candidate says.", tags: dict[str, str] | None = None) -> tuple[Exchange, Output, Output]:
        self.t += 1
        ex = Exchange(id=new_id(), created_at=self.t, route="/v1/chat/completions",
                      request={"model": "gpt", "messages": [
                          {"role": "system", "content": "Use the documents.\n\n[1] Refunds take 5 days."},
                          {"role": "user", "content": question}]},
                      tags={"route": route, **(tags or {})})
        p = Output(id=new_id(), exchange_id=ex.id, role="production", name="production", model="gpt",
                   status="ok", started_at=self.t, text=prod)
        c = Output(id=new_id(), exchange_id=ex.id, role="candidate", name="cand", model="c", status="ok",
                   started_at=self.t, text=cand)
        for r in (ex, p, c):
            self.store.submit(r)
        return ex, p, c

    def grade(self, ex: Exchange, p: Output, c: Output, *, winner: str, who: str = "ann", left: str = "production",
              corrected: str | None = None, keep: bool = False, grounded: tuple[str, str] | None = None) -> None:
        item = self.items.get(c.id) or GradingItem(
            id=new_id(), exchange_id=ex.id, candidate_output_id=c.id, production_output_id=p.id, left=left,
            policy="uniform", probability=1.0, inclusion_probability=1.0, evaluators=2, slice="route=x",
            created_at=self.t, batch="b")
        self.items[c.id] = item
        left = item.left
        side = {"tie": "tie", left: "left"}.get(winner, "right")
        labels = {}
        if grounded:  # (production's, candidate's)
            prod_l, cand_l = AnswerLabels(grounded[0]), AnswerLabels(grounded[1])
            labels = {"left_labels": prod_l if left == "production" else cand_l,
                      "right_labels": cand_l if left == "production" else prod_l}
        self.store.submit(item)
        self.store.submit(Grade(id=new_id(), item_id=item.id, evaluator=who, created_at=time.time(), preference=side,
                                corrected_answer=corrected, keep=keep, **labels))

    def verdict(self, o: Output, judge: str, score: float, label: str | None = None) -> None:
        self.store.submit(Verdict(id=new_id(), output_id=o.id, exchange_id=o.exchange_id, judge=judge, version="1",
                                  args={"threshold": 0.5}, created_at=time.time(), score=score, label=label))

    def done(self) -> None:
        assert self.store.flush()


def test_targets_come_from_people_first_and_say_so(store):
    tr = Traffic(store)
    corrected = tr.exchange("How long do refunds take?")
    tr.grade(*corrected, winner="candidate", corrected="Refunds take 5 business days [1].")
    preferred = tr.exchange("Can I get my money back?", cand="Yes, within 5 days [1].")
    tr.grade(*preferred, winner="candidate", left="candidate")
    tr.grade(*preferred, winner="candidate", who="bob")
    split = tr.exchange("Where is my invoice?")
    tr.grade(*split, winner="candidate")
    tr.grade(*split, winner="production", who="bob")  # one each: no preferred answer
    tr.exchange("Do you ship to Mars?")
    tr.done()
    es = build(store, "s", Filters(), embed=EMBED).evalset
    by_q = {i.request["messages"][-1]["content"]: i for i in es.items}
    item = by_q["How long do refunds take?"]
    assert (item.target, item.target_source) == ("Refunds take 5 business days [1].", "human-corrected")
    item = by_q["Can I get my money back?"]
    assert (item.target, item.target_source) == ("Yes, within 5 days [1].", "human-preferred")
    assert item.labels["human"]["winner_votes"] == {"production": 0, "candidate": 2, "tie": 0}
    assert (item.labels["human"]["preferred"], item.labels["human"]["rejected"]) == ("cand", "production")
    assert by_q["Where is my invoice?"].target_source == "production"
    assert "preferred" not in by_q["Where is my invoice?"].labels["human"]
    assert by_q["Do you ship to Mars?"].target_source == "production"
    assert es.items[0].outputs == {"production": "Production says.", "cand": "Candidate says."}
    only_human = build(store, "h", Filters(human_targets_only=True), embed=EMBED).evalset
    assert {i.target_source for i in only_human.items} == {"human-corrected", "human-preferred"}
    assert only_human.manifest["counts"]["excluded"] == {"no human target": 2}


def test_restrictions_narrow_and_signals_add_up(store):
    tr = Traffic(store)
    graded = tr.exchange("graded question", route="billing")
    tr.grade(*graded, winner="tie", keep=True)
    complaint = tr.exchange("complained question", route="billing")
    store.submit(Feedback(id=new_id(), exchange_id=complaint[0].id, created_at=time.time(), rating=-1))
    failing = tr.exchange("failing question", route="returns", tags={"tenant": "acme"})
    tr.verdict(failing[2], "grounded", 0.1)
    disagree = tr.exchange("disagreement question", route="returns")
    tr.verdict(disagree[1], "grounded", 0.9)  # the judge passes production...
    tr.grade(*disagree, winner="production", grounded=("no", "yes"))  # ...people say it is not grounded
    tr.exchange("plain question", route="returns")
    tr.done()

    def questions(**kw) -> set[str]:
        es = build(store, f"s{len(kw)}-{sorted(kw)}", Filters(**kw), embed=EMBED, dedup=0).evalset
        return {i.request["messages"][-1]["content"].split()[0] for i in es.items}

    assert questions() == {"graded", "complained", "failing", "disagreement", "plain"}
    assert questions(routes=("billing",)) == {"graded", "complained"}
    assert questions(routes=("ret*",), tags={"tenant": "acme"}) == {"failing"}
    assert questions(graded=True) == {"graded", "disagreement"}
    assert questions(kept=True) == {"graded"}
    assert questions(complaints=True, failed=("grounded",)) == {"complained", "failing"}
    assert questions(disagreement=True) == {"disagreement"}
    assert questions(disagreement=True, routes=("billing",)) == set()


def test_near_duplicates_go_and_a_limit_spreads_over_clusters(store):
    tr = Traffic(store)
    for i in range(12):  # one frequent question, asked twelve times with small variations
        tr.exchange(f"How do I reset my password? attempt {i}" if i % 2 else "How do I reset my password?")
    for q in ("What is the refund policy for damaged items?", "Do you ship internationally to Canada?",
              "Can I change the delivery address after ordering?"):
        tr.exchange(q)
    tr.done()
    es = build(store, "s", Filters(), embed=EMBED, dedup=0.95, limit=4, cluster_threshold=0.6).evalset
    qs = [i.request["messages"][-1]["content"] for i in es.items]
    assert len(qs) == 4
    assert sum("password" in q for q in qs) == 1  # the frequent question does not fill the set
    counts = es.manifest["counts"]
    assert counts["near_duplicates"] >= 5  # the exact repeats at least
    assert counts["exchanges"] == 15 and counts["items"] == 4


def test_versions_are_immutable_content_hashes_and_diff_says_what_changed(store):
    tr = Traffic(store)
    first = tr.exchange("What is your refund policy? email me at jo@example.com")
    tr.exchange("Do you ship to Canada?")
    tr.done()
    a = build(store, "s", Filters(), embed=EMBED, redactor=Redactor())
    assert a.created and a.evalset.ref == "s@1"
    assert "[EMAIL]" in json.dumps(a.evalset.items[0].request) and "jo@example.com" not in repr(a.evalset.items)
    again = build(store, "s", Filters(), embed=EMBED, redactor=Redactor())
    assert not again.created and again.evalset.id == a.evalset.id and len(store.evalsets("s")) == 1
    tr.grade(*first, winner="candidate", corrected="Refunds take 5 days [1].")
    tr.exchange("Can I pay with PayPal?")
    tr.done()
    b = build(store, "s", Filters(), embed=EMBED, redactor=Redactor())
    assert b.created and b.evalset.ref == "s@2" and b.evalset.id != a.evalset.id
    assert b.evalset.manifest["parent"] == {"id": a.evalset.id, "version": 1}
    assert store.evalset("s").id == b.evalset.id and store.evalset("s@1").id == a.evalset.id
    d = diff(store.evalset("s@1"), store.evalset("s@2"))
    assert [r["question"] for r in d["added"]] == ["Can I pay with PayPal?"] and d["removed"] == []
    (changed,) = d["changed"]
    assert "target" in changed["fields"] and "labels" in changed["fields"]
    # the same content under another name is another set
    assert build(store, "other", Filters(), embed=EMBED, redactor=Redactor()).evalset.id != b.evalset.id


def test_evalset_commands(tmp_path):
    db = tmp_path / "c.db"
    store = Store(db, flush_interval_ms=5)
    store.start()
    tr = Traffic(store)
    for q in ("How long do refunds take?", "Do you ship to Canada?", "Can I pay with PayPal?"):
        tr.exchange(q)
    tr.done()
    store.stop()
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[store]\npath = "{db}"\n[judges]\nembedder = "hashing"\n')

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BIN, "evalset", *args, "--config", str(cfg)], capture_output=True, text=True)

    out = run("build", "support", "--json")
    assert out.returncode == 0, out.stderr
    built = json.loads(out.stdout)
    assert built["created"] and built["ref"] == "support@1" and built["items"] == 3
    assert "unchanged" in run("build", "support").stdout
    out = run("build", "support", "--route", "nope")
    assert "built support@2" in out.stdout and "0 items" in out.stdout
    assert "support@2" in run("list").stdout
    shown = json.loads(run("show", "support@1", "--json").stdout)
    assert shown["id"] == built["id"] and len(shown["items"]) == 3
    out = run("diff", "support@1", "support")
    assert "3 removed" in out.stdout
    out = run("show", "nope")
    assert out.returncode == 1 and "no eval set 'nope'" in out.stderr and "support" in out.stderr
    out = run("build", "x", "--tag", "novalue")
    assert out.returncode == 2 and "KEY=VALUE" in out.stderr
    target = tmp_path / "support.jsonl"
    out = run("export", "support@1", "--format", "inspect", "--out", str(target))
    assert out.returncode == 0 and "wrote 3 inspect records" in out.stdout
    assert [json.loads(line)["target"] for line in target.read_text().splitlines()] == ["Production says."] * 3
    out = run("export", "support@1", "--format", "dpo", "--out", str(tmp_path / "dpo.jsonl"), "--json")
    assert json.loads(out.stdout)["records"] == 0  # nobody preferred an answer yet
    out = run("export", "support@1", "--format", "csv", "--out", str(tmp_path / "x"))
    assert out.returncode == 2 and "inspect, openai-evals" in out.stderr
