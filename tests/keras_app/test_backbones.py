"""Every registered backbone builds, trains a step, saves and reloads with safe_mode=True."""

import keras
import numpy as np
import pytest

from keras_app.backbones import BACKBONES
from keras_app.keras_metrics import training_metrics
from keras_app.model import (
    BACKBONE_LAYER,
    SCRATCH_BN_MOMENTUM,
    build_classifier,
    set_backbone_trainable,
)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_builds_trains_saves_and_reloads(name, tmp_path):
    spec = BACKBONES[name]
    size = max(32, spec.min_size)
    model = build_classifier(name, 2, (size, size), weights=None, frozen_bn=False)
    # Eager: tracing DenseNet's train step into a graph takes ~40 s on 2 cores, the step 1 s.
    model.compile(
        "adam", "categorical_crossentropy", metrics=training_metrics(2, 1), run_eagerly=True
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (4, size, size, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[[0, 1, 0, 1]]
    before = [w.copy() for w in model.get_layer("predictions").get_weights()]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    after = model.get_layer("predictions").get_weights()
    changed = [not np.allclose(a, b) for a, b in zip(before, after, strict=True)]
    assert any(changed), "one step changed nothing"

    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    # Eager calls: predict() would trace a graph per model for four images.
    np.testing.assert_allclose(np.asarray(reloaded(x)), np.asarray(model(x)), atol=1e-5)
    assert reloaded.get_layer(BACKBONE_LAYER).name == BACKBONE_LAYER


def test_preprocessing_is_inside_the_model():
    """A saved model takes raw 0-255 pixels: its first layer applies the backbone's own function."""
    model = build_classifier("resnet50", 2, (32, 32))
    x = np.full((1, 32, 32, 3), 128.0, "float32")
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    np.testing.assert_allclose(model.get_layer("preprocess")(x), expected, rtol=1e-6)


def test_softmax_is_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_classifier("mobilenet", 3, (32, 32))
        assert model.get_layer(BACKBONE_LAYER).compute_dtype == "float16"
        out = model(np.zeros((2, 32, 32, 3), "float32"))
        assert out.dtype == "float32"
        np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_unfreeze_top_layers_keeps_batchnorm_frozen():
    model = build_classifier("mobilenet", 2, (32, 32))
    backbone = model.get_layer(BACKBONE_LAYER)
    assert set_backbone_trainable(model, 0) == 0
    assert not backbone.trainable
    n = set_backbone_trainable(model, 10)
    top = backbone.layers[-10:]
    assert n == sum(not isinstance(layer, keras.layers.BatchNormalization) for layer in top)
    assert all(not layer.trainable for layer in backbone.layers[:-10])
    assert all(
        not layer.trainable
        for layer in backbone.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    assert set_backbone_trainable(model, "all") > n


def test_random_backbone_trained_end_to_end_learns_batchnorm_statistics():
    # A frozen Keras 3 BatchNormalization runs in inference mode: with random init it
    # would keep mean 0, variance 1 and never normalise (MobileNet then collapsed to
    # one constant output, val AUC 0.5, in a 224 px chest X-ray comparison).
    model = build_classifier("mobilenet", 2, (32, 32), frozen_bn=False)
    set_backbone_trainable(model, "all", train_bn=True)
    bns = [
        layer
        for layer in model.get_layer(BACKBONE_LAYER).layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert bns and all(layer.trainable for layer in bns)
    assert all(layer.momentum == SCRATCH_BN_MOMENTUM for layer in bns)
    before = bns[0].moving_mean.numpy().copy()
    model.compile("adam", "categorical_crossentropy", run_eagerly=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    model.fit(x, np.eye(2)[rng.integers(0, 2, 8)], batch_size=8, epochs=1, verbose=0)
    assert not np.allclose(before, bns[0].moving_mean.numpy())


def test_unknown_backbone_in_preprocess_layer_names_it():
    from keras_app.model import BackbonePreprocess

    with pytest.raises(ValueError, match="Received backbone='nope'"):
        BackbonePreprocess("nope")
