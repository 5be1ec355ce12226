"""keras-app: transfer-learning image classifiers with Keras 3 and TensorFlow.

`import keras_app` is light (no TensorFlow): every `python -m keras_app.<command>
--help` answers at once. The package is grouped into rooms by concern; see
docs/ARCHITECTURE.md. In a notebook:

    import keras_app
    model = keras_app.load_model("runs/mobilenet-20261203-120000")   # any model it saved
    predictor = keras_app.open_predictor("saved_models/pneumonia")   # predict and decide

`import keras_app.model` registers every custom Keras object, for a plain
`keras.models.load_model(path, safe_mode=True)`.
"""

import importlib

from keras_app.core.cli import tensorflow_env_defaults

# TensorFlow reads its switches once, at its first import: set them before anyone does.
tensorflow_env_defaults()

_LAZY = {
    "load_model": "keras_app.artifacts.loader",
    "open_predictor": "keras_app.inference.predictor",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    """The notebook entry points, loaded (with TensorFlow) on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
