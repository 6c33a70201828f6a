"""The layers of fusionkit: every module imports, and no two modules import each other,
directly or round a circle (a circle means neither can be read, tested or moved alone).

The check is static: each module's source is parsed and every import in it counts, also
one inside a function (a late import hides a circle from Python, not from a reader). An
import of a package counts as an import of its ``__init__``; ``from package import name``
counts as an import of the submodule ``package.name`` when there is one.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import fusionkit

ROOT = Path(fusionkit.__file__).parent
SKIP = ("_worker_path",)  # vendored for Ray workers, not fusionkit's own code
# The one arrow that may run up: the package root hands out the notebook layer's entry
# points (the IPython extension hook, ``fk.dashboard()``), importing it late, on use.
UPWARD = {("fusionkit", "fusionkit.notebook.magics"), ("fusionkit", "fusionkit.notebook.dashboard")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        if any(part in SKIP for part in rel.parts):
            continue
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The fusionkit modules that module ``name`` (at ``path``) imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            subs = {f"{base}.{alias.name}" for alias in node.names} & MODULES.keys()
            found |= subs
            if len(subs) < len(node.names):  # some name is the package's own, not a module
                found.add(base)
    return {m for m in found if m in MODULES and m != name}


def _graph() -> dict[str, set[str]]:
    return {name: {m for m in _imports(name, path) if (name, m) not in UPWARD}
            for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected group of modules (Tarjan), as a path a -> ... -> a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    circles: dict[frozenset[str], list[str]] = {}
    for group in groups:
        for start in sorted(group):
            circle = _circle(graph, group, start)
            circles.setdefault(frozenset(circle), circle)
    return sorted(circles.values())


def _circle(graph: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """A shortest circle through ``start`` within ``group`` (breadth-first)."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & group):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError(group)


def test_the_graph_sees_circles_and_late_imports() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    # an import inside a function counts (``models.model`` imports the learner protocol late)
    assert "fusionkit.training.protocol" in _imports("fusionkit.models", MODULES["fusionkit.models"])


def test_no_import_circles() -> None:
    circles = _cycles(_graph())
    assert not circles, "fusionkit modules import each other in a circle:\n" + "\n".join(
        " -> ".join(c) for c in circles)


# The rooms of fusionkit from the bottom up (docs/architecture.md): a module may import its
# own room and any room ranked lower, never one ranked the same or higher.
RANK = {
    **dict.fromkeys(["_clock", "_duration", "_files", "_moved", "errors"], 0),
    **dict.fromkeys(["_names", "_optional", "_rpc", "_signing", "_suggest", "_widgets", "batch"],
                    0.5),
    "runtime": 1, "drift_detection": 2, "sources": 2, "streaming": 3, "training": 4, "sinks": 4,
    "registry": 5, "serving": 6, "monitor": 7, "control": 8, "connect": 9,
    "stages": 10, "models": 10, "handles": 11, "online": 11, "api": 12, "drift_api": 13,
    "tables_api": 13,
    "fusionkit": 14, "report": 15, "demo": 15.5, "cli": 16, "__main__": 17, "notebook": 20,
    "pytest_nbval": 21,  # the nbval plugin: runs notebooks, above everything
}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if _room(a) != _room(b) and RANK[_room(b)] >= RANK[_room(a)])


def test_the_rank_check_sees_an_arrow_up() -> None:
    graph = {"fusionkit.runtime.stage": {"fusionkit.streaming.worker"},
             "fusionkit.streaming.worker": {"fusionkit.runtime.stage", "fusionkit.batch"}}
    assert _upward(graph) == ["fusionkit.runtime.stage -> fusionkit.streaming.worker"]


def test_every_room_has_a_rank() -> None:
    assert {_room(m) for m in MODULES} <= RANK.keys()


def test_no_arrow_runs_up() -> None:
    """Lower rooms never import higher ones: sources, streaming, training, the registry and
    serving stand on runtime; the control plane on them; the API on the control plane."""
    upward = _upward(_graph())
    assert not upward, "imports that run up a layer:\n" + "\n".join(upward)


@pytest.mark.parametrize("name", sorted(set(MODULES) - {"fusionkit.__main__"}))  # runs the CLI
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_the_tutorials_use_only_the_public_api() -> None:
    """Notebooks, docs and README import from ``fusionkit`` itself (its ``__all__``), never
    from a module inside it; every name of ``__all__`` is there."""
    import re

    repo = ROOT.parent
    texts = [*repo.glob("notebooks/*.ipynb"), *repo.glob("docs/*.md"), repo / "README.md"]
    private = [f"{p.name}: {m}" for p in texts
               for m in re.findall(r"from fusionkit\.[\w.]+ import [\w, ]+", p.read_text())]
    assert not private, "imported from inside fusionkit:\n" + "\n".join(private)
    assert [n for n in fusionkit.__all__ if not hasattr(fusionkit, n)] == []
