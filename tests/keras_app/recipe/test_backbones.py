"""Every registered backbone builds, trains a step, saves and reloads with safe_mode=True."""

import functools
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_app.model.classifier import (
    BACKBONE_LAYER,
    SCRATCH_BN_MOMENTUM,
    build_classifier,
    set_backbone_trainable,
)
from keras_app.model.keras_metrics import training_metrics
from keras_app.recipe.backbones import BACKBONES


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


def test_unfreeze_a_fraction_trains_that_share_of_the_top_layers():
    model = build_classifier("mobilenet", 2, (32, 32))
    layers = model.get_layer(BACKBONE_LAYER).layers
    assert len(layers) == 86  # MobileNet v1: the fraction 0.5 is the top 43
    set_backbone_trainable(model, 0.5, train_bn=True)
    assert [layer.trainable for layer in layers] == [False] * 43 + [True] * 43
    set_backbone_trainable(model, 0.25, train_bn=True)
    assert sum(layer.trainable for layer in layers) == round(86 * 0.25) == 22


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
    from keras_app.model.classifier import BackbonePreprocess

    with pytest.raises(ValueError, match="Received backbone='nope'"):
        BackbonePreprocess("nope")


KERAS_TEXT = (
    "`input_shape` is undefined or non-square, or `rows` is not in [128, 160, 192, 224]. "
    "Weights for input shape (224, 224) will be loaded as the default."
)


def test_keras_size_warning_becomes_one_note_and_other_warnings_pass(capsys, recwarn):
    from keras_app.recipe import backbones

    def FakeNet(**kwargs):  # noqa: N802  (named like a Keras Applications constructor)
        warnings.warn(KERAS_TEXT, stacklevel=2)
        warnings.warn("something else", UserWarning, stacklevel=2)
        return kwargs["input_shape"]

    build = functools.partial(backbones.call_quietly, FakeNet, weights="imagenet")
    assert build(input_shape=(40, 40, 3)) == (40, 40, 3)
    build(input_shape=(40, 40, 3))
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: FakeNet at 40x40 px uses its 224x224 ImageNet weights, which fit any input "
        "size (the backbone is all convolutions): expected and harmless"
    ]
    messages = [str(w.message) for w in recwarn]
    assert "something else" in messages and not any("input_shape" in m for m in messages)


SHARED_MOBILENET = Path(__file__).parents[3] / "../shared/data/keras_models"


@pytest.mark.needs_data
def test_mobilenet_imagenet_below_224_prints_no_keras_warning(tmp_path, monkeypatch, capsys):
    weights = SHARED_MOBILENET / "mobilenet_2_5_224_tf_no_top.h5"
    if not weights.is_file():
        pytest.skip(f"needs {weights}")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / weights.name).symlink_to(weights.resolve())
    # Keras reads its cache folder once, at import: point it at the offline weights.
    monkeypatch.setattr(keras.src.backend.config, "_KERAS_DIR", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_classifier("mobilenet", 2, (96, 96), weights="imagenet")
    assert not [w for w in caught if "input_shape" in str(w.message)]
    err = capsys.readouterr().err
    assert "Weights for input shape" not in err and "note: MobileNet at 96x96 px" in err
