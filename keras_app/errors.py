"""Errors a user can fix, and how command-line tools report them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from data_pipelines.errors import DataError


class UsageError(ValueError):
    """Bad input to a command (flags, folders, models): one line, exit code 2."""


class WorkerLostError(RuntimeError):
    """Another worker of a multi-worker run stopped answering: one line, exit code 75.

    75 is EX_TEMPFAIL: rerunning the same command on every worker resumes the run.
    """


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
    except (UsageError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except WorkerLostError as err:
        print(f"error: {err}", file=sys.stderr)
        return 75
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0  # a main may report partial failure itself
