"""The package's layering: modules import downwards only (no import cycle, lazy imports included)."""

import ast
from pathlib import Path

import stabook

PACKAGE = Path(stabook.__file__).parent


def _imports() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph = {}
    for path in PACKAGE.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names if alias.name in modules)
        graph[path.stem] = found - {path.stem, "__init__"}
    return graph


def test_no_module_imports_itself_back():
    graph = _imports()
    state = {}

    def visit(module, path):
        if state.get(module) == "open":
            raise AssertionError("import cycle: " + " -> ".join([*path, module]))
        if state.get(module) == "done":
            return
        state[module] = "open"
        for dep in sorted(graph.get(module, ())):
            visit(dep, [*path, module])
        state[module] = "done"

    for module in sorted(graph):
        visit(module, [])
    # the layers the command line and the chapters rely on
    assert "train" not in graph["baselines"] and "metrics" not in graph["baselines"]
    assert "compare" not in graph["train"] and "train" in graph["compare"]
    # the trainer's three rooms: settings below run folders below the loop
    assert "train" not in graph["config"] | graph["runs"] and "runs" not in graph["config"]
    # the report sits below the comparison runner and the plots, and reads only metrics
    assert graph["report"] == {"metrics"} and "compare" not in graph["viz"]
    assert graph["_checks"] == set() and graph["runtime"] == set()
