"""Settings: file, then environment, then flags; every setting documented in docs/configuration.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from shadoweval.core.settings import SettingsError, load_settings, settings_table

ROOT = Path(__file__).resolve().parents[1]


def _settings_script():
    spec = importlib.util.spec_from_file_location("settings_table_script", ROOT / "scripts" / "settings_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_reference_is_generated():
    """docs/configuration.md is exactly what scripts/settings_table.py makes of the settings, and it
    lists every setting under its own section."""
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == _settings_script().render(), \
        "docs/configuration.md is out of date: run .venv/bin/python scripts/settings_table.py"
    sections = {}  # "server" -> its part of the page, from "## `[server]`" to the next heading
    for part in page.split("\n## ")[1:]:
        sections[part.split("`")[1].strip("[]")] = part
    missing = [f"{s}.{k}" for s, k, _, _ in settings_table() if f"| `{k}` |" not in sections.get(s, "")]
    assert not missing, f"undocumented settings: {missing}"


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


def test_the_store_target_comes_from_the_file_the_environment_or_a_named_variable():
    # the background judge of a PostgreSQL `serve` is handed the URL as SHADOWEVAL_STORE_URL
    url = "postgresql://app:s3cret@db.internal/shadoweval"
    assert load_settings(None, env={}).store_target == "shadoweval.db"
    assert load_settings(None, env={"SHADOWEVAL_STORE_URL": url}).store_target == url
    named = load_settings(None, overrides={"store": {"url_env": "DB_URL"}}, env={"DB_URL": url})
    assert named.store_target == url and named.store.url is None  # the password stays with the secrets
    with pytest.raises(SettingsError, match="DB_URL"):
        load_settings(None, overrides={"store": {"url_env": "DB_URL"}}, env={})
    with pytest.raises(SettingsError, match="postgresql://"):
        load_settings(None, env={"SHADOWEVAL_STORE_URL": "mysql://x"})
