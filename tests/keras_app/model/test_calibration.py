"""keras_app.calibration: the temperature layer inside a saved model."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_app.decision.operating_point import scale
from keras_app.model.calibration import (
    CALIBRATION_LAYER,
    TemperatureScaling,
    calibrated_model,
    model_temperature,
)
from keras_app.model.classifier import build_classifier


def test_layer_matches_the_numpy_scaling_in_eager_and_graph():
    import tensorflow as tf

    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.5, 0.5]], np.float32)
    layer = TemperatureScaling(2.5)
    eager = keras.ops.convert_to_numpy(layer(probs))
    graph = tf.function(lambda x: layer(x))(tf.constant(probs)).numpy()
    np.testing.assert_allclose(eager, scale(probs, 2.5), atol=1e-6)
    np.testing.assert_allclose(graph, eager, atol=1e-7)
    with pytest.raises(ValueError, match="Received temperature=0"):
        TemperatureScaling(0)


def test_calibrated_model_reloads_with_safe_mode_and_keeps_the_ranking(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_classifier("simple_cnn", 2, (32, 32))
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    raw = np.asarray(model(images))
    calibrated = calibrated_model(model, 3.0)
    assert calibrated.layers[-1].name == CALIBRATION_LAYER
    assert calibrated.outputs[0].dtype == "float32"
    calibrated.save(tmp_path / "best.keras")
    loaded = keras.models.load_model(tmp_path / "best.keras", safe_mode=True, compile=False)
    assert model_temperature(loaded) == 3.0
    out = np.asarray(loaded(images))
    np.testing.assert_allclose(out, scale(raw, 3.0), atol=1e-5)
    np.testing.assert_array_equal(np.argsort(out[:, 1]), np.argsort(raw[:, 1]))
    # Recalibrating replaces the layer instead of stacking a second one.
    again = calibrated_model(loaded, 1.5)
    assert sum(layer.name == CALIBRATION_LAYER for layer in again.layers) == 1
    np.testing.assert_allclose(np.asarray(again(images)), scale(raw, 1.5), atol=1e-5)
