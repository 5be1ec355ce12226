"""The chest X-ray recipe study (issue 12): named recipes trained one at a time, one table.

Each recipe is a set of `keras_app.train` flags added to the README command
(MobileNet v1 alpha 0.25, ImageNet weights). Every run writes its own run
folder; the table is read back from each folder's metrics.json and history.json,
so rerunning the script skips finished recipes and only prints.

The winner is chosen on validation (val AUC, then val log-loss); the test
columns are reported, never used to choose.

Usage:
    python benchmarks/recipe_study.py --data ../shared/data/chest_xray_224 \\
        --root /tmp/recipe-runs [--only NAME,...] [--nice 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BASE = ["--model", "mobilenet", "--weights", "imagenet"]
# The plain-script analogue: one end-to-end phase, BatchNorm training, cosine lr 1e-3.
E2E = [
    "--head-epochs", "0", "--fine-tune-epochs", "3", "--fine-tune-lr", "1e-3",
    "--unfreeze", "all", "--fine-tune-bn", "train", "--lr-schedule", "cosine",
]  # fmt: skip


def vary(flags: list[str], **changes: str) -> list[str]:
    """`flags` with each `--flag value` in `changes` (underscores for dashes) replaced or added."""
    out = list(flags)
    for key, value in changes.items():
        flag = "--" + key.replace("_", "-")
        if flag in out:
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


# The README command's recipe before issue 12: 5 head epochs, then 5 at 1e-5, BatchNorm frozen.
OLD_DEFAULT = [
    "--head-epochs", "5", "--fine-tune-epochs", "5", "--fine-tune-lr", "1e-5",
    "--unfreeze", "all", "--fine-tune-bn", "frozen", "--lr-schedule", "plateau",
]  # fmt: skip

# The shared ImageNet file, in the Keras cache `keras_home` sets up (filled in by `train`).
WEIGHTS_224 = "{keras_home}/models/mobilenet_2_5_224_tf_no_top.h5"

RECIPES: dict[str, list[str]] = {
    "two-phase-old-default": OLD_DEFAULT,
    "e2e-bn-cosine-3ep": E2E,
    "e2e-bn-frozen": vary(E2E, fine_tune_bn="frozen"),
    "e2e-bn-plateau": vary(E2E, lr_schedule="plateau"),
    "e2e-bn-cosine-5ep": vary(E2E, fine_tune_epochs="5"),
    "e2e-bn-cosine-8ep": vary(E2E, fine_tune_epochs="8"),
    "e2e-bn-cosine-12ep": vary(E2E, fine_tune_epochs="12"),
    "e2e-bn-cosine-lr3e-4": vary(E2E, fine_tune_lr="3e-4"),
    "e2e-bn-cosine-ls0.1": vary(E2E, label_smoothing="0.1"),
    # MobileNet 0.25 has 86 layers: 43 from the top is blocks 7 to 13, the upper half.
    "e2e-bn-cosine-unfreeze43": vary(E2E, unfreeze="43"),
    # Keras names a 160 px ImageNet file of its own; the convolutions are the 224 file's.
    "e2e-bn-cosine-160px": vary(E2E, image_size="160", weights=WEIGHTS_224),
    "e2e-bn-cosine-unfreeze43-12ep": vary(E2E, unfreeze="43", fine_tune_epochs="12"),
}


def train(name: str, flags: list[str], data: str, root: Path, nice: int, env: dict) -> None:
    """Trains one recipe into root/name unless it finished before; records its wall time."""
    run_dir = root / name
    if (run_dir / "metrics.json").exists():
        print(f"{name}: finished before, reading {run_dir}", flush=True)
        return
    shutil.rmtree(run_dir, ignore_errors=True)  # a half run of an older version of the recipe
    cmd = ["nice", "-n", str(nice), sys.executable, "-m", "keras_app.train", *BASE]
    flags = [f.format(keras_home=env["KERAS_HOME"]) for f in flags]
    cmd += ["--data", data, "--run-dir", str(run_dir), *flags]
    print(f"{name}: {' '.join(cmd)}", flush=True)
    root.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (root / f"{name}.log").open("w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    (run_dir / "study.json").write_text(json.dumps({"flags": flags, "wall_s": wall}))


def row(name: str, root: Path) -> dict:
    """The table's figures for one finished run folder."""
    folder = root / name
    metrics = json.loads((folder / "metrics.json").read_text())
    history = json.loads((folder / "history.json").read_text())
    study = json.loads((folder / "study.json").read_text())
    epoch_s = [h["epoch_seconds"] for h in history if "epoch_seconds" in h]
    val, test = metrics["val"], metrics["test"]
    return {
        "name": name,
        "flags": " ".join(study["flags"]) or "(none)",
        "val_auc": val["roc_auc"],
        "val_loss": val["log_loss"],
        "test_auc": test["roc_auc"],
        "test_sens": test["sensitivity"],
        "test_spec": test["specificity"],
        "test_ece": test["ece"],
        "threshold": metrics["operating_point"]["threshold"],
        "epochs": len(history),
        "train_s": sum(epoch_s),
        "s_per_epoch": sum(epoch_s) / max(1, len(epoch_s)),
        "wall_s": study["wall_s"],
    }


def table(rows: list[dict]) -> str:
    head = (
        "| recipe | flags | val AUC | val log-loss | test AUC | test sens | test spec "
        "| test ECE | threshold | epochs | s/epoch | train s | wall s |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['name']} | `{r['flags']}` | {r['val_auc']:.4f} | {r['val_loss']:.4f} "
            f"| {r['test_auc']:.4f} | {r['test_sens']:.4f} | {r['test_spec']:.4f} "
            f"| {r['test_ece']:.4f} | {r['threshold']:.3f} | {r['epochs']} "
            f"| {r['s_per_epoch']:.0f} | {r['train_s']:.0f} | {r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def winner(rows: list[dict]) -> dict:
    """Highest val AUC; val log-loss breaks ties. Test figures take no part."""
    return max(rows, key=lambda r: (round(r["val_auc"], 4), -r["val_loss"]))


def keras_home(data: str, root: Path) -> dict:
    """An environment whose Keras cache holds the shared MobileNet 0.25 ImageNet weights."""
    env = dict(os.environ)
    if "KERAS_HOME" not in env:
        home = root / "keras-home"
        (home / "models").mkdir(parents=True, exist_ok=True)
        src = Path(data).parent / "keras_models" / "mobilenet_2_5_224_tf_no_top.h5"
        dst = home / "models" / src.name
        if src.exists() and not dst.exists():
            shutil.copy(src, dst)
        env["KERAS_HOME"] = str(home)
    return env


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/chest_xray_224")
    p.add_argument("--root", default="/tmp/recipe-runs", type=Path)
    p.add_argument("--only", default=None, help="comma-separated recipe names")
    p.add_argument("--nice", type=int, default=10)
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        p.error(f"unknown recipes {unknown}; known: {', '.join(RECIPES)}")
    env = keras_home(args.data, args.root)
    for name in names:
        train(name, RECIPES[name], args.data, args.root, args.nice, env)
    rows = [row(n, args.root) for n in RECIPES if (args.root / n / "study.json").exists()]
    print(table(rows))
    print(f"\nwinner on validation: {winner(rows)['name']}")


if __name__ == "__main__":
    main()
