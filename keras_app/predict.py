"""python -m keras_app.predict: classify image files with a local model or a TF Serving server.

    python -m keras_app.predict xrays/ scan.dcm --model saved_models/pneumonia
    python -m keras_app.predict 'xrays/*.jpeg' --server http://localhost:8501 --json
    python -m keras_app.predict xrays/ --grpc localhost:8500 --csv
    python -m keras_app.predict xrays/ --model runs/xception-20260101-120000 --gradcam heat/

Every backend is sent the same thing: each file's encoded bytes (JPEG, PNG, BMP
as they are; DICOM decoded here and re-encoded as lossless PNG, since the serving
graph cannot run pydicom), decoded and resized by the exported graph's own
`predict_image_bytes` signature, or by the same TensorFlow ops for a Keras model.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_app.errors import ArgumentParser, UsageError, run_cli
from keras_app.serving_client import (
    DEFAULT_TIMEOUT,
    PREDICT_IMAGE_BYTES,
    GrpcClient,
    RestClient,
    Scores,
)

_GLOB_CHARS = set("*?[")


# --- inputs --------------------------------------------------------------------------------------


def collect_files(inputs: Sequence[str]) -> list[Path]:
    """Expands files, folders (recursively) and quoted globs to readable image files.

    A file named on its own must be an image. In a folder or a glob, files that
    are not images are skipped with a note on stderr.

    Raises:
        UsageError: a path that does not exist, a glob that matches nothing, a
            folder with no readable image, a named file that is not a readable image.
    """
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            _probe(path, strict=True)
            files.append(path)
        elif path.is_dir():
            candidates = _folder_files(path)
            if not candidates:
                raise UsageError(f"folder {item} is empty")
            found = _readable(candidates)
            if not found:
                raise UsageError(
                    f"no readable image in folder {item} ({len(candidates)} file(s) skipped)"
                )
            files += found
        elif _GLOB_CHARS & set(item):
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True))
            found = _readable(
                [f for m in matches for f in (_folder_files(m) if m.is_dir() else [m])]
            )
            if not found:
                raise UsageError(f"no readable image matches {item}")
            files += found
        else:
            raise UsageError(f"no such file or folder: {item}")
    return list(dict.fromkeys(files))  # a file named twice is classified once


def _folder_files(folder: Path) -> list[Path]:
    """Files under `folder`, sorted, leaving out hidden files and folders."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _readable(paths: Sequence[Path]) -> list[Path]:
    return [p for p in paths if _probe(p, strict=False)]


def _probe(path: Path, *, strict: bool) -> bool:
    from data_pipelines.scan import UnreadableImage, probe_image

    try:
        probe_image(path)
    except UnreadableImage as err:
        if strict:
            raise UsageError(f"{path} is not an image this tool reads ({err})") from None
        print(f"skipped {path}: {err}", file=sys.stderr)
        return False
    return True


def read_images(files: Sequence[Path]) -> list[bytes]:
    """Each file's encoded bytes as a server takes them; DICOM becomes a lossless PNG."""
    import tensorflow as tf

    from data_pipelines import stages
    from data_pipelines.dicom import read_dicom

    contents = []
    for path in files:
        data = Path(path).read_bytes()
        if bool(stages.is_dicom(tf.constant(data))) or Path(path).suffix.lower() == ".dcm":
            data = tf.io.encode_png(read_dicom(data)).numpy()
        contents.append(data)
    return contents


# --- classifiers: one predict_bytes(list[bytes]) -> Scores each ----------------------------------


class KerasClassifier:
    """A Keras model (run folder or .keras file), fed by the serving graph's own decode."""

    def __init__(self, model, class_names: Sequence[str], *, pad_to_aspect: bool = False):
        import tensorflow as tf

        from keras_app.export import get_decode_batch

        self.model = model
        self.image_size = tuple(int(s) for s in model.input_shape[1:3])
        self.class_names = tuple(class_names)
        self.pad_to_aspect = pad_to_aspect
        if int(model.output_shape[-1]) != len(self.class_names):
            raise UsageError(
                f"the model has {model.output_shape[-1]} outputs but "
                f"{len(self.class_names)} class names"
            )
        self._decode = tf.function(get_decode_batch(self.image_size, pad_to_aspect))

    def predict_bytes(self, images: Sequence[bytes]) -> Scores:
        import tensorflow as tf

        pixels = self._decode(tf.constant(list(images)))
        probabilities = np.asarray(self.model(pixels, training=False), np.float32)
        classes = [self.class_names[i] for i in probabilities.argmax(axis=-1)]
        return Scores(probabilities, classes, self.class_names)


class SavedModelClassifier:
    """An exported version, loaded with TensorFlow alone, called through `predict_image_bytes`."""

    def __init__(self, version_dir: str | Path):
        import tensorflow as tf

        self.path = Path(version_dir)
        loaded = tf.saved_model.load(str(self.path))
        if PREDICT_IMAGE_BYTES not in loaded.signatures:
            raise UsageError(
                f"{self.path} has no {PREDICT_IMAGE_BYTES} signature: "
                "export it with python -m keras_app.export"
            )
        self._loaded = loaded  # the signature holds no reference to its variables' owner
        self._signature = loaded.signatures[PREDICT_IMAGE_BYTES]

    def predict_bytes(self, images: Sequence[bytes]) -> Scores:
        import tensorflow as tf

        outputs = self._signature(image_bytes=tf.constant(list(images)))
        return Scores.from_outputs({k: v.numpy() for k, v in outputs.items()})


def open_local(path: str | Path, version: int | None = None):
    """A classifier for a run or ensemble folder, a .keras file, or a SavedModel folder.

    A SavedModel folder is a version (`saved_models/NAME/3`) or a model
    (`saved_models/NAME`: its highest version, or `version`).
    """
    from keras_app import runs
    from keras_app.export import resolve_version

    path = Path(path).expanduser()
    if path.is_file() and path.suffix == ".keras":
        _no_version(version, path)
        labels = path.with_name(runs.LABELS)
        model = _load_keras(path)
        names = (
            labels.read_text().splitlines()
            if labels.is_file()
            else [str(i) for i in range(int(model.output_shape[-1]))]
        )
        return KerasClassifier(model, names)
    if path.is_dir() and any((path / f).exists() for f in (runs.BEST, runs.CONFIG, runs.LABELS)):
        _no_version(version, path)
        import keras_app.ensemble  # noqa: F401  (registers EnsembleCombine: ensemble folders load)

        run = runs.load_run(path)
        return KerasClassifier(
            run.load_model(),
            run.class_names,
            pad_to_aspect=bool(run.config.get("pad_to_aspect", False)),
        )
    if (path / "saved_model.pb").is_file():
        _no_version(version, path)
        return SavedModelClassifier(path)
    if path.is_dir():
        return SavedModelClassifier(resolve_version(path, version))
    raise UsageError(
        f"no model at {path}: expected a run folder, a .keras file, or an exported "
        "model (saved_models/NAME or saved_models/NAME/VERSION)"
    )


def _load_keras(path: Path):
    import keras

    import keras_app.ensemble  # noqa: F401  (registers EnsembleCombine)
    import keras_app.model  # noqa: F401  (registers BackbonePreprocess)

    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except (ValueError, OSError) as err:
        raise UsageError(f"cannot load {path}: {str(err).splitlines()[0][:300]}") from None


def _no_version(version: int | None, path: Path) -> None:
    if version is not None:
        raise UsageError(f"--version applies to an exported model folder, not to {path}")


def classify(classifier, contents: Sequence[bytes], batch_size: int = 32) -> Scores:
    """Scores for every image, sent `batch_size` at a time."""
    return Scores.concatenate(
        [
            classifier.predict_bytes(contents[i : i + batch_size])
            for i in range(0, len(contents), batch_size)
        ]
    )


# --- output --------------------------------------------------------------------------------------


def rows(files: Sequence[Path], scores: Scores) -> list[dict]:
    """One dict per file: file, class, probability (of that class), every probability."""
    out = []
    for f, label, probs in zip(files, scores.classes, scores.probabilities, strict=True):
        out.append(
            {
                "file": str(f),
                "class": label,
                "probability": float(probs.max()),
                "probabilities": {
                    name: float(p) for name, p in zip(scores.labels, probs, strict=True)
                },
            }
        )
    return out


def format_table(records: list[dict]) -> str:
    width = max([len("file")] + [len(r["file"]) for r in records])
    cls = max([len("class")] + [len(r["class"]) for r in records])
    lines = [f"{'file':<{width}}  {'class':<{cls}}  probability"]
    lines += [f"{r['file']:<{width}}  {r['class']:<{cls}}  {r['probability']:.4f}" for r in records]
    return "\n".join(lines)


def format_json(records: list[dict]) -> str:
    return json.dumps(records, indent=2)


def format_csv(records: list[dict]) -> str:
    labels = list(records[0]["probabilities"]) if records else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", "class", "probability", *labels])
    for r in records:
        writer.writerow(
            [
                r["file"],
                r["class"],
                f"{r['probability']:.6f}",
                *(f"{r['probabilities'][name]:.6f}" for name in labels),
            ]
        )
    return buffer.getvalue().rstrip("\n")


# --- the command ---------------------------------------------------------------------------------


def parse_args(argv=None):
    p = ArgumentParser(
        prog="python -m keras_app.predict",
        description="Classify chest X-rays with a local model or TF Serving.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders or quoted globs (JPEG, PNG, BMP, DICOM)",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        help="a run or ensemble folder, a .keras file, or an exported "
        "model saved_models/NAME[/VERSION] (highest version by default)",
    )
    source.add_argument("--server", help="TF Serving REST address, e.g. http://localhost:8501")
    source.add_argument("--grpc", help="TF Serving gRPC address, e.g. localhost:8500")
    p.add_argument("--name", default="pneumonia", help="model name on the server")
    p.add_argument(
        "--version",
        type=int,
        default=None,
        help="model version (server, or exported model folder); default: the latest",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON instead of a table")
    fmt.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument(
        "--gradcam",
        metavar="DIR",
        default=None,
        help="save Grad-CAM overlays here (needs a run folder or .keras file)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per request")
    p.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the server"
    )
    args = p.parse_args(argv)
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1. Received --batch-size={args.batch_size}")
    if args.gradcam and not args.model:
        raise UsageError(
            "--gradcam needs the Keras model, not a server: pass the run folder with --model"
        )
    return args


def open_classifier(args):
    if args.server:
        return RestClient(args.server, args.name, args.version, timeout=args.timeout)
    if args.grpc:
        return GrpcClient(args.grpc, args.name, args.version, timeout=args.timeout)
    classifier = open_local(args.model, args.version)
    if args.gradcam:
        _check_gradcam(classifier)
    return classifier


def _check_gradcam(classifier) -> None:
    from keras_app.gradcam import split_classifier  # loads Keras; see main()

    if not isinstance(classifier, KerasClassifier):
        raise UsageError(
            f"--gradcam needs the Keras model, and {classifier.path} is a SavedModel "
            "(no layers to take gradients through): pass the run folder it was "
            "exported from with --model"
        )
    try:
        split_classifier(classifier.model)
    except ValueError as err:
        raise UsageError(f"--gradcam: {err}") from None


def main(argv=None) -> None:
    args = parse_args(argv)
    files = collect_files(args.inputs)
    classifier = open_classifier(args)
    contents = read_images(files)
    scores = classify(classifier, contents, args.batch_size)
    records = rows(files, scores)
    print(
        format_json(records)
        if args.json
        else format_csv(records)
        if args.csv
        else format_table(records)
    )
    if args.gradcam:
        # Imported here: it loads Keras, which a server's client does without.
        from keras_app.gradcam import explain_files

        paths = explain_files(
            classifier.model,
            files,
            contents,
            classifier.image_size,
            args.gradcam,
            pad_to_aspect=classifier.pad_to_aspect,
        )
        print(f"saved {len(paths)} Grad-CAM overlay(s) to {args.gradcam}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(run_cli(main))
