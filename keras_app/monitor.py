"""python -m keras_app.monitor: is the deployed model still seeing what it was fitted for?

    python -m keras_app.monitor usage.jsonl --reference runs/<run>
    python -m keras_app.monitor usage.jsonl --reference runs/<run> --days 1 --out /srv/monitor

Reads the usage log that `predict --usage-log` and the DICOM node append to (one
PHI-free line per image: keras_app/inference/usage_log.py) and judges the lines answered
at the run's current operating point version against that version's reference (the
calibrated scores it was fitted on: training's validation split, or a site's local
images after keras_app.calibrate). Over the last --days days up to the newest line:

    score PSI                > 0.25   the conventional 'major shift'
    score KS test            p < 0.01 with D > 0.15
    positive rate            more than 0.15 from the reference's at the same threshold
    not-analysed rate        > 0.05 (refused by the image guard, or unreadable)
    latency p95              > 5000 ms

(the reasons: keras_app/decision/drift.py, LIMITS, and the README). Drift checks need at
least 50 analysed images in the window, else they read "not judged".

Writes into --out (default: monitor/ beside the log) monitor.html (self-contained),
monitor.json (every figure) and logs/ (TensorBoard scalars per day:
`tensorboard --logdir OUT/logs`).

Exit status: 0 every check within its limit; 1 a limit crossed (for cron or a scheduler
to page someone); 2 bad input (no log, malformed line, no line of the current version).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from keras_app.core.cli import ArgumentParser, import_tensorflow, run_cli
from keras_app.core.errors import UsageError

ALERT = 1
RECORD = "monitor.json"


def parse_args(argv=None):
    p = ArgumentParser(
        prog="python -m keras_app.monitor",
        description="Judge a deployed model's usage log against the reference its operating "
        "point was fitted on: an HTML page, TensorBoard scalars, and exit status 1 when an "
        "alert limit is crossed.",
    )
    p.add_argument("log", metavar="LOG", help="the usage log (JSON lines)")
    p.add_argument(
        "--reference",
        required=True,
        metavar="RUN",
        help="the run (or ensemble) folder whose current operating point is deployed",
    )
    p.add_argument("--days", type=int, default=7, help="days judged, up to the newest line")
    p.add_argument("--out", default=None, help="output folder (default: monitor/ beside LOG)")
    p.add_argument(
        "--model",
        default=None,
        help="judge only the lines of this model name (default: every line of the version)",
    )
    p.add_argument(
        "--reference-data",
        default=None,
        metavar="SPEC",
        help="the run's data, where its config.json's path does not reach it (needed once, "
        "to compute version 1's validation reference)",
    )
    args = p.parse_args(argv)
    if args.days < 1:
        raise UsageError(f"--days must be >= 1. Received --days={args.days}")
    if not Path(args.log).is_file():
        raise UsageError(f"no usage log at {args.log}")
    return args


def output_folder(args) -> Path:
    """--out, or monitor/ beside the log; a folder holding anything but a monitor's is refused."""
    out = Path(args.out) if args.out else Path(args.log).resolve().parent / "monitor"
    if out.exists() and any(out.iterdir()) and not (out / RECORD).is_file():
        raise UsageError(f"--out {out} holds files that are not a monitor's; choose another")
    return out


def record(found) -> dict:
    ref = found.reference
    return {
        "reference": {
            "run": ref.run,
            "operating_point_version": ref.version,
            "split": ref.split,
            "n": ref.n,
            "positive_rate": ref.positive_rate,
            "prevalence": ref.prevalence,
        },
        "window": found.window,
        "totals": found.totals,
        "left_out": found.left_out,
        "checks": [
            {
                "check": c.key,
                "value": c.value,
                "limit": c.limit.value,
                "alert": c.alert,
                "note": c.note,
                "why": c.limit.why,
            }
            for c in found.checks
        ],
        "days": found.days,
        "alerts": [c.key for c in found.alerts],
    }


def write(found, out: Path) -> Path:
    """The output folder, whole (written beside and renamed into place)."""
    from keras_app.core.files import atomic_directory, write_json_atomic
    from keras_app.evaluation.monitoring import write_scalars
    from keras_app.reports.monitor_page import write_monitor_page

    with atomic_directory(out, overwrite=True) as tmp:
        write_monitor_page(found, tmp)
        write_scalars(found, tmp / "logs")
        write_json_atomic(tmp / RECORD, record(found))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = output_folder(args)
    import_tensorflow()
    from keras_app.evaluation.monitoring import load_reference, monitor

    reference = load_reference(args.reference, args.reference_data)
    found = monitor(args.log, reference, days=args.days, model=args.model)
    write(found, out)
    for check in found.checks:
        status = "ALERT" if check.alert else "ok" if check.value is not None else "not judged"
        print(f"{status:<10} {check.limit.name}: {check.note} (limit {check.limit.value:g})")
    print(f"monitor page: {out / 'monitor.html'}")
    if found.alerts:
        print(
            f"alert: {len(found.alerts)} limit(s) crossed: "
            + json.dumps([c.key for c in found.alerts]),
            file=sys.stderr,
        )
        return ALERT
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
