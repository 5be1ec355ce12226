"""ThoraxCrop: a fixed crop inside the model, saved, exported and explained as trained."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_app.evaluation.gradcam import explain
from keras_app.inference import export
from keras_app.inference.predictor import open_predictor
from keras_app.model.classifier import build_classifier
from keras_app.model.thorax_crop import THORAX_BOX, ThoraxCrop, box_pixels

BOX = (0.25, 0.125, 0.75, 0.875)


@pytest.fixture(scope="module")
def cropped():
    keras.utils.set_random_seed(0)
    return build_classifier("simple_cnn", 2, (32, 32), crop=BOX)


def test_the_crop_is_the_box_resized_back():
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    out = ThoraxCrop(BOX)(images).numpy()
    top, left, bottom, right = box_pixels(BOX, 32, 32)
    assert (top, left, bottom, right) == (8, 4, 24, 28)
    expected = tf.image.resize(images[:, 8:24, 4:28], (32, 32)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-3)
    assert ThoraxCrop().box == THORAX_BOX


@pytest.mark.parametrize("box", [(0.5, 0.1, 0.4, 0.9), (0.1, 0.1, 0.9), (-0.1, 0.0, 1.0, 1.0)])
def test_a_bad_box_is_refused(box):
    with pytest.raises(ValueError, match="Received box="):
        ThoraxCrop(box)


def test_a_cropped_classifier_saves_loads_safely_and_exports(cropped, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cropped.save(run / "best.keras")
    (run / "labels.txt").write_text("NORMAL\nPNEUMONIA\n")
    (run / "config.json").write_text(json.dumps({"model": "simple_cnn", "image_size": [32, 32]}))
    images = np.random.default_rng(1).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    loaded = keras.models.load_model(run / "best.keras", safe_mode=True, compile=False)
    assert loaded.get_layer("thorax_crop").box == BOX
    np.testing.assert_allclose(loaded(images), cropped(images), atol=1e-6)
    version = export.export_model(run, "cropped", base=tmp_path / "saved_models")
    served = open_predictor(version)
    np.testing.assert_allclose(served.predict(images), cropped(images), atol=1e-5)


def test_grad_cam_lies_in_the_box_only(cropped):
    images = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    found = explain(cropped, images, 1)
    top, left, bottom, right = box_pixels(BOX, 32, 32)
    outside = np.ones((32, 32), bool)
    outside[top:bottom, left:right] = False
    assert found.evidence.shape == (2, 32, 32)
    assert (found.evidence[:, outside] == 0).all()
    assert found.evidence[:, ~outside].max() > 0
