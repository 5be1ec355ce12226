"""The architecture's promises (docs/ARCHITECTURE.md), checked on the source with ast.

- data_pipelines and callbacks know nothing of keras_app; no product package imports
  benchmarks (which needs torch);
- keras_app's rooms form layers: a room imports only rooms below it (and itself), and
  no room imports a command (the modules directly in keras_app/);
- no import cycle between modules;
- no module is longer than 500 lines.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Package -> top-level packages it must not import.
FORBIDDEN = {
    "data_pipelines": ("keras_app", "benchmarks"),
    "callbacks": ("keras_app", "benchmarks"),
    "keras_app": ("benchmarks",),
}
# keras_app's rooms, lowest first, as docs/ARCHITECTURE.md draws them.
ROOMS = (
    "core",
    "recipe",
    "decision",
    "model",
    "artifacts",
    "reports",
    "inference",
    "training",
    "evaluation",
    "experiments",
    "hospital",
)
MAX_LINES = 500


def imported_modules(source: str) -> list[tuple[int, str]]:
    """`(line, module)` for every absolute import, at any depth (in functions too).

    `from pkg import name` counts as `pkg.name` as well as `pkg` (the name may be a
    module); `importlib.import_module("x")` and `__import__("x")` with a literal name count.
    """
    found = []
    for node in _runtime_nodes(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                found.append((node.lineno, name.value))
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:` (type hints import nothing at run time)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _first_per_line(found: list[str]) -> list[str]:
    """One line per import statement (`from a.b import c` reads as a.b and a.b.c)."""
    seen, out = set(), []
    for line in found:
        key = line.split(": ", 1)[0]
        if key not in seen:
            seen.add(key)
            out.append(line)
    return out


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def violations(package: str, source: str, where: str) -> list[str]:
    """One line per import in `source` that `package` must not make."""
    return _first_per_line(
        [
            f"{where}:{line}: {package} imports {module}"
            for line, module in imported_modules(source)
            if module.split(".")[0] in FORBIDDEN[package]
        ]
    )


def room_of(module: str) -> str | None:
    """The room of a keras_app module ("keras_app.training.engine" -> "training"); "command"
    for a module directly in keras_app/; None outside keras_app or for the package itself."""
    parts = module.split(".")
    if parts[0] != "keras_app" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ROOMS else "command"


def layer_violations(module: str, source: str, where: str) -> list[str]:
    """Imports of `module` (a keras_app module) that reach a room above its own, or a
    command from inside a room."""
    mine = room_of(module)
    if mine in (None, "command"):
        return []
    out = []
    for line, imported in imported_modules(source):
        theirs = room_of(imported)
        if theirs is None or theirs == mine:
            continue
        if theirs == "command" or ROOMS.index(theirs) > ROOMS.index(mine):
            out.append(f"{where}:{line}: {mine} imports {imported} ({theirs})")
    return _first_per_line(out)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules() -> list[Path]:
    return sorted(p for pkg in FORBIDDEN for p in (REPO / pkg).rglob("*.py"))


def test_no_package_imports_a_layer_above_it_or_benchmarks():
    found, checked = [], 0
    for package in FORBIDDEN:
        for path in sorted((REPO / package).rglob("*.py")):
            checked += 1
            found += violations(package, path.read_text(), str(path.relative_to(REPO)))
    assert checked > 30  # the walk found the packages
    assert found == []


def test_keras_app_rooms_import_only_rooms_below_them():
    paths = sorted((REPO / "keras_app").rglob("*.py"))
    found = [
        v
        for path in paths
        for v in layer_violations(module_name(path), path.read_text(), str(path.relative_to(REPO)))
    ]
    assert {room_of(module_name(p)) for p in paths} >= set(ROOMS)  # every room was read
    assert found == []


def test_no_import_cycle_between_modules():
    """Module-level and function-level imports alike: a cycle is a cycle either way."""
    modules = {module_name(p): p for p in product_modules()}
    graph = {
        name: {m for _, m in imported_modules(path.read_text()) if m in modules and m != name}
        for name, path in modules.items()
    }
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    # A package's __init__ importing its own modules is how a package registers them.
    cycles = [c for c in cycles if not _package_init_cycle(c)]
    assert cycles == []


def _package_init_cycle(cycle: str) -> bool:
    names = cycle.split(" -> ")
    return any(b.startswith(a + ".") for a, b in itertools.pairwise(names))


def test_no_module_is_longer_than_500_lines():
    long = {
        str(p.relative_to(REPO)): n
        for p in product_modules()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


@pytest.mark.parametrize(
    "package, source",
    [
        ("data_pipelines", "import keras_app.training.engine\n"),
        ("data_pipelines", "def f():\n    from keras_app import artifacts\n"),
        ("callbacks", "from keras_app.core.errors import UsageError\n"),
        ("callbacks", "import importlib\nimportlib.import_module('keras_app.artifacts')\n"),
        ("keras_app", "from benchmarks.bench_serving import main\n"),
        ("keras_app", "import os, benchmarks\n"),
        ("data_pipelines", "__import__('benchmarks')\n"),
    ],
)
def test_a_forbidden_import_is_caught(package, source):
    assert len(violations(package, source, "synthetic.py")) == 1


@pytest.mark.parametrize(
    "module, source",
    [
        ("keras_app.decision.metrics", "from keras_app.inference import predictor\n"),
        ("keras_app.model.classifier", "def f():\n    import keras_app.training.engine\n"),
        ("keras_app.core.files", "from keras_app.artifacts.runs import RunFolder\n"),
        ("keras_app.training.engine", "from keras_app import train\n"),
    ],
)
def test_an_import_from_a_room_above_is_caught(module, source):
    assert len(layer_violations(module, source, "synthetic.py")) == 1


def test_allowed_imports_pass():
    source = "import keras\nimport keras_applications\nfrom . import stages\n"
    assert violations("data_pipelines", source, "x.py") == []
    assert violations("keras_app", "import data_pipelines\nfrom callbacks import x\n", "x.py") == []
    below = "from keras_app.decision.metrics import x\nfrom keras_app.core import files\n"
    assert layer_violations("keras_app.training.engine", below, "x.py") == []
    assert layer_violations("keras_app.train", "from keras_app.training import engine\n", "x") == []
