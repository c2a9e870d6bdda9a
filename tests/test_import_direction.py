"""Imports run one way (docs/architecture.md, "Code map").

The layers, bottom to top: core/ (types, settings, request context, the store), proxy/ (what serves
traffic), judges/, then datasets/ in three parts: evalsets/, report/ (with the statistics and the
judge-versus-people agreement), grading/ (the grading page, which also serves the report to
admins), and cli/ on top. A module imports only its own layer and the layers below it; nothing
imports cli/. Every module is read with `ast`, so imports inside functions and under TYPE_CHECKING
count too. No two modules import each other, directly or around a longer loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "proxy", "judges", "datasets", "cli")
LAYERS = ("core", "proxy", "judges", "datasets", "datasets.evalsets", "datasets.report", "datasets.grading", "cli")


def layer_of(module: str) -> str | None:
    """The layer of shadoweval.<...>: the longest entry of LAYERS it starts with (None: not ours)."""
    parts = module.split(".")
    if parts[0] != "shadoweval" or len(parts) < 2:
        return None
    inner = ".".join(parts[1:])
    found = [layer for layer in LAYERS if inner == layer or inner.startswith(layer + ".")]
    return max(found, key=len) if found else None


def module_name(package: str, path: Path) -> str:
    """shadoweval.<package>.<dotted path>, for a file under ROOT/<package>."""
    parts = list(path.relative_to(ROOT / package).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["shadoweval", package, *parts])


def imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """Every absolute module name `source` (the module `module`) imports, relative imports resolved."""
    found: set[str] = set()
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from shadoweval import cli` or `from . import x` may name a module, not an attribute
            found.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) ==
              "import_module" and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            found.add(node.args[0].value)
    return found


def violations(package: str, module: str, imports: set[str]) -> list[str]:
    """Imports of `module` from a layer above its own (`package` is its folder, kept for messages)."""
    own = layer_of(module)
    assert own is not None, module
    bad = []
    for name in sorted(imports):
        target = layer_of(name)
        if target is not None and LAYERS.index(target) > LAYERS.index(own):
            bad.append(f"{module} imports {name}")
    return bad


def all_modules() -> list[tuple[str, str, Path]]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found.append((package, module_name(package, path), path))
    return found


def test_every_package_is_read():
    modules = {module for _, module, _ in all_modules()}
    for expected in ("shadoweval.proxy.app", "shadoweval.judges.runner", "shadoweval.datasets.evalsets.replay_server",
                     "shadoweval.cli.main", "shadoweval.cli.demo.run"):
        assert expected in modules


def test_imports_run_one_way():
    bad = []
    for package, module, path in all_modules():
        imports = imported_modules(path.read_text(), module, path.name == "__init__.py")
        bad += violations(package, module, imports)
    assert bad == []


def test_the_check_catches_a_wrong_way_import():
    # the checker itself: a proxy module importing datasets, absolute or relative, is reported
    absolute = imported_modules("def f():\n    from shadoweval.datasets.report.build import build_report\n",
                                "shadoweval.proxy.app", False)
    assert violations("proxy", "shadoweval.proxy.app", absolute) == [
        "shadoweval.proxy.app imports shadoweval.datasets.report.build",
        "shadoweval.proxy.app imports shadoweval.datasets.report.build.build_report"]
    relative = imported_modules("from ...cli import main\n", "shadoweval.datasets.evalsets.replay", False)
    assert violations("datasets", "shadoweval.datasets.evalsets.replay", relative) == [
        "shadoweval.datasets.evalsets.replay imports shadoweval.cli", "shadoweval.datasets.evalsets.replay imports shadoweval.cli.main"]
    assert violations("cli", "shadoweval.cli.main", absolute | relative) == []
    # inside datasets/: the report may not import the grading page, which sits above it
    upward = imported_modules("from ..grading.queue import build_queue\n", "shadoweval.datasets.report.build", False)
    assert violations("datasets", "shadoweval.datasets.report.build", upward) == [
        "shadoweval.datasets.report.build imports shadoweval.datasets.grading.queue",
        "shadoweval.datasets.report.build imports shadoweval.datasets.grading.queue.build_queue"]
    assert violations("datasets", "shadoweval.datasets.grading.web", upward) == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_modules():
    # lazy imports inside functions count: a cycle hidden in a function is still two modules that
    # cannot be understood (or moved) one without the other
    modules = {module: path for _, module, path in all_modules()}
    graph = {module: {name for name in imported_modules(path.read_text(), module, path.name == "__init__.py")
                      if name in modules and name != module}
             for module, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_check_catches_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
