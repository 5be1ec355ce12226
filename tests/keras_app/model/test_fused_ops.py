"""The fused BatchNorm and Adam give Keras' own numbers, and save and load as Keras layers do."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_app.model.classifier import BACKBONE_LAYER, build_classifier
from keras_app.model.fused_ops import FusedAdam, FusedBatchNormalization, with_fused_batchnorm


def _batchnorm_pair(**kwargs):
    stock = keras.layers.BatchNormalization(momentum=0.9, **kwargs)
    fused = FusedBatchNormalization(momentum=0.9, **kwargs)
    for layer in (stock, fused):
        layer.build((None, 5, 6, 4))
    rng = np.random.default_rng(1)
    weights = [w + rng.uniform(-0.5, 0.5, w.shape).astype("float32") for w in stock.get_weights()]
    weights[-1] = np.abs(weights[-1]) + 0.5  # a moving variance stays positive
    stock.set_weights(weights)
    fused.set_weights(weights)
    return stock, fused


def _step(layer, x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * upstream)
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return y, grads


@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False)])
def test_fused_batchnorm_training_step_matches_keras(center, scale):
    stock, fused = _batchnorm_pair(center=center, scale=scale)
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(3.0, 2.0, (8, 5, 6, 4)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(8, 5, 6, 4)).astype("float32"))

    y_stock, g_stock = _step(stock, x, upstream)
    y_fused, g_fused = _step(fused, x, upstream)

    np.testing.assert_allclose(y_fused, y_stock, atol=2e-5)
    for a, b in zip(g_fused, g_stock, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-4)
    # Moving statistics: same momentum update with the biased batch variance.
    np.testing.assert_allclose(fused.moving_mean, stock.moving_mean, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance, stock.moving_variance, rtol=1e-5)


def test_fused_batchnorm_inference_and_frozen_use_keras_call():
    stock, fused = _batchnorm_pair()
    x = tf.constant(np.random.default_rng(3).normal(size=(2, 5, 6, 4)).astype("float32"))
    np.testing.assert_allclose(fused(x, training=False), stock(x, training=False), atol=1e-6)
    fused.trainable = stock.trainable = False
    np.testing.assert_allclose(fused(x, training=True), stock(x, training=True), atol=1e-6)
    assert not fused._fusable(x, True, None)


def test_fused_batchnorm_under_mixed_precision_returns_the_compute_dtype():
    layer = FusedBatchNormalization(dtype="mixed_float16")
    y = layer(tf.ones((2, 3, 3, 4), "float16") * 2.0, training=True)
    assert y.dtype == tf.float16
    np.testing.assert_allclose(y, 0.0, atol=1e-3)


def test_fused_adam_updates_as_keras_adam():
    rng = np.random.default_rng(4)
    start = rng.normal(size=(3, 4)).astype("float32")
    grads = [rng.normal(size=(3, 4)).astype("float32") for _ in range(4)]
    results = []
    for cls in (keras.optimizers.Adam, FusedAdam):
        var = keras.Variable(start)
        opt = cls(learning_rate=1e-2)
        for g in grads:
            opt.apply([tf.constant(g)], [var])
        results.append(var.numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-7)
    assert not np.allclose(results[1], start)


def test_classifier_with_fused_batchnorm_saves_and_loads_safely(tmp_path):
    model = build_classifier("mobilenet", 2, (32, 32), weights=None, alpha=0.25, frozen_bn=False)
    backbone = model.get_layer(BACKBONE_LAYER)
    kinds = {type(layer) for layer in backbone.layers}
    assert FusedBatchNormalization in kinds
    assert keras.layers.BatchNormalization not in kinds
    model.compile(optimizer=FusedAdam(1e-3), loss="categorical_crossentropy")
    x = np.random.default_rng(5).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[[0, 1, 0, 1]]
    model.train_on_batch(x, y)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded.optimizer, FusedAdam)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("fused_first", [True, False])
def test_weights_files_load_across_fused_and_keras_batchnorm(tmp_path, fused_first):
    """A backbone's weights saved with one kind of BatchNorm load into the other (--weights
    PATH, resume, compare all pass weights files between models built at different times)."""
    kinds = [True, False] if fused_first else [False, True]
    source, target = (
        build_classifier("mobilenet", 2, (32, 32), weights=None, alpha=0.25, fused_bn=f)
        for f in kinds
    )
    rng = np.random.default_rng(6)
    source.set_weights([w + rng.normal(size=w.shape).astype(w.dtype) for w in source.get_weights()])
    path = tmp_path / "backbone.weights.h5"
    source.get_layer(BACKBONE_LAYER).save_weights(path)
    target.get_layer(BACKBONE_LAYER).load_weights(path)
    for a, b in zip(
        target.get_layer(BACKBONE_LAYER).get_weights(),
        source.get_layer(BACKBONE_LAYER).get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_fused_batchnorm_leaves_the_seeded_random_stream_alone():
    """Same seed, same model: the swap must not change the head's initial weights."""
    built = []
    for fused in (True, False):
        keras.utils.set_random_seed(7)
        built.append(build_classifier("mobilenet", 3, (32, 32), alpha=0.25, fused_bn=fused))
    heads = [m.get_layer("predictions").get_weights()[0] for m in built]
    np.testing.assert_array_equal(heads[0], heads[1])


def test_with_fused_batchnorm_keeps_weights_names_and_outputs():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    inner = keras.Model(inputs, x, name="inner")
    outer_in = keras.Input((6, 6, 3))
    outer = keras.Model(outer_in, keras.layers.BatchNormalization(name="top")(inner(outer_in)))
    rng = np.random.default_rng(8)
    outer.set_weights(
        [w + rng.uniform(0.1, 0.5, w.shape).astype("float32") for w in outer.get_weights()]
    )
    weights = [w.numpy() for w in outer.trainable_weights]
    images = rng.normal(size=(4, 6, 6, 3)).astype("float32")
    # Training mode normalises by the batch, so the stock and the fused call agree even
    # though each call moves the moving statistics.
    expected = outer(images, training=True)
    names = [layer.name for layer in inner.layers]

    assert with_fused_batchnorm(outer) is outer
    assert type(inner.get_layer("bn")) is FusedBatchNormalization  # nested models too
    assert type(outer.get_layer("top")) is FusedBatchNormalization
    assert [layer.name for layer in inner.layers] == names
    for a, b in zip(outer.trainable_weights, weights, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(outer(images, training=True), expected, atol=1e-5)
    config = keras.saving.serialize_keras_object(inner.get_layer("bn"))
    assert config["registered_name"] == "keras_app>FusedBatchNormalization"
