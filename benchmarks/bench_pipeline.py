"""Training input pipeline throughput: data_pipelines vs Keras' utility vs a PyTorch DataLoader.

All three read the same folder of class sub-folders (default: the chest X-ray
train split, 4,070 JPEGs at 224 px), resize to --image-size, batch, and apply
the same augmentation (rotation 15 deg, shear 10 deg, horizontal flip,
brightness, contrast):

    ours   data_pipelines.make_dataset(training=True, augment="standard"), cached
    ours_rgb  the same with the scan's greyness withheld, so it works on three
           channels as the others do (how much of the gain is the grey path)
    keras  keras.utils.image_dataset_from_directory, then the same Keras layers
           mapped after batching (num_parallel_calls=AUTOTUNE), prefetch
    torch  torchvision ImageFolder with RandomRotation, RandomAffine(shear),
           RandomHorizontalFlip, ColorJitter, ToTensor; DataLoader(num_workers=2,
           persistent_workers=True)

Each contender runs in its own process, after the files were read once so that
all find them in the OS page cache. For each epoch the script reports images
per second over --batches batches after --warmup batches; epoch 1 decodes
(ours also fills its cache), epoch 2 is a "cached" epoch (only ours has a
cache; the others decode again). Torch runs under --torch-python (a separate
venv, see docs/BENCHMARKS.md); where torch cannot be imported its column says
why.

    .venv/bin/python benchmarks/bench_pipeline.py
    .venv/bin/python benchmarks/bench_pipeline.py --only ours --batches 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "chest_xray_224" / "train"
DEFAULT_TORCH_PYTHON = "/tmp/benchvenv/bin/python"
CONTENDERS = ("ours", "ours_rgb", "keras", "torch")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="a folder of class sub-folders (default: chest_xray_224/train)",
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--batches", type=int, default=100, help="batches timed per epoch, after the warm-up ones"
    )
    parser.add_argument(
        "--warmup", type=int, default=3, help="batches per epoch not timed (start-up, first trace)"
    )
    parser.add_argument(
        "--epochs", type=int, default=2, help="epoch 1 decodes, later ones are cached"
    )
    parser.add_argument(
        "--only", choices=CONTENDERS, action="append", help="run only these (repeatable)"
    )
    parser.add_argument(
        "--torch-python",
        default=os.environ.get("BENCH_TORCH_PYTHON", DEFAULT_TORCH_PYTHON),
        help="a Python with torch and torchvision (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each contender, interleaved; the median is reported",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# --- the contenders, each run in its own process -----------------------------------------


def ours(args, grey=True):
    from data_pipelines import make_dataset
    from data_pipelines.data import Split
    from data_pipelines.scan import scan_class_folders

    start = time.perf_counter()
    scan = scan_class_folders(args.data)
    split = Split(
        "train",
        scan.class_names,
        scan.labels,
        files=scan.files,
        sizes=scan.sizes,
        grey=scan.grey if grey else None,
    )
    dataset = make_dataset(
        split,
        image_size=(args.image_size,) * 2,
        batch_size=args.batch_size,
        training=True,
        augment="standard",
        seed=42,
        cache=True,
        num_classes=len(scan.class_names),
    )
    return start, (dataset for _ in range(args.epochs))


def keras_utility(args):
    import keras
    import tensorflow as tf

    from data_pipelines.augment import AugmentConfig, build_augment_layers

    start = time.perf_counter()
    dataset = keras.utils.image_dataset_from_directory(
        args.data,
        image_size=(args.image_size,) * 2,
        batch_size=args.batch_size,
        label_mode="categorical",
        shuffle=True,
        seed=42,
        verbose=False,
    )
    augment = keras.Sequential(build_augment_layers(AugmentConfig(), seed=42))
    dataset = dataset.map(
        lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
    ).prefetch(tf.data.AUTOTUNE)
    return start, (dataset for _ in range(args.epochs))


def torch_loader(args):
    import torch
    from torchvision import datasets, transforms

    start = time.perf_counter()
    size = args.image_size
    transform = transforms.Compose(
        [
            transforms.Resize((size, size)),
            transforms.RandomRotation(15),
            transforms.RandomAffine(degrees=0, shear=10),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(brightness=0.1, contrast=0.2),
            transforms.ToTensor(),
        ]
    )
    folder = datasets.ImageFolder(str(args.data), transform=transform)
    loader = torch.utils.data.DataLoader(
        folder, batch_size=args.batch_size, shuffle=True, num_workers=2, persistent_workers=True
    )
    return start, (loader for _ in range(args.epochs))


def run_worker(args) -> dict:
    build = {
        "ours": ours,
        "ours_rgb": lambda a: ours(a, grey=False),
        "keras": keras_utility,
        "torch": torch_loader,
    }[args.worker]
    start, epochs = build(args)
    result = {"epochs": []}
    for epoch in epochs:
        times, begin = [], time.perf_counter()
        for i, _ in enumerate(epoch):  # noqa: B007 - the loop consumes every batch
            now = time.perf_counter()
            times.append(now - begin)
            begin = now
            if i == 0 and "first_batch_s" not in result:
                result["first_batch_s"] = now - start
        timed = times[args.warmup : args.warmup + args.batches]
        result["epochs"].append(
            {
                "batches": len(times),
                "timed_batches": len(timed),
                "ms_per_batch": 1000 * sum(timed) / len(timed),
                "images_per_s": args.batch_size * len(timed) / sum(timed),
                "epoch_s": sum(times),
            }
        )
    return result


# --- the driver ----------------------------------------------------------------------------


def warm_page_cache(folder: Path) -> int:
    """Reads every file once, so no contender pays for the first disk read."""
    total = 0
    for path in folder.rglob("*"):
        if path.is_file():
            total += len(path.read_bytes())
    return total


def run_contender(name: str, args) -> dict:
    python = args.torch_python if name == "torch" else sys.executable
    if name == "torch":
        check = (
            subprocess.run(
                [python, "-c", "import torch, torchvision"], capture_output=True, text=True
            )
            if Path(python).exists()
            else None
        )
        if check is None or check.returncode != 0:
            why = (
                f"no Python at {python}" if check is None else check.stderr.strip().splitlines()[-1]
            )
            return {
                "unavailable": f"torch/torchvision not importable ({why}); see docs/BENCHMARKS.md"
            }
    command = [
        python,
        __file__,
        "--worker",
        name,
        "--data",
        str(args.data),
        "--image-size",
        str(args.image_size),
        "--batch-size",
        str(args.batch_size),
        "--batches",
        str(args.batches),
        "--warmup",
        str(args.warmup),
        "--epochs",
        str(args.epochs),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"unavailable": f"failed: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict, args) -> str:
    epochs = range(1, args.epochs + 1)
    header = f"{'pipeline':8}  {'first batch s':>13}  " + "  ".join(
        f"{f'epoch {e} img/s':>13}  {'ms/batch':>8}  {'epoch s':>7}" for e in epochs
    )
    lines = [header]
    for name, result in results.items():
        if "unavailable" in result:
            lines.append(f"{name:8}  unavailable: {result['unavailable']}")
            continue
        cells = "  ".join(
            f"{e['images_per_s']:13.0f}  {e['ms_per_batch']:8.1f}  {e['epoch_s']:7.1f}"
            for e in result["epochs"]
        )
        lines.append(f"{name:8}  {result['first_batch_s']:13.1f}  {cells}")
    ours_result = results.get("ours", {})
    for other in ("keras", "torch", "ours_rgb"):
        if "epochs" in ours_result and "epochs" in results.get(other, {}):
            pairs = list(zip(ours_result["epochs"], results[other]["epochs"], strict=True))
            rates = ", ".join(
                f"epoch {i} {o['images_per_s'] / t['images_per_s']:.2f}x"
                for i, (o, t) in enumerate(pairs, 1)
            )
            walls = ", ".join(
                f"epoch {i} {t['epoch_s'] / o['epoch_s']:.2f}x" for i, (o, t) in enumerate(pairs, 1)
            )
            lines.append(f"ours / {other}: timed batches {rates}; whole epoch {walls}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)))
        return 0
    if not args.data.is_dir():
        print(
            f"error: no data folder at {args.data} (see ../shared/data/README.md)", file=sys.stderr
        )
        return 2
    size = warm_page_cache(args.data)
    print(
        f"data {args.data} ({size / 1e6:.0f} MB), {os.cpu_count()} CPUs "
        f"(load {os.getloadavg()[0]:.1f}), "
        f"{args.image_size} px, batch {args.batch_size}, {args.batches} batches timed "
        f"per epoch after {args.warmup} warm-up",
        flush=True,
    )
    runs = {name: [] for name in args.only or CONTENDERS}
    for repeat in range(args.repeats):  # interleaved, so a busy spell hits all alike
        for name in runs:
            runs[name].append(run_contender(name, args))
            load = os.getloadavg()[0]
            print(f"  run {repeat + 1}/{args.repeats} {name}: done (load {load:.1f})", flush=True)
    results = {name: median_run(r) for name, r in runs.items()}
    print(table(results, args))
    if args.json:
        args.json.write_text(json.dumps({"median": results, "runs": runs}, indent=2))
    return 0


def median_run(runs: list[dict]) -> dict:
    """Per epoch, the run with the median images per second."""
    good = [r for r in runs if "epochs" in r]
    if not good:
        return runs[0]
    epochs = []
    for e in range(len(good[0]["epochs"])):
        ranked = sorted((r["epochs"][e] for r in good), key=lambda x: x["images_per_s"])
        epochs.append(ranked[len(ranked) // 2])
    first = sorted(r["first_batch_s"] for r in good)[len(good) // 2]
    return {"first_batch_s": first, "epochs": epochs, "runs": len(good)}


if __name__ == "__main__":
    sys.exit(main())
