"""Test-time flip on a trained run: val and test AUC and log-loss, plain and flip-averaged.

An issue-12 recipe candidate, measured on a finished run folder before building it into
the model: the mean of P(class) over the image and its left-right mirror.

    python benchmarks/tta_flip.py /tmp/runs/readme-chest --data ../shared/data/chest_xray_224
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def probabilities(model, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """P(positive) on the images, on their mirrors, and the labels."""
    import tensorflow as tf

    plain, mirrored, labels = [], [], []
    for x, y in dataset:
        plain.append(model(x, training=False).numpy()[:, 1])
        mirrored.append(model(tf.reverse(x, [2]), training=False).numpy()[:, 1])
        labels.append(y.numpy()[:, 1])
    return np.concatenate(plain), np.concatenate(mirrored), np.concatenate(labels)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run folder of a 2-class model")
    p.add_argument("--data", default="../shared/data/chest_xray_224")
    args = p.parse_args(argv)

    from sklearn.metrics import log_loss, roc_auc_score

    from data_pipelines import load_dataset, make_dataset
    from keras_app.inference.predictor import open_run

    run = open_run(args.run)  # best.keras with its custom layers, and the run's config
    config = run.config
    data = load_dataset(
        args.data, val_fraction=config["val_fraction"], seed=config["seed"], report=lambda m: None
    )
    print("| split | scores | ROC AUC | log-loss |\n|---|---|---:|---:|")
    for split in ("val", "test"):
        dataset = make_dataset(
            data.splits[split], image_size=run.image_size, batch_size=32, training=False,
            num_classes=2, cache=False, pad_to_aspect=run.pad_to_aspect,
        )  # fmt: skip
        plain, mirrored, y = probabilities(run.keras_model, dataset)
        for name, scores in (("plain", plain), ("flip-averaged", (plain + mirrored) / 2)):
            loss = log_loss(y, np.clip(scores, 1e-7, 1 - 1e-7))
            print(f"| {split} | {name} | {roc_auc_score(y, scores):.4f} | {loss:.4f} |")


if __name__ == "__main__":
    main()
