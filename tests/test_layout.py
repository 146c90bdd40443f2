"""The layering of docs/architecture.md, checked on the source: who may import whom.

From the top: the command line -> ``pipelines`` and ``training`` -> the ``gaittools`` library.
Inside the library, rooms (subpackages) in the order data flows; a room imports only rooms
before it in ``ROOMS`` (and itself). The library never imports the layers above it, ``training`` never imports ``pipelines``, and no
modules import each other in a cycle (imports inside functions count: they still tie the
modules together). Read from the source with ``ast``, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gaittools", "pipelines", "training")
#: The library's rooms, lowest first: inputs, people, motion, storage, protocols, deployment,
#: synthetic data, the command line.
ROOMS = ("sources", "person", "flow", "store", "protocols", "deploy", "synth", "cli")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (anywhere in its body)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                target = _resolve(name, modules)
                if target and target != module:
                    targets.add(target)
        graph[module] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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


def test_the_library_imports_no_layer_above_it():
    graph = import_graph()
    up = {m: sorted(t for t in ts if t.split(".")[0] != "gaittools")
          for m, ts in graph.items() if m.split(".")[0] == "gaittools"}
    assert {m: ts for m, ts in up.items() if ts} == {}
    sideways = {m: sorted(t for t in ts if t.startswith("pipelines"))
                for m, ts in graph.items() if m.startswith("training")}
    assert {m: ts for m, ts in sideways.items() if ts} == {}


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_the_checker_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _room(module: str) -> str | None:
    """``gaittools.person.blobs`` -> ``person``; the package root itself has no room."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "gaittools" else None


def upward_imports(graph: dict[str, set[str]]) -> dict[str, list[str]]:
    """Library module -> the modules it imports from a room above its own."""
    rank = {room: i for i, room in enumerate(ROOMS)}
    found = {}
    for module, targets in graph.items():
        room = _room(module)
        if room is None:
            continue
        up = sorted(t for t in targets if _room(t) is not None and rank[_room(t)] > rank[room])
        if up:
            found[module] = up
    return found


def test_the_library_is_its_rooms():
    """Every library module lives in a named room: ``ls gaittools/`` reads as the pipeline."""
    package = ROOT / "gaittools"
    loose = sorted(p.name for p in package.glob("*.py") if p.name != "__init__.py")
    rooms = sorted(p.name for p in package.iterdir() if (p / "__init__.py").exists())
    assert loose == [] and rooms == sorted(ROOMS)


def test_no_room_imports_one_above_it():
    assert upward_imports(import_graph()) == {}


def test_the_room_checker_sees_an_upward_import():
    graph = {"gaittools.sources.video": {"gaittools.store.zarr_store"},
             "gaittools.store.zarr_store": {"gaittools.sources.video"}}
    assert upward_imports(graph) == {"gaittools.sources.video": ["gaittools.store.zarr_store"]}
