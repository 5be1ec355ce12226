"""Serving latency and throughput: the exported SavedModel against Keras, one model and an ensemble.

On one untrained classifier (MobileNet v1, alpha 0.25, 224 px, weights None:
speed does not depend on the weights' values), the contenders are

    keras.predict    model.predict(x) (Keras' batching loop, per call)
    keras.call       model(x, training=False) (eager call of the functional graph)
    sm.default       the export's serving_default signature, float pixels in
    sm.bytes         the export's predict_image_bytes signature, JPEG strings in
                     (decode and resize inside the graph, as TF Serving would run it)

and, for a two-member ensemble of such models (different seeds),

    ens.one_graph    the exported ensemble's serving_default: both members in one graph
    ens.sequential   each member's exported serving_default called one after the
                     other, probabilities averaged in NumPy

Latency: p50 and p99 over --iterations calls at batch 1. Throughput: images per
second over --batches calls at batch --batch-size. The calls are split into
--rounds rounds that visit every contender in turn (each after --warmup untimed
calls), so that load from other processes falls on all contenders alike.
Everything runs in this one process, on what TensorFlow sees (CPU threads as
the machine has).

    .venv/bin/python benchmarks/bench_serving.py
    .venv/bin/python benchmarks/bench_serving.py --iterations 50 --batches 5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from keras_app.inference import export  # noqa: E402
from keras_app.model.classifier import build_classifier  # noqa: E402
from keras_app.model.ensemble import EnsembleCombine, build_ensemble, stack_members  # noqa: E402

LABELS = ("NORMAL", "PNEUMONIA")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet")
    p.add_argument("--alpha", type=float, default=0.25)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--iterations", type=int, default=200, help="timed batch-1 calls")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batches", type=int, default=20, help="timed calls at --batch-size")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls before each timing")
    p.add_argument(
        "--rounds", type=int, default=4, help="interleaved rounds the calls are split into"
    )
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def write_folder(folder: Path, model: keras.Model, name: str, size: int) -> Path:
    """A run-like folder (best.keras, labels.txt, config.json) that export_model takes."""
    folder.mkdir(parents=True)
    model.save(folder / "best.keras")
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    (folder / "config.json").write_text(json.dumps({"model": name, "image_size": [size, size]}))
    return folder


def build_models(args, root: Path) -> dict:
    """The Keras models and their exported, reloaded signatures."""
    size = args.image_size

    def classifier(seed):
        keras.utils.set_random_seed(seed)
        return build_classifier(args.model, len(LABELS), (size, size), alpha=args.alpha)

    single = classifier(0)
    members = [classifier(1), classifier(2)]
    member_dirs = [
        write_folder(root / f"member{i}", m, args.model, size) for i, m in enumerate(members)
    ]
    ensemble = build_ensemble(stack_members(members), EnsembleCombine("mean"))
    folders = {
        "single": write_folder(root / "single", single, args.model, size),
        "member0": member_dirs[0],
        "member1": member_dirs[1],
        "ensemble": write_folder(root / "ensemble", ensemble, "ensemble", size),
    }
    base = root / "saved_models"
    signatures = {}
    for name, folder in folders.items():
        version = export.export_model(folder, name, base=base)
        loaded = tf.saved_model.load(str(version))
        signatures[name] = (loaded, loaded.signatures)
    return {"single": single, "signatures": signatures}


def contenders(models: dict) -> dict:
    """name -> (callable taking (pixels, jpegs), input kind) for each contender."""
    single = models["single"]
    sig = {name: s for name, (_, s) in models["signatures"].items()}

    def sequential(pixels, _):
        probs = [
            sig[m]["serving_default"](images=pixels)["probabilities"].numpy()
            for m in ("member0", "member1")
        ]
        return np.mean(probs, axis=0)

    return {
        "keras.predict": lambda x, _: single.predict(x, verbose=0, batch_size=len(x)),
        "keras.call": lambda x, _: single(x, training=False).numpy(),
        "sm.default": lambda x, _: sig["single"]["serving_default"](images=x)[
            "probabilities"
        ].numpy(),
        "sm.bytes": lambda _, j: sig["single"]["predict_image_bytes"](image_bytes=j)[
            "probabilities"
        ].numpy(),
        "ens.one_graph": lambda x, _: sig["ensemble"]["serving_default"](images=x)[
            "probabilities"
        ].numpy(),
        "ens.sequential": sequential,
    }


def inputs(batch: int, size: int, seed: int = 0) -> tuple[tf.Tensor, tf.Tensor]:
    """Float pixels [batch, size, size, 3] and the same images as JPEG strings."""
    rng = np.random.default_rng(seed)
    grey = rng.integers(0, 256, (batch, size, size, 1), dtype=np.uint8)
    rgb = np.repeat(grey, 3, axis=-1)
    jpegs = tf.constant([tf.io.encode_jpeg(image, quality=90).numpy() for image in grey])
    return tf.constant(rgb, tf.float32), jpegs


def time_calls(fn, pixels, jpegs, calls: int, warmup: int) -> np.ndarray:
    for _ in range(warmup):
        fn(pixels, jpegs)
    seconds = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter()
        fn(pixels, jpegs)
        seconds[i] = time.perf_counter() - start
    return seconds


def run(args) -> dict:
    """Times every contender in --rounds interleaved rounds, so load from other processes
    on a shared machine falls on all of them alike."""
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(args, Path(tmp))
        fns = contenders(models)
        one = inputs(1, args.image_size)
        many = inputs(args.batch_size, args.image_size, seed=1)
        latency = {name: [] for name in fns}
        batches = {name: [] for name in fns}
        per_round = max(1, args.iterations // args.rounds), max(1, args.batches // args.rounds)
        for _ in range(args.rounds):
            for name, fn in fns.items():
                latency[name].append(time_calls(fn, *one, per_round[0], args.warmup))
                batches[name].append(time_calls(fn, *many, per_round[1], args.warmup))
        table = {}
        for name in fns:
            lat, bat = np.concatenate(latency[name]), np.concatenate(batches[name])
            table[name] = {
                "p50_ms": float(np.percentile(lat, 50) * 1e3),
                "p99_ms": float(np.percentile(lat, 99) * 1e3),
                "images_per_s": float(args.batch_size * len(bat) / bat.sum()),
            }
            row = table[name]
            print(
                f"{name:<15} p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
                f"{row['images_per_s']:8.1f} img/s",
                flush=True,
            )
    return table


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def markdown(table: dict, args) -> str:
    lines = [
        f"| contender | p50 batch 1 (ms) | p99 batch 1 (ms) | batch {args.batch_size} (img/s) |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {name} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['images_per_s']:.1f} |"
        for name, r in table.items()
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    info = machine()
    print(json.dumps(info), flush=True)  # the load average: other processes skew timings
    table = run(args)
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print(markdown(table, args))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": info, "args": vars(args) | {"json": None}, "results": table}, indent=2
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
