"""keras_app.model.adabn: BatchNorm statistics become the site's; nothing trainable moves."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_app.core.errors import UsageError
from keras_app.model.adabn import adapt_batchnorm, batchnorm_layers
from keras_app.model.calibration import calibrated_model
from keras_app.model.classifier import BACKBONE_LAYER, build_classifier


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return calibrated_model(build_classifier("simple_cnn", 2, (32, 32)), 1.5)


def site_images(n=40):
    """Brighter, lower-contrast films than any model was fitted on."""
    rng = np.random.default_rng(0)
    return np.clip(rng.normal(200, 10, (n, 32, 32, 3)), 0, 255).astype(np.float32)


def test_the_statistics_are_the_sites_and_the_weights_untouched(model):
    images = site_images()
    trainable = [w.numpy().copy() for w in model.trainable_weights]
    layers = batchnorm_layers(model.get_layer(BACKBONE_LAYER))
    flags = [(layer.trainable, layer.momentum) for layer in layers]
    first = layers[0]
    backbone = model.get_layer(BACKBONE_LAYER)
    inputs = keras.Model(backbone.inputs, first.input)(model.get_layer("preprocess")(images))
    expected = keras.ops.convert_to_numpy(inputs).reshape(-1, inputs.shape[-1])

    assert adapt_batchnorm(model, images, batch_size=len(images)) == len(layers)

    np.testing.assert_allclose(first.moving_mean.numpy(), expected.mean(axis=0), rtol=1e-4)
    np.testing.assert_allclose(first.moving_variance.numpy(), expected.var(axis=0), rtol=1e-3)
    for before, after in zip(trainable, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())
    assert [(layer.trainable, layer.momentum) for layer in layers] == flags


def test_batches_average_to_the_whole(model):
    images = site_images(40)
    adapt_batchnorm(model, images, batch_size=40)
    whole = batchnorm_layers(model)[0].moving_mean.numpy().copy()
    adapt_batchnorm(model, images, batch_size=16)  # 16 + 16 + 8, each image weighing the same
    np.testing.assert_allclose(batchnorm_layers(model)[0].moving_mean.numpy(), whole, atol=2e-4)


def test_what_cannot_be_adapted_is_refused(model):
    with pytest.raises(UsageError, match="at least 16 images"):
        adapt_batchnorm(model, site_images(8))
    inputs = keras.Input((32, 32, 3))
    plain = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(UsageError, match="single classifier"):
        adapt_batchnorm(plain, site_images())
