"""The package layers, checked on the source with ast.

data_pipelines and callbacks know nothing of keras_app; no product package
imports benchmarks (which needs torch).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Package -> top-level packages it must not import.
FORBIDDEN = {
    "data_pipelines": ("keras_app", "benchmarks"),
    "callbacks": ("keras_app", "benchmarks"),
    "keras_app": ("benchmarks",),
}


def imported_modules(source: str) -> list[tuple[int, str]]:
    """`(line, module)` for every absolute import, at any depth (in functions too).

    `importlib.import_module("x")` and `__import__("x")` with a literal name count.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                found.append((node.lineno, name.value))
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def violations(package: str, source: str, where: str) -> list[str]:
    """One line per import in `source` that `package` must not make."""
    return [
        f"{where}:{line}: {package} imports {module}"
        for line, module in imported_modules(source)
        if module.split(".")[0] in FORBIDDEN[package]
    ]


def test_no_package_imports_a_layer_above_it_or_benchmarks():
    found, checked = [], 0
    for package in FORBIDDEN:
        for path in sorted((REPO / package).rglob("*.py")):
            checked += 1
            found += violations(package, path.read_text(), str(path.relative_to(REPO)))
    assert checked > 30  # the walk found the packages
    assert found == []


@pytest.mark.parametrize(
    "package, source",
    [
        ("data_pipelines", "import keras_app.train\n"),
        ("data_pipelines", "def f():\n    from keras_app import runs\n"),
        ("callbacks", "from keras_app.errors import UsageError\n"),
        ("callbacks", "import importlib\nimportlib.import_module('keras_app.runs')\n"),
        ("keras_app", "from benchmarks.bench_serving import main\n"),
        ("keras_app", "import os, benchmarks\n"),
        ("data_pipelines", "__import__('benchmarks')\n"),
    ],
)
def test_a_forbidden_import_is_caught(package, source):
    assert len(violations(package, source, "synthetic.py")) == 1


def test_allowed_imports_pass():
    source = "import keras\nimport keras_applications\nfrom . import stages\n"
    assert violations("data_pipelines", source, "x.py") == []
    assert violations("keras_app", "import data_pipelines\nfrom callbacks import x\n", "x.py") == []
