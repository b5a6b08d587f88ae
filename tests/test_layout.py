"""The package's house rules, checked: no import circles, imports run one way between wings,
nothing imports the CLI, and no module grows past ``MAX_LINES``.

The wings and their floors are listed in DESIGN.md; a module may import its own wing and any
wing on a lower floor, never one on the same floor or above (so train cannot reach into
sweep, and report cannot reach into cli).
"""

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "stability"
MAX_LINES = 400
# Floor of each top-level part of the package: lower floors never import higher ones.
FLOORS = {
    "errors": 0,
    "interrupts": 0,
    "core": 1,
    "results": 1,
    "notes": 2,
    "train": 2,
    "sweep": 2,
    "measure": 2,
    "testing": 2.5,  # users' assertions: read outputs and blocks as the probe does
    "usermodel": 2,
    "experiments": 2.5,  # composes notes, train and sweep; the report shows it
    "scaling": 2.5,  # coordinate checks: composes usermodel and measure; the CLI runs it
    "mup": 3,  # stability.mup: the public muP entry, re-exports scaling for user code
    "report": 3,
    "cli": 4,
    "integrations": 3,  # watch and the pytest plugin: the tool inside user code
    "__main__": 5,
    "__init__": 5,
}
# Same-floor wings that may use each other, one way only, with the reason.
ALLOWED_SIDEWAYS = {
    ("measure", "sweep"): "the baseline probes its fixed grid with the sweep's run_cell",
    ("train", "notes"): "the trainer trains on the notes' data sets and losses",
    ("integrations", "report"): "watch and the pytest plugin draw their pages with the report's",
    ("core", "results"): "never: listed so the rule is explicit",
}
ALLOWED_SIDEWAYS.pop(("core", "results"))


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The ``stability.*`` modules ``path`` imports. ``from pkg import sub`` names the
    submodule (the package's ``__init__`` runs for any submodule import, so it is no edge of
    its own); ``from pkg import name`` names the package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("stability"))
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").startswith("stability")
        ):
            module = str(node.module)
            subs = {f"{module}.{a.name}" for a in node.names}
            found.update(subs & known)
            if subs - known:
                found.add(module)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    known = set(files)
    return {
        name: {m for m in imports_of(path, known) if m in files and m != name}
        for name, path in files.items()
    }


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def wing(module: str) -> str:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    # testing_checks, testing_layers, testing_strategies: the testing API split for length
    return "testing" if name.startswith("testing_") else name


def upward(edges: Mapping[str, Iterable[str]]) -> list[str]:
    """Imports that run to the same floor or up, other than within a wing or allowed."""
    bad = []
    for src, targets in edges.items():
        for dst in targets:
            a, b = wing(src), wing(dst)
            if a == b or (a, b) in ALLOWED_SIDEWAYS or (b == "__init__" and a == "__main__"):
                continue
            if FLOORS[b] >= FLOORS[a]:
                bad.append(f"{src} -> {dst} ({a} floor {FLOORS[a]}, {b} floor {FLOORS[b]})")
    return sorted(bad)


def test_every_part_has_a_floor() -> None:
    assert {wing(m) for m in graph()} <= set(FLOORS)


def test_no_import_circles() -> None:
    assert cycles(graph()) == []


def test_imports_run_one_way() -> None:
    assert upward(graph()) == []


def test_nothing_imports_the_cli() -> None:
    users = [s for s, ts in graph().items() if wing(s) not in ("cli", "__main__")
             and any(wing(t) == "cli" for t in ts)]  # fmt: skip
    assert users == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: module_name(p))
def test_module_size(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module_name(path)} has {lines} lines; split it by concept"


# -- witnesses: the same checks on known-bad graphs ----------------------------------------
def test_witness_cycles_finds_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_witness_upward_finds_core_importing_report() -> None:
    bad = upward({"stability.core.model": {"stability.report.page"}})
    assert bad and "core floor 1" in bad[0]


def test_witness_upward_finds_sideways_sweep_to_train() -> None:
    assert upward({"stability.sweep.run": {"stability.train.trainer"}})
