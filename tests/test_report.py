"""The comparison report and the gate on stores with a planted truth: identical models stay within
noise, a real improvement is called, a slice regression fails the gate, human grades decide and
make a judge reliable, latency limits bite."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from shadoweval.cli.grade import grading_server
from shadoweval.cli.mockllm import ThreadedServer
from shadoweval.core.settings import ReportSettings, load_settings
from shadoweval.core.store import Store
from shadoweval.core.types import AnswerLabels, Exchange, Grade, GradingItem, Output, Verdict, new_id
from shadoweval.datasets.report.build import build_report
from shadoweval.datasets.report.text import format_report
from shadoweval.proxy.asgi import read_body, send_json

from .grading_data import ANN_TOKEN

BIN = Path(sys.executable).parent / "shadoweval"
SETTINGS = ReportSettings(bootstrap=300)


def _populate(db: Path, n: int, *, cand_quality, twin: bool = True, seed: int = 0, cand_latency: float = 100.0,
              grades: int = 0) -> None:
    """`n` exchanges over routes billing/returns; production's grounded score ~ U(0.6, 0.9),
    the candidate's from `cand_quality(route, rng)`; the twin is production again."""
    rng = random.Random(seed)
    store = Store(db, flush_interval_ms=5)
    store.start()
    t0 = time.time() - 10 * 86400
    for i in range(n):
        route = "billing" if i % 2 else "returns"
        ex = Exchange(id=new_id(), created_at=t0 + i * 60, route="/v1/chat/completions",
                      request={"messages": [{"role": "user", "content": f"q{i}"}]}, tags={"route": route})
        store.submit(ex)
        answers = [("production", "production", rng.uniform(0.6, 0.9), 100.0),
                   ("cand", "candidate", cand_quality(route, rng), cand_latency)]
        if twin:
            answers.append(("production-twin", "twin", rng.uniform(0.6, 0.9), 100.0))
        outs = {}
        for name, role, score, latency in answers:
            o = Output(id=new_id(), exchange_id=ex.id, role=role, name=name, model=name, status="ok",
                       started_at=ex.created_at, text="x" * 200, latency_ms=latency * rng.uniform(0.9, 1.1),
                       cost_usd=0.001)
            outs[name] = (o, score)
            store.submit(o)
            store.submit(Verdict(id=new_id(), output_id=o.id, exchange_id=ex.id, judge="grounded", version="1",
                                 args={"threshold": 0.75}, created_at=time.time(), score=score))
        if i < grades:  # a person agrees with the judge on both answers and prefers the better one
            (p, ps), (c, cs) = outs["production"], outs["cand"]
            item = GradingItem(id=new_id(), exchange_id=ex.id, candidate_output_id=c.id, production_output_id=p.id,
                               left="production", policy="uniform", probability=0.5, inclusion_probability=0.5,
                               evaluators=1, slice=f"route={route}", created_at=ex.created_at, batch="b")
            pref = "right" if cs > ps + 0.05 else "left" if ps > cs + 0.05 else "tie"
            store.submit(item)
            store.submit(Grade(id=new_id(), item_id=item.id, evaluator="ann", created_at=time.time(),
                               preference=pref, left_labels=AnswerLabels("yes" if ps >= 0.75 else "no"),
                               right_labels=AnswerLabels("yes" if cs >= 0.75 else "no")))
    assert store.flush(30)
    store.stop()


def _report(db: Path) -> dict:
    return build_report(Store(db).exchange_bundles(), SETTINGS)["candidates"][0]


def test_two_identical_models_stay_within_noise(tmp_path):
    calls, passing = [], []
    for seed in range(5):
        db = tmp_path / f"same{seed}.db"
        _populate(db, 120, cand_quality=lambda route, rng: rng.uniform(0.6, 0.9), seed=seed)
        r = _report(db)
        calls.append(r["call"])
        assert r["scores"]["grounded"]["call"] == "within noise"
        passing.append(r["scores"]["grounded"]["pass_rate"]["call"])
    assert calls.count("within noise") >= 4  # a 95% interval may miss once in twenty
    assert passing.count("within noise") >= 4


def test_a_real_improvement_is_called_and_a_slice_regression_is_flagged(tmp_path):
    db = tmp_path / "better.db"
    # much better on returns, a little worse on billing
    _populate(db, 200, cand_quality=lambda route, rng: rng.uniform(0.85, 1.0) if route == "returns"
              else rng.uniform(0.45, 0.7))
    r = _report(db)
    assert r["decided_by"] == "offline" and r["pairs"] == 200
    assert r["slices"]["route=billing"]["win_rate"]["offline"]["call"] == "worse"
    assert r["slices"]["route=returns"]["win_rate"]["offline"]["call"] == "better"
    assert any(f.startswith("route=billing: worse") for f in r["flags"])
    assert not any(f.startswith("route=returns") for f in r["flags"])
    # the share of answers at or above the verdicts' threshold (0.75): every candidate answer on returns
    # (0.85-1.0), none on billing (0.45-0.7), about half of production's (0.6-0.9)
    returns, billing = (r["slices"][f"route={k}"]["scores"]["grounded"]["pass_rate"] for k in ("returns", "billing"))
    assert returns["candidate"]["value"] == 1.0 and billing["candidate"]["value"] == 0.0
    assert 0.3 < returns["production"]["value"] < 0.7 and returns["production"]["n"] == 100
    assert (returns["call"], billing["call"]) == ("better", "worse")
    whole = r["scores"]["grounded"]["pass_rate"]
    assert whole["candidate"]["value"] == 0.5 and whole["difference"]["n"] == 200


def test_gate_fails_on_a_planted_slice_regression_and_passes_a_clean_candidate(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text("[gate]\nrequire_reliable_judges = false\nslice_regression = 0.05\n")
    bad = tmp_path / "bad.db"
    _populate(bad, 200, cand_quality=lambda route, rng: rng.uniform(0.95, 1.0) if route == "returns"
              else rng.uniform(0.3, 0.6))
    out = subprocess.run([BIN, "gate", "--candidate", "cand", "--db", str(bad), "--policy", str(policy)],
                         capture_output=True, text=True)
    assert out.returncode == 1, out.stdout
    assert "slice route=billing" in out.stdout and "FAIL" in out.stdout
    good = tmp_path / "good.db"
    _populate(good, 200, cand_quality=lambda route, rng: rng.uniform(0.85, 1.0))
    out = subprocess.run([BIN, "gate", "--candidate", "cand", "--db", str(good), "--policy", str(policy), "--json"],
                         capture_output=True, text=True)
    body = json.loads(out.stdout)
    assert out.returncode == 0 and body["pass"] and body["reasons"] == [], body
    # the same clean candidate cannot be decided while its judge was never checked against people...
    out = subprocess.run([BIN, "gate", "--candidate", "cand", "--db", str(good)], capture_output=True, text=True)
    assert out.returncode == 3 and "CANNOT DECIDE" in out.stdout and "nobody has checked" in out.stdout
    assert "grade about 30 more pairs to check the judge against people" in out.stdout
    # ...and when it is three times slower than production
    slow = tmp_path / "slow.db"
    _populate(slow, 200, cand_quality=lambda route, rng: rng.uniform(0.85, 1.0), cand_latency=300.0)
    out = subprocess.run([BIN, "gate", "--candidate", "cand", "--db", str(slow), "--policy", str(policy)],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "latency: p95" in out.stdout


def test_human_grades_decide_and_make_the_judge_reliable(tmp_path):
    db = tmp_path / "graded.db"
    _populate(db, 120, cand_quality=lambda route, rng: rng.uniform(0.75, 1.0), grades=60)
    body = build_report(Store(db).exchange_bundles(), SETTINGS)
    r = body["candidates"][0]
    assert r["decided_by"] == "ppi" and r["win_rate"]["human"]["n"] == 60
    # power-tuned: this judge tracks the grades (kappa 1 below), so it keeps most of its weight
    assert 0.5 < r["win_rate"]["ppi"]["judge_weight"] <= 1
    assert f"(judge weight {r['win_rate']['ppi']['judge_weight']:.2f})" in format_report(body)
    assert r["win_rate"]["ppi"]["call"] == "better"
    assert body["judges"]["grounded"]["reliable"] and body["judges"]["grounded"]["kappa"] == pytest.approx(1.0)
    # the offline win rate's own judge, the offline preference, is checked against people's winners too
    pref = body["judges"]["offline-preference"]
    assert pref["n"] == 60 and pref["kappa"] is not None and pref["ece"] is None
    assert r["win_rate"]["offline"]["reliable"] is pref["reliable"]
    # on fewer graded observations than min_graded a judge is not checked yet, which is not failing the check
    few = build_report(Store(db).exchange_bundles(), SETTINGS.model_copy(update={"min_graded": 1000}))
    assert {j: v["reliable"] for j, v in few["judges"].items()} == {j: None for j in body["judges"]}
    assert "(unreliable)" not in format_report(few)
    assert "   offline-preference kappa 1.00 on 60  not checked yet (too few grades)" in format_report(few).splitlines()
    assert 0 <= body["judges"]["grounded"]["ece"] <= 1
    out = subprocess.run([BIN, "report", "--db", str(db)], capture_output=True, text=True)
    assert "decided by: judge + human (prediction-powered)" in out.stdout
    assert "rule: not-worse (non-inferiority, margin 0.05): passes if" in out.stdout
    assert "grounded" in out.stdout and "reliable" in out.stdout
    assert "  share passing" in out.stdout
    assert f"on {body['judges']['grounded']['n']}, ECE {body['judges']['grounded']['ece']:.2f}  reliable" in out.stdout


def test_report_html_alerts_to_a_webhook_and_the_page_for_admins(tmp_path, monkeypatch):
    received: list[dict] = []

    async def webhook(scope, receive, send):
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        received.append(json.loads(await read_body(receive)))
        await send_json(send, 200, {"ok": True})

    db = tmp_path / "worse.db"
    _populate(db, 120, cand_quality=lambda route, rng: rng.uniform(0.3, 0.6))
    with ThreadedServer(webhook) as hook:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[store]\npath = "{db}"\n[judges]\nembedder = "hashing"\n'
                       f'[report]\nalert_min_win_rate = 0.45\nalert_max_pass_drop = 0.1\nwebhook_url = "{hook.url}/hook"\n'
                       '[[evaluators]]\nname = "ann"\ntoken_env = "TOK"\nadmin = true\n')
        page = tmp_path / "out" / "report.html"
        out = subprocess.run([BIN, "report", "--config", str(cfg), "--html", str(page)], capture_output=True,
                             text=True, env={**os.environ, "TOK": ANN_TOKEN})
        assert out.returncode == 0, out.stderr
    assert "WORSE" in out.stdout and "drift alert: cand" in out.stdout
    assert "grounded share passing difference" in out.stdout  # [report] alert_max_pass_drop reaches the rules
    assert "report alert: cand" in out.stderr  # and in the log
    (posted,) = received
    assert posted["alerts"] and "below the minimum 0.45" in posted["alerts"][0]
    html = page.read_text()
    assert "<script" not in html and "cand vs production" in html and "<svg" in html
    # the same report, served to a signed-in admin by the grading UI


    monkeypatch.setenv("TOK", ANN_TOKEN)
    settings = load_settings(cfg)
    with ThreadedServer(grading_server(settings)) as server, httpx.Client(base_url=server.url + "/grade/") as c:
        assert c.get("report", follow_redirects=False).status_code == 303
        c.post("api/signin", json={"token": ANN_TOKEN}).raise_for_status()
        r = c.get("report")
        assert r.status_code == 200 and "cand vs production" in r.text
        assert "script-src" not in r.headers["content-security-policy"]  # no script allowed at all
    # and the proxy's /metrics shows the alerts the latest report raised
    from shadoweval.proxy.app import create_app

    with ThreadedServer(create_app(settings)) as proxy:
        text = httpx.get(proxy.url + "/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("shadoweval_report_alerts{"))
    assert 'candidate="cand"' in line and 'kind="drift"' in line and float(line.split()[-1]) >= 1
