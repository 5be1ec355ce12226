"""Tests for callbacks/__init__.py: the exports, and the package's place in the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import callbacks

PACKAGE = Path(callbacks.__file__).parent


def test_exports():
    for name in ("ThermalGuard", "GpuTelemetry", "auto_sensor", "NvmlSensor", "ScriptedSensor",
                 "GpuReading"):  # fmt: skip
        assert name in callbacks.__all__ and hasattr(callbacks, name)


def test_knows_nothing_of_the_app_or_data_layers():
    imported = set()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])

    assert "callbacks" in imported  # the walk did find imports
    assert not imported & {"keras_app", "data_pipelines"}
