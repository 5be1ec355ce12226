"""python -m keras_app.export: a run or ensemble folder to a TF Serving SavedModel version.

Writes `<base>/<name>/<version>/`:
    saved_model.pb, variables/   the graph, preprocessing included: loading needs only TensorFlow
    assets/labels.txt            class names; the graph reads them from here
    assets/operating_point.json  temperature and decision threshold chosen on validation
    assets.extra/tf_serving_warmup_requests
                                 PredictionLogs TF Serving replays before it serves the version

and rewrites `<base>/models.config` (ModelServerConfig text) listing every model under `<base>`.

Signatures (see `keras_app.inference.serving_client` for the names):
    serving_default       images [batch, h, w, 3] float 0-255 -> probabilities, classes,
                          labels, decision (the class at the operating point), threshold,
                          positive_class and operating_point_version (which point decided)
    predict_image_bytes   image_bytes [batch] JPEG/PNG/BMP strings -> the same outputs
"""

from __future__ import annotations

import sys
from pathlib import Path

from keras_app.core.cli import ArgumentParser, import_tensorflow, run_cli
from keras_app.inference.serving_client import DEFAULT_SERVING_ROOT


def parse_args(argv=None):
    p = ArgumentParser(
        prog="python -m keras_app.export",
        description="Export a run or ensemble folder as a TF Serving SavedModel.",
    )
    p.add_argument(
        "source",
        metavar="RUN_OR_ENSEMBLE_DIR",
        help="a run folder (keras_app.train) or an ensemble folder (keras_app.ensemble)",
    )
    p.add_argument("--name", default="pneumonia", help="model name in TF Serving")
    p.add_argument(
        "--version",
        type=int,
        default=None,
        help="version number (default: one above the highest existing)",
    )
    p.add_argument(
        "--base",
        default="saved_models",
        help="folder of served models; models.config is rewritten there",
    )
    p.add_argument("--force", action="store_true", help="replace an existing version")
    p.add_argument(
        "--serving-root",
        default=DEFAULT_SERVING_ROOT,
        help="where the server sees --base (the docker -v target), for models.config",
    )
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import_tensorflow()
    from keras_app.inference.export import (
        MODELS_CONFIG,
        PREDICT_IMAGE_BYTES,
        SERVING_DEFAULT,
        export_model,
        served_models,
    )

    final = export_model(
        args.source,
        args.name,
        base=args.base,
        version=args.version,
        force=args.force,
        serving_root=args.serving_root,
    )
    print(f"exported {final} (signatures {SERVING_DEFAULT}, {PREDICT_IMAGE_BYTES})")
    print(f"{Path(args.base) / MODELS_CONFIG} lists: {', '.join(served_models(args.base))}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
