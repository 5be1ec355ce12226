"""python -m keras_app.sweep: train a grid of configurations, weigh time against quality.

    python -m keras_app.sweep --model mobilenet --data ../shared/data/chest_xray_224 \\
        --grid lr=1e-3,3e-4 fine_tune_lr=1e-5,3e-5 --out runs/sweep-lr --budget-minutes 30
    python -m keras_app.sweep --model mobilenet --random 8 --range lr=1e-4:1e-2:log \\
        --grid batch_size=16,32 --out runs/sweep-random

`--grid FIELD=V1,V2,...` takes any TrainConfig field (its values parsed with
the field's type); every combination trains. `--random N` instead draws N
configurations: `--range FIELD=LOW:HIGH[:log]` uniformly (log-uniformly), grid
values as choices, from a generator seeded with --seed so a rerun draws the
same ones. Every other flag goes to `keras_app.train` for every run: all share
the data, its split and the seed.

Each configuration trains through `keras_app.train.run` into `OUT/<name>`,
named after the values it sweeps (`lr0.001_bs16`). Rerunning the command skips
finished runs and resumes an unfinished one. A configuration that fails (its
loss turns NaN, memory runs out, anything raises) is recorded as failed with
its reason in `OUT/<name>/sweep_run.json`, and the sweep goes on;
`--retry-failed` trains those again.

Writes into OUT:
    sweep.csv        one row per configuration: its fields, status, wall time, epochs,
                     best validation value, test AUC / sensitivity / specificity
    time_quality.png val AUC against wall-clock minutes, the Pareto front labelled
    summary.md       the best configuration by validation within --budget-minutes
    sweep.json       the sweep's own command and plan
    events.out.*     TensorBoard's HParams experiment (`tensorboard --logdir OUT`)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from keras_app.core.cli import ArgumentParser, import_tensorflow, run_cli
from keras_app.core.errors import UsageError
from keras_app.experiments.sweep import (
    NOT_SWEPT,
    SweepConfig,
    parse_range,
    plan_trials,
    split_axis,
)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m keras_app.sweep",
        description="Train every combination of --grid (or --random draws from --range) through "
        "keras_app.train into OUT/<name>, then chart val AUC against wall time. Every other flag "
        "(--model, --data, --head-epochs, ...) goes to keras_app.train for every run.",
        allow_abbrev=False,  # train's flags must not be taken for abbreviations of these
    )
    p.add_argument(
        "--grid",
        nargs="+",
        action="extend",
        default=[],
        metavar="FIELD=V1,V2",
        help="a TrainConfig field and its values; several --grid axes multiply",
    )
    p.add_argument(
        "--range",
        nargs="+",
        action="extend",
        default=[],
        metavar="FIELD=LOW:HIGH[:log]",
        help="a numeric field to draw from under --random, uniform or log-uniform",
    )
    p.add_argument("--random", type=int, metavar="N", help="draw N configurations")
    p.add_argument("--out", required=True, help="the sweep folder, e.g. runs/sweep-lr")
    p.add_argument(
        "--budget-minutes",
        type=float,
        metavar="M",
        help="summary.md names the best configuration whose run took at most M minutes",
    )
    p.add_argument("--retry-failed", action="store_true", help="train failed configurations again")
    return p


def parse_config(argv: Sequence[str] | None = None) -> SweepConfig:
    argv = list(sys.argv[1:] if argv is None else argv)  # kept whole for summary.md
    args, train_args = build_parser().parse_known_args(argv)
    config = SweepConfig(
        out=args.out,
        grid=tuple(split_axis(a, "--grid") for a in args.grid),
        ranges=tuple(parse_range(a) for a in args.range),
        random=args.random,
        budget_minutes=args.budget_minutes,
        retry_failed=args.retry_failed,
        train_args=tuple(train_args),
        argv=tuple(argv),
    )
    validate(config)
    return config


def validate(c: SweepConfig) -> None:
    if c.ranges and c.random is None:
        raise UsageError("--range draws values for --random N; add --random")
    if not c.grid and c.random is None:
        raise UsageError("a sweep needs --grid FIELD=V1,V2 or --random N with --range")
    if c.random is not None and c.random < 1:
        raise UsageError(f"--random must be at least 1. Received {c.random}")
    if c.random is not None and not c.ranges and not c.grid:
        raise UsageError("--random N needs something to draw: --range or --grid")
    if c.budget_minutes is not None and c.budget_minutes <= 0:
        raise UsageError(f"--budget-minutes must be > 0. Received {c.budget_minutes}")
    axes = [f for f, _ in c.grid] + [r.field for r in c.ranges]
    twice = sorted({f for f in axes if axes.count(f) > 1})
    if twice:
        raise UsageError(f"{', '.join(twice)} swept more than once")
    fixed = [f for f in axes if f in NOT_SWEPT]
    if fixed:
        raise UsageError(f"a sweep cannot vary {', '.join(fixed)}. Received {fixed}")


def main(argv: Sequence[str] | None = None, train_one: Callable | None = None) -> int:
    sweep = parse_config(argv)  # argparse only: TensorFlow loads after this line
    trials = plan_trials(sweep)  # every configuration checked before the first trains
    import_tensorflow()
    from keras_app.experiments import sweep_results
    from keras_app.experiments.series import Series
    from keras_app.experiments.sweep import check_folders, run_sweep, write_plan

    check_folders(trials)
    write_plan(sweep, trials)
    sweep_results.write_sweep_hparams(sweep, trials)
    run_sweep(sweep, trials, train_one or Series().train, after_each=sweep_results.record_trial)
    best = sweep_results.write_results(sweep, trials)
    print(f"sweep folder: {sweep.out}; best by val AUC: {best['name'] if best else 'none'}")
    print(f"tensorboard --logdir {sweep.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
