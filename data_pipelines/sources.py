"""`load_dataset`: one `--data SPEC` string to class names and train/val/test splits.

Specs:
    None or "digits"       scikit-learn's 8x8 digits, embedded, no network.
    PATH                   a folder: train/ val/ test/ of class folders, or class folders alone.
    csv:PATH               a manifest: a CSV of image paths, labels and patients (see
                           `manifest`); a bare PATH ending .csv too.
    tfrecord:PATH          TFRecord shards written by `python -m data_pipelines.shard`,
                           their splits as written (see `records`).
    tfds:NAME[:SPLIT]      tensorflow-datasets, from TFDS_DATA_DIR (never downloads).
    npz:PATH               a MedMNIST-format .npz file (a bare PATH ending .npz too).
    medmnist:NAME[@SIZE]   a MedMNIST file, downloaded once into the Keras cache.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from data_pipelines.data import (
    ImageData,
    Split,
    fingerprint_arrays,
    fingerprint_files,
    fingerprint_rows,
    typical_size,
)
from data_pipelines.errors import DataError
from data_pipelines.manifest import ManifestOptions, read_manifest
from data_pipelines.medmnist import MEDMNIST, fetch_medmnist, parse_medmnist_spec
from data_pipelines.records import read_shards
from data_pipelines.scan import check_files, report_left_out, report_to_stderr, scan_split_folders
from data_pipelines.splits import carve, is_tiny, patient_groups

SPEC_HELP = (
    "a folder, csv:PATH, tfrecord:PATH, digits, tfds:NAME[:SPLIT], npz:PATH or medmnist:NAME[@SIZE]"
)
# Folder names accepted for each split of a folder in the public layout.
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "validation", "valid"), "test": ("test",)}
SPLIT_ORDER = ("train", "val", "test")
# The one split of `load_dataset(spec, whole=True)`.
ALL = "all"


def load_dataset(
    spec: str | None,
    *,
    val_fraction: float = 0.1,
    seed: int = 42,
    whole: bool = False,
    report: Callable[[str], None] = report_to_stderr,
    manifest: ManifestOptions | None = None,
) -> ImageData:
    """Loads a data source and completes its train/val/test splits.

    A missing test split is carved from train; a missing or tiny val split (see
    `splits.is_tiny`) is merged into train and a new one carved, stratified and
    grouped by patient. `ImageData.own_splits` says which splits the source had.
    TFRecord shards keep the splits they were written with (`ImageData.carved_with`).

    Args:
        spec: see the module docstring; None means "digits".
        val_fraction: share of train carved as val (and as test where there is none).
        seed: the same seed gives the same splits.
        whole: one split, "all", of every readable image the source has, in its
            own splits' order, nothing carved: for judging a model on external data.
        report: called with each line about files left out (one per unreadable
            image or bad manifest row, then the totals) and about a long first check;
            plain lines on stderr by default.
        manifest: the task and columns of a manifest (`csv:PATH`); None for the
            defaults. Other sources take none.

    Returns:
        An `ImageData`.

    Raises:
        DataError: unknown spec, missing path, unreadable or unusable data.
    """
    if not 0.0 < val_fraction <= 0.5:
        raise DataError(f"val_fraction must be in (0, 0.5]. Received val_fraction={val_fraction}")
    options = manifest or ManifestOptions()
    data = _load_source("digits" if spec is None else spec.strip(), report, options)
    if whole:
        return dataclasses.replace(data, splits={ALL: all_of(data.splits.values())})
    if data.carved_with is not None:
        if data.carved_with != (val_fraction, seed):
            fraction, kept_seed = data.carved_with
            report(
                f"{data.name}: the splits written with val fraction {fraction} and seed "
                f"{kept_seed} are kept (val_fraction={val_fraction}, seed={seed} carve nothing)"
            )
        return data
    splits = complete_splits(data.splits, val_fraction=val_fraction, seed=seed)
    return dataclasses.replace(data, splits=splits)


def _load_source(spec: str, report: Callable[[str], None], options: ManifestOptions) -> ImageData:
    """The source's data with the splits it has (at least train), nothing carved."""
    for suffix, scheme in ((".npz", "npz"), (".csv", "csv")):
        if spec.lower().endswith(suffix) and Path(spec).expanduser().is_file():
            spec = f"{scheme}:{spec}"
    scheme, sep, rest = spec.partition(":")
    if sep and scheme == "csv":
        return _load_manifest(Path(rest).expanduser(), options, report)
    if sep and scheme == "tfrecord":
        return read_shards(rest, manifest=options)
    if not options.is_default:
        raise DataError(
            f"label, path_column, patient_column and uncertain apply to a manifest (csv:PATH) "
            "and to shards written from one. "
            f"Received data={spec!r} with {options}"
        )
    if spec == "digits":
        return _load_digits()
    if sep and scheme == "tfds":
        return _load_tfds(rest)
    if sep and scheme == "npz":
        return _load_npz(Path(rest).expanduser(), name=f"npz:{Path(rest).stem}")
    if sep and scheme == "medmnist":
        name, size = parse_medmnist_spec(rest)
        return _load_npz(fetch_medmnist(name, size), name=f"medmnist:{name}@{size}")
    if Path(spec).expanduser().is_dir():
        return _load_folder(Path(spec).expanduser(), report)
    if sep and len(scheme) > 1 and not Path(spec).exists():
        raise DataError(
            f"unknown data spec scheme {scheme!r}; expected {SPEC_HELP}. Received data={spec!r}"
        )
    raise DataError(f"no data folder at {spec}; expected {SPEC_HELP}. Received data={spec!r}")


def all_of(splits: Iterable[Split]) -> Split:
    """Every item of `splits`, in order, as one split named "all"."""
    first, *rest = splits
    named = dataclasses.replace(first, name=ALL)
    return functools.reduce(lambda a, b: concat_splits(a, b, ALL), rest, named)


def complete_splits(
    splits: dict[str, Split], *, val_fraction: float, seed: int
) -> dict[str, Split]:
    """Fills in a missing test split and a missing or tiny val split from train."""
    train = splits["train"]
    num_classes = len(train.class_names)
    val = splits.get("val")
    if val is not None and is_tiny(val.labels, num_classes):
        train, val = concat_splits(train, val, "train"), None
    test = splits.get("test")
    if test is None:
        keep, carved = carve(train.labels, train.groups, val_fraction, seed)
        train, test = train.subset(keep), train.subset(carved, "test")
    if val is None:
        keep, carved = carve(train.labels, train.groups, val_fraction, seed)
        train, val = train.subset(keep), train.subset(carved, "val")
    return {"train": train, "val": val, "test": test}


def concat_splits(a: Split, b: Split, name: str) -> Split:
    """The items of `a` then `b` as one split."""
    files = a.files + b.files if a.files is not None else None
    images = np.concatenate([a.images, b.images]) if a.images is not None else None
    if a.records is not b.records:
        raise DataError(f"cannot join splits {a.name} and {b.name} of two sets of shards")
    ids = None if a.record_ids is None else np.concatenate([a.record_ids, b.record_ids])
    groups = None
    if a.groups is not None and b.groups is not None:
        groups = np.concatenate([a.groups, b.groups])
    return Split(
        name,
        a.class_names,
        np.concatenate([a.labels, b.labels]),
        files=files,
        images=images,
        groups=groups,
        sizes=np.concatenate([a.sizes, b.sizes]),
        grey=None if a.grey is None or b.grey is None else np.concatenate([a.grey, b.grey]),
        hashes=None
        if a.hashes is None or b.hashes is None
        else np.concatenate([a.hashes, b.hashes]),
        records=a.records,
        record_ids=ids,
    )


def _load_folder(root: Path, report: Callable[[str], None]) -> ImageData:
    folders = {
        split: next((root / n for n in names if (root / n).is_dir()), None)
        for split, names in SPLIT_FOLDERS.items()
    }
    flat = folders["train"] is None
    if flat:  # a folder of class folders: one pool of images, loaded as train
        folders = {"train": root}
    scans = scan_split_folders(
        {split: path for split, path in folders.items() if path},
        index_key=f"folder:{root.resolve()}",
        report=report,
    )
    class_names = scans["train"].class_names
    for split, scan in scans.items():
        if scan.class_names != class_names:
            raise DataError(
                f"class folders differ between splits in {root}: train has {list(class_names)}, "
                f"{split} has {list(scan.class_names)}"
            )
    if len(class_names) < 2:
        raise DataError(f"need at least 2 classes, found {list(class_names)} in {root}")
    all_files = [f for scan in scans.values() for f in scan.files]
    groups = patient_groups(all_files)
    splits, start = {}, 0
    for split, scan in scans.items():
        end = start + len(scan.files)
        splits[split] = Split(
            split,
            class_names,
            scan.labels,
            files=scan.files,
            groups=None if groups is None else groups[start:end],
            sizes=scan.sizes,
            grey=scan.grey,
            hashes=scan.hashes,
        )
        start = end
    skipped = [s for scan in scans.values() for s in scan.skipped]
    ignored = [f for scan in scans.values() for f in scan.ignored]
    report_left_out(skipped, ignored, root, report)
    sizes = np.concatenate([scan.sizes for scan in scans.values()])
    return ImageData(
        root.name,
        class_names,
        splits,
        fingerprint_files(
            root, all_files, np.concatenate([scan.byte_sizes for scan in scans.values()])
        ),
        typical_size(sizes),
        skipped,
        ignored,
        own_splits=() if flat else tuple(splits),
    )


def _load_manifest(path: Path, options: ManifestOptions, report) -> ImageData:
    """A manifest's files, checked through the file index; bad rows and files left out."""
    manifest = read_manifest(path, options)
    for note in manifest.notes:
        report(f"{path}: {note}")
    stats, missing, bad = np.zeros((len(manifest.files), 2), dtype=np.int64), [], manifest.bad[:]
    for i, file in enumerate(manifest.files):
        try:
            info = os.stat(file)
            stats[i] = info.st_size, info.st_mtime_ns
        except OSError as e:
            missing.append(i)
            reason = "missing file" if isinstance(e, FileNotFoundError) else e.strerror
            bad.append((file, f"{reason} (row {manifest.rows[i]})"))
    present = np.setdiff1d(np.arange(len(manifest.files)), missing)
    files = [manifest.files[i] for i in present]
    facts = check_files(
        files,
        stats[present, 0],
        stats[present, 1],
        index_key=f"manifest:{path.resolve()}",
        report=report,
    )
    unreadable = sorted(facts.reasons)
    skipped = bad + [(files[r], facts.reasons[r]) for r in unreadable]
    usable = np.setdiff1d(np.arange(len(files)), unreadable)
    rows, facts = present[usable], facts.take(usable)
    report_left_out(skipped, [], path, report, noun="manifest row")
    return _manifest_data(path, manifest, rows, facts, skipped)


def _manifest_data(path: Path, manifest, rows: np.ndarray, facts, skipped) -> ImageData:
    """ImageData of a manifest's usable `rows`, whose checked facts are `facts`."""
    labels = manifest.labels[rows]
    if len(rows) == 0:
        first = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"no usable image in {path}: {len(skipped)} rows left out{first}")
    names = manifest.class_names
    present = np.bincount(labels, minlength=len(names))
    if len(names) < 2 or present.min() == 0:
        raise DataError(
            f"need at least 2 classes with images; {path} has "
            f"{dict(zip(names, present.tolist(), strict=True))} usable images per class"
        )
    sizes = np.stack([facts.height, facts.width], axis=1).astype(np.int64)
    whole = Split(
        "train",
        names,
        labels,
        files=facts.paths,
        groups=None if manifest.groups is None else manifest.groups[rows],
        sizes=sizes,
        grey=facts.grey,
        hashes=facts.digest,
    )
    if manifest.splits is None:
        splits, own = {"train": whole}, ()
    else:
        where = manifest.splits[rows]
        splits = {
            name: whole.subset(np.flatnonzero(where == name), name)
            for name in SPLIT_ORDER
            if np.any(where == name)
        }
        if "train" not in splits:
            raise DataError(f"the split column of {path} names no usable train image")
        own = tuple(splits)
    fingerprint = fingerprint_rows(
        path.parent, facts.paths, facts.byte_size, [names[i] for i in labels]
    )
    return ImageData(
        manifest.name,
        names,
        splits,
        fingerprint,
        typical_size(sizes),
        skipped,
        [],
        own_splits=own,
    )


def _arrays_data(
    name: str,
    class_names,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    own_splits: tuple[str, ...],
):
    """ImageData from `{split: (images uint8, labels int)}`."""
    if len(class_names) < 2:
        raise DataError(f"need at least 2 classes, {name} has {list(class_names)}")
    splits = {
        split: Split(split, tuple(class_names), labels.astype(np.int64), images=images)
        for split, (images, labels) in arrays.items()
    }
    digest = fingerprint_arrays(*(a for pair in arrays.values() for a in pair))
    images = arrays["train"][0]
    size = tuple(images.shape[1:3])
    return ImageData(name, tuple(class_names), splits, digest, size, own_splits=own_splits)


def _load_digits() -> ImageData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0-16 ink levels to 0-255 grey, the range every other source has.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    names = tuple(str(i) for i in range(10))
    return _arrays_data("digits", names, {"train": (images, digits.target)}, own_splits=())


def _load_npz(path: Path, *, name: str) -> ImageData:
    if not path.is_file():
        raise DataError(f"no .npz file at {path}. Received data={name!r}")
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:  # zip and pickle errors of many kinds
        raise DataError(f"cannot read {path} as .npz: {e}") from e
    if "train_images" not in arrays or "train_labels" not in arrays:
        raise DataError(
            f"{path} is not in the MedMNIST format (train_images, train_labels, "
            f"...); it holds {sorted(arrays)}"
        )
    splits = {}
    for split, prefix in (("train", "train"), ("val", "val"), ("test", "test")):
        if f"{prefix}_images" not in arrays:
            continue
        labels = arrays[f"{prefix}_labels"]
        if labels.ndim > 1 and labels.shape[1] != 1:
            raise DataError(
                f"{path} has multi-label {prefix}_labels of shape {labels.shape}; "
                "only single-label classification is supported"
            )
        splits[split] = (arrays[f"{prefix}_images"].astype(np.uint8), labels.reshape(-1))
    medmnist_name = path.stem.split("_")[0]
    num_classes = int(max(labels.max() for _, labels in splits.values())) + 1
    known = MEDMNIST.get(medmnist_name)
    if known is not None and len(known.class_names) == num_classes:
        class_names = known.class_names
    else:
        class_names = tuple(str(i) for i in range(num_classes))
    return _arrays_data(name, class_names, splits, own_splits=tuple(splits))


def _load_tfds(rest: str) -> ImageData:
    import tensorflow_datasets as tfds

    name, _, split = rest.partition(":")
    data_dir = os.environ.get("TFDS_DATA_DIR") or None
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DataError(
            f"unknown tensorflow-datasets name {name!r}. Received data='tfds:{rest}'"
        ) from e
    # Read before touching builder.info: as_dataset only looks in data_dir, while
    # preparing (what tfds.load does by default) would try to download for minutes.
    wanted = {"train": split} if split else {"train": "train", "val": "validation", "test": "test"}
    arrays = {}
    for ours, theirs in wanted.items():
        try:
            arrays[ours] = _tfds_arrays(builder, theirs)
        except AssertionError as e:  # tfds' way of saying "not prepared in data_dir"
            raise DataError(
                f"tfds:{name} is not prepared in {builder.data_dir} and cannot be downloaded "
                f"here. Run `tfds build {name}` where there is network and copy its data dir "
                f"to {builder.data_dir}, or point TFDS_DATA_DIR at one that has it"
            ) from e
        except DataError:
            raise
        except ValueError as e:  # an unknown split name, or no (image, label) keys
            if ours == "train":
                raise DataError(f"cannot read split {theirs!r} of tfds:{name}: {e}") from e
    keys = builder.info.supervised_keys
    label = builder.info.features[keys[1]]
    names = getattr(label, "names", None) or [str(i) for i in range(label.num_classes)]
    # One named split is one pool of images; without a name, tfds' splits are the source's.
    own = () if split else tuple(arrays)
    return _arrays_data(f"tfds:{rest}", tuple(names), arrays, own_splits=own)


def _tfds_arrays(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    dataset = builder.as_dataset(split=split, as_supervised=True)
    images, labels = [], []
    for image, label in tfds.as_numpy(dataset):
        images.append(image)
        labels.append(label)
    shapes = {i.shape for i in images}
    if len(shapes) > 1:
        raise DataError(
            f"{builder.name} images have {len(shapes)} different shapes; "
            "only equal-size tfds images are supported"
        )
    return np.stack(images).astype(np.uint8), np.asarray(labels, dtype=np.int64)
