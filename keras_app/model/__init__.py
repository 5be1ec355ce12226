"""The networks: backbone classifiers and every custom Keras object the product saves.

Each object registers itself where it is defined
(`@keras.saving.register_keras_serializable(package="keras_app")`); importing this
package imports every such module, so after `import keras_app.model` a notebook can
call `keras.models.load_model(path, safe_mode=True)` on any model the product saved.
This package imports Keras (and so TensorFlow).
"""

from keras_app.model.calibration import TemperatureScaling
from keras_app.model.classifier import BackbonePreprocess, build_classifier
from keras_app.model.ensemble import build_ensemble, stack_members
from keras_app.model.ensemble_layer import EnsembleCombine
from keras_app.model.fused_ops import FusedAdam, FusedBatchNormalization
from keras_app.model.keras_metrics import ClassAUC
from keras_app.model.thorax_crop import ThoraxCrop

__all__ = [
    "BackbonePreprocess",
    "ClassAUC",
    "EnsembleCombine",
    "FusedAdam",
    "FusedBatchNormalization",
    "TemperatureScaling",
    "ThoraxCrop",
    "build_classifier",
    "build_ensemble",
    "stack_members",
]
