"""make_dataset: shapes, order, determinism by seed, caching, bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from data_pipelines import DataError, Split, load_dataset, make_dataset
from tests.makers import grey_pixels, write_image

SIZE = (32, 32)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def small(digits):
    """100 digits: enough for several batches, fast."""
    return digits.splits["train"].subset(np.arange(100))


def batches(dataset, n=None):
    out = [(x.numpy(), y.numpy()) for x, y in (dataset.take(n) if n else dataset)]
    return np.concatenate([x for x, _ in out]), np.concatenate([y for _, y in out])


def build(split, **kwargs):
    args = dict(image_size=SIZE, batch_size=16, training=True, num_classes=10)
    return make_dataset(split, **{**args, **kwargs})


def test_training_batches(small):
    dataset = build(small, augment="standard")
    assert dataset.element_spec[0].shape.as_list() == [None, 32, 32, 3]
    assert dataset.element_spec[1].shape.as_list() == [None, 10]
    images, labels = batches(dataset)
    assert images.shape == (100, 32, 32, 3) and images.dtype == np.float32
    assert labels.shape == (100, 10) and labels.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 255.0
    np.testing.assert_array_equal(labels.sum(axis=1), 1.0)
    assert sorted(labels.argmax(1).tolist()) == sorted(small.labels.tolist())


def test_evaluation_is_in_split_order_and_not_augmented(small):
    dataset = build(small, training=False, augment="standard")
    images, labels = batches(dataset)
    np.testing.assert_array_equal(labels.argmax(1), small.labels)
    expected = tf.image.resize(small.images[..., None].astype(np.float32), SIZE)
    np.testing.assert_allclose(images[..., 0], np.round(expected[..., 0]), atol=0.5)
    np.testing.assert_array_equal(images, batches(build(small, training=False))[0])


def test_same_seed_same_batches(small):
    a = batches(build(small, augment="standard", seed=5))
    b = batches(build(small, augment="standard", seed=5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = batches(build(small, augment="standard", seed=6))
    assert not np.array_equal(a[1], c[1])


def test_each_epoch_reshuffles_but_repeatably(small):
    first = build(small, seed=1)
    epochs = [batches(first)[1].argmax(1) for _ in range(2)]
    assert not np.array_equal(*epochs)
    again = build(small, seed=1)
    np.testing.assert_array_equal(batches(again)[1].argmax(1), epochs[0])


def test_shuffle_override(small):
    _, labels = batches(build(small, shuffle=False))
    np.testing.assert_array_equal(labels.argmax(1), small.labels)


def test_no_augmentation_when_level_is_none(small):
    plain = batches(build(small, shuffle=False, augment="none"))[0]
    evaluation = batches(build(small, training=False))[0]
    np.testing.assert_array_equal(plain, evaluation)


def test_augmentation_changes_training_images(small):
    augmented = batches(build(small, shuffle=False, augment="standard"))[0]
    evaluation = batches(build(small, training=False))[0]
    assert not np.allclose(augmented, evaluation)


@pytest.mark.parametrize("cache", [True, False, "file"])
def test_cache_modes_give_the_same_data(small, cache, tmp_path):
    if cache == "file":
        cache = str(tmp_path / "cache")
    dataset = build(small, training=False, cache=cache)
    first, second = batches(dataset)[0], batches(dataset)[0]
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, batches(build(small, training=False, cache=False))[0])
    if isinstance(cache, str):
        assert list(tmp_path.glob("cache*"))


def test_repeat(small):
    images, _ = batches(build(small, repeat=True), n=10)
    assert len(images) == 160


def test_last_batch_may_be_smaller(small):
    sizes = [len(x) for x, _ in build(small, training=False, batch_size=30)]
    assert sizes == [30, 30, 30, 10]


def file_split(paths, labels):
    return Split("train", ("a", "b"), np.asarray(labels), files=[str(p) for p in paths])


def test_files_of_every_kind(image_files):
    paths = list(image_files.values())
    split = file_split(paths, [i % 2 for i in range(len(paths))])
    images, labels = batches(build(split, num_classes=2, training=False, batch_size=4))
    assert images.shape == (len(paths), 32, 32, 3)
    np.testing.assert_array_equal(labels.argmax(1), split.labels)


def test_pad_to_aspect(tmp_path):
    wide = write_image(tmp_path / "wide.png", np.full((16, 32), 255, np.uint8))
    tall = write_image(tmp_path / "tall.png", grey_pixels(32, 8))
    split = file_split([wide, tall], [0, 1])
    images, _ = batches(build(split, num_classes=2, training=False, pad_to_aspect=True))
    assert images[0, 0].max() == 0 and images[0, 16].min() == 255  # bars top and bottom
    assert images[1, :, 0].max() == 0  # bars left and right
    stretched, _ = batches(build(split, num_classes=2, training=False))
    assert stretched[0].min() == 255


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": (0, 32)}, "image_size"),
        ({"image_size": "big"}, "image_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_classes": 5}, "num_classes"),
        ({"augment": "extreme"}, "augment level"),
    ],
)
def test_bad_arguments(small, kwargs, match):
    with pytest.raises(DataError, match=match):
        build(small, **kwargs)


def test_first_batch_mixes_classes_of_a_class_sorted_split(small):
    by_class = small.subset(np.argsort(small.labels, kind="stable"))
    _, labels = next(iter(build(by_class, batch_size=16)))
    assert len(set(labels.numpy().argmax(1).tolist())) > 3


def test_grey_split_runs_on_one_channel_with_the_same_output(tmp_path):
    paths = [write_image(tmp_path / f"{i}.png", grey_pixels(40, 48, seed=i)) for i in range(12)]
    as_colour = file_split(paths, [i % 2 for i in range(12)])  # greyness unknown
    grey = Split(
        "train", ("a", "b"), as_colour.labels, files=as_colour.files, grey=np.ones(12, bool)
    )
    assert grey.all_grey
    assert not as_colour.all_grey
    for kwargs in ({"training": False}, {"training": True, "augment": "standard"}):
        one, _ = batches(build(grey, num_classes=2, **kwargs))
        three, _ = batches(build(as_colour, num_classes=2, **kwargs))
        assert one.shape == three.shape == (12, 32, 32, 3)
        np.testing.assert_array_equal(one[..., 0], one[..., 2])
        np.testing.assert_allclose(one, three, atol=1e-3)
