"""The import graph follows the layers: nothing imports a layer above it.

    foundation (clipeval, errors, atomic, cache, contracts, interrupt, logs, progress, distributed, sweep,
                config)
      <- results (records, samples, metrics, the store)
      <- data, models (neither imports the other)
      <- features
      <- evaluators, embedded (the toy world: digits data, their baseline zoo)
      <- report, check (read the store: never the runner or the evaluators)
      <- run (the orchestrator: evaluates, then calls report at the end)
      <- cli, bench

Every ``import`` counts, at module level or inside a function, and under ``if TYPE_CHECKING:``
too, except in ``clipeval/contracts.py``, whose job is to name the types the layers exchange
(Record, FeatureSet, Runtime) for type checkers only. ``hydra_plugins/`` (the task-folder config
source, the sweeper) may use the foundation only.

``python tests/test_layers.py`` prints the graph: each layer and the layers it imports.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOUNDATION = "foundation"
FOUNDATION_MODULES = {
    "clipeval",
    "clipeval.errors",
    "clipeval.atomic",
    "clipeval.cache",
    "clipeval.contracts",
    "clipeval.interrupt",
    "clipeval.logs",
    "clipeval.progress",
    "clipeval.distributed",
    "clipeval.sweep",  # a sweep's job context (what fail() and progress ask) and the sweeper's summary
}
FOUNDATION_PACKAGES = {"config"}

BELOW_FEATURES = {"results", "data", "models"}
#: layer -> the layers it may import besides itself and the foundation
MAY_IMPORT: dict[str, set[str]] = {
    FOUNDATION: set(),
    "hydra_plugins": set(),
    "results": set(),
    "data": {"results"},
    "models": {"results"},
    "features": BELOW_FEATURES,
    "evaluators": BELOW_FEATURES | {"features"},
    "embedded": BELOW_FEATURES | {"features"},
    "report": BELOW_FEATURES | {"features", "check"},
    "check": BELOW_FEATURES | {"features", "report"},
    "run": BELOW_FEATURES | {"features", "evaluators", "embedded", "report", "check"},
    "cli": BELOW_FEATURES | {"features", "evaluators", "embedded", "report", "check", "run"},
    "bench": BELOW_FEATURES | {"features", "evaluators", "embedded", "report", "check", "run"},
}

#: the arrows the issue names (and its "Done when": none from evaluators to report)
FORBIDDEN = [
    ("evaluators", {"report", "run", "check", "cli"}),
    ("results", {"data", "models", "features", "evaluators", "run", "report", "check"}),
    ("report", {"run", "evaluators"}),
    ("check", {"run", "evaluators"}),
    ("data", {"features", "evaluators", "run", "report", "check"}),
    ("models", {"features", "evaluators", "run", "report", "check"}),
]


#: clipeval's subpackages and top-level modules
PARTS = {p.stem for p in (ROOT / "clipeval").iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}


def layer_of(name: str) -> str:
    """The layer of a clipeval module, or of a name in one (or of hydra_plugins): its subpackage, or the foundation."""
    if name.startswith("hydra_plugins"):
        return "hydra_plugins"
    parts = name.split(".")
    if len(parts) == 1 or parts[1] not in PARTS:  # the package itself, or a name it defines (__version__)
        return FOUNDATION
    if f"clipeval.{parts[1]}" in FOUNDATION_MODULES or parts[1] in FOUNDATION_PACKAGES:
        return FOUNDATION
    return "cli" if parts[1] in ("cli", "__main__") else parts[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[str, int, bool]]:
    """(imported name, line, under ``if TYPE_CHECKING``) for every import in ``source``, wherever it is.

    ``from a.b import c`` gives ``a.b.c``: ``c`` may be a submodule (``from clipeval import report``).
    """
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, typing_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for inner in child.body:
                    visit_one(inner, True)
                for inner in child.orelse:
                    visit_one(inner, typing_only)
            else:
                visit_one(child, typing_only)

    def visit_one(node: ast.AST, typing_only: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno, typing_only) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, up level - 1
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.extend(
                (f"{name}.{alias.name}", node.lineno, typing_only) for alias in node.names if alias.name != "*"
            )
        visit(node, typing_only)

    visit(ast.parse(source), False)
    return found


def edges() -> list[tuple[str, str, str, int]]:
    """(importing module, imported clipeval module, importing file, line) across clipeval/ and hydra_plugins/."""
    out = []
    for path in sorted([*(ROOT / "clipeval").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]):
        module = module_name(path)
        for name, line, typing_only in imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
            if typing_only and module == "clipeval.contracts":
                continue  # the contracts name the types the layers exchange, for type checkers only
            if name == "clipeval" or name.startswith("clipeval."):
                out.append((module, name, str(path.relative_to(ROOT)), line))
    return out


def graph() -> dict[str, set[str]]:
    """layer -> the other layers it imports."""
    out: dict[str, set[str]] = defaultdict(set)
    for importer, imported, _, _ in edges():
        a, b = layer_of(importer), layer_of(imported)
        out[a].add(b) if a != b else out[a]
    return dict(out)


def test_every_module_belongs_to_a_known_layer():
    layers = {layer_of(module_name(p)) for p in (ROOT / "clipeval").rglob("*.py")}
    assert layers <= set(MAY_IMPORT), f"place the new package(s) {sorted(layers - set(MAY_IMPORT))} in a layer"


def test_no_module_imports_a_layer_above_its_own():
    upward = [
        f"{where}:{line}: {importer} imports {imported} ({layer_of(importer)} -> {layer_of(imported)})"
        for importer, imported, where, line in edges()
        if layer_of(imported) not in MAY_IMPORT[layer_of(importer)] | {layer_of(importer), FOUNDATION}
    ]
    assert upward == [], "imports up a layer:\n" + "\n".join(upward)


@pytest.mark.parametrize(("layer", "never"), FORBIDDEN, ids=[layer for layer, _ in FORBIDDEN])
def test_the_arrows_the_issue_forbids_are_absent(layer, never):
    assert graph().get(layer, set()) & never == set()
    assert not never & (MAY_IMPORT[layer] | {FOUNDATION})  # and the table above cannot allow them


def test_the_parser_sees_imports_in_functions_relative_and_for_type_checking():
    source = (
        "from typing import TYPE_CHECKING\n"
        "import clipeval.errors\n"
        "if TYPE_CHECKING:\n    from clipeval.run.task import Task\n"
        "def f():\n    from clipeval.report import figures\n"
        "    from .. import run\n"
    )
    assert imports(source, "clipeval.evaluators.x") == [
        ("typing.TYPE_CHECKING", 1, False),
        ("clipeval.errors", 2, False),
        ("clipeval.run.task.Task", 4, True),
        ("clipeval.report.figures", 6, False),
        ("clipeval.run", 7, False),
    ]
    assert layer_of("clipeval.cache.TensorCache") == layer_of("clipeval.config.paths") == FOUNDATION
    assert layer_of("clipeval.__version__") == layer_of("clipeval") == FOUNDATION
    assert layer_of("clipeval.report.figures") == "report" and layer_of("clipeval.__main__") == "cli"


def summary() -> str:
    """One line per layer: the layers it imports (foundation included)."""
    order = ["hydra_plugins", FOUNDATION, "results", "data", "models", "features", "evaluators", "embedded",
             "report", "check", "run", "cli", "bench"]  # fmt: skip
    found = graph()
    return "\n".join(
        f"{layer:<13} -> {', '.join(sorted(found.get(layer, []), key=order.index)) or '-'}" for layer in order
    )


if __name__ == "__main__":
    print(summary())
