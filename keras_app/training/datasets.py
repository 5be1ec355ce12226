"""A run's data as tf.data pipelines: loaded once, split, augmented for training only."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import data_pipelines
from keras_app.artifacts.runs import RunFolder
from keras_app.recipe.config import TrainConfig, manifest_options


def load_data(config: TrainConfig):
    """Loads the source, prints its split table, and checks it can train this backbone."""
    data = data_pipelines.load_dataset(
        config.data,
        val_fraction=config.val_fraction,
        seed=config.seed,
        manifest=manifest_options(config.to_dict()),
    )
    print(data.summary(), flush=True)
    return data


def build_datasets(config: TrainConfig, data, replicas: int = 1) -> dict[str, tf.data.Dataset]:
    """train (shuffled, augmented; its outside of the lungs swapped or erased where
    `--outside-lungs` asks), val and test (deterministic) pipelines, and preview: the
    first training images as train makes them, for the augmented grid."""
    regions = outside_regions(config, data)
    common = dict(
        image_size=(config.image_size,) * 2,
        batch_size=config.batch_size,
        num_classes=len(data.class_names),
        pad_to_aspect=config.pad_to_aspect,
        seed=config.seed,
    )
    cache = {"memory": True, "none": False}.get(config.cache, config.cache)
    datasets = {}
    for split in ("train", "val", "test"):
        training = split == "train"
        datasets[split] = data_pipelines.make_dataset(
            data.splits[split],
            training=training,
            augment=config.augment if training else "none",
            cache=cache if training else (cache is not False),
            repeat=training and config.steps_per_epoch is not None,
            **(outside_args(config, regions) if training else {}),
            **common,
        )
    # The grid of augmented images: the first few training images through the same stages,
    # unshuffled and uncached, so that drawing it does not fill the shuffle buffer (2,048
    # decoded images, 2 s at 224 px on 2 cores) once more before the first step.
    few = np.arange(min(PREVIEW, len(data.splits["train"])))
    datasets["preview"] = data_pipelines.make_dataset(
        data.splits["train"].subset(few),
        training=True,
        shuffle=False,
        augment=config.augment,
        cache=False,
        **(outside_args(config, regions[few] if regions is not None else None)),
        **common,
    )
    if replicas > 1:
        datasets["fit_val"] = even_replica_batches(
            datasets["val"], len(data.splits["val"]), config.batch_size, replicas
        )
    return datasets


# --outside-lungs needs frontal chest films; elsewhere it is skipped, and said. Thumbnails
# (digits' 8 px, MedMNIST's 28 px) carry no lung outline to estimate; on films the
# estimate falls back to its box prior on about 4% of them (docs/lung_region/README.md),
# on digits at 71 px on 45%, on pixel noise on all. A sample of 16 keeps the check under
# a second.
MIN_NATIVE_SIDE = 32
# Images in the augmented grid written to TensorBoard at the start of a run.
PREVIEW = 16
# The regions ride through the pipeline as one bool array of the whole train split, held
# in memory twice (the array and tf.data's copy of it) beside the image cache: above this
# size they would crowd out the images (200,000 films at 224 px: 10 GB), so the outside of
# the lungs is left as it is, and said. 512 MiB: 10,700 films at 224 px, 6,000 at 299.
MAX_REGION_BYTES = 512 << 20
MAX_FALLBACK = 0.25
FALLBACK_SAMPLE = 16


def outside_regions(config: TrainConfig, data) -> np.ndarray | None:
    """The train split's lung regions for `--outside-lungs`, or None (off, or skipped:
    said on stdout) where the images are not frontal chest films."""
    if config.outside_lungs == "none":
        return None
    from data_pipelines.region_cache import sample_fallback_rate, split_regions

    train, size = data.splits["train"], (config.image_size, config.image_size)
    native = train.min_image_size
    if native is not None and min(native) < MIN_NATIVE_SIDE:
        return _skip(config, f"images of {native[0]}x{native[1]} px are thumbnails, not films")
    need = len(train) * size[0] * size[1]
    if need > MAX_REGION_BYTES:
        return _skip(
            config,
            f"the lung regions of {len(train):,} training images at {size[0]} px would take "
            f"{need / (1 << 30):.1f} GiB of memory twice (at most {MAX_REGION_BYTES >> 20} MiB; "
            "docs/DATA.md)",
        )
    rate = sample_fallback_rate(train, size, pad_to_aspect=config.pad_to_aspect, n=FALLBACK_SAMPLE)
    if rate > MAX_FALLBACK:
        return _skip(
            config,
            f"the lung estimate falls back to its box prior on {rate:.0%} of the first "
            f"{FALLBACK_SAMPLE} training images (not frontal chest films)",
        )
    found = split_regions(train, size, pad_to_aspect=config.pad_to_aspect)
    print(
        f"--outside-lungs {config.outside_lungs} on {config.outside_lungs_p:.0%} of the "
        f"training images; lung region estimated on {len(found)} "
        f"(box prior on {found.fallback_rate:.1%})",
        flush=True,
    )
    return found.region


def _skip(config: TrainConfig, why: str) -> None:
    print(f"--outside-lungs {config.outside_lungs} skipped: {why}", flush=True)
    return None


def outside_args(config: TrainConfig, regions: np.ndarray | None) -> dict:
    """`make_dataset`'s arguments for the outside of the lungs (none where skipped)."""
    if regions is None:
        return {}
    return {
        "regions": regions,
        "outside_lungs": config.outside_lungs,
        "outside_p": config.outside_lungs_p,
    }


def even_replica_batches(dataset: tf.data.Dataset, size: int, batch_size: int, replicas: int):
    """Pads the last batch to a multiple of the replicas with zero-weight rows.

    Keras 3 evaluation under a multi-replica strategy fails when the last batch
    splits unevenly across replicas (keras-team/keras#19246); zero sample
    weights keep the padding out of the validation metrics.
    """
    pad = (-(size % batch_size)) % replicas
    rows = dataset.unbatch().map(lambda x, y: (x, y, tf.constant(1.0)))
    if pad:
        rows = rows.concatenate(rows.take(1).map(lambda x, y, w: (x, y, w * 0.0)).repeat(pad))
    return rows.batch(batch_size)


def data_record(config: TrainConfig, data) -> dict:
    """What environment.json records of the data: its source, fingerprint, splits, weights."""
    weights = (
        data_pipelines.balanced_class_weights(data.splits["train"].labels, len(data.class_names))
        if config.class_weight == "auto"
        else None
    )
    return {
        "spec": config.data or "digits",
        "name": data.name,
        "fingerprint": data.fingerprint,
        "class_names": list(data.class_names),
        "splits": {name: split.counts() for name, split in data.splits.items()},
        "split_notes": {
            name: data.split_note(name, config.val_fraction, config.seed) for name in data.splits
        },
        "class_weight": {data.class_names[i]: round(w, 4) for i, w in weights.items()}
        if weights
        else None,
        "skipped": len(data.skipped),
        "skipped_files": [list(s) for s in data.skipped],
    }


def log_augmented_grid(run_dir, train: tf.data.Dataset) -> None:
    """A grid of the training images as the model sees them (augmented), in TensorBoard."""
    images = data_pipelines.augment_preview(train, n=PREVIEW)
    n, h, w, c = images.shape
    side = int(np.ceil(np.sqrt(n)))
    grid = np.zeros((side * h, side * w, c), np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, side)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = image
    with tf.summary.create_file_writer(str(RunFolder(run_dir).logs / "images")).as_default():
        tf.summary.image("augmented_training_images", grid[None], step=0)
