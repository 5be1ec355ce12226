"""Training several backbones one after another, one run folder each (keras_app.train_many).

Member `m` trains in `<runs-root>/m` with the shared training flags, through
`keras_app.experiments.series`; finished members are skipped, an unfinished one
resumes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from keras_app.artifacts.runs import RunFolder
from keras_app.experiments import series
from keras_app.recipe.config import TrainConfig, validate
from keras_app.recipe.forwarding import forwarded_config

# Flags train_many sets itself for each member.
OWN_FLAGS = ("--model", "--run-dir")


@dataclass(frozen=True)
class TrainManyConfig:
    models: tuple[str, ...]
    runs_root: str = "runs"
    train_args: tuple[str, ...] = ()  # passed to keras_app.train for every member

    def run_dir(self, model: str) -> Path:
        return Path(self.runs_root) / model


def member_configs(config: TrainManyConfig) -> list[TrainConfig]:
    """Every member's training configuration, checked before the first one trains: a flag
    that one backbone refuses (say --alpha for ResNet50) fails now, not hours in.

    Each is what `python -m keras_app.train <flags> --model M --run-dir <runs-root>/M`
    parses to.

    Returns:
        The configurations of the members not yet finished, in order.
    """
    todo = [m for m in config.models if not RunFolder(config.run_dir(m)).is_finished()]
    if not todo:
        return []
    base = forwarded_config(
        config.train_args, command="train_many", own_flags=OWN_FLAGS, model=todo[0]
    )
    members = []
    for model in todo:
        member = dataclasses.replace(base, model=model, run_dir=str(config.run_dir(model)))
        validate(member)
        members.append(member)
    return members


def train_many(
    config: TrainManyConfig, todo: list[TrainConfig], train: Callable[[TrainConfig], object] | None
) -> list[Path]:
    """Trains each member not yet trained, in order; an unfinished one resumes.

    Args:
        config: the models, runs root and training flags.
        todo: `member_configs(config)`.
        train: trains one TrainConfig (`keras_app.series.Series.train`, or a stand-in);
            None where every member is finished.

    Returns:
        The run folders, one per model, in the order of `config.models`.
    """
    todo = {c.model: c for c in todo}
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
