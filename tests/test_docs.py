"""The documentation: the site builds with --strict (no broken links), the command-line reference is
generated from the click commands, no work-item numbers, and a README a newcomer can read.

The configuration reference's check is beside the settings, in tests/test_settings.py."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from shadoweval.cli.main import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
README_MAX_WORDS = 1300


def _mkdocs_build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(root / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=root, capture_output=True, text=True, timeout=240,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})  # Material's end-of-life banner, not a build warning


def test_site_builds_strict_and_offline(tmp_path):
    done = _mkdocs_build(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stdout + done.stderr
    pages = list((tmp_path / "site").rglob("*.html"))
    assert (tmp_path / "site" / "index.html").exists() and (tmp_path / "site" / "cli" / "index.html").exists()
    # theme.font = false: nothing the pages load comes from Google Fonts or another CDN
    remote = [p.name for p in pages if re.search(r"fonts\.googleapis|fonts\.gstatic|cdn\.jsdelivr|unpkg\.com",
                                                  p.read_text())]
    assert not remote, remote


def test_broken_link_fails_the_build(tmp_path):
    """The build above would pass with a broken link if strict mode were off: prove it is not."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    with (copy / "docs" / "index.md").open("a") as f:
        f.write("\nSee [the missing page](no-such-page.md).\n")
    done = _mkdocs_build(copy, tmp_path / "site")
    assert done.returncode != 0
    assert "no-such-page.md" in done.stdout + done.stderr


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_generated():
    page = (ROOT / "docs" / "cli.md").read_text()
    assert page == _script("cli_reference").render(), \
        "docs/cli.md is out of date: run .venv/bin/python scripts/cli_reference.py"


def _command_paths(cmd: click.Command, path: str) -> Iterator[str]:
    yield path
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            if not sub.hidden:
                yield from _command_paths(sub, f"{path} {name}")


def test_cli_reference_has_every_command_and_option():
    """Every command of the group the CLI module builds, with every visible option, has its section."""
    page = (ROOT / "docs" / "cli.md").read_text()
    sections = {part.split("`")[1]: part for part in page.split("\n## ")[1:] if part.startswith("`")}
    paths = list(_command_paths(cli_main, "shadoweval"))[1:]
    assert {"shadoweval grade token", "shadoweval evalset export", "shadoweval report", "shadoweval gate",
            "shadoweval replay-server", "shadoweval judge run"} <= set(paths)
    assert sorted(sections) == sorted(paths)
    for path in paths:
        cmd = cli_main
        for name in path.split()[1:]:
            cmd = cmd.commands[name]
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert f"`{param.opts[0]}`" in sections[path], (path, param.opts[0])


# A work-item reference: `#12`, `(#3)`, "issue #4", "the targets"; never `&#35;`, a URL's
# `/#anchor`, a link's `page.md#anchor` or a heading's `# `.
WORK_ITEM = re.compile(r"(?<![\w&/])#\d+\b|\bissues?\s*#?\d+|\bthe issue's\b|\bwork[- ]items?\b", re.IGNORECASE)


def work_item_refs(markdown: str) -> list[str]:
    """Work-item references in the prose of a Markdown page (code blocks and inline code skipped)."""
    prose = re.sub(r"^[ \t]*(```|~~~).*?^[ \t]*\1", "", markdown, flags=re.MULTILINE | re.DOTALL)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    return [m.group(0) for m in WORK_ITEM.finditer(prose)]


def test_work_item_pattern():
    assert work_item_refs("done (#3); #12 in progress") == ["#3", "#12"]
    assert work_item_refs("see issue #4, and issue 5") == ["issue #4", "issue 5"]
    assert work_item_refs("which of the issue's targets hold") == ["the issue's"]
    assert work_item_refs("| judges | done (#3) |") == ["#3"]
    assert work_item_refs("# Title\n[a](page.md#anchor-2) &#35; http://x/#1\n```bash\n#!/bin/sh\necho #5\n```\n"
                          "`#6` and `issue #7`\n  ```toml\n  x = 1  #8\n  ```\n") == []


@pytest.mark.parametrize("page", ["README.md", *sorted(p.relative_to(ROOT).as_posix()
                                                      for p in (ROOT / "docs").glob("*.md"))])
def test_no_work_item_numbers(page):
    assert work_item_refs((ROOT / page).read_text()) == []


def test_readme_is_short():
    words = len((ROOT / "README.md").read_text().split())
    assert words <= README_MAX_WORDS, f"README.md has {words} words; move detail into docs/"
