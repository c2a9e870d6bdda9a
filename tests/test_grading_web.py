"""The grading page's HTTP API, served by the proxy (as `shadoweval serve` does) on 127.0.0.1:
sign-in, blindness, sides, leases between graders, skips, sanitized model text, agreement."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from shadoweval.cli.mockllm import ThreadedServer
from shadoweval.core.settings import load_settings
from shadoweval.core.store import Store
from shadoweval.core.types import AnswerLabels, Grade, new_id
from shadoweval.datasets.grading.web import grading_app
from shadoweval.proxy.app import create_app

from .grading_data import ANN_TOKEN, BOB_TOKEN
from .grading_data import config as _config
from .grading_data import seed as _seed

BIN = Path(sys.executable).parent / "shadoweval"


@pytest.fixture
def served(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TOKEN_ANN", ANN_TOKEN)
    settings = load_settings(_config(tmp_path))
    store = Store(settings.store.path, flush_interval_ms=5)
    app = create_app(settings, store=store, ui=lambda s: grading_app(settings, s))
    with ThreadedServer(app) as server:
        items = _seed(store)
        yield server.url, store, items


def _tags(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    found: list[tuple[str, list[tuple[str, str | None]]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    Collect().feed(html)
    return found


@contextlib.contextmanager
def _client(url: str, token: str | None = None) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{url}/grade/", timeout=10) as client:
        if token is not None:
            r = client.post("api/signin", json={"token": token})
            assert r.status_code == 200, r.text
        yield client


def test_nothing_is_reachable_without_signing_in(served):
    url, _, items = served
    with _client(url) as c:
        r = httpx.get(f"{url}/grade", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == "/grade/"
        r = c.get("", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/grade/signin"
        assert c.get("agreement", follow_redirects=False).status_code == 303
        for method, path, body in (("GET", "api/next", None), ("GET", "api/progress", None),
                                   ("GET", "api/agreement", None),
                                   ("POST", "api/grades", {"item_id": items[0].id, "preference": "left"})):
            r = c.request(method, path, json=body)
            assert r.status_code == 401
            assert r.json()["error"]["code"] == "unauthorized" and r.json()["error"]["message"]
        assert c.get("signin").status_code == 200  # the sign-in page itself is public


def test_sign_in_sets_a_strict_http_only_cookie_and_rejects_bad_or_forged_ones(served):
    url, _, _ = served
    with _client(url) as c:
        r = c.post("api/signin", json={"token": "wrong"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"
        r = c.post("api/signin", content=json.dumps({"token": ANN_TOKEN}).encode(),
                   headers={"content-type": "text/plain"})
        assert r.status_code in (400, 403) and "set-cookie" not in r.headers  # only JSON: forms cannot sign in
        r = c.post("api/signin", json={"token": BOB_TOKEN})  # a token known by its hash only
        assert r.status_code == 200 and r.json() == {"evaluator": "bob", "admin": False}
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/grade" in cookie
        assert c.get("api/me").json()["evaluator"] == "bob"
        value = c.cookies.get("shadoweval_grading")
        forged = value.replace("bob:", "ann:")  # same signature, another name
        with httpx.Client(base_url=f"{url}/grade/", cookies={"shadoweval_grading": forged}) as f:
            assert f.get("api/me").status_code == 401
        name_exp, mac = value.rsplit(".", 1)
        later = f"bob:{int(name_exp.split(':')[1]) + 3600}.{mac}"  # extended expiry, old signature
        with httpx.Client(base_url=f"{url}/grade/", cookies={"shadoweval_grading": later}) as f:
            assert f.get("api/me").status_code == 401
        r = c.post("api/grades", json={"item_id": "0" * 26, "skipped": True},
                   headers={"origin": "http://evil.example"})
        assert r.status_code == 403  # another origin cannot post grades with the cookie
        assert c.post("api/signout", json={}).status_code == 200
        c.cookies.clear()
        assert c.get("api/me").status_code == 401


def test_a_pair_is_shown_blind_and_the_grade_lands_on_the_right_outputs(served):
    url, store, items = served
    by_id = {i.id: i for i in items}
    with _client(url, ANN_TOKEN) as c:
        r = c.get("api/next")
        assert r.status_code == 200
        assert r.headers["content-security-policy"].startswith("default-src 'none'; script-src 'self'")
        body = r.json()
        item = body["item"]
        assert item["id"] == items[0].id  # oldest first
        text = r.text
        queued = by_id[item["id"]]
        for secret in ("secret-model", "secret-v2", "gpt-prod", "production\"", "candidate\"",
                       queued.exchange_id, queued.candidate_output_id, queued.production_output_id):
            assert secret not in text  # no model, role or id reaches the page
        assert [t["role"] for t in item["turns"]] == ["system", "user"]
        assert "Question 0" in item["turns"][1]["html"]
        assert [p["id"] for p in item["context"]] == ["1"]
        assert "Returns are free" in item["context"][0]["html"]
        # item 0 shows the candidate on the left: A is its (hostile) answer, escaped and defused
        a = item["answers"]["a"]["html"]
        tags = _tags(a)
        assert {t for t, _ in tags} <= {"p", "strong"}  # no script, no img, no link to javascript:
        assert all(not attrs for _, attrs in tags)  # no on* handler, no href
        assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in a  # the text is shown, not run
        assert "<strong>bold</strong>" in a
        assert "production 0" in item["answers"]["b"]["html"]
        assert body["progress"] == {"graded_by_you": 0, "skipped_by_you": 0, "queued": 3, "fully_graded": 0}
        assert c.get("api/next").json()["item"]["id"] == item["id"]  # held for ann: a reload shows it again

        grade = {"item_id": item["id"], "preference": "right", "seconds": 12.5, "keep": True,
                 "left": {"grounded": "no", "citations_correct": False, "meets_intent": False},
                 "right": {"grounded": "yes", "citations_correct": True, "meets_intent": True},
                 "note": "A is unsafe", "corrected_answer": "  Yes, within 30 days [1].  "}
        r = c.post("api/grades", json=grade)
        assert r.status_code == 201, r.text
    (stored,) = store.grades(item["id"])
    assert stored.evaluator == "ann" and stored.preference == "right"
    assert stored.winner == "production"  # right = B = production on this item
    labels = queued.labels_by_output(stored)
    assert labels[queued.candidate_output_id] == AnswerLabels("no", False, False)
    assert labels[queued.production_output_id] == AnswerLabels("yes", True, True)
    assert (stored.keep, stored.note, stored.corrected_answer, stored.seconds) == (
        True, "A is unsafe", "Yes, within 30 days [1].", 12.5)


def test_graders_get_different_pairs_skips_are_not_shown_again_and_the_queue_ends(served):
    url, store, items = served
    with _client(url, ANN_TOKEN) as ann, _client(url, BOB_TOKEN) as bob:
        first_ann = ann.get("api/next").json()["item"]["id"]
        first_bob = bob.get("api/next").json()["item"]["id"]
        assert first_ann != first_bob  # one evaluator per item: a held item is not handed out twice
        r = bob.post("api/grades", json={"item_id": first_bob, "skipped": True, "preference": "left"})
        assert r.status_code == 201
        second_bob = bob.get("api/next").json()["item"]["id"]
        assert second_bob not in (first_ann, first_bob)
        assert ann.post("api/grades", json={"item_id": first_ann, "preference": "tie"}).status_code == 201
        assert bob.post("api/grades", json={"item_id": second_bob, "preference": "left"}).status_code == 201
        # bob skipped first_bob, so only ann can take it
        assert bob.get("api/next").json()["item"] is None
        assert ann.get("api/next").json()["item"]["id"] == first_bob
        assert ann.post("api/grades", json={"item_id": first_bob, "preference": "left"}).status_code == 201
        done = ann.get("api/next").json()
        assert done["item"] is None and done["progress"]["fully_graded"] == 3
    skipped = [g for g in store.grades(first_bob) if g.skipped]
    assert [g.evaluator for g in skipped] == ["bob"] and skipped[0].preference is None  # a skip carries no grade


def test_bad_grades_get_openai_style_errors(served):
    url, _, items = served
    with _client(url, ANN_TOKEN) as c:
        r = c.post("api/grades", json={"item_id": items[0].id})
        assert r.status_code == 400 and r.json()["error"]["param"] == "preference"
        r = c.post("api/grades", json={"item_id": items[0].id, "preference": "A"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = c.post("api/grades", json={"item_id": "0" * 26, "preference": "tie"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = c.post("api/grades", json={"item_id": items[0].id, "preference": "tie",
                                       "left": {"grounded": "maybe"}})
        assert r.status_code == 400 and "left.grounded" in r.json()["error"]["param"]


def test_agreement_is_for_admins_and_compares_judges_with_grades(served):
    url, _, items = served
    with _client(url, ANN_TOKEN) as ann, _client(url, BOB_TOKEN) as bob:
        assert bob.get("api/agreement").status_code == 403
        for _ in items:
            item = ann.get("api/next").json()["item"]
            # the judge says production grounded (0.9) and the candidate not (0.2); ann agrees
            cand_left = item["id"] in {i.id for i in items if i.left == "candidate"}
            labels = [{"grounded": "no"}, {"grounded": "yes"}]
            left, right = labels if cand_left else labels[::-1]
            r = ann.post("api/grades", json={"item_id": item["id"], "preference": "tie", "left": left, "right": right})
            assert r.status_code == 201
        report = ann.get("api/agreement").json()
        (grounded,) = [j for j in report["judges"] if j["judge"] == "grounded"]
        assert grounded["overall"]["n"] == 6 and grounded["overall"]["accuracy"] == 1.0
        assert grounded["overall"]["kappa"] == 1.0 and grounded["slices"]["route=returns"]["n"] == 6
        assert report["position_bias"][0]["ties"] == 3
        assert ann.get("agreement").status_code == 200


def test_agreement_command_and_grade_token(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_TOKEN_ANN", ANN_TOKEN)
    cfg = _config(tmp_path)
    store = Store(tmp_path / "grading.db", flush_interval_ms=5)
    store.start()
    items = _seed(store, pairs=2)
    for item in items:
        cand_left = item.left == "candidate"
        no, yes = AnswerLabels("no"), AnswerLabels("yes")
        store.submit(Grade(id=new_id(), item_id=item.id, evaluator="ann", created_at=time.time(), preference="left",
                           left_labels=no if cand_left else yes, right_labels=yes if cand_left else no))
    assert store.flush()
    store.stop()
    out = subprocess.run([BIN, "agreement", "--config", str(cfg), "--json"], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    (grounded,) = [j for j in report["judges"] if j["judge"] == "grounded"]
    assert grounded["overall"]["n"] == 4 and grounded["overall"]["accuracy"] == 1.0
    assert report["position_bias"][0]["left"] == 2
    text = subprocess.run([BIN, "agreement", "--config", str(cfg)], capture_output=True, text=True, check=True).stdout
    assert "grounded" in text and "Krippendorff" in text

    out = subprocess.run([BIN, "grade", "token", "cy"], capture_output=True, text=True, check=True).stdout
    token = out.split(": ", 1)[1].split()[0]
    digest = out.split('token_sha256 = "')[1].split('"')[0]
    assert hashlib.sha256(token.encode()).hexdigest() == digest


def test_grade_serves_the_page_on_its_own(tmp_path, monkeypatch):
    from shadoweval.cli.grade import grading_server

    monkeypatch.setenv("TEST_TOKEN_ANN", ANN_TOKEN)
    settings = load_settings(_config(tmp_path))
    store = Store(settings.store.path, flush_interval_ms=5)
    store.start()
    items = _seed(store, pairs=1)
    store.stop()
    with ThreadedServer(grading_server(settings)) as server:
        assert httpx.get(server.url, follow_redirects=False).headers["location"] == "/grade/"
        with _client(server.url, ANN_TOKEN) as c:
            item = c.get("api/next").json()["item"]
            assert item["id"] == items[0].id
            assert c.post("api/grades", json={"item_id": item["id"], "preference": "tie"}).status_code == 201
    (grade,) = Store(settings.store.path).grades()
    assert (grade.evaluator, grade.winner) == ("ann", "tie")
    # nobody to sign in: refuse to start rather than serve a page no one can use
    bare = tmp_path / "bare.toml"
    bare.write_text(f'[store]\npath = "{settings.store.path}"\n')
    out = subprocess.run([BIN, "grade", "--config", str(bare)], capture_output=True, text=True)
    assert out.returncode == 1 and "no [[evaluators]]" in out.stderr
