"""Sign-in to the grading page under attack, over HTTP on 127.0.0.1: an address is locked out after
repeated failures, many addresses together cannot guess faster than the global cap, sign-out revokes
the cookie, and weak tokens are refused when the configuration is loaded."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from shadoweval.cli.mockllm import ThreadedServer
from shadoweval.core.settings import Settings, SettingsError, load_settings
from shadoweval.core.store import Store
from shadoweval.datasets.grading.web import grading_app
from shadoweval.proxy.app import create_app

from .grading_data import ANN_TOKEN, BOB_TOKEN
from .grading_data import config as _config
from .test_grading_browser import ARGS, chromium


@contextlib.contextmanager
def _served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **grading: Any) -> Iterator[str]:
    monkeypatch.setenv("TEST_TOKEN_ANN", ANN_TOKEN)
    settings = load_settings(_config(tmp_path), overrides={"grading": grading})
    store = Store(settings.store.path, flush_interval_ms=5)
    with ThreadedServer(create_app(settings, store=store, ui=lambda s: grading_app(settings, s))) as server:
        yield server.url


def _client(url: str, address: str = "127.0.0.1", **kw: Any) -> httpx.Client:
    """A client whose connections come from `address` (Linux answers on all of 127.0.0.0/8)."""
    return httpx.Client(base_url=f"{url}/grade/", timeout=30,
                        transport=httpx.HTTPTransport(local_address=address), **kw)


def _signin(c: httpx.Client, token: str) -> httpx.Response:
    return c.post("api/signin", json={"token": token})


def test_an_address_is_locked_out_after_repeated_failures(tmp_path, monkeypatch):
    with _served(tmp_path, monkeypatch) as url, _client(url, "127.0.0.2") as guesser:
        for _ in range(5):
            r = _signin(guesser, "wrong-guess-0123456789")
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_token"
        r = _signin(guesser, "wrong-guess-0123456789")
        assert r.status_code == 429
        err = r.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and set(err) == {"message", "type", "param", "code"}
        assert "Too many failed sign-ins" in err["message"] and "15 minutes" in err["message"]
        assert 800 <= int(r.headers["retry-after"]) <= 900
        # while locked out, even the right token is refused from that address: guessing it proves nothing
        r = _signin(guesser, ANN_TOKEN)
        assert r.status_code == 429 and "set-cookie" not in r.headers
        # other addresses are not locked out
        with _client(url, "127.0.0.3") as ann:
            assert _signin(ann, ANN_TOKEN).status_code == 200
            assert ann.get("api/me").json()["evaluator"] == "ann"


def test_the_lockout_ends_when_its_window_passes(tmp_path, monkeypatch):
    with (_served(tmp_path, monkeypatch, signin_max_failures=2, signin_lockout_minutes=0.02) as url,
          _client(url, "127.0.0.4") as c):
        assert [_signin(c, "nope-nope-nope-nope").status_code for _ in range(3)] == [401, 401, 429]
        time.sleep(1.3)
        assert _signin(c, ANN_TOKEN).status_code == 200


def test_the_sign_in_page_says_when_the_address_is_locked_out(tmp_path, monkeypatch):
    path = chromium()
    from playwright.sync_api import expect, sync_playwright

    with _served(tmp_path, monkeypatch, signin_max_failures=2) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{url}/grade/signin")
            for expected in ("Unknown token.", "Unknown token.", "Too many failed sign-ins from your address"):
                page.fill("#token", "not-the-right-token-at-all")
                page.press("#token", "Enter")
                expect(page.locator("#error")).to_contain_text(expected)
                page.evaluate("document.getElementById('error').textContent = ''")
            page.fill("#token", ANN_TOKEN)  # the right token, from the locked-out address
            page.press("#token", "Enter")
            expect(page.locator("#error")).to_contain_text("try again in 15 minutes")
        finally:
            browser.close()


def test_parallel_guesses_from_one_address_count_before_they_finish(tmp_path, monkeypatch):
    """50 guesses at once from one address: only `signin_max_failures` of them are tried."""
    with _served(tmp_path, monkeypatch) as url, _client(url, "127.0.0.5") as c:
        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(lambda i: _signin(c, f"guess-number-{i:04d}-xyz").status_code, range(50)))
    assert codes.count(401) <= 5 and codes.count(429) >= 45, codes


def test_many_addresses_together_stay_under_the_global_cap(tmp_path, monkeypatch):
    """One wrong guess from each of 60 addresses at once: at most the global rate gets a verdict."""
    rate = 5.0
    with _served(tmp_path, monkeypatch, signin_global_per_s=rate) as url:
        clients = [_client(url, f"127.0.1.{i + 1}") for i in range(60)]
        try:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(60) as pool:
                responses = list(pool.map(lambda c: _signin(c, "guess-from-many-places-42"), clients))
            elapsed = time.perf_counter() - t0
        finally:
            for c in clients:
                c.close()
    codes = [r.status_code for r in responses]
    assert set(codes) <= {401, 429}
    tried = codes.count(401)
    # a burst of `rate`, then `rate` per second while they wait their turn (old code: all 60 in ~0.5 s)
    assert tried <= rate + rate * elapsed + 1, (tried, elapsed)
    assert codes.count(429) >= 10
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1 and refused.json()["error"]["code"] == "rate_limit_exceeded"


def test_sign_out_revokes_the_session_cookie(tmp_path, monkeypatch):
    with _served(tmp_path, monkeypatch) as url, _client(url) as c:
        t0 = time.perf_counter()
        assert _signin(c, BOB_TOKEN).status_code == 200
        assert time.perf_counter() - t0 < 0.4  # a correct sign-in is answered at once
        cookie = c.cookies.get("shadoweval_grading")
        assert c.get("api/me").status_code == 200
        assert c.post("api/signout", json={}).status_code == 200
        # the old cookie, replayed (e.g. copied before sign-out), no longer signs anyone in
        with _client(url, cookies={"shadoweval_grading": cookie}) as stolen:
            r = stolen.get("api/me")
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert stolen.get("", follow_redirects=False).status_code == 303  # the page sends it to sign-in
        # signing in again works, with a new cookie; other sessions of the same person are untouched
        with _client(url) as other:
            assert _signin(other, BOB_TOKEN).status_code == 200
            assert _signin(c, BOB_TOKEN).status_code == 200
            assert c.cookies.get("shadoweval_grading") != cookie
            assert c.post("api/signout", json={}).status_code == 200
            assert other.get("api/me").status_code == 200


def test_an_expired_session_is_refused(tmp_path, monkeypatch):
    with _served(tmp_path, monkeypatch, session_hours=1 / 3600) as url, _client(url) as c:
        assert _signin(c, ANN_TOKEN).status_code == 200
        cookie = c.cookies.get("shadoweval_grading")
        time.sleep(2.1)
        with _client(url, cookies={"shadoweval_grading": cookie}) as late:
            assert late.get("api/me").status_code == 401


@pytest.mark.parametrize("token", ["ann-token", "a" * 40, "password12345678", "Password1234567890",
                                   "changeme-changeme", "abcdefghijklmnopqrstuvwxyz", "test-test-test-test-test"])
def test_a_weak_configured_token_is_refused_at_load_time(tmp_path, token):
    with pytest.raises(SettingsError) as exc:
        load_settings(_config(tmp_path), env={"TEST_TOKEN_ANN": token})
    message = str(exc.value)
    assert "'ann'" in message and "TEST_TOKEN_ANN" in message and "shadoweval grade token" in message
    assert token not in message  # the configuration error names the evaluator, never the token
    with pytest.raises(ValueError):  # Settings built in code are checked too
        Settings.model_validate({"evaluators": [{"name": "ann", "token_env": "T"}], "secrets": {"T": token}})


def test_strong_tokens_pass_and_made_tokens_are_strong(tmp_path):
    import secrets

    from shadoweval.core.settings import token_weakness

    for _ in range(200):
        assert token_weakness(secrets.token_urlsafe(24)) is None
    assert token_weakness(ANN_TOKEN) is None
    s = load_settings(_config(tmp_path), env={"TEST_TOKEN_ANN": secrets.token_urlsafe(16)})
    assert [e.name for e in s.evaluators] == ["ann", "bob"]
    # an unset variable signs nobody in; it is not an error
    assert load_settings(_config(tmp_path), env={}).secret("TEST_TOKEN_ANN") is None


def test_successes_give_their_turn_back_and_memory_stays_bounded():
    import asyncio

    from shadoweval.datasets.grading.signin import MAX_ADDRESSES, SignInGuard

    now = [0.0]
    guard = SignInGuard(max_failures=3, lockout_s=900, per_s=1, clock=lambda: now[0])

    async def attempt(address: str, ok: bool) -> float:
        t0 = time.perf_counter()
        assert await guard.admit(address) is None
        guard.done(address, ok=ok)
        return time.perf_counter() - t0

    async def scenario() -> None:
        # a burst of one a second, but people signing in correctly never wait for each other
        assert max([await attempt(f"10.0.0.{i}", True) for i in range(20)]) < 0.5  # a wait would be 1 s
        assert await attempt("10.0.0.99", False) < 0.5  # the one turn, used up by a failure
        # the next turns are 1 s apart: two wait for theirs, the third would wait 3 s and is refused
        waiting = [asyncio.ensure_future(guard.admit(f"10.0.0.{i}")) for i in (97, 98)]
        await asyncio.sleep(0.01)
        refusal = await guard.admit("10.0.0.96")
        assert refusal is not None and refusal.retry_after == 3 and "a few seconds" in refusal.message
        for task in waiting:  # clients that give up: their attempts are not counted against them
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert guard._pending == {}
        for i in range(MAX_ADDRESSES + 2000):  # many addresses, one failure each: forgotten, not hoarded
            now[0] += 10
            assert await attempt(f"10.1.{i // 250}.{i % 250}", False) < 0.5
        assert len(guard._failures) <= MAX_ADDRESSES

    asyncio.run(scenario())
