"""Exporting a run or ensemble folder as a TF Serving SavedModel version (keras_app.export).

The serving graph decodes and resizes images, runs the calibrated model and
decides at the run's operating point with the same rule as every other predictor
(`keras_app.decision.operating_point.called_positive`); every answer carries the
threshold, the positive class and the operating point's version, and, where the point has
a refer band, whether the image is referred (`in_refer_band`) with the band's edges.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keras_app.artifacts import runs
from keras_app.artifacts.loader import load_model

# TensorFlow and data_pipelines are imported in the functions that use them, after the
# flags are parsed: `--help` answers at once. runs.load_model registers the custom layers.
from keras_app.core import files
from keras_app.core.errors import UsageError
from keras_app.core.files import locked
from keras_app.decision.operating_point import (
    OperatingPoint,
    called_positive,
    in_refer_band,
    passes_guard,
)
from keras_app.inference.predictor import list_versions
from keras_app.inference.serving_client import (
    CLASSES,
    DECISION,
    DEFAULT_SERVING_ROOT,
    IMAGE_BYTES,
    IMAGES,
    IN_DISTRIBUTION,
    LABELS,
    OOD_LIMIT,
    OOD_SCORE,
    OPERATING_POINT_VERSION,
    POSITIVE_CLASS,
    PREDICT_IMAGE_BYTES,
    PROBABILITIES,
    REFER,
    REFER_HIGH,
    REFER_LOW,
    SERVING_DEFAULT,
    THRESHOLD,
)
from keras_app.model import guard

if TYPE_CHECKING:
    import tensorflow as tf

MODELS_CONFIG = "models.config"
WARMUP_FILE = "tf_serving_warmup_requests"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --- the serving graph ---------------------------------------------------------------------------


def label_table(labels_file: str | Path) -> tf.lookup.StaticHashTable:
    """Class index -> name, read from `labels_file` (one name a line), saved as an asset."""
    import tensorflow as tf

    init = tf.lookup.TextFileInitializer(
        str(labels_file),
        tf.int64,
        tf.lookup.TextFileIndex.LINE_NUMBER,
        tf.string,
        tf.lookup.TextFileIndex.WHOLE_LINE,
    )
    return tf.lookup.StaticHashTable(init, default_value="")


def build_archive(
    model,
    labels_file: str | Path,
    image_size: tuple[int, int],
    *,
    pad_to_aspect: bool = False,
    operating_point: OperatingPoint | None = None,
):
    """A `keras.export.ExportArchive` with the two serving signatures.

    Args:
        model: a Keras model taking float images [b, h, w, 3] in 0-255 and returning
            probabilities [b, classes] (a classifier from `build_classifier`, or an ensemble).
        labels_file: a text file with one class name per line, in output order;
            copied to the SavedModel's `assets/` under its own file name.
        image_size: (h, w) of the model input.
        pad_to_aspect: resize encoded images keeping their aspect, as training did.
        operating_point: the validation-chosen threshold behind the `decision`
            output; None (or no threshold) decides by the most probable class.
    """
    import keras
    import tensorflow as tf

    table = label_table(labels_file)
    names = Path(labels_file).read_text().splitlines()
    num_classes = guard.probability_width(model)
    from data_pipelines.decode import get_decode_batch

    decode = get_decode_batch(image_size, pad_to_aspect)
    op = operating_point or OperatingPoint()
    pos = op.positive_index(names)

    def decide(probabilities):
        if pos is None:
            return tf.argmax(probabilities, axis=-1)
        # The one rule (`called_positive`), here on a float32 tensor: as every predictor.
        positive = called_positive(probabilities[:, pos], op.threshold)
        return tf.where(positive, tf.constant(pos, tf.int64), tf.constant(1 - pos, tf.int64))

    def outputs(probabilities, ood_score=None):
        guarded = guard_outputs(ood_score)
        return (
            answer(probabilities)
            | guarded
            | refer_outputs(probabilities, guarded.get(IN_DISTRIBUTION))
        )

    def answer(probabilities):
        batch = tf.shape(probabilities)[0]
        indices = tf.range(num_classes, dtype=tf.int64)
        labels = tf.tile(table.lookup(indices)[tf.newaxis], [batch, 1])
        return {
            PROBABILITIES: probabilities,
            CLASSES: table.lookup(tf.argmax(probabilities, axis=-1)),
            # Every label on each row, so that a client needs nothing but the answer.
            LABELS: labels,
            DECISION: table.lookup(decide(probabilities)),
            # The operating point with every answer: a TF Serving client has no assets.
            THRESHOLD: tf.fill([batch], tf.constant(op.threshold if pos is not None else -1.0)),
            POSITIVE_CLASS: tf.fill([batch], tf.constant(names[pos] if pos is not None else "")),
            OPERATING_POINT_VERSION: tf.fill([batch], tf.constant(op.version, tf.int32)),
        }

    def guard_outputs(ood_score):
        if ood_score is None:
            return {}
        # The one guard rule (`passes_guard`), on a float32 tensor as in NumPy.
        analysed = (
            passes_guard(ood_score, op.guard_limit)
            if op.guard_limit is not None
            else tf.ones_like(ood_score, tf.bool)
        )
        limit = op.guard_limit if op.guard_limit is not None else -1.0
        return {
            OOD_SCORE: ood_score,
            IN_DISTRIBUTION: analysed,
            OOD_LIMIT: tf.fill(tf.shape(ood_score), tf.constant(limit, tf.float32)),
        }

    def refer_outputs(probabilities, analysed):
        if pos is None or op.refer_limits is None:
            return {}  # no band: the outputs are what they were before bands existed
        low, high = op.refer_limits
        # The one refer rule (`in_refer_band`), on a float32 tensor as in NumPy; an image the
        # guard stops is not analysed, so not referred either.
        refer = in_refer_band(probabilities[:, pos], low, high)
        if analysed is not None:
            refer = tf.logical_and(refer, analysed)
        batch = tf.shape(probabilities)[:1]
        return {
            REFER: refer,
            REFER_LOW: tf.fill(batch, tf.constant(low, tf.float32)),
            REFER_HIGH: tf.fill(batch, tf.constant(high, tf.float32)),
        }

    def serve_images(images):
        out = model(images, training=False)
        if isinstance(out, dict):  # a guarded model
            return outputs(
                tf.cast(out[guard.PROBABILITIES], tf.float32),
                tf.cast(out[guard.OOD_SCORE], tf.float32),
            )
        return outputs(tf.cast(out, tf.float32))

    def serve_image_bytes(image_bytes):
        return serve_images(decode(image_bytes))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(table)
    archive.add_endpoint(
        SERVING_DEFAULT,
        serve_images,
        [tf.TensorSpec([None, *image_size, 3], tf.float32, name=IMAGES)],
    )
    archive.add_endpoint(
        PREDICT_IMAGE_BYTES, serve_image_bytes, [tf.TensorSpec([None], tf.string, name=IMAGE_BYTES)]
    )
    return archive


def write_warmup_requests(version_dir: Path, name: str, image_size: tuple[int, int]) -> Path:
    """Writes `assets.extra/tf_serving_warmup_requests`: one request per signature.

    TF Serving replays these before it marks the version available, so the first
    real request does not pay for graph initialisation.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    grey = np.full((*image_size, 3), 128, np.uint8)
    png = tf.io.encode_png(grey).numpy()
    requests = [
        (SERVING_DEFAULT, IMAGES, np.zeros((1, *image_size, 3), np.float32)),
        (PREDICT_IMAGE_BYTES, IMAGE_BYTES, np.array([png], dtype=object)),
    ]
    path = version_dir / "assets.extra" / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, input_name, value in requests:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            request.model_spec.signature_name = signature
            request.inputs[input_name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


# --- versions and models.config ------------------------------------------------------------------


def next_version(model_dir: str | Path) -> int:
    """One above the highest version folder (complete or not), or 1 for a new model."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return 1
    taken = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
    return max(taken, default=0) + 1


def served_models(base: str | Path) -> list[str]:
    """Names of the model folders under `base` that hold at least one complete version."""
    base = Path(base)
    if not base.is_dir():
        return []
    return [
        d.name
        for d in sorted(base.iterdir())
        if d.is_dir() and _NAME.match(d.name) and list_versions(d)
    ]


def models_config_text(base: str | Path, serving_root: str = DEFAULT_SERVING_ROOT) -> str:
    """TF Serving's ModelServerConfig (text format) for every model folder under `base`.

    Each model's base_path is `serving_root/NAME`: where the server sees the folder.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name in served_models(base):
        entry = config.model_config_list.config.add()
        entry.name = name
        entry.base_path = f"{serving_root.rstrip('/')}/{name}"
        entry.model_platform = "tensorflow"
    return text_format.MessageToString(config)


def write_models_config(base: str | Path, serving_root: str = DEFAULT_SERVING_ROOT) -> Path:
    """Rewrites `base/models.config` atomically, under a lock shared by concurrent exports."""
    base = Path(base)
    with locked(base):
        files.write_text_atomic(base / MODELS_CONFIG, models_config_text(base, serving_root))
    return base / MODELS_CONFIG


# --- the command ---------------------------------------------------------------------------------


def export_model(
    source: str | Path,
    name: str = "pneumonia",
    *,
    base: str | Path = "saved_models",
    version: int | None = None,
    force: bool = False,
    serving_root: str = DEFAULT_SERVING_ROOT,
) -> Path:
    """Exports a run or ensemble folder as version `version` of model `name`.

    The version is written into a dot-named folder beside it and renamed into
    place, so a server polling `base/name` never loads half a version.

    Args:
        source: a run folder from `keras_app.train` or an ensemble folder.
        name: the model's name in TF Serving (its folder under `base`).
        base: the folder holding one folder per served model, and models.config.
        version: the version number; None for one above the highest existing.
        force: replace an existing version.
        serving_root: where the server sees `base` (written into models.config).

    Returns:
        The version folder.

    Raises:
        UsageError: bad name or version, not a run folder, or the version exists without `force`.
    """
    check_name(name)
    if version is not None and version < 1:
        raise UsageError(f"--version must be a positive integer. Received --version={version}")
    run = runs.load_run(source)
    model_dir = Path(base) / name
    version = version if version is not None else next_version(model_dir)
    final = model_dir / str(version)
    if final.exists() and not force:
        raise UsageError(f"{final} already exists; pass --force to replace it")
    model = load_model(run.path)
    image_size = _check_model(model, run)
    operating_point = OperatingPoint.from_dict(run.operating_point())
    archive = build_archive(
        model,
        run.path / runs.LABELS,
        image_size,
        pad_to_aspect=bool(run.config.get("pad_to_aspect", False)),
        operating_point=operating_point,
    )
    with files.atomic_directory(final, overwrite=force) as tmp:
        archive.write_out(str(tmp), verbose=False)
        files.write_json_atomic(tmp / "assets" / runs.OPERATING_POINT, operating_point.to_dict())
        write_warmup_requests(tmp, name, image_size)
    write_models_config(base, serving_root)
    return final


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise UsageError(
            "--name must be a folder name of letters, digits, '_', '.' or '-' "
            f"(TF Serving's model name). Received --name={name!r}"
        )
    return name


def _check_model(model, run: runs.Run) -> tuple[int, int]:
    """The model's (h, w), after checking it against the run's labels and image size."""
    shape = tuple(model.input_shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise UsageError(
            f"{run.path}: expected a model taking images [batch, h, w, 3]. "
            f"Received input_shape={shape}"
        )
    if guard.probability_width(model) != len(run.class_names):
        raise UsageError(
            f"{run.path}: the model has {guard.probability_width(model)} outputs but "
            f"labels.txt names {len(run.class_names)} classes"
        )
    return tuple(
        int(s) if s is not None else int(r) for s, r in zip(shape[1:3], run.image_size, strict=True)
    )
