"""python -m keras_app.calibrate: a hospital's own operating point, refitted on its labelled images.

    python -m keras_app.calibrate runs/<run> --data local_xrays/
    python -m keras_app.calibrate runs/<run> --data local_xrays/ --holdout-fraction 0.3
    python -m keras_app.calibrate runs/<run> --list
    python -m keras_app.calibrate runs/<run> --use-version 1     # training's point again

A model's ranking travels to another hospital better than its threshold does. This
refits the temperature and the threshold on the site's labelled images (a folder of
class folders, or any --data SPEC keras_app.train takes; every readable image is used),
from training's weights, which it never changes. With --adabn (default auto) it also
re-estimates the BatchNorm statistics on those images where that measurably lowers their
log-loss (AdaBN, Li et al. 2016).

Before fitting it says how many positives and negatives the target needs for the Wilson
95% lower bounds to clear --min-sensitivity and --min-specificity, and refuses below the
floor (where even a perfect result could not show them). The new point is written as
the run's next operating point version (`RUN/operating_points/`, training's version 1
kept) and made current (operating_point.json, best.keras) when its figures clear the
levels: on the holdout where --holdout-fraction keeps one (patients apart), else on the
images it was fitted on. `export`, `predict`, `evaluate` and the DICOM node then decide
at it, and every served answer and SR names its version.

Exit status: 0 written and current; 1 written but not made current (its figures fall
below the levels; --force makes it current anyway); 2 bad input or too few images.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from keras_app.core.cli import ArgumentParser, import_tensorflow, run_cli
from keras_app.core.errors import UsageError
from keras_app.recipe.config import MANIFEST_FIELDS, MAX_REFER_SHARE, add_manifest_flags

BELOW_LEVELS = 1


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m keras_app.calibrate",
        description="Refit a run's temperature and decision threshold on a hospital's own "
        "labelled images, as a new version of its operating point (training's kept).",
    )
    p.add_argument("run", metavar="RUN", help="a run or ensemble folder from keras_app.train")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--data",
        metavar="LOCAL",
        help="the site's labelled images: a folder of class folders (or any data spec "
        "keras_app.train takes); every readable image is used",
    )
    mode.add_argument("--list", action="store_true", help="list the run's operating points")
    mode.add_argument(
        "--use-version",
        type=int,
        metavar="N",
        help="make version N current again (1: training's point)",
    )
    p.add_argument(
        "--target-sensitivity",
        type=float,
        default=None,
        help="the local sensitivity the threshold must reach (default: the current point's)",
    )
    p.add_argument(
        "--holdout-fraction",
        type=float,
        default=0.0,
        help="share of the local images kept apart, grouped by patient, to judge the new "
        "point on (0: none; the point is judged on what it was fitted on)",
    )
    p.add_argument(
        "--refer-band",
        metavar="SHARE",
        default=None,
        help="refit the refer band to hold this share of the local images nearest the new "
        "threshold, in (0, 0.5]; none: no band (default: the current point's share, or none)",
    )
    p.add_argument("--seed", type=int, default=42, help="the holdout's and bootstrap's seed")
    p.add_argument(
        "--adabn",
        choices=("auto", "on", "off"),
        default="auto",
        help="re-estimate BatchNorm statistics on the local images (AdaBN): auto adopts it "
        "where the paired bootstrap 95%% interval of the local log-loss change (each way "
        "after its own temperature) lies below zero",
    )
    p.add_argument(
        "--min-sensitivity",
        type=float,
        default=0.90,
        help="the level the local sensitivity's Wilson 95%% lower bound must clear",
    )
    p.add_argument(
        "--min-specificity",
        type=float,
        default=0.70,
        help="the level the local specificity's Wilson 95%% lower bound must clear",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="make the new version current even where it falls below the levels",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per prediction batch")
    add_manifest_flags(p, "the manifest's own columns; --label where it holds several findings")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    if not 0 <= args.holdout_fraction <= 0.5:
        raise UsageError(
            f"--holdout-fraction must be in [0, 0.5]. Received {args.holdout_fraction}"
        )
    target = args.target_sensitivity
    if target is not None and not 0 < target < 1:
        raise UsageError(f"--target-sensitivity must be in (0, 1). Received {target}")
    for flag in ("min_sensitivity", "min_specificity"):
        value = getattr(args, flag)
        if not 0 < value < 1:
            raise UsageError(f"--{flag.replace('_', '-')} must be in (0, 1). Received {value}")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1. Received --batch-size={args.batch_size}")
    args.refer_band = refer_share(args.refer_band)
    return args


def refer_share(text: str | None) -> float | None:
    """--refer-band: None (keep the current point's), 0.0 for `none` (no band), else the share."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return 0.0
    try:
        share = float(text)
    except ValueError:
        share = None
    if share is None or not 0 < share <= MAX_REFER_SHARE:
        raise UsageError(
            f"--refer-band must be in (0, {MAX_REFER_SHARE}] or none. Received {text!r}"
        )
    return share


# --- the three modes -----------------------------------------------------------------------------


def list_versions(run: str) -> None:
    from keras_app.artifacts import runs
    from keras_app.artifacts.op_history import OperatingPointHistory

    history = OperatingPointHistory(runs.load_run(run).path)
    current = history.current_version()
    print(
        "version  current  temperature  threshold  target  refer band        chosen on, when, data"
    )
    for version in history.versions():
        op = history.record(version)["operating_point"]
        prov = op.get("provenance") or {}
        data = prov.get("data") or {}
        counts = ", ".join(f"{k} {v}" for k, v in (data.get("fit") or {}).items())
        where = (
            f"{op.get('chosen_on')}, {prov['date']}, {data.get('fingerprint')} ({counts})"
            if prov.get("date")
            else f"{op.get('chosen_on', '-')}, by training"
        )
        band = op.get("refer_band") or {}
        shown = f"[{band['low']:.4f}, {band['high']:.4f})" if band else "-"
        print(
            f"v{version:<7} {'*' if version == current else ' ':<8} "
            f"{op.get('temperature', 1.0):<12.4f} {_num(op.get('threshold')):<10} "
            f"{_num(op.get('target_sensitivity')):<7} {shown:<17} {where}"
        )
    if not history.consistent():
        print(f"warning: best.keras is not version {current}'s model", file=sys.stderr)


def use_version(run: str, version: int) -> None:
    from keras_app.artifacts import runs
    from keras_app.artifacts.op_history import OperatingPointHistory
    from keras_app.decision.operating_point import OperatingPoint

    history = OperatingPointHistory(runs.load_run(run).path)
    with history.lock():
        history.keep_training_version()
        op = history.make_current(version, why="restore")
    print(f"current operating point of {run}: {OperatingPoint.from_dict(op).describe()}")


def calibrate(args) -> int:
    from keras_app.evaluation.local_calibration import LocalConfig, describe, refit

    config = LocalConfig(
        run=args.run,
        data=args.data,
        target_sensitivity=args.target_sensitivity,
        holdout_fraction=args.holdout_fraction,
        seed=args.seed,
        adabn=args.adabn,
        min_sensitivity=args.min_sensitivity,
        min_specificity=args.min_specificity,
        force=args.force,
        batch_size=args.batch_size,
        refer_band=args.refer_band,
        manifest={k: getattr(args, k) for k in MANIFEST_FIELDS if getattr(args, k) is not None},
    )
    done = refit(config, say=lambda line: print(line, flush=True))
    for part in ("fit", "holdout"):
        figures = done.figures.get(part)
        if figures:
            print(f"{part}, before (current point): {describe(figures['before'])}")
            print(f"{part}, after (version {done.version}): {describe(figures['after'])}")
    print(f"operating point version {done.version}: {done.operating_point.describe()}")
    if done.current:
        print(f"version {done.version} is now current in {args.run}")
        return 0
    print(
        f"version {done.version} written but NOT made current: on the {done.judged_on} images "
        f"its Wilson lower bounds fall below --min-sensitivity {args.min_sensitivity} or "
        f"--min-specificity {args.min_specificity}; use --force, or --use-version "
        f"{done.version}, to make it current anyway",
        file=sys.stderr,
    )
    return BELOW_LEVELS


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        list_versions(args.run)
        return 0
    if args.use_version is not None:
        use_version(args.run, args.use_version)
        return 0
    import_tensorflow()
    return calibrate(args)


if __name__ == "__main__":
    sys.exit(run_cli(main))
