"""What every command line shares: its parser, its error handling, its door to TensorFlow.

A command parses its flags with `ArgumentParser`, runs under `run_cli` (a user's
error is one line on stderr and exit code 2), and imports TensorFlow through
`import_tensorflow` only once its flags are parsed, so `--help` answers at once.
This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from keras_app.core.errors import UsageError, WorkerLostError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends each option's default to its help, where that says something.

    Not where the help already states it (`(default: ...)` in the text), not for a
    required option, and not for a None default (the help says what absence means).
    An on/off flag shows the behaviour, `(default: on)` or `(default: off)`, not the
    stored value: `--no-thermal (default: True)` read as "the guard is off". For
    `--x/--no-x` that is whether x is on; for a plain flag, whether its effect is.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "(default:" in text
            or "%(default)" in text
            or action.required
            or action.default in (None, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        if action.nargs == 0 and isinstance(action.default, bool):
            if isinstance(action, argparse.BooleanOptionalAction):
                on = action.default
            else:  # store_true / store_false: on when the default is what the flag stores
                on = action.default == action.const
            return f"{text} (default: {'on' if on else 'off'})"
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with errors as a single line (no usage dump) and exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run_cli(
    main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None
) -> int:
    """Runs a command's `main`, turning user errors into one stderr line and exit 2."""
    try:
        code = main(argv)
    except _user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except WorkerLostError as err:
        print(f"error: {err}", file=sys.stderr)
        return 75
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0  # a main may report partial failure itself


def _user_errors() -> tuple[type[Exception], ...]:
    """UsageError, and DataError once data_pipelines is loaded.

    Importing data_pipelines here would load TensorFlow before a command parses its
    flags; a DataError cannot be raised before data_pipelines is imported anyway.
    Python evaluates an `except` clause's expression only when an error reaches it.
    """
    data_errors = sys.modules.get("data_pipelines.errors")
    return (UsageError,) if data_errors is None else (UsageError, data_errors.DataError)


def tensorflow_env_defaults() -> None:
    """TensorFlow's environment switches as the product wants them, unless the user chose.

    Must run before TensorFlow is first imported: it reads them once. A user's own
    setting of either variable wins.

    - `TF_CPP_MIN_LOG_LEVEL=2`: C++ logging says warnings and errors only (level 2
      hides the INFO lines: oneDNN, CPU features).
    - `TF_ENABLE_ONEDNN_OPTS=1`: oneDNN's CPU kernels. TensorFlow turns them on by
      itself only on CPUs with AVX-512 (VNNI, BF16) or AMX; on an AVX2-only AMD EPYC
      they took float32 matmul from 85 to 154 GFLOP/s and Xception's training step
      from 2.0 to 1.3 s (docs/BENCHMARKS.md). Where TensorFlow enables them anyway,
      this changes nothing.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


@contextlib.contextmanager
def _stderr_fd_silenced(silence: bool):
    """Points file descriptor 2 at /dev/null, restoring it on the way out.

    Tried on TensorFlow 2.21: the absl "All log messages before absl::InitializeLog()"
    line and the cudart_stub "Could not find cuda drivers" line are written by C++
    before TF_CPP_MIN_LOG_LEVEL is read (they show at level 3 too), and the cuInit
    error yields only to level 3, which would hide every later C++ error as well.
    Python errors still surface as exceptions once the descriptor is back.
    """
    if not silence:
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def import_tensorflow():
    """Imports TensorFlow and Keras once, without their start-up lines on the terminal.

    Every command calls it after parsing its flags (so `--help` stays fast) and before
    any other TensorFlow import. The device probe runs here too, as that is where CUDA
    reports a missing driver. `TF_CPP_MIN_LOG_LEVEL=0` shows everything.

    Returns:
        The `tensorflow` module.
    """
    if "tensorflow" not in sys.modules:
        tensorflow_env_defaults()
        with _stderr_fd_silenced(os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0"):
            import keras  # noqa: F401  (Keras' own import of TensorFlow is as noisy)
            import tensorflow as tf

            tf.config.list_physical_devices()
    return sys.modules["tensorflow"]
