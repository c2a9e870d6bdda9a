"""What crosses a module boundary has a public name: no module imports another's `_private` name or
reads `module._private` (the leading underscore has to mean "only this module uses it")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# datasets/report/svg.py's helpers used by html.py are renamed in their own change
PENDING = {("datasets/report/html.py", "_ci"), ("datasets/report/html.py", "_e"), ("datasets/report/html.py", "_f")}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _crossings():
    for folder in ("core", "proxy", "judges", "datasets", "cli", "scripts", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text())
            modules = set()
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom):
                    for a in node.names:
                        if _private(a.name):
                            yield rel, a.name
                        else:
                            modules.add(a.asname or a.name)
                elif isinstance(node, ast.Import):
                    modules.update((a.asname or a.name).split(".")[0] for a in node.names)
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                        and node.value.id in modules):
                    yield rel, node.attr


def test_no_private_name_is_used_from_another_module():
    assert sorted(set(_crossings()) - PENDING) == []
