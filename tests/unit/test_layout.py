"""The house's shape, checked by reading the source with `ast`: imports inside
`openr/` form no circle (at module level or inside functions), and the scripts
under `bench/` import the package, never the tests."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The modules of `modules` that `path` imports, anywhere in it: `from a import b`
    is module `a.b` where b is a submodule, else `a`; `import a.b.c` is the longest known prefix."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            anchor = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join(anchor + ([node.module] if node.module else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    paths = {module_name(p): p for p in (ROOT / package).rglob("*.py")}
    return {name: imported_modules(path, set(paths)) - {name} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle, as the modules along it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_sees_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_circle():
    graph = import_graph("openr")
    assert "openr.search.auto" in graph["openr.search.registry"]  # the graph sees real edges
    assert find_cycle(graph) is None


def bench_breaches(source: str, name: str, scripts: set[str]) -> list[str]:
    """What in one bench file (`source`, reported as `name`) breaks DESIGN.md's rule,
    as `name:line: what`: an import from `tests`, a bench script imported by its bare
    name instead of as `bench.NAME`, or the import path edited (`sys.path`, or
    `PYTHONPATH` for a child process)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""] + [f"sys.{alias.name}" for alias in node.names if node.module == "sys"]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            names = [f"{node.value.id}.{node.attr}"]
        elif isinstance(node, ast.Constant) and node.value == "PYTHONPATH":
            names = ["PYTHONPATH"]
        else:
            continue
        found += [(node.lineno, imported) for imported in names
                  if imported.split(".")[0] in {"tests", *scripts} or imported in ("sys.path", "PYTHONPATH")]
    return [f"{name}:{line}: {what}" for line, what in sorted(found)]


def test_bench_breach_finder_sees_each_kind():
    source = ("import sys, os\nfrom tests.support.servers import ServerProcess\nimport search_adapters\n"
              "from bench.search_latency import latency_ratio\nfrom sys import path\nsys.path.insert(0, '.')\n"
              "os.environ['PYTHONPATH'] = '.'\n")
    assert bench_breaches(source, "b.py", {"search_adapters", "search_latency"}) == [
        "b.py:2: tests.support.servers", "b.py:3: search_adapters", "b.py:5: sys.path", "b.py:6: sys.path",
        "b.py:7: PYTHONPATH"]


def test_bench_imports_the_package_never_the_tests_and_leaves_the_import_path_alone():
    paths = sorted((ROOT / "bench").rglob("*.py"))
    scripts = {path.stem for path in paths} - {"__init__"}
    assert "search_adapters" in scripts  # the scripts are found
    breaches = [b for path in paths for b in bench_breaches(path.read_text(), str(path.relative_to(ROOT)), scripts)]
    assert breaches == []
