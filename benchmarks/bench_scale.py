"""Hospital-scale data: time to the first training batch and peak memory against the file count.

For each N (default 4,000, 40,000 and 200,000) the script makes a farm of hard
links to the shared chest X-rays (free: links cost a directory entry each), in
the public layout (train/ val/ test/ of NORMAL/ PNEUMONIA/), with patient-style
names: copy c of patient P is patient `person{c * 100000 + P}`, so patient
grouping stays meaningful. Beside the folders, `manifest.csv` lists the same
files (path, label, patient, split) and `pooled.csv` the same without the split
column, as the public tables come (RSNA, ChestX-ray14, CheXpert): test and val
are then carved from all N, grouped by patient.

Each source (folder, manifest) is then loaded twice, each time in a fresh
process with the same fresh KERAS_HOME: the first run finds no file index, the
second finds the first one's. A run does what `keras_app.train` does before its
first step, timed after imports: `load_dataset`, the summary and split notes,
the content hashes of train and val (`training_images.sha256`), the three
pipelines (`make_dataset`, 224 px, standard augmentation, batch 32) and the
first training batch. It reports each part, the scan cost per file, and the
process's peak resident memory (ru_maxrss, TensorFlow's import included).

With `--through-keras-app` a run is instead `keras_app.train`'s own `main`
(simple_cnn, random weights, a throwaway run folder), timed from its call (every
module imported before) to the end of its first training step, where the run is
stopped: the whole start of a real run, model, run folder files and the
augmented-image grid included.

    .venv/bin/python benchmarks/bench_scale.py --farms /work/scratch
    .venv/bin/python benchmarks/bench_scale.py --sizes 4000 --kinds folder \\
        --pythonpath ../old-checkout   # another checkout's data_pipelines
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "chest_xray_224"
SIZES = (4000, 40000, 200000)
KINDS = ("folder", "manifest", "pooled")
# The spec of each kind, from the farm's folder.
SPECS = {
    "folder": "{farm}",
    "manifest": "csv:{farm}/manifest.csv",
    "pooled": "csv:{farm}/pooled.csv",
}
# The release's patient prefixes (as data_pipelines.splits reads them; not imported here, so
# that this process does not load TensorFlow or another checkout's data_pipelines).
_PATIENT = tuple(map(re.compile, (r"^(person\d+)_", r"^(NORMAL2-IM-\d+)-", r"^(IM-\d+)-")))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--farms", type=Path, required=True, help="folder for the link farms")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--kinds", choices=KINDS, nargs="+", default=list(KINDS))
    p.add_argument("--source", type=Path, default=SHARED, help="the images linked to")
    p.add_argument("--pythonpath", help="import data_pipelines from here (default: this repo)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument(
        "--through-keras-app",
        action="store_true",
        help="time keras_app.train's main to the end of its first training step instead",
    )
    p.add_argument("--worker", nargs=2, metavar=("KIND", "FARM"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        return (keras_app_worker if args.through_keras_app else worker)(*args.worker)
    results = []
    for n in args.sizes:
        farm = make_farm(args.source, args.farms / f"farm-{n}", n)
        for kind in args.kinds:
            with tempfile.TemporaryDirectory(prefix="bench-scale-keras-home-") as home:
                for run in ("first", "second"):
                    measured = run_worker(args, kind, farm, home)
                    result = {"n": n, "kind": kind, "run": run, **measured}
                    results.append(result)
                    print(format_row(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


def run_worker(args, kind: str, farm: Path, home: str) -> dict:
    env = {**os.environ, "KERAS_HOME": home, "PYTHONPATH": args.pythonpath or str(REPO)}
    command = [sys.executable, __file__, "--farms", str(args.farms), "--worker", kind, str(farm)]
    if args.through_keras_app:
        command.append("--through-keras-app")
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker failed ({kind} {farm}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def format_row(r: dict) -> str:
    if "to_first_step_s" in r:
        return (
            f"N={r['n']:>6} {r['kind']:<8} {r['run']:<6} keras_app.train to the end of its "
            f"first step {r['to_first_step_s']:6.1f} s after imports ({r['imports_s']:.1f} s)  "
            f"peak {r['peak_gb']:.2f} GB"
        )
    return (
        f"N={r['n']:>6} {r['kind']:<8} {r['run']:<6} load {r['load_s']:6.1f} s "
        f"({r['load_ms_per_file']:.3f} ms/file)  hashes {r['hashes_s']:5.1f} s  "
        f"pipelines {r['pipelines_s']:4.1f} s  first batch {r['first_batch_s']:4.1f} s  "
        f"= {r['to_first_batch_s']:6.1f} s after imports ({r['imports_s']:.1f} s)  "
        f"peak {r['peak_gb']:.2f} GB"
    )


# --- the farm ------------------------------------------------------------------------------------


def patient_of(name: str) -> str:
    for pattern in _PATIENT:
        match = pattern.match(name)
        if match:
            return match.group(1)
    return name


def make_farm(source: Path, farm: Path, n: int) -> Path:
    """`n` hard links to the images of `source` in its layout, and manifest.csv beside them.

    Reused when `farm/pooled.csv` exists (it is written last).
    """
    if (farm / "pooled.csv").exists():
        return farm
    if (farm / "manifest.csv").exists():  # links and manifest made: only the pooled table
        return _write_pooled(farm)
    files = sorted(source.rglob("*.jpeg"))
    random.Random(0).shuffle(files)  # each copy a random sample: every split in proportion
    patients = {p: i for i, p in enumerate(sorted({patient_of(f.name) for f in files}))}
    rows, made, copy = ["path,label,patient,split"], 0, 0
    while made < n:
        for f in files[: n - made]:
            rel = f.relative_to(source)
            patient = f"person{copy * 100000 + patients[patient_of(f.name)]}"
            link = farm / rel.parent / f"{patient}_c{copy}_{f.stem}.jpeg"
            link.parent.mkdir(parents=True, exist_ok=True)
            os.link(f, link)
            rows.append(f"{link.relative_to(farm)},{rel.parts[1]},{patient},{rel.parts[0]}")
        made = min(n, made + len(files))
        copy += 1
    (farm / "manifest.csv").write_text("\n".join(rows) + "\n")
    return _write_pooled(farm)


def _write_pooled(farm: Path) -> Path:
    rows = (farm / "manifest.csv").read_text().splitlines()
    (farm / "pooled.csv").write_text("\n".join(row.rpartition(",")[0] for row in rows) + "\n")
    return farm


# --- one run -------------------------------------------------------------------------------------


def worker(kind: str, farm: str) -> None:
    """One run in this process: prints a JSON line of timings."""
    started = time.perf_counter()
    from data_pipelines import load_dataset, make_dataset

    imported = time.perf_counter()
    data = load_dataset(SPECS[kind].format(farm=farm), report=lambda line: None)
    data.summary()
    for name in data.splits:
        data.split_note(name, 0.1, 42)
    loaded = time.perf_counter()
    seen = [h for name in ("train", "val") for h in data.splits[name].content_hashes()]
    hashed = time.perf_counter()
    common = dict(image_size=(224, 224), batch_size=32, num_classes=len(data.class_names))
    datasets = {
        name: make_dataset(
            data.splits[name],
            training=name == "train",
            augment="standard" if name == "train" else "none",
            **common,
        )
        for name in ("train", "val", "test")
    }
    built = time.perf_counter()
    next(iter(datasets["train"]))
    first = time.perf_counter()
    n = sum(len(s) for s in data.splits.values()) + len(data.skipped)
    result = {
        "files": n,
        "seen_hashes": len(seen),
        "imports_s": imported - started,
        "load_s": loaded - imported,
        "load_ms_per_file": 1000 * (loaded - imported) / n,
        "hashes_s": hashed - loaded,
        "pipelines_s": built - hashed,
        "first_batch_s": first - built,
        "to_first_batch_s": first - imported,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }
    print(json.dumps(result))


def keras_app_worker(kind: str, farm: str) -> None:
    """One run of keras_app.train's main, stopped after its first training step."""
    started = time.perf_counter()
    import keras

    import data_pipelines  # noqa: F401  (imported here, not timed)
    from keras_app import model, train  # noqa: F401
    from keras_app.training import distributed  # noqa: F401

    imported = time.perf_counter()

    class FirstStepDone(Exception):
        pass

    def stop(callbacks, batch, logs=None):
        raise FirstStepDone

    keras.callbacks.CallbackList.on_train_batch_end = stop
    spec = SPECS[kind].format(farm=farm)
    with tempfile.TemporaryDirectory(prefix="bench-scale-run-") as run_dir:
        argv = ["--model", "simple_cnn", "--weights", "none", "--data", spec]
        argv += ["--run-dir", f"{run_dir}/run", "--no-feature-cache"]
        try:
            train.main(argv)
        except FirstStepDone:
            done = time.perf_counter()
        else:
            raise SystemExit("keras_app.train finished without a training step")
    result = {
        "imports_s": imported - started,
        "to_first_step_s": done - imported,
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
