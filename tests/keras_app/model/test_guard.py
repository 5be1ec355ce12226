"""The image guard inside a saved model: the layer scores as the NumPy guard does, the guarded
model saves with safe_mode and still holds its plain classifier, and recalibration keeps it."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_app.model  # noqa: F401  (registers the custom objects for loading)
from keras_app.decision.guard import fit_guard
from keras_app.decision.operating_point import passes_guard
from keras_app.inference.image_guard import guard_layers
from keras_app.model.calibration import calibrated_model
from keras_app.model.classifier import build_classifier
from keras_app.model.guard import (
    ImageGuard,
    classifier_of,
    guard_features_model,
    guarded_like,
    is_guarded,
    set_guard_weights,
    with_guard,
)
from keras_app.model.thorax_crop import THORAX_BOX

SIZE = 32


def fitted_guard(classifier, rng):
    """A guard fitted on the features of random images, limited on others."""
    layers = guard_layers(classifier)  # the stride-8 stage's end, for 32 px
    features = guard_features_model(classifier, layers)
    images = rng.uniform(0, 255, (80, SIZE, SIZE, 3)).astype("float32")
    rows = np.asarray(features(images))
    dims = [int(classifier.get_layer("backbone").get_layer(n).output.shape[-1]) for n in layers]
    dims.append(rows.shape[1] - sum(dims))
    guard = fit_guard(rows[:60], layers=[*layers, "pool"], dims=dims)
    return guard.with_limit(rows[60:], pass_rate=0.9), images


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    keras.utils.set_random_seed(0)
    classifier = calibrated_model(build_classifier("simple_cnn", 2, (SIZE, SIZE)), 1.5)
    guard, images = fitted_guard(classifier, np.random.default_rng(0))
    model = with_guard(classifier, guard)
    path = tmp_path_factory.mktemp("guard") / "best.keras"
    model.save(path)
    return classifier, guard, model, keras.models.load_model(path, safe_mode=True), images


def test_the_layer_scores_in_float32_as_the_numpy_guard_does():
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(200, 12))
    guard = fit_guard(rows, layers=["a", "pool"], dims=[5, 7]).with_limit(rows[:100])
    layer = ImageGuard(guard.dims, 1, layers=guard.layers)
    blocks = [rows[:, :5].astype("float32"), rows[:, 5:].astype("float32")]
    layer(blocks)  # builds it
    set_guard_weights(layer, guard)
    ours = np.asarray(layer(blocks))
    np.testing.assert_allclose(ours, guard.score(rows, dtype=np.float32), rtol=1e-4)
    np.testing.assert_allclose(ours, guard.score(rows), rtol=1e-3)
    # The limit decides alike in NumPy (float64 scores) and on the float32 layer's scores.
    assert (passes_guard(ours, guard.limit) == guard.passes(rows)).mean() > 0.99


def test_a_guarded_model_saves_with_safe_mode_and_answers_both(guarded):
    classifier, guard, model, loaded, images = guarded
    assert is_guarded(model) and is_guarded(loaded) and not is_guarded(classifier)
    before, after = model(images[:8]), loaded(images[:8])
    np.testing.assert_allclose(after["probabilities"], classifier(images[:8]), atol=1e-6)
    np.testing.assert_allclose(after["ood_score"], before["ood_score"], rtol=1e-6)
    assert loaded.get_layer("image_guard").layers_read == list(guard.layers)
    # The fitted images mostly pass; images of another kind (flat frames) are refused.
    flat = np.full((4, SIZE, SIZE, 3), 255.0, "float32")
    assert passes_guard(np.asarray(loaded(images[60:])["ood_score"]), guard.limit).mean() >= 0.8
    assert not passes_guard(np.asarray(loaded(flat)["ood_score"]), guard.limit).any()


def test_the_plain_classifier_is_rebuilt_from_the_same_layers(guarded):
    classifier, _, _, loaded, images = guarded
    plain = classifier_of(loaded)
    assert not is_guarded(plain)
    assert [layer.name for layer in plain.layers] == [layer.name for layer in classifier.layers]
    np.testing.assert_allclose(plain(images[:4]), classifier(images[:4]), atol=1e-6)
    assert classifier_of(classifier) is classifier


def test_a_thorax_crop_stays_in_front_of_the_guarded_model_and_its_classifier():
    """--thorax-crop: the guard, the probabilities and the rebuilt classifier all read the
    cropped image, as the classifier does."""
    keras.utils.set_random_seed(0)
    classifier = build_classifier("simple_cnn", 2, (SIZE, SIZE), crop=THORAX_BOX)
    guard, images = fitted_guard(classifier, np.random.default_rng(2))
    model = with_guard(classifier, guard)
    assert "thorax_crop" in {layer.name for layer in model.layers}
    np.testing.assert_allclose(
        model(images[:4])["probabilities"], classifier(images[:4]), atol=1e-6
    )
    np.testing.assert_allclose(classifier_of(model)(images[:4]), classifier(images[:4]), atol=1e-6)
    # What lies outside the box changes neither the answer nor the guard's score.
    edited = images[:4].copy()
    edited[:, :2] = 0.0
    np.testing.assert_allclose(
        model(edited)["ood_score"], model(images[:4])["ood_score"], rtol=1e-5
    )


def test_recalibration_keeps_the_guard(guarded):
    _, _, _, loaded, images = guarded
    again = guarded_like(calibrated_model(classifier_of(loaded), 3.0), loaded)
    assert is_guarded(again)
    np.testing.assert_allclose(
        again(images[:4])["ood_score"], loaded(images[:4])["ood_score"], rtol=1e-6
    )
    assert not np.allclose(again(images[:4])["probabilities"], loaded(images[:4])["probabilities"])


def test_a_new_sites_images_set_the_limit_again_and_the_gaussians_stay(guarded):
    """`limit_guard_on` (local calibration): the site's images pass, flat frames stay out."""
    from keras_app.inference.image_guard import guard_in, limit_guard_on

    _, guard, _, loaded, images = guarded
    model = guarded_like(classifier_of(loaded), loaded)
    site = np.clip(images[:60] * 0.6 + 90, 0, 255).astype("float32")  # a brighter, flatter LUT
    limited = limit_guard_on(model, site, split="local:site", pass_rate=0.9)
    scores = np.asarray(model(site)["ood_score"])
    assert passes_guard(scores, limited.limit).mean() >= 0.9
    assert limited.chosen_on == "local:site"
    kept = guard_in(model)
    for a, b in zip(kept.means, guard.means, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)  # the training Gaussians stay
    assert kept.scales == pytest.approx(limited.scales)
    flat = np.full((4, SIZE, SIZE, 3), 255.0, "float32")
    assert not passes_guard(np.asarray(model(flat)["ood_score"]), limited.limit).any()
