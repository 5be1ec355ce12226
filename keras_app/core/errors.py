"""Errors a user can fix: a command reports each as one line (see `keras_app.core.cli`)."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input to a command (flags, folders, models): one line, exit code 2."""


class WorkerLostError(RuntimeError):
    """Another worker of a multi-worker run stopped answering: one line, exit code 75.

    75 is EX_TEMPFAIL: rerunning the same command on every worker resumes the run.
    """
