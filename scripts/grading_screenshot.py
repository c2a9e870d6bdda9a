#!/usr/bin/env python3
"""Take the docs' screenshot of the grading page, on the demo's traffic.

    .venv/bin/python scripts/grading_screenshot.py [--db shadoweval-demo.db] [--out docs/grading-page.png]

Without --db it runs the demo into a temporary store first. Needs Chromium (scripts/install-browser).
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from shadoweval.cli.grade import grading_server
from shadoweval.cli.mockllm import ThreadedServer
from shadoweval.core.settings import load_settings

TOKEN = secrets.token_urlsafe(24)  # the configuration refuses weak tokens

BIN = Path(sys.executable).parent / "shadoweval"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", help="a store with traffic (default: run the demo into a temporary one)")
    parser.add_argument("--out", default="docs/grading-page.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db
        if db is None:
            db = f"{tmp}/demo.db"
            subprocess.run([BIN, "demo", "--db", db, "--no-judge"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([BIN, "grade", "queue", "--db", db, "-n", "20", "--seed", "7"], check=True,
                       stdout=subprocess.DEVNULL)
        cfg = Path(tmp) / "grading.toml"
        cfg.write_text('[[evaluators]]\nname = "ann"\ntoken_env = "SCREENSHOT_TOKEN"\nadmin = true\n')
        settings = load_settings(cfg, overrides={"store": {"path": db}}, env={"SCREENSHOT_TOKEN": TOKEN})
        from playwright.sync_api import sync_playwright

        with ThreadedServer(grading_server(settings)) as server, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "chromium",
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1280, "height": 1040})
            page.goto(f"{server.url}/grade/")
            page.keyboard.type(TOKEN)
            page.keyboard.press("Enter")
            page.wait_for_selector("#pair:not([hidden])")
            for key in ("2", "3", "1"):
                page.keyboard.press(key)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out)
            browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
