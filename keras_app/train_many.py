"""python -m keras_app.train_many: train several backbones one after another, one run folder each.

    python -m keras_app.train_many --models resnet50,densenet121,xception,mobilenetv3large \\
        --runs-root runs/ --data chest_xray/ --fine-tune-epochs 10

Every flag other than --models and --runs-root goes to `keras_app.train` as
is, for every member, so the members share data, split and seed (what an
ensemble of them needs). Member `m` trains in `<runs-root>/m`; a member whose
folder already holds a finished run is skipped, and an unfinished one resumes,
so rerunning the command after a crash carries on where it stopped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from keras_app import runs
from keras_app.config import add_models_flag, check_models
from keras_app.errors import ArgumentParser, UsageError, run_cli

# Flags train_many sets itself for each member.
OWN_FLAGS = ("--model", "--run-dir")


@dataclass(frozen=True)
class TrainManyConfig:
    models: tuple[str, ...]
    runs_root: str = "runs"
    train_args: tuple[str, ...] = ()  # passed to keras_app.train for every member

    def run_dir(self, model: str) -> Path:
        return Path(self.runs_root) / model


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
    config = TrainManyConfig(models=models, runs_root=args.runs_root, train_args=tuple(train_args))
    validate(config)
    return config


def validate(c: TrainManyConfig) -> None:
    check_models(c.models)
    twice = sorted({m for m in c.models if c.models.count(m) > 1})
    if twice:
        raise UsageError(f"--models names {', '.join(twice)} more than once")
    own = [a for a in c.train_args if a.split("=", 1)[0] in OWN_FLAGS]
    if own:
        raise UsageError(
            f"train_many sets {' and '.join(OWN_FLAGS)} per member itself. Received {own}"
        )


def is_finished(run_dir: Path) -> bool:
    """A finished run folder holds its best checkpoint and its metrics (written last)."""
    return (run_dir / runs.BEST).is_file() and (run_dir / runs.METRICS).is_file()


def member_argv(config: TrainManyConfig, model: str) -> list[str]:
    return [*config.train_args, "--model", model, "--run-dir", str(config.run_dir(model))]


def check_train_flags(config: TrainManyConfig) -> None:
    """Parses every member's command line before the first one trains: a flag that one
    backbone refuses (say --alpha for ResNet50) fails now, not hours in."""
    from keras_app.config import parse_config as parse_train_config

    for model in config.models:
        if not is_finished(config.run_dir(model)):
            try:
                parse_train_config(member_argv(config, model))
            except SystemExit as stop:  # argparse has printed its one-line error
                raise UsageError(f"the training flags do not parse for {model}") from stop


def train_many(config: TrainManyConfig, train: Callable[[list[str]], object]) -> list[Path]:
    """Trains each model not yet trained, in order.

    Args:
        config: the models, runs root and training flags.
        train: `keras_app.train.main`, or a stand-in taking the same argv.

    Returns:
        The run folders, one per model, in the order of `config.models`.
    """
    folders = []
    for i, model in enumerate(config.models, 1):
        run_dir = config.run_dir(model)
        if is_finished(run_dir):
            print(
                f"[{i}/{len(config.models)}] {model}: finished run in {run_dir}, skipped",
                flush=True,
            )
        else:
            print(f"[{i}/{len(config.models)}] {model}: training in {run_dir}", flush=True)
            train(member_argv(config, model))
        folders.append(run_dir)
    return folders


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)
    check_train_flags(config)
    from keras_app.train import main as train_main

    folders = train_many(config, train_main)
    print(
        "all members trained; combine them with:\n  python -m keras_app.ensemble "
        + " ".join(str(f) for f in folders)
        + f" --weights val-metric --out {Path(config.runs_root) / 'ensemble'}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(run_cli(main))
