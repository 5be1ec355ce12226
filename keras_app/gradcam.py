"""python -m keras_app.gradcam MODEL IMAGES... --out DIR: Grad-CAM overlays as PNG.

MODEL is a run or ensemble folder or a .keras file (`keras_app.inference.open_predictor`);
the maps explain the class's margin over the other classes (see
`keras_app.evaluation.gradcam`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from keras_app.core.cli import ArgumentParser, import_tensorflow, run_cli
from keras_app.core.errors import UsageError
from keras_app.inference.inputs import image_files, read_images

# margin: the class's logit minus the best other one (what decides a softmax); logit: the
# class's logit alone, Selvaraju et al.'s score, kept to compare against.
METHODS = ("margin", "logit")


def parse_args(argv=None):
    p = ArgumentParser(
        prog="python -m keras_app.gradcam",
        description="Save Grad-CAM overlays of a trained classifier.",
    )
    p.add_argument("run", metavar="MODEL", help="a run or ensemble folder, or a .keras file")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGES",
        help="image files, folders or quoted globs (JPEG, PNG, BMP, DICOM)",
    )
    p.add_argument("--out", required=True, help="folder for the overlay PNGs")
    p.add_argument(
        "--class",
        dest="class_name",
        default=None,
        help="explain this class (a label or an index); default: the predicted one",
    )
    p.add_argument(
        "--layer",
        default=None,
        help="a backbone layer to take the feature map from; default: its output",
    )
    p.add_argument("--alpha", type=float, default=0.4, help="opacity of the heat map")
    p.add_argument(
        "--method",
        default=METHODS[0],
        choices=METHODS,
        help="margin: the class's logit minus the best other one (evidence for NORMAL is "
        "evidence against PNEUMONIA); logit: the class's logit alone (may be blank)",
    )
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import_tensorflow()
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1]. Received --alpha={args.alpha}")
    from keras_app.evaluation.gradcam import explain_files
    from keras_app.inference.predictor import open_predictor

    predictor = open_predictor(args.run)
    class_index = _class_argument(args.class_name, predictor.class_names)
    files = image_files(args.inputs)
    written = explain_files(
        predictor,
        files,
        read_images(files),
        args.out,
        class_index=class_index,
        layer=args.layer,
        alpha=args.alpha,
        method=args.method,
    )
    for f, record in zip(files, written, strict=True):
        print(record.line(f))


def _class_argument(value: str | None, class_names: Sequence[str]) -> int | None:
    if value is None:
        return None
    if value in class_names:
        return list(class_names).index(value)
    if value.isdigit() and int(value) < len(class_names):
        return int(value)
    raise UsageError(
        f"--class must be one of {', '.join(class_names)} or an index below "
        f"{len(class_names)}. Received --class={value!r}"
    )


if __name__ == "__main__":
    sys.exit(run_cli(main))
