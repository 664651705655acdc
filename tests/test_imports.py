"""House rule 1, checked on the source: imports point one way, with no cycle anywhere in `squeezer/`.

The API layer sits on the engine; nothing below it imports it. Serving never imports the compiler (`serve
--optimize` gets the compiler's step from the CLI) nor the test helpers. Lazy imports inside functions count:
a cycle through one is still a cycle in the design.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import squeezer

ROOT = Path(squeezer.__file__).parent
# Entry points that wire the layers together: they may import any of them.
ENTRY_POINTS = {"squeezer", "squeezer.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports (at any depth of its code)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                names = {f"{base}.{alias.name}" for alias in node.names}
                found |= names if names <= modules.keys() else names | {base}  # `from pkg import submodule`
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def importers_of(graph: dict[str, set[str]], layer: str, allowed: set[str]) -> list[str]:
    """Modules outside `allowed` (and outside the layer itself) that import a module of `layer`."""
    def inside(module: str, prefix: str) -> bool:
        return module == prefix or module.startswith(prefix + ".")

    return sorted(
        f"{m} -> {d}" for m, deps in graph.items() for d in deps
        if inside(d, layer) and not inside(m, layer) and m not in ENTRY_POINTS and not any(inside(m, a) for a in allowed)
    )


def test_no_import_cycle() -> None:
    try:
        TopologicalSorter(import_graph()).prepare()
    except CycleError as error:
        raise AssertionError(f"import cycle: {' -> '.join(error.args[1])}") from None


def test_serving_never_imports_the_compiler() -> None:
    assert importers_of(import_graph(), "squeezer.compiler", allowed={"squeezer.testing"}) == []


def test_nothing_below_the_api_imports_it() -> None:
    # squeezer.ray_serve sits above the API, like the CLI: it deploys the very app `serve` runs, on Ray
    assert importers_of(import_graph(), "squeezer.api", allowed={"squeezer.ray_serve"}) == []


def test_only_tests_and_bench_use_the_test_helpers() -> None:
    assert importers_of(import_graph(), "squeezer.testing", allowed={"squeezer.benchmark"}) == []


def test_the_checks_see_a_violation(tmp_path: Path, monkeypatch) -> None:
    """The graph is read from the files: a module that imported the compiler would be reported."""
    graph = import_graph()
    graph["squeezer.engine"] = graph["squeezer.engine"] | {"squeezer.compiler.optimize"}
    assert importers_of(graph, "squeezer.compiler", allowed=set()) == ["squeezer.engine -> squeezer.compiler.optimize"]
    graph["squeezer.config"] = graph["squeezer.config"] | {"squeezer.engine"}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError:
        return
    raise AssertionError("a cycle through squeezer.config and squeezer.engine went unnoticed")
