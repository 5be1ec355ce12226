"""What the commands that train many runs (compare, cv, train_many, sweep) share: the
training flags they pass on, and their `--models` flag."""

from __future__ import annotations

from collections.abc import Sequence

from keras_app.core.cli import ArgumentParser
from keras_app.core.errors import UsageError
from keras_app.recipe.backbones import BACKBONES
from keras_app.recipe.config import TrainConfig, parse_config


def forwarded_config(
    train_args: Sequence[str],
    *,
    command: str,
    own_flags: Sequence[str] = ("--run-dir",),
    model: str | None = None,
    hint: str = "",
) -> TrainConfig:
    """The `TrainConfig` of the flags a command passes on to `keras_app.train` as they are.

    compare, cv, train_many and sweep take every flag they do not know themselves
    and hand it to training; this parses and checks those flags once, the same way.

    Args:
        train_args: the flags left over by the command's own parser.
        command: the command's name, for the error lines.
        own_flags: flags the command sets per run itself and refuses from the user.
        model: the backbone to check the flags against (`--alpha` is the MobileNets'),
            where the command sets `--model` itself.
        hint: said after a refused own flag, e.g. " (use --out)".

    Raises:
        UsageError: an own flag among them, or values `keras_app.train` refuses.
        SystemExit: a flag argparse refuses (it has printed one line, naming `command`).
    """
    own = [a for a in train_args if a.split("=", 1)[0] in own_flags]
    if own:
        raise UsageError(
            f"{command} sets {' and '.join(own_flags)} for each run itself{hint}. Received {own}"
        )
    # A flag argparse refuses ends here as any bad flag does: one line naming the command.
    return parse_config(
        [*train_args, *(["--model", model] if model else [])], prog=f"python -m keras_app.{command}"
    )


def add_models_flag(p: ArgumentParser) -> None:
    """`--models M1,M2,...`: the flag of the commands that train several backbones."""
    p.add_argument(
        "--models",
        required=True,
        metavar="M1,M2,...",
        help=f"comma-separated backbones, from: {', '.join(sorted(BACKBONES))}",
    )


def check_models(models: tuple[str, ...]) -> None:
    """Raises `UsageError` when `--models` names none or an unknown backbone."""
    if not models:
        raise UsageError("--models needs at least one backbone. Received none")
    unknown = [m for m in models if m not in BACKBONES]
    if unknown:
        raise UsageError(
            f"--models has unknown backbones {unknown}; known: {', '.join(sorted(BACKBONES))}"
        )
