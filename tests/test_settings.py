"""Settings: file, then environment, then flags; every setting documented in the README."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadoweval.proxy.settings import SettingsError, load_settings, settings_table

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [f"{s}.{k}" for s, k, _, _ in settings_table()
               if (f"`[[{s}]] {k}`" if s in ("candidates", "intents", "evaluators") else f"`[{s}] {k}`") not in readme]
    assert not missing, f"undocumented settings (run scripts/settings_table.py): {missing}"


def test_precedence_file_env_flags(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[server]\nport = 9000\nhost = "0.0.0.0"\n[store]\npath = "from-file.db"\n')
    s = load_settings(cfg, env={})
    assert (s.server.port, s.server.host, s.store.path) == (9000, "0.0.0.0", "from-file.db")
    s = load_settings(cfg, env={"SHADOWEVAL_SERVER_PORT": "9100", "SHADOWEVAL_STORE_PATH": "env.db"})
    assert (s.server.port, s.store.path) == (9100, "env.db")
    s = load_settings(cfg, env={"SHADOWEVAL_SERVER_PORT": "9100"}, overrides={"server": {"port": 9200}})
    assert s.server.port == 9200 and s.server.host == "0.0.0.0"


def test_example_config_is_valid():
    s = load_settings(ROOT / "shadoweval.example.toml", env={"ANTHROPIC_API_KEY": "sk-ant"})
    assert [c.name for c in s.candidates] == ["claude-sonnet", "llama-local"]
    assert s.secret("ANTHROPIC_API_KEY") == "sk-ant"
    assert "sk-ant" not in repr(s) and "sk-ant" not in s.model_dump_json()


@pytest.mark.parametrize("toml, message", [
    ("[server]\nport = 'abc'\n", "server.port"),
    ("[server]\nnope = 1\n", "server.nope"),
    ("[[candidates]]\nname = 'a'\nmodel = 'x'\n[[candidates]]\nname = 'a'\nmodel = 'y'\n", "unique"),
    ("[[candidates]]\nname = 'production'\nmodel = 'x'\n", "candidates.0.name"),
    ("[[candidates]]\nname = 'c'\nmodel = 'x'\nsample_rate = 1.5\n", "sample_rate"),
    ("[[candidates]]\nname = 'c'\n", "candidates.0.model"),
    ("this is = not toml [", "not valid TOML"),
    ("[[evaluators]]\nname = 'ann'\n", "needs token_env or token_sha256"),
    ("[[evaluators]]\nname = 'ann'\ntoken_sha256 = 'abc'\n", "64 lowercase hex"),
    ("[[evaluators]]\nname = 'a'\ntoken_env = 'X'\n[[evaluators]]\nname = 'a'\ntoken_env = 'Y'\n", "unique"),
])
def test_bad_config_says_what_and_where(tmp_path, toml, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(toml)
    with pytest.raises(SettingsError) as err:
        load_settings(cfg, env={})
    assert message in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.toml", env={})
