"""EnsembleCombine and the ensemble model: math against NumPy, eager and in a graph, saving."""

from __future__ import annotations

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_app.experiments.ensemble_weights import combine_probs
from keras_app.model.classifier import build_classifier
from keras_app.model.ensemble import EnsembleCombine, build_ensemble, stack_members

RNG = np.random.default_rng(0)
MEMBERS = [RNG.dirichlet(np.ones(4), size=5).astype("float32") for _ in range(3)]


def numpy_combine(probs, weights, logit_average):
    """Written out independently of weights.combine_probs, which the CLI uses."""
    w = np.asarray(weights, np.float64) / np.sum(weights)
    if not logit_average:
        return sum(wi * p for wi, p in zip(w, probs, strict=True))
    z = sum(wi * np.log(np.clip(p, 1e-7, 1)) for wi, p in zip(w, probs, strict=True))
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


CASES = [
    ("mean", None, [1, 1, 1]),
    ("weighted", [2.0, 6.0, 0.0], [2, 6, 0]),
    ("learned", None, [1, 1, 1]),
    ("learned", [1.0, 3.0, 4.0], [1, 3, 4]),
]


@pytest.mark.parametrize("logit_average", [False, True])
@pytest.mark.parametrize(("mode", "member_weights", "expected_weights"), CASES)
def test_matches_numpy_eager_and_in_graph(mode, member_weights, expected_weights, logit_average):
    want = numpy_combine(MEMBERS, expected_weights, logit_average)
    layer = EnsembleCombine(mode, member_weights=member_weights, logit_average=logit_average)
    eager = keras.ops.convert_to_numpy(layer(MEMBERS))
    np.testing.assert_allclose(eager, want, atol=1e-5)
    np.testing.assert_allclose(eager.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        layer.normalized_weights(), np.divide(expected_weights, sum(expected_weights)), atol=1e-5
    )
    graph = tf.function(lambda *xs: layer(list(xs)))(*MEMBERS)
    np.testing.assert_allclose(graph.numpy(), want, atol=1e-5)
    np.testing.assert_allclose(
        combine_probs(MEMBERS, expected_weights, logit_average=logit_average), want, atol=1e-6
    )


@pytest.mark.parametrize("mode", ["mean", "weighted", "learned"])
def test_saved_model_round_trip_with_safe_mode(tmp_path, mode):
    inputs = [keras.Input((4,)) for _ in MEMBERS]
    layer = EnsembleCombine(
        mode,
        member_weights=None if mode == "mean" else [1.0, 2.0, 3.0],
        logit_average=mode == "weighted",
    )
    model = keras.Model(inputs, layer(inputs))
    if mode == "learned":
        layer.logits.assign([0.3, -1.0, 2.0])  # as if trained: the variable must survive saving
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        config = json.loads(z.read("config.json"))
    assert "Lambda" not in json.dumps(config)
    again = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(
        again.predict(MEMBERS, verbose=0), model.predict(MEMBERS, verbose=0), atol=1e-6
    )
    clone = EnsembleCombine.from_config(layer.get_config())
    assert (clone.mode, clone.member_weights, clone.logit_average) == (
        layer.mode,
        layer.member_weights,
        layer.logit_average,
    )


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("logit_average", [False, True])
def test_float32_out_under_mixed_precision(mixed_precision, logit_average):
    halves = [p.astype("float16") for p in MEMBERS]
    layer = EnsembleCombine("learned", logit_average=logit_average)
    out = layer(halves)
    assert layer.compute_dtype == "float32"
    assert out.dtype == "float32"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out), numpy_combine(halves, [1, 1, 1], logit_average), atol=1e-3
    )
    inputs = [keras.Input((4,), dtype="float16") for _ in MEMBERS]
    assert EnsembleCombine()(inputs).dtype == "float32"


def test_learned_weights_move_toward_the_better_member():
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=256)
    onehot = np.eye(3, dtype="float32")[y]
    good = 0.8 * onehot + 0.2 / 3  # right, fairly confident
    noise = rng.dirichlet(np.ones(3), size=256).astype("float32")  # knows nothing
    inputs = [keras.Input((3,)), keras.Input((3,))]
    layer = EnsembleCombine("learned")
    model = keras.Model(inputs, layer(inputs))
    model.compile(keras.optimizers.Adam(0.1), "categorical_crossentropy")
    model.fit([noise, good], onehot, epochs=20, batch_size=64, verbose=0)
    noise_weight, good_weight = layer.normalized_weights()
    assert good_weight > 0.85 > noise_weight
    assert len(model.trainable_weights) == 1


@pytest.mark.parametrize(
    ("kwargs", "inputs", "message"),
    [
        (dict(mode="median"), MEMBERS, "mode='median'"),
        (
            dict(mode="weighted", member_weights=[1, -1, 1]),
            MEMBERS,
            r"non-negative. Received \[1.0, -1.0, 1.0\]",
        ),
        (dict(mode="learned", member_weights=[0, 0, 0]), MEMBERS, "all be zero"),
        (dict(mode="weighted", member_weights=[1, float("nan"), 1]), MEMBERS, "finite"),
        (
            dict(mode="weighted", member_weights=[1, 2]),
            MEMBERS,
            "one weight per member: 3 members. Received 2",
        ),
        (dict(mode="weighted"), MEMBERS, "needs member_weights"),
        (dict(mode="mean", member_weights=[1, 1, 1]), MEMBERS, "takes no member_weights"),
        (
            dict(),
            [MEMBERS[0], MEMBERS[1][:, :3]],
            r"one shape. Received shapes \[\(5, 4\), \(5, 3\)\]",
        ),
        (dict(), [MEMBERS[0]], "at least 2 member outputs. Received 1"),
    ],
)
def test_bad_arguments_say_what_was_received(kwargs, inputs, message):
    with pytest.raises(ValueError, match=message):
        EnsembleCombine(**kwargs)(inputs)


# --- the ensemble model ---------------------------------------------------------------------


@pytest.fixture
def two_members():
    keras.utils.set_random_seed(0)
    return [
        build_classifier("simple_cnn", 2, (32, 32)),
        build_classifier("simple_cnn", 2, (24, 40)),
    ]


def test_ensemble_is_one_model_that_resizes_per_member(tmp_path, two_members):
    images = np.random.default_rng(2).uniform(0, 255, (6, 48, 48, 3)).astype("float32")
    # Each member alone, on the image resized as the ensemble must resize it.
    separately = [
        m.predict(tf.image.resize(images, m.input_shape[1:3], antialias=True).numpy(), verbose=0)
        for m in two_members
    ]
    stacked = stack_members(two_members, (48, 48))
    ensemble = build_ensemble(stacked, EnsembleCombine("weighted", member_weights=[1, 3]))
    assert len(ensemble.inputs) == 1 and ensemble.input_shape == (None, 48, 48, 3)
    assert not ensemble.trainable_weights  # members frozen, weights fixed
    want = numpy_combine(separately, [1, 3], False)
    np.testing.assert_allclose(ensemble.predict(images, verbose=0), want, atol=1e-5)

    ensemble.save(tmp_path / "ensemble.keras")
    with zipfile.ZipFile(tmp_path / "ensemble.keras") as z:
        assert "Lambda" not in z.read("config.json").decode()
    again = keras.models.load_model(tmp_path / "ensemble.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(again.predict(images, verbose=0), want, atol=1e-5)


def test_default_input_size_is_the_largest_member(two_members):
    stacked = stack_members(two_members)
    assert stacked.input_shape == (None, 32, 40, 3)
    assert [m.name for m in two_members] == [
        "member0_simple_cnn_classifier",
        "member1_simple_cnn_classifier",
    ]


def test_members_with_other_outputs_are_refused():
    members = [
        build_classifier("simple_cnn", 2, (32, 32)),
        build_classifier("simple_cnn", 3, (32, 32)),
    ]
    with pytest.raises(ValueError, match=r"one shape. Received .*\(None, 2\).*\(None, 3\)"):
        stack_members(members)
    with pytest.raises(ValueError, match="at least 2 members. Received 1"):
        stack_members(members[:1])


def test_ensemble_outputs_float32_under_mixed_precision(mixed_precision):
    members = [
        build_classifier("simple_cnn", 2, (32, 32)),
        build_classifier("simple_cnn", 2, (24, 24)),
    ]
    ensemble = build_ensemble(stack_members(members), EnsembleCombine("mean", logit_average=True))
    probs = ensemble.predict(np.full((2, 32, 32, 3), 100.0, np.float32), verbose=0)
    assert ensemble.output.dtype == "float32" and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_keras_applications_members_nest_and_reload(tmp_path):
    """MobileNetV3 brings its own Rescaling and hard-swish layers: they must nest and reload too."""
    members = [
        build_classifier("mobilenetv3small", 2, (32, 32)),
        build_classifier("simple_cnn", 2, (40, 40)),
    ]
    ensemble = build_ensemble(stack_members(members), EnsembleCombine("learned"))
    images = np.random.default_rng(3).uniform(0, 255, (2, 40, 40, 3)).astype("float32")
    ensemble.save(tmp_path / "e.keras")
    again = keras.models.load_model(tmp_path / "e.keras", safe_mode=True, compile=False)
    np.testing.assert_allclose(
        again.predict(images, verbose=0), ensemble.predict(images, verbose=0), atol=1e-6
    )
