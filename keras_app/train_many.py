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

import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from keras_app import series
from keras_app.config import add_models_flag, check_models
from keras_app.errors import ArgumentParser, UsageError, run_cli
from keras_app.runs import RunFolder
from keras_app.runtime import import_tensorflow

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


def member_config(config: TrainManyConfig, base, model: str):
    """Member `model`'s training configuration: the shared one with its model and run folder
    (what `python -m keras_app.train <flags> --model M --run-dir <runs-root>/M` parses to)."""
    from keras_app.config import validate

    member = dataclasses.replace(base, model=model, run_dir=str(config.run_dir(model)))
    validate(member)
    return member


def check_train_flags(config: TrainManyConfig) -> list:
    """Every member's training configuration, checked before the first one trains: a flag
    that one backbone refuses (say --alpha for ResNet50) fails now, not hours in.

    Returns:
        The configurations of the members not yet finished, in order.
    """
    from keras_app.config import parse_config as parse_train_config

    todo = [m for m in config.models if not RunFolder(config.run_dir(m)).is_finished()]
    if not todo:
        return []
    try:
        base = parse_train_config([*config.train_args, "--model", todo[0]])
    except SystemExit as stop:  # argparse has printed its one-line error
        raise UsageError("the training flags do not parse") from stop
    return [member_config(config, base, model) for model in todo]


def train_many(config: TrainManyConfig, train: Callable[[object], object] | None) -> list[Path]:
    """Trains each member not yet trained, in order; an unfinished one resumes.

    Args:
        config: the models, runs root and training flags.
        train: trains one TrainConfig (`keras_app.series.Series.train`, or a stand-in);
            None where every member is finished.

    Returns:
        The run folders, one per model, in the order of `config.models`.
    """
    todo = {c.model: c for c in check_train_flags(config)}
    folders = []
    for i, model in enumerate(config.models, 1):
        run_dir = config.run_dir(model)
        if series.announce(f"[{i}/{len(config.models)}] {model}", run_dir) != "finished":
            train(todo[model])
        folders.append(run_dir)
    return folders


def ensemble_dir(runs_root: str | Path) -> Path:
    """Where the ensemble of `runs_root`'s members goes: beside the root, never inside it
    (the README's `ensemble <runs-root>/*` would take it for a member next time)."""
    root = Path(runs_root)
    beside = root.parent / "ensemble"
    return beside if beside.resolve() != root.resolve() else root.parent / f"{root.name}-ensemble"


def next_step(config: TrainManyConfig, folders: list[Path]) -> str:
    """The ensemble command: `<runs-root>/*` where the root holds the members alone, else the
    members by name; the ensemble written beside the root."""
    root = Path(config.runs_root)
    members = {f.name for f in folders}
    others = [p for p in root.iterdir() if p.is_dir() and p.name not in members]
    listed = " ".join(str(f) for f in folders) if others else f"{root}/*"
    out = ensemble_dir(root)
    return f"python -m keras_app.ensemble {listed} --weights val-metric --out {out}"


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)
    todo = check_train_flags(config)
    import_tensorflow()
    runner = series.Series(todo[0]) if todo else None  # one data load for all members
    folders = train_many(config, runner.train if runner else None)
    print(f"all members trained; combine them with:\n  {next_step(config, folders)}", flush=True)


if __name__ == "__main__":
    sys.exit(run_cli(main))
