"""python -m keras_app.compare: a small CNN, a head-only and a full fine-tune, on equal terms.

    python -m keras_app.compare --models simple_cnn,mobilenet,resnet50 \\
        --modes scratch,head,finetune --data ../shared/data/chest_xray_224 \\
        --head-epochs 5 --fine-tune-epochs 5

Modes, each with the same data, split, seed and epoch budget (head + fine-tune epochs):
    scratch    --weights none: random initialisation, trained end to end for the whole budget
    head       pretrained, backbone frozen: the head alone for the whole budget
    finetune   pretrained: the head for --head-epochs, then the unfrozen backbone for
               --fine-tune-epochs
A backbone without pretrained weights (simple_cnn) has scratch only; its other
modes are skipped with a note. Pretrained means --weights as given, ImageNet by
default; never train's "auto", which falls back to random weights silently and
would mislabel the mode. Every other flag goes to keras_app.train as is.

Writes into --out (default runs/compare-<time>/): a run folder per configuration
(`<model>-<mode>/`), `comparison_metrics.csv`, `comparison.md` and
`comparison.png`. Rerunning with the same --out skips finished configurations
and resumes an unfinished one. The data is loaded once for all configurations.

AUC: every AUC compare prints or tabulates is scikit-learn's ROC AUC of the
best (calibrated) checkpoint's predictions, as metrics.json holds it. The
`best val_auc` keras_app.train logs per phase is Keras' streaming AUC over 200
thresholds, an approximation used to pick the checkpoint, not to compare runs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from keras_app.core.cli import ArgumentParser, import_tensorflow, run_cli
from keras_app.core.errors import UsageError
from keras_app.experiments.compare import (
    MODES,
    CompareConfig,
    collect_row,
    plan,
    prepare_out,
    report_failures,
    train_all,
    write_outputs,
)
from keras_app.recipe.forwarding import add_models_flag, check_models


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m keras_app.compare",
        description="Train each backbone in each mode (scratch, head, finetune) on the same "
        "data and epoch budget and compare them; every other flag goes to "
        "python -m keras_app.train (see its --help).",
        allow_abbrev=False,  # train's --model must not be taken for --models
    )
    add_models_flag(p)
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        metavar="MODE,...",
        help="comma-separated, from: scratch (random init, end to end), head "
        "(pretrained, frozen backbone), finetune (pretrained, both phases)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: runs/compare-<time>); rerun with the same one to resume",
    )
    return p


def _names(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))


def parse_config(argv: Sequence[str] | None = None) -> CompareConfig:
    args, train_args = build_parser().parse_known_args(argv)
    config = CompareConfig(
        models=_names(args.models),
        modes=_names(args.modes),
        out=args.out,
        train_args=tuple(train_args),
    )
    validate(config)
    return config


def validate(c: CompareConfig) -> None:
    check_models(c.models)
    bad = [m for m in c.modes if m not in MODES]
    if bad or not c.modes:
        raise UsageError(
            f"--modes takes {', '.join(MODES)}. Received {','.join(c.modes) or 'none'}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)
    out = Path(config.out or Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}")
    configurations, notes = plan(config, out)  # every flag checked before anything trains
    prepare_out(out, config)
    import_tensorflow()
    from keras_app.experiments.series import Series

    failures = train_all(configurations, out, Series().train)  # one data load for all
    rows = [collect_row(c, out, failures.get(c.name)) for c in configurations]
    write_outputs(out, rows, notes, config)
    print(f"comparison folder: {out}", flush=True)
    report_failures(failures, out)


if __name__ == "__main__":
    sys.exit(run_cli(main))
