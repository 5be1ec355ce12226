"""The shipped image guard of a run, on the out-of-distribution sets: docs/GUARD.md's table.

    PYTHONPATH=. python benchmarks/guard_table.py RUN_DIR [--out RUN_DIR/guard_table.json]

benchmarks/ood_study.py chose the guard's form among candidates, in NumPy; this scores the
guard the run carries (its `ood_score` output and the limit in its operating point, what
predict, evaluate, the export and the DICOM node apply) on every set of
`data_pipelines.ood_sets`, made from the run's own test split. Per set and part (tuning,
held-out): n, the share not analysed with its Wilson 95% interval, and the AUROC of the
score against the test split's images (bootstrap 95% interval); then the test split's pass
rate per class. The JSON (`--out`) is what the model card's guard section shows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

BATCH = 64
BOOTSTRAP = 1000


def auroc_with_ci(inside: np.ndarray, outside: np.ndarray, seed: int = 0) -> dict:
    """AUROC of `score` telling `outside` from `inside`, with a bootstrap 95% interval."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    s = np.r_[inside, outside]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        i = rng.integers(0, len(inside), len(inside))
        o = rng.integers(0, len(outside), len(outside))
        draws.append(roc_auc_score(y, np.r_[inside[i], outside[o]]))
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"value": float(roc_auc_score(y, s)), "low": float(low), "high": float(high)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, help="write the table as JSON here")
    p.add_argument("--per-set", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from keras_app.core.cli import import_tensorflow

    import_tensorflow()
    import data_pipelines
    from data_pipelines.ood_sets import PARTS, build_ood_sets
    from keras_app.decision.metrics import rate_with_ci
    from keras_app.inference.predictor import open_run

    start = time.perf_counter()
    predictor = open_run(args.run)
    op = predictor.operating_point
    if op.guard_limit is None:
        print(f"error: {args.run} carries no image guard", file=sys.stderr)
        return 2
    config = predictor.config
    data = data_pipelines.load_dataset(
        config["data"],
        val_fraction=config.get("val_fraction", 0.1),
        seed=config.get("seed", 42),
        report=lambda m: None,
    )
    test = data.splits["test"]
    _, test_ood = predictor.score_split(test, BATCH)
    films = np.round(predictor.split_images(test, BATCH)).clip(0, 255).astype(np.uint8)
    groups = test.groups if test.groups is not None else np.arange(len(test)).astype(str)
    npz = Path(config["data"]).expanduser().resolve().parent / "pneumoniamnist.npz"
    mnist = np.load(npz)["test_images"] if npz.is_file() else None
    sets = build_ood_sets(
        films, groups, pneumoniamnist=mnist, size=films.shape[1], per_set=args.per_set,
        seed=args.seed,
    )  # fmt: skip
    passed = op.analysed(test_ood)
    labels = np.asarray(test.labels)
    table = {
        "run": str(args.run),
        "limit": op.guard_limit,
        "val_pass_rate": op.guard.get("validation", {}).get("pass_rate"),
        "test_pass_rate": rate_with_ci(passed),
        "test_pass_rate_per_class": {
            name: rate_with_ci(passed[labels == c]) for c, name in enumerate(test.class_names)
        },
        "sets": {},
        "command": " ".join(["python", "benchmarks/guard_table.py", *map(str, argv or [])]),
    }
    for name, s in sets.items():
        row = {"refuse": s.refuse, "provenance": s.provenance}
        for part in PARTS:
            images = s.part(part).astype(np.float32)
            _, ood = predictor.score(images, BATCH)
            row[part] = {
                "n": len(images),
                "not_analysed": rate_with_ci(~op.analysed(ood)),
                "auroc": auroc_with_ci(test_ood, ood),
            }
        table["sets"][name] = row
    table["seconds"] = round(time.perf_counter() - start, 1)
    print(markdown(table))
    if args.out:
        args.out.write_text(json.dumps(table, indent=2) + "\n")
    return 0


def markdown(table: dict) -> str:
    def rate(r):
        return f"{r['value']:.3f} ({r['low']:.3f}-{r['high']:.3f})"

    lines = [
        f"test split analysed: {rate(table['test_pass_rate'])}; limit {table['limit']:.4g}",
        "",
        "| set | kind | n tuning | not analysed, tuning | n held-out | not analysed, held-out "
        "| AUROC held-out |",
        "|---|---|---:|---|---:|---|---|",
    ]
    kinds = {True: "refuse", False: "valid look-alike", None: "no right answer"}
    for name, row in table["sets"].items():
        t, h = row["tuning"], row["held_out"]
        a = h["auroc"]
        lines.append(
            f"| {name} | {kinds[row['refuse']]} | {t['n']} | {rate(t['not_analysed'])} | "
            f"{h['n']} | {rate(h['not_analysed'])} | {a['value']:.4f} ({a['low']:.4f}-"
            f"{a['high']:.4f}) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
