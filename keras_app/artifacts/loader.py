"""The one door to a saved Keras model: `load_model(path)`.

Every model the product saves is a `.keras` file loaded with `safe_mode=True`
(no Lambda layers, only registered objects); a run or ensemble folder holds its
best checkpoint as `best.keras`. Importing this module registers every custom
object (`keras_app.model`).
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

import keras_app.model  # noqa: F401  (registers every custom object the product saves)
from keras_app.artifacts.runs import BEST
from keras_app.core.errors import UsageError


def load_model(path: str | os.PathLike) -> keras.Model:
    """A run or ensemble folder's best checkpoint, or a `.keras` file, with `safe_mode=True`.

    Raises:
        UsageError: nothing loadable at `path`, or the file does not load.
    """
    path = Path(path)
    file = path / BEST if path.is_dir() else path
    if not file.is_file():
        raise UsageError(f"no model at {path}: expected a run folder or a .keras file")
    try:
        return keras.models.load_model(file, safe_mode=True, compile=False)
    except (ValueError, OSError) as err:
        raise UsageError(f"cannot load {file}: {str(err).splitlines()[0][:300]}") from None
