"""One exception hierarchy: every exception the project defines derives from ShadowevalError (but
proxy/http1.py's, which imports nothing from the project, and click's, which the CLI raises)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import click

from shadoweval.core.errors import ShadowevalError

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = {("proxy", "http1")}  # imports nothing from the project (see its docstring)


def _defined_exceptions():
    for pkg in ("core", "proxy", "judges", "datasets", "cli"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            mod = path.relative_to(ROOT / pkg).with_suffix("").as_posix().replace("/", ".")
            if (pkg, mod) in OUTSIDE or mod.endswith("__main__"):
                continue
            names = [n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)]
            if not names:
                continue
            module = importlib.import_module(f"shadoweval.{pkg}.{mod}")
            for name in names:
                cls = getattr(module, name, None)
                if isinstance(cls, type) and issubclass(cls, BaseException) and cls.__module__ == module.__name__:
                    yield f"{pkg}.{mod}.{name}", cls


def test_every_project_exception_derives_from_the_root():
    found = dict(_defined_exceptions())
    assert {"core.settings.SettingsError", "proxy.paths.InvalidPath", "proxy.candidates.CandidateError",
            "proxy.app.ProductionStreamBroken", "proxy.app.ClientGone", "core.store_grading.StoreUnavailable",
            "judges.calibrate.CalibrationError"} <= found.keys()
    stray = [k for k, cls in found.items() if not issubclass(cls, ShadowevalError | click.ClickException)]
    assert stray == []


def test_the_old_bases_still_catch_them():
    from shadoweval.core.settings import SettingsError
    from shadoweval.core.store_grading import StoreUnavailable
    from shadoweval.judges.calibrate import CalibrationError
    from shadoweval.proxy.paths import InvalidPath

    for cls in (SettingsError, InvalidPath, CalibrationError):
        assert issubclass(cls, ValueError)
    assert issubclass(StoreUnavailable, RuntimeError)
