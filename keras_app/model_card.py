"""python -m keras_app.model_card FOLDER: one self-contained report.html a person can open.

    python -m keras_app.model_card runs/mobilenet-20260101-120000
    python -m keras_app.model_card runs/mobilenet-20260101-120000/eval-test-chest_xray_224

FOLDER is a run, an evaluation, an ensemble or a sweep folder. The page
follows the sections of Mitchell et al., "Model Cards for Model Reporting"
(FAT* 2019): model details, intended use, factors, metrics, evaluation data,
training data, quantitative analyses, ethical considerations, caveats; with
calibration, external validations, Grad-CAM examples, training curves, the
environment and the commands that reproduce it. Every value comes from the
folder's own files; what the folder did not record reads "not recorded".
Figures are embedded as base64 PNG, the style is inline and there is no
script: the file opens anywhere, offline, without keras-app installed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from keras_app.core.cli import ArgumentParser, run_cli


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m keras_app.model_card",
        description="Write FOLDER/report.html: a self-contained model card for a run, "
        "evaluation, ensemble or sweep folder.",
    )
    p.add_argument("folder", help="a run, evaluation, ensemble or sweep folder")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from keras_app.reports.model_card import write_model_card  # matplotlib: after parsing

    path = write_model_card(args.folder)
    print(f"model card: {path}", flush=True)


if __name__ == "__main__":
    sys.exit(run_cli(main))
