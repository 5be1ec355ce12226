"""How long `python -m keras_app.<verb> --help` takes, per command (target: under 1 s).

Each command runs as a user runs it, in a fresh interpreter, --repeats times; the
table shows the median and the slowest, and whether TensorFlow was imported (it
must not be: the commands import it after parsing their flags). Load from other
processes shows up here, so compare runs taken on the same, quiet machine.

    .venv/bin/python benchmarks/cli_help.py
    .venv/bin/python benchmarks/cli_help.py --repeats 5 --commands train predict
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = (
    "train",
    "export",
    "gradcam",
    "cv",
    "compare",
    "train_many",
    "ensemble",
    "predict",
    "evaluate",
)
TARGET_S = 1.0
# `python -X importtime` writes a line per module imported, nested ones indented.
_TF_LINE = re.compile(r"\|\s+tensorflow$", re.MULTILINE)


def time_help(command: str) -> tuple[float, bool]:
    """Seconds `python -m keras_app.<command> --help` took, and whether it imported TensorFlow."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", f"keras_app.{command}", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command} --help failed: {done.stderr.strip()[-500:]}")
    return seconds, bool(_TF_LINE.search(done.stderr))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3, help="runs per command (default: 3)")
    p.add_argument("--commands", nargs="+", default=COMMANDS, choices=COMMANDS)
    args = p.parse_args(argv)
    print(f"{'command':<12} {'median s':>9} {'max s':>7}  tensorflow  under {TARGET_S:g} s")
    for command in args.commands:
        runs = [time_help(command) for _ in range(args.repeats)]
        times = [s for s, _ in runs]
        loaded = any(tf for _, tf in runs)
        median = statistics.median(times)
        print(
            f"{command:<12} {median:>9.2f} {max(times):>7.2f}  "
            f"{'yes' if loaded else 'no':<10}  {'yes' if median < TARGET_S else 'NO'}"
        )


if __name__ == "__main__":
    main()
