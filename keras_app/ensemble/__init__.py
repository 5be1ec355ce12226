"""Ensembles of trained runs: members' probabilities combined inside one Keras model.

Importing this package (like `import keras_app`) registers `EnsembleCombine`,
which loading a saved ensemble (`keras.models.load_model(..., safe_mode=True)`)
needs. The command line (`python -m keras_app.ensemble`) lives in
`keras_app.ensemble.cli`.

The names below load Keras on first use (PEP 562), and registration is skipped
while `python -m` locates a module (see keras_app/__init__.py), so that
`python -m keras_app.ensemble --help` answers before TensorFlow is imported.
"""

from __future__ import annotations

import importlib
import sys

if sys.argv[:1] != ["-m"]:
    import keras_app.custom_objects  # noqa: F401

_LAZY = {
    "EnsembleCombine": "keras_app.ensemble.layer",
    "build_ensemble": "keras_app.ensemble.model",
    "stack_members": "keras_app.ensemble.model",
}

__all__ = ["EnsembleCombine", "build_ensemble", "stack_members"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
