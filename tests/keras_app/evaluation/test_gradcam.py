"""keras_app.gradcam: heat maps through the nested backbone, overlays, and the command."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from PIL import Image

from keras_app import gradcam as gradcam_cli
from keras_app.core.cli import run_cli
from keras_app.evaluation import gradcam as gc
from keras_app.model.classifier import build_classifier
from keras_app.reports import overlays

# One per kind of backbone graph: plain CNN, depthwise, hard-swish with its own rescaling,
# residual, densely connected, plain VGG, separable (Xception's minimum is 71 px).
BACKBONE_SIZES = [
    ("simple_cnn", 32),
    ("mobilenet", 32),
    ("mobilenetv3small", 32),
    ("resnet50", 32),
    ("vgg16", 32),
]
SLOW_BACKBONE_SIZES = [("densenet121", 32), ("mobilenetv3large", 32), ("xception", 71)]


def random_images(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.mark.parametrize(
    "name, size",
    [*BACKBONE_SIZES, *(pytest.param(*p, marks=pytest.mark.slow) for p in SLOW_BACKBONE_SIZES)],
)
def test_heatmap_shape_and_range_for_registry_backbones(name, size):
    model = build_classifier(name, 2, (size, size))
    found = gc.explain(model, random_images(2, size))
    heat = found.heatmaps
    assert heat.shape == (2, size, size) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    np.testing.assert_allclose(heat, np.clip(found.evidence / gc.EVIDENCE_SCALE, 0, 1))
    peaks = found.relative.max(axis=(1, 2))
    assert np.all((peaks == 0.0) | np.isclose(peaks, 1.0))


def planted(n: int, quadrant: int | None, rng) -> np.ndarray:
    """Dim noise, and with a quadrant a bright 6 px square somewhere inside that quadrant."""
    x = rng.uniform(0, 60, (n, 32, 32, 3)).astype("float32")
    if quadrant is not None:
        for i in range(n):
            top = (quadrant // 2) * 16 + rng.integers(0, 10)
            left = (quadrant % 2) * 16 + rng.integers(0, 10)
            x[i, top : top + 6, left : left + 6] = 255.0
    return x


@pytest.fixture(scope="module")
def square_detector():
    """simple_cnn trained for a few steps to tell a bright square (anywhere) from none."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = np.concatenate([planted(128, None, rng)] + [planted(32, q, rng) for q in range(4)])
    y = np.repeat([0, 1], 128)
    model = build_classifier("simple_cnn", 2, (32, 32), dropout=0.0)
    model.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(x, y, epochs=3, batch_size=32, shuffle=True, verbose=0)
    assert history.history["accuracy"][-1] > 0.95
    return model


@pytest.mark.parametrize("quadrant", range(4))
def test_heat_peaks_on_the_planted_square(square_detector, quadrant):
    images = planted(6, quadrant, np.random.default_rng(10 + quadrant))
    heat = gc.explain(square_detector, images, class_index=1).evidence
    for h in heat:
        row, col = np.unravel_index(np.argmax(h), h.shape)
        assert (row // 16) * 2 + col // 16 == quadrant
        halves = h.reshape(2, 16, 2, 16).mean(axis=(1, 3)).reshape(-1)
        assert halves.argmax() == quadrant


def test_inner_backbone_layer_and_class_per_image(square_detector):
    inner = square_detector.get_layer("backbone").layers[-4].name  # the third block's activation
    images = planted(2, 0, np.random.default_rng(1))
    heat = gc.gradcam(square_detector, images, class_index=[1, 0], layer=inner)
    assert heat.shape == (2, 32, 32) and 0.0 <= heat.min() and heat.max() <= 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"images": np.zeros((1, 32, 32, 1), "float32")}, "Received shape=(1, 32, 32, 1)"),
        ({"images": np.zeros((1, 24, 24, 3), "float32")}, "Received shape=(1, 24, 24, 3)"),
        ({"class_index": 2}, "Received class_index=2"),
        ({"layer": "nope"}, "Received layer='nope'"),
    ],
)
def test_bad_arguments_say_what_was_received(kwargs, message):
    model = build_classifier("simple_cnn", 2, (32, 32))
    kwargs = {"images": np.zeros((1, 32, 32, 3), "float32"), **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gc.gradcam(model, **kwargs)


def test_model_without_a_nested_backbone_is_refused():
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(
        inputs,
        keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs)),
        name="flat",
    )
    with pytest.raises(ValueError, match="nested 'backbone' sub-model"):
        gc.gradcam(model, np.zeros((1, 32, 32, 3), "float32"))


def test_overlay_names_stay_apart():
    assert gc.overlay_names(["a/x.png", "b/x.png", "y.dcm"]) == [
        "x.gradcam.png",
        "x-1.gradcam.png",
        "y.gradcam.png",
    ]


def test_command_writes_one_overlay_per_image(tmp_path, square_detector, capsys):
    run = tmp_path / "run"
    run.mkdir()
    square_detector.save(run / "best.keras")
    (run / "labels.txt").write_text("EMPTY\nSQUARE\n")
    (run / "config.json").write_text(json.dumps({"model": "simple_cnn", "image_size": [32, 32]}))
    images = tmp_path / "images"
    images.mkdir()
    for q, x in enumerate(planted(2, 3, np.random.default_rng(2))):
        Image.fromarray(x.astype(np.uint8)).resize((64, 48)).save(images / f"q{q}.png")
    out = tmp_path / "heat"
    assert (
        run_cli(gradcam_cli.main, [str(run), str(images), "--out", str(out), "--class", "SQUARE"])
        == 0
    )
    written = sorted(out.iterdir())
    assert [p.name for p in written] == ["q0.gradcam.png", "q1.gradcam.png"]
    assert min(Image.open(written[0]).size) >= 512  # rendered large enough to read
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "q0.png -> " in lines[0] and " p=" in lines[0]
    assert (
        run_cli(gradcam_cli.main, [str(run), str(images), "--out", str(out), "--class", "CAT"]) == 2
    )
    assert "--class must be one of EMPTY, SQUARE" in capsys.readouterr().err


# --- blank maps ---------------------------------------------------------------------------------


def shifted(model, shift: float):
    """`model` with every class logit lowered by `shift` x the sum of the pooled features.

    Softmax ignores a shift shared by all logits: the predictions stay the same, yet
    each class's own logit now falls wherever a feature fires, so its plain map is blank.
    """
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    dense = clone.get_layer("predictions")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel - shift, bias])
    return clone


def test_margin_explains_where_the_plain_logit_map_is_blank(square_detector):
    images = np.concatenate(
        [planted(3, None, np.random.default_rng(3)), planted(3, 1, np.random.default_rng(6))]
    )
    model = shifted(square_detector, 5.0)
    np.testing.assert_allclose(model(images), square_detector(images), atol=1e-5)
    plain = gc.explain(model, images, method="logit")
    assert plain.blank.all()  # the plain ReLU map: nothing for either class
    found = gc.explain(model, images)
    assert not found.blank.any()
    assert set(found.classes.tolist()) == {0, 1}  # EMPTY and SQUARE both explained
    # The margin ignores the shared shift: the maps are the unshifted model's.
    np.testing.assert_allclose(found.heatmaps, gc.gradcam(square_detector, images), atol=1e-4)


def test_rendered_overlay_is_not_uniform_where_the_plain_map_was_blank(square_detector):
    images = planted(1, None, np.random.default_rng(4))
    found = gc.explain(shifted(square_detector, 5.0), images)
    assert found.classes.tolist() == [0]  # the negative class, the one that used to go blank
    grey = np.full((60, 80, 3), 128, np.uint8)  # a flat image: any variance is the map's
    # Its shape, at full strength: the fixed scale is the next tests' subject.
    fig = overlays.overlay_figure(grey, found.relative[0], gc.overlay_title("EMPTY", 0.9))
    pixels = overlays.figure_pixels(fig)
    region = image_region(fig, pixels)
    assert region.reshape(-1, 3).std(axis=0).max() > 10
    rendered = gc.render_overlay(grey, found.heatmaps[0], "EMPTY")
    assert min(rendered.shape[:2]) >= 512 and rendered.dtype == np.uint8
    assert "predicted EMPTY  p=0.900" in [t.get_text() for t in fig.axes[0].texts] + [
        fig.axes[0].get_title()
    ]
    assert len(fig.axes) == 2  # the image and its colour bar


def image_region(fig, pixels):
    """The pixels inside the image's Axes, a few pixels in from the frame."""
    box = fig.axes[0].get_window_extent()
    top = pixels.shape[0] - int(box.y1)
    return pixels[top + 3 : top + int(box.height) - 3, int(box.x0) + 3 : int(box.x1) - 3]


def test_a_zero_map_is_labelled_not_drawn_blue():
    grey = np.full((40, 40, 3), 128, np.uint8)
    # Without the lung outline (cyan is blue too): the map's own colour is the question.
    fig = overlays.overlay_figure(grey, np.zeros((8, 8), np.float32), "NORMAL", outline=False)
    assert overlays.NO_EVIDENCE in [t.get_text() for t in fig.axes[0].texts]
    region = image_region(fig, overlays.figure_pixels(fig))
    blue = region[..., 2].astype(int) - region[..., 0].astype(int)
    assert blue.max() < 30  # the grey image shows, not a blue wash


def test_command_says_when_a_map_is_blank(tmp_path, square_detector, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shifted(square_detector, 5.0).save(run / "best.keras")
    (run / "labels.txt").write_text("EMPTY\nSQUARE\n")
    (run / "config.json").write_text(json.dumps({"model": "simple_cnn", "image_size": [32, 32]}))
    image = tmp_path / "empty.png"
    Image.fromarray(planted(1, None, np.random.default_rng(5))[0].astype(np.uint8)).save(image)
    out = tmp_path / "heat"
    argv = [str(run), str(image), "--out", str(out), "--method", "logit"]
    assert run_cli(gradcam_cli.main, argv) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.endswith(f"[{overlays.NO_EVIDENCE} for EMPTY]") and "EMPTY p=" in line
    assert run_cli(gradcam_cli.main, argv[:-2]) == 0  # the margin, by default: a map, no label
    (line,) = capsys.readouterr().out.splitlines()
    assert overlays.NO_EVIDENCE not in line


def test_a_calibrated_run_is_explained_through_its_temperature(square_detector, tmp_path):
    from keras_app.model.calibration import calibrated_model

    path = tmp_path / "calibrated.keras"
    calibrated_model(square_detector, 2.0).save(path)
    model = keras.models.load_model(path, safe_mode=True, compile=False)
    images = planted(2, 2, np.random.default_rng(7))
    found = gc.explain(model, images)
    plain = gc.explain(square_detector, images)
    np.testing.assert_allclose(found.relative, plain.relative, atol=1e-4)
    # The evidence is in the calibrated model's log-odds: the temperature divides it.
    np.testing.assert_allclose(found.evidence * 2.0, plain.evidence, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(found.probabilities, model(images), atol=1e-6)
