"""python -m keras_app.audit MODEL: does the model read the lungs? A shortcut audit (issue 27).

    python -m keras_app.audit runs/mobilenet-20261203-101500
    python -m keras_app.audit runs/mobilenet-... --split val
    python -m keras_app.audit runs/ensemble-... --data ../shared/data/chest_xray_224

MODEL is anything `keras_app.inference.open_predictor` opens: a run or ensemble
folder, a .keras file, an exported SavedModel (occlusion audits only: Grad-CAM needs
layers). On the split (default test, carved as the run carved it) it measures:

- occlusion: ROC AUC (95% bootstrap interval), sensitivity and specificity at the
  stored operating point, on the films as they are, with only the lung region
  kept, with it erased, and with only the outer 10% bands kept; the rest filled
  with a constant mid-grey (--fill constant), the mean of the pixels kept, or a
  blur of them, all three reported;
- attribution: the share of Grad-CAM and of occlusion-sensitivity maps inside the
  lung region, per class;
- a verdict: "leans on regions outside the lungs" where the lungs-erased AUC is
  above --limit (0.70).

Writes into --out (default `RUN/audit/<split>-<data>/`): audit.json, report.md,
auc.png, examples.png; and the run's model card gains "What the model looks at".
"""

from __future__ import annotations

import sys

from keras_app.core.cli import ArgumentParser, import_tensorflow, run_cli
from keras_app.core.errors import UsageError

SPLITS = ("train", "val", "test", "all")
FILLS = ("constant", "mean", "blur")  # evaluation.audit.FILLS, without loading TensorFlow


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m keras_app.audit",
        description="Audit where a chest X-ray classifier's evidence lies: occlusion of the "
        "lung region and the borders, Grad-CAM and occlusion-sensitivity mass in the lungs.",
    )
    p.add_argument(
        "model", metavar="MODEL", help="a run or ensemble folder, a .keras file, or an export"
    )
    p.add_argument("--data", metavar="SPEC", help="data to audit on (default: the run's own)")
    p.add_argument("--split", choices=SPLITS, help="split to audit (default: test)")
    p.add_argument("--out", help="output folder (default: RUN/audit/<split>-<data>)")
    p.add_argument(
        "--fill",
        default="constant",
        choices=FILLS,
        help="what erased pixels become for the verdict: a constant mid-grey (carries "
        "nothing of the film), the mean of the pixels kept, or a blur of them (the others "
        "are reported beside it)",
    )
    p.add_argument(
        "--occlusion",
        type=int,
        default=40,
        metavar="N",
        help="films per class given an occlusion-sensitivity map (169 predictions each)",
    )
    p.add_argument(
        "--gradcam",
        type=int,
        default=None,
        metavar="N",
        help="films per class given a Grad-CAM map (default: all)",
    )
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples for the AUC intervals")
    p.add_argument(
        "--limit",
        type=float,
        default=0.70,
        help="lungs-erased ROC AUC above which the verdict says the model leans outside",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per batch")
    p.add_argument("--seed", type=int, default=0, help="seeds the samples and the bootstrap")
    return p


def parse_config(argv=None):
    args = build_parser().parse_args(argv)
    for flag, value, low in (
        ("--occlusion", args.occlusion, 0),
        ("--bootstrap", args.bootstrap, 0),
        ("--batch-size", args.batch_size, 1),
    ):
        if value < low:
            raise UsageError(f"{flag} must be at least {low}. Received {value}")
    if args.gradcam is not None and args.gradcam < 1:
        raise UsageError(f"--gradcam must be at least 1. Received {args.gradcam}")
    if not 0.5 <= args.limit < 1:
        raise UsageError(f"--limit must be in [0.5, 1). Received {args.limit}")
    return args


def main(argv=None) -> None:
    args = parse_config(argv)
    import_tensorflow()
    from keras_app.evaluation.audit import AuditConfig
    from keras_app.evaluation.audit_report import run_audit
    from keras_app.inference.predictor import open_predictor
    from keras_app.reports.model_card import write_model_card

    config = AuditConfig(**vars(args))
    predictor = open_predictor(config.model)
    out = run_audit(config, predictor)
    if predictor.kind == "keras" and predictor.path and out.parent.parent == predictor.path:
        write_model_card(predictor.path)


if __name__ == "__main__":
    sys.exit(run_cli(main))
