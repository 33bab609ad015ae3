"""The package's shape, checked: no import cycles, files of one job and a readable size, no run metadata on
modules, process-wide CPU settings only where training starts, every module documented in ARCHITECTURE.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "aekit"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """``{"aekit.core.config": path, ...}`` for every Python file of the package (a package is its __init__)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The aekit modules ``name`` imports anywhere in its file, inside functions too; ``from X import y`` counts as
    importing ``X.y`` when that is a module. Importing ``a.b.c`` also runs ``a/b/__init__``; those implicit edges
    are left out, or the package's root (which re-exports the public API) would close a loop with every module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source for alias in node.names]
        else:
            continue
        edges.update(t for t in targets if t in known and t != name)
    return edges


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(name, path, set(found)) for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycles():
    graph = import_graph()
    assert len(graph) > 40 and graph["aekit.api"] >= {"aekit.training.loop", "aekit.run"}  # the walk sees imports
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle_through_a_function_level_import(tmp_path):
    (tmp_path / "a.py").write_text("from b import x\n")
    (tmp_path / "b.py").write_text("def f():\n    from c import y\n")
    (tmp_path / "c.py").write_text("import a\n")
    known = {"a", "b", "c"}
    graph = {m: imported(m, tmp_path / f"{m}.py", known) for m in known}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_core_and_the_data_depend_on_nothing_above_them():
    graph = import_graph()
    lower = ("aekit.core", "aekit.data", "aekit.errors", "aekit.files")
    for name, targets in graph.items():
        if name.startswith(("aekit.core", "aekit.data")):
            assert all(t.startswith(lower) for t in targets), (name, sorted(targets))


@pytest.mark.parametrize("name, path", sorted(modules().items()))
def test_no_file_is_over_400_lines(name, path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= MAX_LINES, name


RUN_METADATA = r"run_config|run_dir|pretrained|epoch|card"


def test_run_metadata_never_rides_on_a_module():
    """What a run knows about itself is on the Run (aekit.run), never set on or read off an nn.Module."""
    pattern = re.compile(rf"\b(getattr|hasattr|delattr|setattr)\(\s*(?!args\b)\w+\s*,\s*[\"']({RUN_METADATA})[\"']")
    attribute = re.compile(rf"\bmodel\.({RUN_METADATA})\b")
    for name, path in modules().items():
        text = path.read_text(encoding="utf-8")
        assert not pattern.search(text), name
        assert not attribute.search(text), (name, attribute.search(text))


def test_process_wide_cpu_settings_change_only_where_training_or_the_command_starts():
    callers = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef):
                calls = {c.func.id for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)}
                if "tune_cpu" in calls:
                    callers.add(f"{name}.{node.name}")
    # the aekit command, aekit.train, and the scikit-learn estimator's fit (aekit.train's in-memory twin)
    assert callers == {"aekit.cli.main._main", "aekit.api.train", "aekit.sklearn.fit"}


def test_architecture_md_names_every_module():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for name, path in modules().items():
        relative = path.relative_to(PACKAGE).as_posix()
        if path.name == "__init__.py" and path.parent != PACKAGE:
            relative = path.parent.relative_to(PACKAGE).as_posix() + "/"
        if relative in ("__init__.py", "__main__.py", "_version.py"):
            continue
        assert relative.rpartition("/")[2] in text or relative in text, relative
