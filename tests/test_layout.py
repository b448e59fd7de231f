"""The package layout stays readable: layers enforced and no import circle, over EVERY import (function-local ones
included), each check shown to fail on a violation planted in a copy of the package; no private names imported across
modules.

Layers, bottom up: the ground modules (configuration, errors, fingerprint, tables, scoring, languages, status) import
no engine; engines import nothing of the run layer (xl_suite.run, runner, executors), synthesis or evaluation; the
run layer imports neither synthesis nor evaluation; synthesis does not import evaluation.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest


PACKAGE = Path(__file__).resolve().parents[1] / "xl_suite"


#: The layers, bottom up. A module may import from its own layer and the layers its rules do not forbid.
GROUND = frozenset(
    f"xl_suite.{m}" for m in ("configuration", "errors", "fingerprint", "tables", "scoring", "languages", "status")
)
#: layer -> the layers it must never import (any import, function-local ones included).
FORBIDDEN = {
    "ground": {"engines"},
    "engines": {"run", "synthesis", "evaluation"},
    "run": {"synthesis", "evaluation"},
    "synthesis": {"evaluation"},
}


def _module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str | None:
    """The layer of a module of xl_suite, or None (modules above the layers: commands, cli, builders...)."""
    if module in GROUND:
        return "ground"
    if module == "xl_suite.engines" or module.startswith("xl_suite.engines."):
        return "engines"
    if module in ("xl_suite.run", "xl_suite.runner", "xl_suite.executors") or module.startswith("xl_suite.run."):
        return "run"
    for name in ("synthesis", "evaluation"):
        if module == f"xl_suite.{name}" or module.startswith(f"xl_suite.{name}."):
            return name
    return None


def _imported(node, current: str, is_package: bool, modules) -> list[str]:
    """The xl_suite modules an import statement loads (``from pkg import mod`` names the submodule)."""
    names = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        module = node.module or ""
        if node.level:  # relative import
            base = current.split(".") if is_package else current.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([module] if module else []))
        names = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
    out = []
    for name in names:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in modules and name.startswith("xl_suite"):
            out.append(name)
    return out


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the xl_suite modules it imports, counting EVERY import statement (function-local ones included)."""
    modules = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps.update(_imported(node, name, path.name == "__init__.py", modules))
        graph[name] = deps - {name}
    return graph


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``a -> b (layer -> layer)`` for every import that crosses a forbidden layer boundary."""
    return [
        f"{module} -> {dep} ({layer(module)} -> {layer(dep)})"
        for module, deps in sorted(graph.items())
        for dep in sorted(deps)
        if layer(dep) in FORBIDDEN.get(layer(module), ())
    ]


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles (strongly connected components of more than one module), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v):  # Tarjan
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle_counting_every_import():
    assert import_cycles(import_graph()) == []


def test_the_layers_hold_for_every_import():
    assert layer_violations(import_graph()) == []


PLANTS = {
    # file, code appended, what the checks must report
    "engine imports the run layer in a function": (
        "engines/base.py",
        "\n\ndef _planted():\n    from xl_suite.executors import current_executor\n\n    return current_executor\n",
        "xl_suite.engines.base -> xl_suite.executors (engines -> run)",
    ),
    "ground imports an engine": (
        "tables.py",
        "\n\ndef _planted():\n    import xl_suite.engines.fake\n\n    return xl_suite.engines.fake\n",
        "xl_suite.tables -> xl_suite.engines.fake (ground -> engines)",
    ),
    "run layer imports synthesis (relative import)": (
        "run/store.py",
        "\n\ndef _planted():\n    from ..synthesis import stages\n\n    return stages\n",
        "xl_suite.run.store -> xl_suite.synthesis.stages (run -> synthesis)",
    ),
    "synthesis imports evaluation": (
        "synthesis/report.py",
        "\n\ndef _planted():\n    from xl_suite.evaluation.judging import parsing\n\n    return parsing\n",
        "xl_suite.synthesis.report -> xl_suite.evaluation.judging.parsing (synthesis -> evaluation)",
    ),
}


def _copy_sources(tmp_path) -> Path:
    """The package's Python files, copied (nothing else: the checks read sources only)."""
    copy = tmp_path / "xl_suite"
    for path in PACKAGE.rglob("*.py"):
        target = copy / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return copy


@pytest.mark.parametrize("plant", sorted(PLANTS))
def test_a_planted_layer_violation_is_caught(tmp_path, plant):
    copy = _copy_sources(tmp_path)
    path, code, expected = PLANTS[plant]
    with (copy / path).open("a", encoding="utf-8") as f:
        f.write(code)
    assert layer_violations(import_graph(copy)) == [expected]


def test_a_planted_import_circle_is_caught(tmp_path):
    copy = _copy_sources(tmp_path)
    # status is imported by tables; a function-local import back closes a circle
    with (copy / "status.py").open("a", encoding="utf-8") as f:
        f.write("\n\ndef _planted():\n    from xl_suite import tables\n\n    return tables\n")
    assert import_cycles(import_graph(copy)) == [["xl_suite.status", "xl_suite.tables"]]


def test_no_private_names_imported_across_modules():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("xl_suite"):
                if node.module.startswith("xl_suite.commands") and _module_name(path).startswith("xl_suite.commands"):
                    continue  # commands/_args.py is the commands package's own helper module
                offenders += [
                    f"{_module_name(path)}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__version__"
                ]
    assert not offenders, offenders


def test_the_old_single_modules_are_packages():
    assert (PACKAGE / "synthesis" / "__init__.py").is_file() and not (PACKAGE / "synthesis.py").exists()
    assert (PACKAGE / "evaluation" / "__init__.py").is_file() and not (PACKAGE / "evaluation.py").exists()
    assert not (PACKAGE / "generation.py").exists()
