"""Temperature scaling inside the saved model: calibrated probabilities wherever it is served.

The temperature is fitted on validation (`keras_app.operating_point`) and
lives in the model as a registered layer, so best.keras, the SavedModel
export and TF Serving all return the same calibrated probabilities.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_app")
class TemperatureScaling(keras.layers.Layer):
    """Rescales class probabilities: softmax(log(p) / temperature), in float32.

    T > 1 softens an over-confident model, T < 1 sharpens an under-confident
    one; the order of the classes on every row is kept.

    Example:
        >>> layer = TemperatureScaling(2.0)
        >>> np.round(ops.convert_to_numpy(layer(np.array([[0.9, 0.1]], "float32"))), 3)
        array([[0.75, 0.25]], dtype=float32)
    """

    def __init__(self, temperature: float = 1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0. Received temperature={temperature}")
        self.temperature = float(temperature)

    def call(self, probabilities):
        p = ops.cast(probabilities, "float32")
        logits = ops.log(ops.clip(p, 1e-12, 1.0)) / self.temperature
        return ops.softmax(logits, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


CALIBRATION_LAYER = "calibration"


def calibrated_model(model: keras.Model, temperature: float) -> keras.Model:
    """`model` with a `TemperatureScaling` layer on its output (replacing one it had).

    The input, the layers and their weights are shared, so Grad-CAM and export
    see the same network.
    """
    calibrated = _is_calibrated(model)
    outputs = _before_calibration(model) if calibrated else model.outputs[0]
    scaled = TemperatureScaling(temperature, name=CALIBRATION_LAYER)(outputs)
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # as it was built
    return keras.Model(inputs, scaled, name=model.name)


def uncalibrated_model(model: keras.Model) -> keras.Model:
    """`model` without its `TemperatureScaling` output layer (the model itself if it has none).

    The layers and weights are shared: refitting a temperature (local recalibration)
    starts from the same raw probabilities training calibrated.
    """
    if not _is_calibrated(model):
        return model
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    return keras.Model(inputs, _before_calibration(model), name=model.name)


def _is_calibrated(model: keras.Model) -> bool:
    if isinstance(model.output, dict):
        raise ValueError(
            f"{model.name} answers several outputs (a guarded model): calibrate its "
            "classifier (keras_app.model.guard.classifier_of)"
        )
    return bool(model.layers) and model.layers[-1].name == CALIBRATION_LAYER


def _before_calibration(model: keras.Model):
    """The tensor the calibration layer takes in *this* model's graph. (`layer.input` is
    its first call's, which may be another model's built from the same layers.)"""
    layer, node_index, _ = model.outputs[0]._keras_history
    return layer._inbound_nodes[node_index].input_tensors[0]


def model_temperature(model: keras.Model) -> float | None:
    """The temperature of a calibrated model, None for one without the layer."""
    layer = model.layers[-1] if model.layers else None
    return layer.temperature if isinstance(layer, TemperatureScaling) else None
