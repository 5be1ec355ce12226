"""Errors a user can fix, and how command-line tools report them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence


class UsageError(ValueError):
    """Bad input to a command (flags, folders, models): one line, exit code 2."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with errors as a single line (no usage dump) and exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run_cli(
    main: Callable[[Sequence[str] | None], object], argv: Sequence[str] | None = None
) -> int:
    """Runs a command's `main`, turning user errors into one stderr line and exit 2."""
    try:
        code = main(argv)
    except Exception as err:
        if not _is_user_error(err):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0  # a main may report partial failure itself


def _is_user_error(err: Exception) -> bool:
    """A UsageError, or a data_pipelines DataError.

    data_pipelines is looked up, not imported: importing it imports TensorFlow, which
    a command's --help must not wait for; and where it was never imported, none of its
    errors can have been raised.
    """
    if isinstance(err, UsageError):
        return True
    errors = sys.modules.get("data_pipelines.errors")
    return errors is not None and isinstance(err, errors.DataError)
