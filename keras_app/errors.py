"""Errors a user can fix, and how command-line tools report them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


class UsageError(ValueError):
    """Bad input to a command (flags, folders, models): one line, exit code 2."""


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


class WorkerLostError(RuntimeError):
    """Another worker of a multi-worker run stopped answering: one line, exit code 75.

    75 is EX_TEMPFAIL: rerunning the same command on every worker resumes the run.
    """


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
