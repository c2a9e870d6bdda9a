"""The command line's shape: every entry point lists every command, the shared options are declared
once, and an invalid value is reported under the flag the user typed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from shadoweval.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent / "shadoweval"
ENTRY_POINTS = {
    "console script": [str(BIN)],
    "python -m shadoweval.cli": [sys.executable, "-m", "shadoweval.cli"],
    "python -m shadoweval.cli.main": [sys.executable, "-m", "shadoweval.cli.main"],
}


def _listed(help_text: str) -> set[str]:
    section = help_text.split("Commands:", 1)[1]
    return {m.group(1) for m in re.finditer(r"^  (\S+)", section, re.MULTILINE)}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_lists_every_command(entry):
    out = subprocess.run([*ENTRY_POINTS[entry], "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    expected = {"serve", "stats", "judge", "calibrate", "demo", "grade", "agreement", "evalset", "replay",
                "replay-server", "report", "gate"}
    assert expected <= set(main.commands)
    assert _listed(out.stdout) == set(main.commands)


@pytest.mark.parametrize(("args", "flag", "other"), [
    (["evalset", "build", "x", "--until", "garbage"], "--until", "--since"),
    (["evalset", "build", "x", "--since", "garbage"], "--since", "--until"),
    (["report", "--until", "yesterday"], "--until", "--since"),
    (["replay", "--candidate", "c", "--since", "soon"], "--since", "--until"),
    (["judge", "run", "--since", "7 days"], "--since", "--until"),
])
def test_a_bad_time_is_reported_under_the_flag_given(tmp_path, args, flag, other):
    # a usage error (exit 2) before any work: nothing is read, no store is made
    result = CliRunner().invoke(main, [*args, "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{flag}'" in result.output
    assert other not in result.output
    assert not (tmp_path / "none.db").exists()


def test_good_times_are_accepted(tmp_path):
    for value in ("7d", "24h", "30m", "2026-11-01", "2026-11-01T10:00:00Z"):
        result = CliRunner().invoke(main, ["report", "--since", value, "--until", value,
                                           "--db", str(tmp_path / "none.db")])
        assert "Invalid value" not in result.output, (value, result.output)
        assert "no store at" in result.output


def test_shared_options_are_declared_once():
    sources = {p.name: p.read_text() for p in (ROOT / "cli").glob("*.py")}
    for flag in ("--config", "--db", "--json", "--since", "--until"):
        declared = re.compile(r'click\.option\(\s*"' + flag + '"')
        where = {name: len(declared.findall(text)) for name, text in sources.items() if declared.search(text)}
        assert where == {"common.py": 1}, (flag, where)


def _commands(cmd: click.Command, path: str = "shadoweval"):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _commands(sub, f"{path} {name}")


def test_shared_options_read_the_same_everywhere():
    helps: dict[str, set[str]] = {}
    for _, cmd in _commands(main):
        for p in cmd.params:
            if isinstance(p, click.Option) and p.opts[0] in ("--config", "--json"):
                helps.setdefault(p.opts[0], set()).add(p.help or "")
    assert helps == {"--config": {"TOML configuration file."}, "--json": {"Print one JSON object."}}
