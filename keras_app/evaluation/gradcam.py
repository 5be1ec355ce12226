"""Grad-CAM heat maps: where in the image the classifier's evidence for a class lies.

Selvaraju et al., "Grad-CAM" (ICCV 2017): weight each channel of the last
convolutional feature map by the mean gradient of the class score over it, sum,
keep the positive part, upsample to the image.

The class score explained is, by default, the margin of the class's logit over
the best other class (for two classes: logit_c - logit_other). For a softmax
classifier that is what decides the class: evidence for NORMAL is evidence
against PNEUMONIA. The plain logit of the class alone (`method="logit"`) can
have no positive location at all, typically for the negative class, and gives
an all-zero map. A map that is still all zero is said to be so: on the overlay
("no positive evidence") and in the command's output line.

Every map is on one fixed scale (`EVIDENCE_SCALE`), never on its own maximum: a map
scaled to its own peak paints the faintest evidence of a confident NORMAL film as red
as the strongest of a PNEUMONIA one (issue 27). For the product's classifiers (global
average pooling, then one Dense layer) the gradient weights are the Dense weights over
the number of feature-map cells, so the signed map, times that number, is the class's
logit margin per location: its mean over the image is the margin (less the bias).
Divided by the model's temperature it is in calibrated log-odds: "the log-odds for the
class if the whole film looked like here". `Explanation.evidence` holds it (its
positive part); `heatmaps` is it over `EVIDENCE_SCALE`, clipped to 0..1.

The classifier from `keras_app.model.build_classifier` nests its backbone as
one sub-model, so the feature map is not a tensor of the outer graph that a
gradient can be taken against. It is exposed by running the model in three
parts under one tape: the layers before the backbone, the backbone (or a
sub-model of it returning an inner layer too), then the head layers.

`python -m keras_app.gradcam MODEL IMAGES... --out DIR` writes overlays as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from data_pipelines.decode import decode_rgb
from keras_app.core.errors import UsageError
from keras_app.model.calibration import TemperatureScaling
from keras_app.model.classifier import BACKBONE_LAYER
from keras_app.model.guard import classifier_of
from keras_app.model.thorax_crop import ThoraxCrop
from keras_app.reports import overlays

# margin: the class's logit minus the best other one (what decides a softmax); logit: the
# class's logit alone, Selvaraju et al.'s score, kept to compare against.
METHODS = ("margin", "logit")
# The top of the fixed scale, in calibrated log-odds per location (see the module): about
# the 99th percentile of the PNEUMONIA evidence over the validation PNEUMONIA films of the
# README chest X-ray model (26.5 before issue 27's recipe, 28.0 after; a NORMAL film's
# peak is 1.9 at the median). Evidence above it is drawn at the top colour.
EVIDENCE_SCALE = overlays.EVIDENCE_SCALE


@dataclass(frozen=True)
class Explanation:
    """Grad-CAM maps with what they explain.

    Attributes:
        heatmaps: float32 `[n, h, w]` in 0..1: `evidence / EVIDENCE_SCALE`, clipped; one
            scale for every image, so a faint map looks faint.
        classes: int `[n]`, the class each map explains.
        probabilities: float32 `[n, classes]`, the model's output for the images.
        evidence: float32 `[n, h, w]` >= 0, the class's calibrated log-odds per location
            (positive part; see the module). Zero outside a `ThoraxCrop`'s box.
    """

    heatmaps: np.ndarray
    classes: np.ndarray
    probabilities: np.ndarray
    evidence: np.ndarray

    @property
    def blank(self) -> np.ndarray:
        """bool `[n]`: no location speaks for the class (the map is all zero)."""
        return ~(self.evidence.max(axis=(1, 2)) > 0.0)

    @property
    def relative(self) -> np.ndarray:
        """float32 `[n, h, w]`: each map over its own maximum (to compare shapes, not to show)."""
        peak = self.evidence.max(axis=(1, 2), keepdims=True)
        return np.divide(self.evidence, peak, out=np.zeros_like(self.evidence), where=peak > 0)


def gradcam(
    model,
    images,
    class_index: int | Sequence[int] | None = None,
    *,
    layer: str | None = None,
    method: str = "margin",
) -> np.ndarray:
    """Grad-CAM heat maps of `model` for `images` (`explain(...).heatmaps`).

    Args:
        model: a classifier from `build_classifier`: a chain of layers around a
            nested sub-model named "backbone".
        images: float `[n, h, w, 3]` in 0-255, at the model's input size.
        class_index: the class to explain: None for each image's predicted class,
            an int for the same class for all, or one int per image.
        layer: a layer inside the backbone to take the feature map from; None for
            the backbone's output (its last convolutional block).
        method: the class score differentiated, one of `METHODS`.

    Returns:
        float32 `[n, h, w]` in 0..1 on the fixed scale (`Explanation.heatmaps`; all
        zeros where no location speaks for the class).

    Raises:
        ValueError: the model has no nested backbone or is not a chain, the images
            are not `[n, h, w, 3]` at the model's size, a class index is out of
            range, or `method` is unknown.

    Example:
        >>> model = build_classifier("simple_cnn", 2, (32, 32))
        >>> gradcam(model, np.zeros((1, 32, 32, 3), "float32")).shape
        (1, 32, 32)
    """
    return explain(model, images, class_index, layer=layer, method=method).heatmaps


def explain(
    model,
    images,
    class_index: int | Sequence[int] | None = None,
    *,
    layer: str | None = None,
    method: str = "margin",
) -> Explanation:
    """Grad-CAM maps, the class each explains and the model's probabilities.

    Arguments and errors as `gradcam`.

    Example:
        >>> found = explain(model, images)
        >>> found.blank  # True where a map is all zero: say so, never show it silently
        array([False])
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}. Received method={method!r}")
    model = classifier_of(model)  # a guarded model explains its classifier
    images = _check_images(model, images)
    before, backbone, after = split_classifier(model)
    # The temperature only rescales the logits: the map explains the scores before it.
    calibration = after[-1] if isinstance(after[-1], TemperatureScaling) else None
    if calibration is not None:
        after = after[:-1]
    if not after:
        raise ValueError(f"model {model.name!r} has no head after its backbone")
    features = _feature_model(backbone, layer)
    num_classes = int(model.output_shape[-1])
    with tf.GradientTape() as tape:
        # Watched from the input: a frozen backbone's own variables are not, and the
        # ops between an inner layer and the backbone's output must still be recorded.
        tape.watch(images)
        x = images
        for part in before:
            x = part(x, training=False)
        if features is backbone:
            fmap = out = backbone(x, training=False)
        else:
            fmap, out = features(x, training=False)
        for part in after[:-1]:
            out = part(out, training=False)
        logits = _class_scores(after[-1], out)
        chosen = _class_indices(class_index, logits, num_classes)
        score = _score(logits, chosen, method)
    probs = _check_chain(model, images, [after[-1], calibration], out)
    grads = tape.gradient(score, fmap)
    weights = tf.reduce_mean(grads, axis=(1, 2))  # [n, channels]
    cells = float(fmap.shape[1] * fmap.shape[2])
    temperature = float(calibration.temperature) if calibration is not None else 1.0
    cam = tf.nn.relu(tf.einsum("nhwc,nc->nhw", fmap, weights)) * (cells / temperature)
    evidence = _to_image(cam.numpy(), before, tuple(images.shape[1:3]))
    return Explanation(
        np.clip(evidence / EVIDENCE_SCALE, 0.0, 1.0).astype(np.float32),
        chosen.numpy().astype(np.int64),
        probs.astype(np.float32),
        evidence,
    )


def _to_image(cam: np.ndarray, before, size: tuple[int, int]) -> np.ndarray:
    """Feature-map-sized maps `[n, fh, fw]` over the input image (bilinear); into the box
    of a `ThoraxCrop` among the layers before the backbone, zero outside it."""
    crop = next((layer for layer in before if isinstance(layer, ThoraxCrop)), None)
    if crop is not None:
        return np.clip(crop.uncrop(cam, size), 0.0, None)
    resized = tf.image.resize(tf.constant(cam, tf.float32)[..., tf.newaxis], size)[..., 0]
    return np.clip(resized.numpy(), 0.0, None).astype(np.float32)


def _score(logits: tf.Tensor, chosen: tf.Tensor, method: str) -> tf.Tensor:
    """The class score to differentiate: the logit, or its margin over the best other class."""
    picked = tf.gather(logits, chosen, axis=1, batch_dims=1)
    if method == "logit" or logits.shape[-1] < 2:
        return picked
    is_chosen = tf.one_hot(chosen, logits.shape[-1], on_value=True, off_value=False)
    others = tf.where(is_chosen, tf.constant(-np.inf, logits.dtype), logits)
    return picked - tf.reduce_max(others, axis=-1)


def _check_images(model, images) -> tf.Tensor:
    shape = tuple(np.shape(images))
    want = tuple(model.input_shape[1:3])
    if (
        len(shape) != 4
        or shape[-1] != 3
        or any(w is not None and s != w for s, w in zip(shape[1:3], want, strict=True))
    ):
        raise ValueError(
            f"expected images of shape [n, {want[0]}, {want[1]}, 3] (RGB at the model's size). "
            f"Received shape={shape}"
        )
    return tf.convert_to_tensor(images, tf.float32)


def split_classifier(model):
    """(layers before the backbone, the backbone, layers after it), InputLayers left out.

    Raises:
        ValueError: the model has no nested backbone, or nothing after it.
    """
    model = classifier_of(model)
    names = [layer.name for layer in model.layers]
    if BACKBONE_LAYER not in names:
        raise ValueError(
            f"Grad-CAM needs a classifier with a nested {BACKBONE_LAYER!r} sub-model "
            f"(keras_app.model.build_classifier); model {model.name!r} has none "
            "(an ensemble: explain one of its members' run folders instead)"
        )
    parts = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    i = [p.name for p in parts].index(BACKBONE_LAYER)
    if i == len(parts) - 1:
        raise ValueError(f"model {model.name!r} has no head after its backbone")
    return parts[:i], parts[i], parts[i + 1 :]


def _feature_model(backbone, layer: str | None):
    """The backbone, or a sub-model of it returning (inner layer output, backbone output)."""
    if layer is None:
        return backbone
    try:
        inner = backbone.get_layer(layer)
    except ValueError:
        raise ValueError(f"the backbone has no layer {layer!r}. Received layer={layer!r}") from None
    if len(inner.output.shape) != 4:
        raise ValueError(
            f"layer {layer!r} does not output a feature map [n, h, w, c]. "
            f"Received output shape={tuple(inner.output.shape)}"
        )
    return keras.Model(backbone.inputs, [inner.output, backbone.output])


def _class_scores(last, x) -> tf.Tensor:
    """The pre-softmax class scores: a saturated softmax has no gradient left to explain."""
    if isinstance(last, keras.layers.Dense) and last.activation is keras.activations.softmax:
        logits = tf.matmul(x, tf.cast(last.kernel, x.dtype))
        return logits + tf.cast(last.bias, x.dtype) if last.use_bias else logits
    return last(x, training=False)


def _class_indices(class_index, logits: tf.Tensor, num_classes: int) -> tf.Tensor:
    n = int(logits.shape[0])
    if class_index is None:
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    chosen = (
        np.broadcast_to(np.asarray(class_index, dtype=np.int64), (n,))
        if np.ndim(class_index) == 0
        else np.asarray(class_index, dtype=np.int64)
    )
    if chosen.shape != (n,) or chosen.min() < 0 or chosen.max() >= num_classes:
        raise ValueError(
            f"class_index must be None, or an index (or one per image) in "
            f"[0, {num_classes}). Received class_index={class_index!r}"
        )
    return tf.constant(chosen, tf.int32)


def _check_chain(model, images, tail, out) -> np.ndarray:
    """The parts run one after another must be the model: else the map explains something else.

    Returns:
        The model's output for `images`.
    """
    ours = out
    for part in (p for p in tail if p is not None):
        ours = part(ours, training=False)
    theirs = model(images, training=False).numpy()
    if not np.allclose(ours.numpy(), theirs, rtol=1e-4, atol=1e-5):
        raise ValueError(
            f"model {model.name!r} is not a plain chain around its backbone (input -> ... -> "
            "backbone -> head): Grad-CAM supports classifiers from build_classifier"
        )
    return theirs


# --- overlays ------------------------------------------------------------------------------------


def overlay_names(files: Sequence[str | Path]) -> list[str]:
    """`<stem>.gradcam.png` per file, numbered where two files share a stem."""
    names, seen = [], {}
    for f in files:
        stem = Path(f).stem
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        names.append(f"{stem}.gradcam.png" if count == 0 else f"{stem}-{count}.gradcam.png")
    return names


def render_overlay(
    image_rgb: np.ndarray,
    heatmap: np.ndarray,
    title: str,
    *,
    alpha: float = 0.4,
    colormap: str = "jet",
    min_side: int = 512,
) -> np.ndarray:
    """One overlay as uint8 RGB `[H, W, 3]`: the map over the image, title and colour bar.

    Drawn with matplotlib at a size a reader can use: the image at least
    `min_side` pixels on its short side. An all-zero map is not drawn as a
    flat colour: the panel says `overlays.NO_EVIDENCE`. For a grid of panels, draw
    each with `overlays.draw_heatmap_overlay(ax, ...)` or use `overlays.heatmap_grid_figure`.

    Args:
        image_rgb: uint8 `[H, W, 3]`, the image at its own size (`decode_rgb`).
        heatmap: float `[h, w]` in 0..1 (`gradcam`), stretched over the image.
        title: e.g. `overlay_title("PNEUMONIA", 0.97)`.
        alpha: opacity of the heat map.
        colormap: a matplotlib colormap name.
        min_side: the image's short side in the rendering, in pixels.
    """
    fig = overlays.overlay_figure(
        image_rgb, heatmap, title, min_side=min_side, alpha=alpha, colormap=colormap
    )
    return overlays.figure_pixels(fig)


def overlay_title(predicted: str, probability: float, *, explained: str | None = None) -> str:
    """The panel's title: the predicted class and its probability, and what the map shows."""
    title = f"predicted {predicted}  p={probability:.3f}"
    if explained is not None and explained != predicted:
        title += f"\nmap: evidence for {explained}"
    return title


@dataclass(frozen=True)
class Overlay:
    """One written overlay and what it shows."""

    path: Path
    predicted: str
    probability: float
    explained: str
    blank: bool

    def line(self, source) -> str:
        """The command's output line; a blank map is said, never left to look blue."""
        line = f"{source} -> {self.path}: {self.predicted} p={self.probability:.3f}"
        if self.explained != self.predicted:
            line += f", map of {self.explained}"
        return line + (f" [{overlays.NO_EVIDENCE} for {self.explained}]" if self.blank else "")


def save_overlays(
    out_dir: str | Path,
    files: Sequence[str | Path],
    originals: Sequence[np.ndarray],
    found: Explanation,
    class_names: Sequence[str],
    *,
    alpha: float = 0.4,
) -> list[Overlay]:
    """Writes one rendered overlay PNG per image into `out_dir`.

    Returns:
        An `Overlay` per image, in order.
    """
    from PIL import Image

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]. Received alpha={alpha}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, image) in enumerate(zip(overlay_names(files), originals, strict=True)):
        pred = int(np.argmax(found.probabilities[i]))
        record = Overlay(
            out_dir / name,
            str(class_names[pred]),
            float(found.probabilities[i, pred]),
            str(class_names[found.classes[i]]),
            bool(found.blank[i]),
        )
        title = overlay_title(record.predicted, record.probability, explained=record.explained)
        Image.fromarray(render_overlay(image, found.heatmaps[i], title, alpha=alpha)).save(
            record.path
        )
        written.append(record)
    return written


def explain_files(
    predictor,
    files: Sequence[Path],
    contents: Sequence[bytes],
    out_dir: str | Path,
    *,
    class_index: int | None = None,
    layer: str | None = None,
    alpha: float = 0.4,
    batch_size: int = 16,
    method: str = "margin",
) -> list[Overlay]:
    """Grad-CAM overlays for encoded images, each rendered over the image at its own aspect.

    Args:
        predictor: a Keras `Predictor` (a run or ensemble folder, a .keras file): its
            model, input size, padding and class names.

    Returns:
        An `Overlay` per file (its path, the predicted class, whether the map is blank).
    """
    if predictor.keras_model is None:
        raise UsageError(
            f"Grad-CAM needs the Keras model: {predictor.name} is {predictor.kind}; give its run "
            "folder or .keras file"
        )
    parts = []
    for start in range(0, len(contents), batch_size):
        batch = predictor.decode(list(contents[start : start + batch_size]))
        try:
            parts.append(
                explain(predictor.keras_model, batch, class_index, layer=layer, method=method)
            )
        except ValueError as err:
            raise UsageError(str(err)) from None
    found = Explanation(
        *(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Explanation))
    )
    originals = [decode_rgb(c) for c in contents]
    return save_overlays(out_dir, files, originals, found, predictor.class_names, alpha=alpha)
