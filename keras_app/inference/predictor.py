"""One door to a trained classifier: open it, predict, decide at its operating point.

`open_predictor` takes what a user points at:
    a run or ensemble folder      runs/xception-20260101-120000
    a .keras file                 (labels.txt beside it, if any)
    an exported model             saved_models/NAME (highest version) or saved_models/NAME/3
    a TF Serving endpoint         open_server("http://localhost:8501") or open_server(grpc=...)

Every `Predictor` takes float images (0-255, any size for encoded bytes) and
returns calibrated probabilities, carries the class names, the input size and
the operating point chosen on validation, and decides with it. evaluate,
predict, gradcam, cv, ensemble and the DICOM node all predict through here.

Example:
    >>> predictor = open_predictor("runs/mobilenet-20261122-134432")
    >>> scores = predictor.predict_bytes([Path("xray.jpeg").read_bytes()])
    >>> scores.decisions, scores.probabilities
    (['PNEUMONIA'], array([[0.02, 0.98]], dtype=float32))
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_app.artifacts import runs
from keras_app.artifacts.loader import load_model
from keras_app.core.errors import UsageError
from keras_app.decision.operating_point import OperatingPoint
from keras_app.inference.serving_client import IMAGES, PREDICT_IMAGE_BYTES, SERVING_DEFAULT, Scores
from keras_app.model.guard import OOD_SCORE, PROBABILITIES, probability_width

OPERATING_POINT_ASSET = runs.OPERATING_POINT  # assets/operating_point.json in an export


class Predictor:
    """A classifier opened for prediction, whatever holds it.

    Attributes:
        kind: "keras" (run folder, .keras file), "saved_model" or "serving".
        path: the run folder, .keras file or SavedModel version (None for a server).
        name: a short name for output folders and reports.
        class_names: labels in output order.
        image_size: (h, w) of the model input; None for a server.
        operating_point: temperature and threshold chosen on validation.
        keras_model: the Keras model, for Grad-CAM; None otherwise.
        config: the run's config.json ({} when there is none).
        data_record: the training data record of environment.json, or None.
        training_images: content hashes of the images it trained and validated on,
            or None where the run folder does not record them.
    """

    kind = "base"

    def __init__(
        self,
        *,
        name: str,
        class_names: Sequence[str],
        image_size: tuple[int, int] | None,
        operating_point: OperatingPoint | None = None,
        path: Path | None = None,
        config: dict | None = None,
        data_record: dict | None = None,
        training_images: set[str] | None = None,
        keras_model=None,
    ):
        self.name = name
        self.class_names = tuple(str(c) for c in class_names)
        self.image_size = image_size
        self.operating_point = operating_point or OperatingPoint()
        self.path = path
        self.config = config or {}
        self.data_record = data_record
        self.training_images = training_images
        self.keras_model = keras_model

    @property
    def threshold(self) -> float | None:
        return self.operating_point.threshold

    @property
    def pad_to_aspect(self) -> bool:
        return bool(self.config.get("pad_to_aspect", False))

    # --- what each backend provides ---

    def _images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities, guard scores or None) for one batch of float images."""
        raise NotImplementedError

    def _encoded(self, contents: list[bytes]) -> Scores:
        raise NotImplementedError

    # --- the shared API ---

    def predict(self, images, batch_size: int = 32) -> np.ndarray:
        """Probabilities `[n, classes]` for float images `[n, h, w, 3]` (0-255, model size)."""
        return self.score(images, batch_size)[0]

    def score(self, images, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities `[n, classes]`, the image guard's scores `[n]` or None without one)."""
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"expected images of shape [batch, height, width, 3]. Received {images.shape}"
            )
        return self._joined(
            self._images(images[i : i + batch_size]) for i in range(0, len(images), batch_size)
        )

    def predict_bytes(self, contents: Sequence[bytes], batch_size: int = 32) -> Scores:
        """Scores for encoded images: probabilities, the most probable class, the decision at
        the operating point (with its threshold and version) and, for a guarded model,
        whether each image is analysed at all."""
        parts = [
            self._encoded(list(contents[i : i + batch_size]))
            for i in range(0, len(contents), batch_size)
        ]
        if not parts:
            return Scores(
                np.zeros((0, len(self.class_names)), np.float32), [], self.class_names, []
            )
        scores = Scores.concatenate(parts)
        op = self.operating_point
        if scores.decisions is None:  # decided here, by the same rule a served graph uses
            scores = dataclasses.replace(
                scores,
                decisions=self.decide(scores.probabilities),
                threshold=op.threshold if op.positive_index(self.class_names) is not None else None,
                positive_class=op.positive_class,
                operating_point_version=op.version,
            )
        if scores.in_distribution is None and scores.ood_score is not None:
            scores = dataclasses.replace(
                scores,
                in_distribution=op.analysed(scores.ood_score).tolist(),
                ood_limit=op.guard_limit,
            )
        if scores.refer is None and op.refer_limits is not None:  # as the served graph refers
            referred = op.referred(scores.probabilities, self.class_names, scores.ood_score)
            scores = dataclasses.replace(
                scores, refer=referred.tolist(), refer_band=op.refer_limits
            )
        return scores

    def predict_split(self, split, batch_size: int = 32) -> np.ndarray:
        """Probabilities for every image of a `data_pipelines` split, in its order."""
        return self.score_split(split, batch_size)[0]

    def score_split(self, split, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities, guard scores or None) for every image of a split, in its order."""
        probs, ood = self._joined(
            self._images(batch.numpy()) for batch in self._split_dataset(split, batch_size)
        )
        if len(probs) != len(split.labels):
            raise RuntimeError(f"predicted {len(probs)} rows for {len(split.labels)} images")
        return probs, ood

    def _joined(self, parts) -> tuple[np.ndarray, np.ndarray | None]:
        parts = list(parts)
        if not parts:
            return np.zeros((0, len(self.class_names)), np.float32), None
        probs = np.concatenate([p for p, _ in parts])
        ood = None if parts[0][1] is None else np.concatenate([o for _, o in parts])
        return probs, ood

    def split_images(self, split, batch_size: int = 32) -> np.ndarray:
        """A split's images as the model sees them: float32 `[n, h, w, 3]`, 0-255."""
        return np.concatenate([b.numpy() for b in self._split_dataset(split, batch_size)])

    def _split_dataset(self, split, batch_size: int):
        """The training pipeline's deterministic decode and resize, images only."""
        import data_pipelines

        if self.image_size is None:
            raise UsageError(
                f"{self.name}: a server's input size is unknown; predict files instead"
            )
        return data_pipelines.make_dataset(
            split,
            image_size=self.image_size,
            batch_size=batch_size,
            training=False,
            num_classes=len(split.class_names),
            cache=False,
            pad_to_aspect=self.pad_to_aspect,
        ).map(lambda x, y: x)

    def decide(self, probs) -> list[str]:
        """The class of each row at the operating point."""
        return [self.class_names[i] for i in self.operating_point.decide(probs, self.class_names)]

    def describe(self) -> dict:
        """What a report says about the model."""
        return {
            "kind": self.kind,
            "path": str(self.path) if self.path else self.name,
            "backbone": self.config.get("model"),
            "class_names": list(self.class_names),
            "image_size": list(self.image_size) if self.image_size else None,
            "operating_point": self.operating_point.to_dict(),
        }


class KerasPredictor(Predictor):
    """A Keras model: a run or ensemble folder's best.keras, or a .keras file."""

    kind = "keras"

    def __init__(self, model, class_names: Sequence[str], **kwargs):
        width = probability_width(model)
        if width != len(class_names):
            raise UsageError(
                f"{kwargs.get('path') or 'the model'}: the model has {width} "
                f"outputs but {len(class_names)} class names"
            )
        kwargs.setdefault("name", model.name)
        size = kwargs.pop("image_size", None)
        shape = model.input_shape[1:3]
        image_size = tuple(
            int(s) if s is not None else int(r) for s, r in zip(shape, size or shape, strict=True)
        )
        super().__init__(
            class_names=class_names, image_size=image_size, keras_model=model, **kwargs
        )
        self._decode = None
        self._predict_fn = None

    def _call(self, images):
        import tensorflow as tf

        if self._predict_fn is None:
            model = self.keras_model
            # One traced function for every batch size: no retracing per call.
            self._predict_fn = tf.function(
                lambda x: model(x, training=False),
                input_signature=[tf.TensorSpec([None, *self.image_size, 3], tf.float32)],
                reduce_retracing=True,
            )
        out = self._predict_fn(images)
        if isinstance(out, dict):  # a guarded model: the guard's score beside the probabilities
            return np.asarray(out[PROBABILITIES], np.float32), np.asarray(
                out[OOD_SCORE], np.float32
            )
        return np.asarray(out, np.float32), None

    def _images(self, images):
        return self._call(np.asarray(images, np.float32))

    def decode(self, contents: Sequence[bytes]) -> np.ndarray:
        """Encoded images as the model sees them: float32 [n, h, w, 3] at its input size."""
        import tensorflow as tf

        from data_pipelines.decode import get_decode_batch

        if self._decode is None:
            self._decode = tf.function(get_decode_batch(self.image_size, self.pad_to_aspect))
        return self._decode(tf.constant(list(contents))).numpy()

    def _encoded(self, contents):
        probs, ood = self._call(self.decode(contents))
        classes = [self.class_names[i] for i in probs.argmax(axis=1)]
        return Scores(probs, classes, self.class_names, ood_score=ood)


class SavedModelPredictor(Predictor):
    """An exported version, loaded with TensorFlow alone (what TF Serving loads)."""

    kind = "saved_model"

    def __init__(self, version_dir: Path):
        import tensorflow as tf

        self._loaded = tf.saved_model.load(str(version_dir))  # owns the signatures' variables
        missing = {SERVING_DEFAULT, PREDICT_IMAGE_BYTES} - set(self._loaded.signatures)
        if missing:
            raise UsageError(
                f"{version_dir} lacks the signatures {sorted(missing)}: export it with "
                "python -m keras_app.export"
            )
        inputs = self._loaded.signatures[SERVING_DEFAULT].structured_input_signature[1]
        spec = inputs.get(IMAGES)
        shape = tuple(spec.shape) if spec is not None else ()
        if len(shape) != 4 or shape[-1] != 3 or None in shape[1:3]:
            raise UsageError(
                f"{version_dir}: {SERVING_DEFAULT} takes {sorted(inputs)}; expected one image "
                f"input '{IMAGES}' [batch, h, w, 3] with a fixed size"
            )
        assets = version_dir / "assets"
        labels = assets / runs.LABELS
        if not labels.is_file():
            raise UsageError(f"{version_dir} has no assets/{runs.LABELS}: export it again")
        op_file = assets / OPERATING_POINT_ASSET
        op = json.loads(op_file.read_text()) if op_file.is_file() else None
        super().__init__(
            name=f"{version_dir.parent.name}-v{version_dir.name}",
            class_names=labels.read_text().splitlines(),
            image_size=(int(shape[1]), int(shape[2])),
            operating_point=OperatingPoint.from_dict(op),
            path=version_dir,
        )

    def _run(self, signature: str, **inputs) -> Scores:
        outputs = self._loaded.signatures[signature](**inputs)
        return Scores.from_outputs({k: v.numpy() for k, v in outputs.items()})

    def _images(self, images):
        import tensorflow as tf

        scores = self._run(SERVING_DEFAULT, **{IMAGES: tf.constant(images, tf.float32)})
        return scores.probabilities, scores.ood_score

    def _encoded(self, contents):
        import tensorflow as tf

        from keras_app.inference.serving_client import IMAGE_BYTES

        return self._run(PREDICT_IMAGE_BYTES, **{IMAGE_BYTES: tf.constant(contents)})


class ServingPredictor(Predictor):
    """A model behind TF Serving, through its REST or gRPC client."""

    kind = "serving"

    def __init__(self, client, name: str):
        super().__init__(name=name, class_names=(), image_size=None)
        self.client = client

    def _images(self, images):
        scores = self._adopt(self.client.predict_arrays(images))
        return scores.probabilities, scores.ood_score

    def _encoded(self, contents):
        return self._adopt(self.client.predict_bytes(contents))

    def _adopt(self, scores: Scores) -> Scores:
        # The server names its classes and its operating point in every answer: the
        # first answer tells us (the export's assets are not reachable over the wire).
        if scores.labels:
            self.class_names = tuple(scores.labels)
        if scores.threshold is not None or scores.operating_point_version is not None:
            self.operating_point = OperatingPoint(
                positive_class=scores.positive_class,
                threshold=scores.threshold,
                version=scores.operating_point_version or 1,
                chosen_on="the served model's answer",
                guard={"limit": scores.ood_limit} if scores.ood_limit is not None else {},
                refer_band=dict(zip(("low", "high"), scores.refer_band or (), strict=False)),
            )
        return scores


# --- opening --------------------------------------------------------------------------------------


def open_predictor(path: str | Path, version: int | None = None) -> Predictor:
    """A run or ensemble folder, a .keras file, or an exported model (folder or version).

    Raises:
        UsageError: nothing loadable at `path`, or `version` given for a non-export.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise UsageError(f"no model at {path}: expected a run folder, a .keras file or an export")
    if path.is_file() and path.suffix == ".keras":
        _no_version(version, path)
        labels = path.with_name(runs.LABELS)
        model = load_model(path)
        names = (
            labels.read_text().splitlines()
            if labels.is_file()
            else [str(i) for i in range(int(model.output_shape[-1]))]
        )
        op = path.with_name(runs.OPERATING_POINT)
        return KerasPredictor(
            model,
            names,
            name=path.stem,
            path=path,
            operating_point=OperatingPoint.from_dict(
                json.loads(op.read_text()) if op.is_file() else None
            ),
        )
    if (path / "saved_model.pb").is_file():
        _no_version(version, path)
        return SavedModelPredictor(path)
    folder = runs.RunFolder(path)
    if path.is_dir() and any(p.exists() for p in (folder.best, folder.config_path)):
        _no_version(version, path)
        return open_run(path)
    if path.is_dir():
        return SavedModelPredictor(resolve_version(path, version))
    raise UsageError(
        f"no model at {path}: expected a run folder, a .keras file, or an exported "
        "model (saved_models/NAME or saved_models/NAME/VERSION)"
    )


def open_run(path: str | Path) -> KerasPredictor:
    """A run or ensemble folder's best checkpoint with its labels and operating point."""
    run = runs.load_run(path)
    return KerasPredictor(
        load_model(run.model_path),
        run.class_names,
        name=run.path.name,
        path=run.path,
        image_size=run.image_size,
        operating_point=OperatingPoint.from_dict(run.operating_point()),
        config=run.config,
        data_record=run.folder.data_record(),
        training_images=run.folder.first_member().training_images(),
    )


def open_server(
    url: str | None = None,
    *,
    grpc: str | None = None,
    name: str = "pneumonia",
    version: int | None = None,
    timeout: float | None = None,
) -> ServingPredictor:
    """A model served by TF Serving, over REST (`url`) or gRPC (`grpc`="HOST:PORT")."""
    from keras_app.inference.serving_client import DEFAULT_TIMEOUT, GrpcClient, RestClient

    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    if (url is None) == (grpc is None):
        raise UsageError("give one TF Serving address: a REST URL or a gRPC HOST:PORT")
    client = (
        RestClient(url, name, version, timeout=timeout)
        if url
        else GrpcClient(grpc, name, version, timeout=timeout)
    )
    return ServingPredictor(client, name)


def _no_version(version: int | None, path: Path) -> None:
    if version is not None:
        raise UsageError(f"--version applies to an exported model folder, not to {path}")


# --- SavedModel versions --------------------------------------------------------------------------


def list_versions(model_dir: str | Path) -> list[int]:
    """The complete versions under a model folder (integer names holding saved_model.pb), sorted."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in model_dir.iterdir()
        if p.name.isdigit() and (p / "saved_model.pb").is_file()
    )


def resolve_version(model_dir: str | Path, version: int | None = None) -> Path:
    """The folder of `version` under `model_dir`, or of the highest version when None.

    Raises:
        UsageError: no such model folder, no versions in it, or no such version.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UsageError(f"no exported model at {model_dir}")
    versions = list_versions(model_dir)
    if not versions:
        raise UsageError(
            f"{model_dir} holds no exported version; export one with "
            "python -m keras_app.export RUN_DIR"
        )
    if version is None:
        return model_dir / str(versions[-1])
    if version not in versions:
        raise UsageError(
            f"{model_dir} has no version {version} (versions: {', '.join(map(str, versions))})"
        )
    return model_dir / str(version)


__all__ = [
    "KerasPredictor",
    "Predictor",
    "SavedModelPredictor",
    "ServingPredictor",
    "list_versions",
    "open_predictor",
    "open_run",
    "open_server",
    "resolve_version",
]
