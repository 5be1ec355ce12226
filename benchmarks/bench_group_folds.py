"""Carving by patient at scale: group_folds against scikit-learn's StratifiedGroupKFold.

Reads labels and patients from a manifest (the `pooled.csv` of a bench_scale farm:
path, label, patient), places them in k folds both ways, and checks that the
first fold (what `splits.carve` takes) is the same.

    .venv/bin/python benchmarks/bench_group_folds.py /work/scratch/bench/farm-200000/pooled.csv
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from data_pipelines.group_folds import stratified_group_folds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("manifest", type=Path, help="a CSV with label and patient columns")
    p.add_argument("--k", type=int, default=10, help="folds (10: a 0.1 carve)")
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    with open(args.manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    labels = np.unique([r["label"] for r in rows], return_inverse=True)[1]
    groups = np.asarray([r["patient"] for r in rows])
    print(f"{len(rows)} images, {len(set(groups.tolist()))} patients, {args.k} folds")
    started = time.perf_counter()
    ours = stratified_group_folds(labels, groups, args.k, args.seed)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    splitter = StratifiedGroupKFold(args.k, shuffle=True, random_state=args.seed)
    _, theirs = next(splitter.split(labels, labels, groups))
    theirs_s = time.perf_counter() - started
    same = np.array_equal(np.flatnonzero(ours == 0), np.sort(theirs))
    print(f"group_folds {ours_s:.1f} s, scikit-learn {theirs_s:.1f} s, same first fold: {same}")


if __name__ == "__main__":
    main()
