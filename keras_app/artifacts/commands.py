"""The command lines that reproduce a recorded folder, rebuilt from what it recorded.

The sweep's summary and the model card both print them; neither is a CLI of
the other, so the rule for turning a config.json back into flags lives here.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping


def train_flags(config: Mapping) -> list[str]:
    """The `keras_app.train` flags that rebuild `config` (a run's config.json).

    Every recorded value is spelled out, not only those that differ from today's
    defaults: defaults change between versions, the recorded values do not.
    A field recorded as None (automatic) is left to the same automatic choice.

    Args:
        config: a TrainConfig as a dict, e.g. `RunFolder.config()`.

    Returns:
        The flags, e.g. `["--model", "mobilenet", "--lr", "0.001", ...]`.
    """
    from keras_app.recipe.config import TrainConfig

    defaults = TrainConfig().to_dict()
    flags = []
    for field, value in config.items():
        if field not in defaults or value is None:
            continue  # a field this version no longer has, or an automatic choice
        flag = "--" + field.replace("_", "-")
        if isinstance(defaults[field], bool):
            # argparse spells booleans as switches: --pad-to-aspect, --no-thermal.
            if value != defaults[field]:
                flags.append(flag if value else "--no-" + field.replace("_", "-"))
            continue
        flags += [flag, str(value)]
    return flags


def train_command(config: Mapping) -> str:
    """`python -m keras_app.train ...` for `config`, quoted for a POSIX shell."""
    return shlex.join(["python", "-m", "keras_app.train", *train_flags(config)])


def evaluate_command(eval_config: Mapping) -> str:
    """`python -m keras_app.evaluate ...` from an evaluation's metrics.json["config"]."""
    argv = ["python", "-m", "keras_app.evaluate", str(eval_config["model"])]
    for field in ("data", "split", "out", "positive_class", "optimistic_threshold", "batch_size"):
        value = eval_config.get(field)
        if value is not None:
            argv += ["--" + field.replace("_", "-"), str(value)]
    return shlex.join(argv)


def ensemble_command(command: Mapping) -> str:
    """`python -m keras_app.ensemble ...` from an ensemble's config.json["command"]."""
    argv = ["python", "-m", "keras_app.ensemble", *(str(r) for r in command["runs"])]
    for field in ("out", "weights", "average", "data", "batch_size"):
        value = command.get(field)
        if value is not None:
            argv += ["--" + field.replace("_", "-"), str(value)]
    return shlex.join(argv)
