"""Data flows one way between the package's layers: llm <- prompts <- data <- train/eval <- report.

A layer imports only from layers below it (docs/architecture.md, "Package layers"); the
orchestration modules (stages, plan, workflow, ...) sit above them all. Any import counts, also
one inside a function: a deferred import is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import speed

LAYERS = {"llm": 0, "prompts": 1, "data": 2, "train": 3, "eval": 3, "report": 4}
ROOT = Path(speed.__file__).parent


def unit_of(path: Path) -> str:
    """The subpackage (or top-level module) a file belongs to."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return parts[0]


def is_unit(name: str) -> bool:
    return (ROOT / name).is_dir() or (ROOT / f"{name}.py").is_file()


def imported_units(path: Path) -> set[str]:
    units = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "speed" and len(parts) > 1 and is_unit(parts[1]):
                units.add(parts[1])
    return units


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        unit = unit_of(path)
        graph[unit] |= imported_units(path) - {unit}
    return graph


def test_layers_import_only_downwards():
    wrong = [
        f"speed.{src} imports speed.{dst}"
        for src, dsts in import_graph().items()
        for dst in dsts
        if src in LAYERS and dst in LAYERS and LAYERS[dst] >= LAYERS[src]
    ]
    assert not wrong, wrong


def test_no_import_loop_among_subpackages():
    graph = import_graph()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    loops = sorted(unit for unit in graph if reaches(unit, unit, {unit}))
    assert not loops, f"import loops through {loops}"


def test_the_check_sees_imports():
    # The graph is not empty by accident: known edges of the layering are found.
    graph = import_graph()
    assert "llm" in graph["prompts"] and "prompts" in graph["data"]
