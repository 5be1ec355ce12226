"""Every custom Keras object the product saves, registered by importing this module.

`import keras_app` imports it (see keras_app/__init__.py), so a notebook needs
nothing else before `keras.models.load_model(path, safe_mode=True)`.
"""

from keras_app.calibration import TemperatureScaling
from keras_app.ensemble.layer import EnsembleCombine
from keras_app.fused_ops import FusedAdam, FusedBatchNormalization
from keras_app.keras_metrics import ClassAUC
from keras_app.model import BackbonePreprocess

__all__ = [
    "BackbonePreprocess",
    "ClassAUC",
    "EnsembleCombine",
    "FusedAdam",
    "FusedBatchNormalization",
    "TemperatureScaling",
]
