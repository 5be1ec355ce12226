"""Calibration and the operating point: what turns probabilities into a screening decision.

Both are fitted on the validation split after training, never on the split
that is judged:
- temperature scaling (Guo et al., "On Calibration of Modern Neural Networks",
  ICML 2017): one scalar T divides the log-probabilities; it changes how
  confident the model is, never how it ranks images (AUC is unchanged);
- the decision threshold on the positive class's calibrated probability: the
  highest one whose validation sensitivity reaches the target.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

# Temperatures searched; outside this range a model is broken, not miscalibrated.
T_RANGE = (0.05, 20.0)


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


def scale(probs, temperature: float) -> np.ndarray:
    """`TemperatureScaling` in NumPy (float64), for fitting and for reports."""
    logits = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(y_true, probs) -> float:
    """The temperature minimising the negative log-likelihood of `y_true` under `probs`."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y_true, int)
    if len(y) == 0:
        raise ValueError("fit_temperature needs at least one labelled row. Received none")

    def nll(log_t):
        p = scale(probs, float(np.exp(log_t)))
        return -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1.0)))

    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    found = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(found.x))


def calibrated_model(model: keras.Model, temperature: float) -> keras.Model:
    """`model` with a `TemperatureScaling` layer on its output (replacing one it had).

    The input, the layers and their weights are shared, so Grad-CAM and export
    see the same network.
    """
    if model.layers and model.layers[-1].name == CALIBRATION_LAYER:
        outputs = model.layers[-1].input
    else:
        outputs = model.outputs[0]
    scaled = TemperatureScaling(temperature, name=CALIBRATION_LAYER)(outputs)
    return keras.Model(model.inputs, scaled, name=model.name)


def model_temperature(model: keras.Model) -> float | None:
    """The temperature of a calibrated model, None for one without the layer."""
    layer = model.layers[-1] if model.layers else None
    return layer.temperature if isinstance(layer, TemperatureScaling) else None


def choose_threshold(y_true, scores, target_sensitivity: float) -> float:
    """The highest threshold on `scores` whose sensitivity on `y_true` (0/1) reaches the target.

    A case is called positive when its score is >= the threshold.

    Raises:
        ValueError: the target is outside (0, 1], or `y_true` holds one class only.
    """
    from sklearn.metrics import roc_curve

    if not 0 < target_sensitivity <= 1:
        raise ValueError(
            f"target_sensitivity must be in (0, 1]. Received target_sensitivity={target_sensitivity}"
        )
    y = np.asarray(y_true, int)
    if y.min() == y.max():
        raise ValueError("choosing a threshold needs both classes. Received one class only")
    _, tpr, thresholds = roc_curve(y, np.asarray(scores, np.float64), drop_intermediate=False)
    i = int(np.argmax(tpr >= target_sensitivity - 1e-12))
    return float(min(thresholds[i], 1.0))
