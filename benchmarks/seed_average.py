"""Seed averaging (issue 12): one recipe trained several times on one split, averaged.

An issue-12 recipe candidate, measured before building anything: N members, each
recipe_study's `e2e-bn-cosine-3ep` recipe (all layers unfrozen) with `--fine-tune-epochs
E`, all on the split of seed 42.
Member k draws its head initialisation, dropout, shuffling and augmentation from seed
42 + k. Their (calibrated) probabilities are averaged; a temperature and the decision
threshold are fitted on the validation split as train fits them, and the test split is
only judged. Compare the average of N members of E epochs with one run of N x E epochs:
the same training budget.

    python benchmarks/seed_average.py --data ../shared/data/chest_xray_224 \\
        --root /tmp/seed-average --members 2 --epochs 3 [--first RUN]

`--first` reuses a finished run of the same recipe at seed 42 as member 0 (recipe_study's
`e2e-bn-cosine-3ep` is one) instead of training it again. Finished members are reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

SPLIT_SEED = 42


def train_members(args, data) -> list[Path]:
    """Trains the members not yet finished on `data` (seed 42's split); returns their run
    folders, member 0 first."""
    from recipe_study import BASE, E2E, vary  # beside this script

    from keras_app.artifacts.runs import RunFolder
    from keras_app.experiments.series import Series
    from keras_app.recipe.config import parse_config

    # recipe_study's 3-epoch recipe with the epochs asked for, its flags pinned: a member
    # must stay that recipe when the train defaults move.
    base = parse_config(
        [*BASE, "--data", args.data, *vary(E2E, fine_tune_epochs=str(args.epochs)),
         "--seed", str(SPLIT_SEED)]
    )  # fmt: skip
    folders = [args.first] if args.first else []
    folders += [args.root / f"member-{k}" for k in range(len(folders), args.members)]
    series = Series()  # one strategy; each run seeded afresh from its config's seed
    for k, folder in enumerate(folders):
        if RunFolder(folder).is_finished():
            continue
        # Only what the data pipeline and the initialisation draw changes; the split is
        # already made. The member's config.json records the seed it drew from.
        config = dataclasses.replace(base, seed=SPLIT_SEED + k, run_dir=str(folder))
        print(f"member {k}: seed {config.seed} -> {folder}", flush=True)
        series.train(config, data)
    return folders


def figures(y_val, val, y_test, test, class_names, target: float) -> dict:
    """Calibrates and thresholds on val as train does; val and test figures as train
    writes them to metrics.json (`keras_app.decision.metrics.classification_metrics`)."""
    from keras_app.decision.metrics import classification_metrics
    from keras_app.decision.operating_point import fit_operating_point, scale

    op = fit_operating_point(y_val, val, class_names, target)
    judged = {
        name: classification_metrics(y, scale(p, op.temperature), class_names, operating_point=op)
        for name, y, p in (("val", y_val, val), ("test", y_test, test))
    }
    return {
        "val_auc": judged["val"]["roc_auc"],
        "val_log_loss": judged["val"]["log_loss"],
        "test_auc": judged["test"]["roc_auc"],
        "test_sens": judged["test"]["sensitivity"],
        "test_spec": judged["test"]["specificity"],
        "test_ece": judged["test"]["ece"],
        "threshold": op.threshold,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/chest_xray_224")
    p.add_argument("--root", default="/tmp/seed-average", type=Path)
    p.add_argument("--members", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3, help="end-to-end epochs of each member")
    p.add_argument("--first", type=Path, help="a finished seed-42 run to reuse as member 0")
    p.add_argument("--target-sensitivity", type=float, default=0.97)
    args = p.parse_args(argv)

    from keras_app.core.cli import import_tensorflow
    from keras_app.inference.predictor import open_run

    import_tensorflow()
    from data_pipelines import load_dataset
    from keras_app.recipe.config import TrainConfig

    # One split for every member and for judging them: seed 42's.
    data = load_dataset(
        args.data, val_fraction=TrainConfig.val_fraction, seed=SPLIT_SEED, report=lambda m: None
    )
    folders = train_members(args, data)
    val, test = data.splits["val"], data.splits["test"]
    probs = []
    for folder in folders:
        member = open_run(folder)
        probs.append((member.predict_split(val), member.predict_split(test)))
    rows = {}
    for k, (v, t) in enumerate(probs):
        rows[f"member {k} ({folders[k].name})"] = figures(
            val.labels, v, test.labels, t, data.class_names, args.target_sensitivity
        )
    mean_val = np.mean([v for v, _ in probs], axis=0)
    mean_test = np.mean([t for _, t in probs], axis=0)
    rows[f"mean of {len(probs)}"] = figures(
        val.labels, mean_val, test.labels, mean_test, data.class_names, args.target_sensitivity
    )
    print("| model | val AUC | val log-loss | test AUC | test sens | test spec | test ECE |"
          " threshold |\n|---|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    for name, r in rows.items():
        print(
            f"| {name} | {r['val_auc']:.4f} | {r['val_log_loss']:.4f} | {r['test_auc']:.4f} "
            f"| {r['test_sens']:.4f} | {r['test_spec']:.4f} | {r['test_ece']:.4f} "
            f"| {r['threshold']:.3f} |"
        )
    (args.root / "seed_average.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
