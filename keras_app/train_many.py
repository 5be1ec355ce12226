"""python -m keras_app.train_many: train several backbones one after another, one run folder each.

    python -m keras_app.train_many --models resnet50,densenet121,xception,mobilenetv3large \\
        --runs-root runs/ --data chest_xray/ --fine-tune-epochs 10

Every flag other than --models and --runs-root goes to `keras_app.train` as
is, for every member, so the members share data, split and seed (what an
ensemble of them needs); the data is loaded once for all of them. Member `m`
trains in `<runs-root>/m`; a member whose folder already holds a finished run
is skipped, and an unfinished one resumes, so rerunning the command after a
crash carries on where it stopped. The ensemble command printed at the end
writes the ensemble beside the runs root, not inside it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from keras_app.core.cli import ArgumentParser, import_tensorflow, run_cli
from keras_app.core.errors import UsageError
from keras_app.experiments.train_many import TrainManyConfig, member_configs, next_step, train_many
from keras_app.recipe.forwarding import add_models_flag, check_models


def build_parser() -> ArgumentParser:
    d = TrainManyConfig(models=())
    p = ArgumentParser(
        prog="python -m keras_app.train_many",
        description="Train several backbones in sequence, each in <runs-root>/<model>; every "
        "other flag goes to python -m keras_app.train.",
        # No abbreviations: train's --model must not be taken for --models.
        allow_abbrev=False,
    )
    add_models_flag(p)
    p.add_argument(
        "--runs-root", default=d.runs_root, help="folder holding one run folder per model"
    )
    return p


def parse_config(argv: Sequence[str] | None = None) -> TrainManyConfig:
    args, train_args = build_parser().parse_known_args(argv)
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    check_models(models)
    twice = sorted({m for m in models if models.count(m) > 1})
    if twice:
        raise UsageError(f"--models names {', '.join(twice)} more than once")
    return TrainManyConfig(models=models, runs_root=args.runs_root, train_args=tuple(train_args))


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)
    todo = member_configs(config)  # every member's flags checked before the first one trains
    import_tensorflow()
    from keras_app.experiments.series import Series

    runner = Series() if todo else None  # one data load for all members
    folders = train_many(config, todo, runner.train if runner else None)
    print(f"all members trained; combine them with:\n  {next_step(config, folders)}", flush=True)


if __name__ == "__main__":
    sys.exit(run_cli(main))
