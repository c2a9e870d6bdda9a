"""The grading page in a real browser (Debian's Chromium, headless, driven by Playwright): sign in,
grade pairs with the keyboard only, then read the grades back from the SQLite file.

`scripts/test` installs Chromium (apt, through `scripts/install-browser`) and Playwright; the test
fails rather than skips when the browser is missing, unless SHADOWEVAL_NO_BROWSER=1 says the machine
cannot have one.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3

import pytest

from shadoweval.cli.mockllm import ThreadedServer
from shadoweval.core.settings import load_settings
from shadoweval.core.store import Store
from shadoweval.datasets.grading.web import grading_app
from shadoweval.proxy.app import create_app

from .grading_data import ANN_TOKEN, config, seed

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium() -> str:
    path = os.environ.get("SHADOWEVAL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("SHADOWEVAL_NO_BROWSER") == "1":
            pytest.skip("SHADOWEVAL_NO_BROWSER=1: no browser on this machine")
        pytest.fail("Chromium not found: run scripts/install-browser (apt-get install chromium), or set SHADOWEVAL_CHROMIUM")
    return path


@pytest.fixture
def browser():
    path = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=ARGS)
        yield b
        b.close()


def test_sign_in_and_grade_with_the_keyboard_only(tmp_path, monkeypatch, browser):
    from playwright.sync_api import expect

    monkeypatch.setenv("TEST_TOKEN_ANN", ANN_TOKEN)
    settings = load_settings(config(tmp_path))
    store = Store(settings.store.path, flush_interval_ms=5)
    app = create_app(settings, store=store, ui=lambda s: grading_app(settings, s))
    with ThreadedServer(app) as server:
        items = seed(store)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}/grade/")
        page.wait_for_selector("#token")  # redirected to sign-in
        page.keyboard.type(ANN_TOKEN)
        page.keyboard.press("Enter")
        page.wait_for_selector("#pair:not([hidden])")
        progress = page.locator("#progress")
        assert "0 graded by you" in progress.inner_text()

        # pair 1 shows the candidate's hostile answer as A: its text is visible and nothing ran
        answer_a = page.locator("#answer-a .body")
        assert "<script>window.pwned = 1</script>" in answer_a.inner_text()
        assert page.evaluate("window.pwned") is None
        assert answer_a.locator("script, img, a").count() == 0
        assert page.locator("#context-box").get_attribute("open") is None  # context starts collapsed
        page.keyboard.press("x")
        assert page.locator("#context-box").get_attribute("open") is not None
        assert "Returns are free" in page.locator("#context").inner_text()

        # 1 = A better, then row by row: A grounded yes, B grounded no, A citations wrong,
        # B no citations, A meets intent no, B yes, keep yes; a note; Enter submits
        for key in ("1", "1", "3", "2", "3", "2", "1", "1"):
            page.keyboard.press(key)
        page.keyboard.press("n")
        page.keyboard.type("A makes things up")
        page.keyboard.press("Escape")
        page.keyboard.press("c")
        page.keyboard.type("Yes, within 30 days [1].")
        page.keyboard.press("Escape")
        page.keyboard.press("Enter")
        expect(progress).to_have_text(re.compile(r"^1 graded by you"))

        # pair 2: Enter without a preference is refused with a message, nothing is sent
        page.keyboard.press("Enter")
        assert "Choose A, B or tie" in page.locator("#form-error").inner_text()
        # arrows: → picks the first option of the row (A better), → again moves to B; ↓ ↓ to B grounded, → = yes
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowRight")
        page.keyboard.press("Enter")
        expect(progress).to_have_text(re.compile(r"^2 graded by you"))

        # pair 3: ? opens the help, Esc closes it, s skips
        page.keyboard.press("?")
        assert page.locator("#help").is_visible()
        page.keyboard.press("Escape")
        assert not page.locator("#help").is_visible()
        page.keyboard.press("s")
        page.wait_for_selector("text=Nothing left to grade for you")
        # ann is an admin: the agreement page lays out the report, judge against her grades
        page.goto(f"{server.url}/grade/agreement")
        expect(page.locator("#judge-tables h3").first).to_contain_text("grounded vs human grounded")
        expect(page.locator("#judge-tables table").first.locator("th").last).to_have_text("ece")
        expect(page.locator("#bias-table")).to_contain_text("ann")
        assert errors == []

    db = sqlite3.connect(settings.store.path)
    db.row_factory = sqlite3.Row
    rows = {r["item_id"]: r for r in db.execute("select * from grades where evaluator = 'ann'")}
    first, second, third = (rows[i.id] for i in items)
    assert items[0].left == "candidate" and items[1].left == "production"
    assert (first["preference"], first["winner"]) == ("left", "candidate")
    assert (first["grounded_left"], first["grounded_right"]) == ("yes", "no")
    assert (first["citations_correct_left"], first["citations_correct_right"]) == (0, None)
    assert (first["meets_intent_left"], first["meets_intent_right"]) == (0, 1)
    assert first["keep"] == 1 and first["note"] == "A makes things up"
    assert first["corrected_answer"] == "Yes, within 30 days [1]." and first["skipped"] == 0
    assert 0 < first["seconds"] < 120  # time on task, measured in the page
    assert (second["preference"], second["winner"]) == ("right", "candidate")
    assert (second["grounded_left"], second["grounded_right"], second["keep"]) == (None, "yes", 0)
    assert third["skipped"] == 1 and third["preference"] is None
