"""load_dataset for every kind of spec, and the bad-input cases that must be DataErrors."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import pytest

from data_pipelines import DataError, load_dataset
from data_pipelines import medmnist as medmnist_module
from tests.makers import write_dicom, write_image, write_layout

SPLITS = ["train", "val", "test"]


def assert_complete(data, total=None):
    assert list(data.splits) == SPLITS
    for split in data.splits.values():
        assert split.class_names == data.class_names
        assert len(split) > 0
    if total is not None:
        assert sum(len(s) for s in data.splits.values()) == total


# --- digits ---------------------------------------------------------------------------


def test_digits_is_the_default():
    data = load_dataset(None)
    assert data.name == "digits"
    assert data.class_names == tuple(str(i) for i in range(10))
    assert data.native_size == (8, 8)
    assert_complete(data, total=1797)
    train = data.splits["train"]
    assert train.images.dtype == np.uint8 and train.images.max() == 255
    assert train.files is None and train.groups is None
    assert train.min_image_size == (8, 8)
    assert train.all_grey
    for split in data.splits.values():  # stratified: every digit everywhere
        assert min(split.counts().values()) > 0


def test_same_seed_same_splits_other_seed_other_splits():
    a, b = load_dataset("digits", seed=1), load_dataset("digits", seed=1)
    c = load_dataset("digits", seed=2)
    np.testing.assert_array_equal(a.splits["val"].images, b.splits["val"].images)
    assert not np.array_equal(a.splits["val"].images, c.splits["val"].images)
    assert a.fingerprint == c.fingerprint  # same data, split differently


def test_val_fraction_sets_val_size():
    data = load_dataset("digits", val_fraction=0.2)
    assert len(data.splits["test"]) == 360  # 20% of 1797
    assert len(data.splits["val"]) == 288  # 20% of the remaining 1437


@pytest.mark.parametrize("fraction", [0.0, -0.1, 0.7])
def test_bad_val_fraction(fraction):
    with pytest.raises(DataError, match="val_fraction"):
        load_dataset("digits", val_fraction=fraction)


# --- folders ----------------------------------------------------------------------------


def test_folder_layout_kept_when_val_is_big_enough(tmp_path):
    counts = {"train": {"A": 20, "B": 20}, "val": {"A": 25, "B": 25}, "test": {"A": 5, "B": 5}}
    data = load_dataset(str(write_layout(tmp_path, counts)))
    assert data.name == tmp_path.name
    assert data.class_names == ("A", "B")
    assert {k: len(s) for k, s in data.splits.items()} == {"train": 40, "val": 50, "test": 10}
    assert data.native_size == (32, 32)
    assert data.splits["train"].files[0].endswith("a_000.png")


def test_tiny_val_is_merged_and_carved_by_patient(tmp_path):
    counts = {"train": {"A": 40, "B": 60}, "val": {"A": 2, "B": 3}, "test": {"A": 6, "B": 6}}
    data = load_dataset(str(write_layout(tmp_path, counts, patients=True)), val_fraction=0.2)
    assert_complete(data, total=117)
    assert len(data.splits["test"]) == 12  # the given test split is kept as it is
    train, val = data.splits["train"], data.splits["val"]
    assert 15 <= len(val) <= 30
    assert not set(train.groups) & set(val.groups)
    assert set(val.counts()) == {"A", "B"} and min(val.counts().values()) > 0


def test_flat_folder_gets_val_and_test_carved(tmp_path):
    data = load_dataset(str(write_layout(tmp_path, {"": {"cat": 30, "dog": 30}})))
    assert_complete(data, total=60)
    assert len(data.splits["test"]) == 6 and len(data.splits["val"]) == 6


def test_missing_test_is_carved(tmp_path):
    counts = {"train": {"A": 40, "B": 40}, "val": {"A": 25, "B": 25}}
    data = load_dataset(str(write_layout(tmp_path, counts)))
    assert_complete(data, total=130)
    assert len(data.splits["val"]) == 50 and len(data.splits["test"]) == 8


def test_all_image_kinds_in_one_folder(tmp_path, image_files):
    for name in ("A", "B"):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        for kind, path in image_files.items():
            for i in range(5):
                (folder / f"{kind}{i}{path.suffix}").write_bytes(path.read_bytes())
    data = load_dataset(str(tmp_path / "data"))
    assert_complete(data, total=60)
    assert data.skipped == []


def test_unreadable_files_are_listed_and_reported_as_plain_lines(tmp_path, capsys):
    root = write_layout(tmp_path / "data", {"": {"A": 20, "B": 20}})
    (root / "A" / "zero.png").write_bytes(b"")
    (root / "B" / "junk.jpeg").write_bytes(b"junk")
    (root / "A" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "B" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    data = load_dataset(str(root))
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in data.skipped) == ["junk.jpeg", "zero.png"]
    assert sorted(p.rsplit("/", 1)[-1] for p in data.ignored) == [".DS_Store", "Thumbs.db"]
    assert capsys.readouterr().err.splitlines() == [
        f"skipped {root}/A/zero.png: zero-byte file",
        f"skipped {root}/B/junk.jpeg: not an image",
        f"skipped 2 unreadable image files under {root}",
        f"ignored 2 non-image files under {root}",
    ]
    assert "2 unreadable files skipped, 2 non-image files ignored" in data.summary()


def test_the_caller_can_take_the_report_lines(tmp_path, capsys):
    root = write_layout(tmp_path / "data", {"": {"A": 20, "B": 20}})
    (root / "A" / "zero.png").write_bytes(b"")
    lines = []
    load_dataset(str(root), report=lines.append)
    assert lines == [
        f"skipped {root}/A/zero.png: zero-byte file",
        f"skipped 1 unreadable image file under {root}",
    ]
    assert capsys.readouterr().err == ""


def test_fingerprint_changes_with_the_files(tmp_path):
    root = write_layout(tmp_path, {"": {"A": 20, "B": 20}})
    before = load_dataset(str(root)).fingerprint
    assert before == load_dataset(str(root)).fingerprint
    assert len(before) == 16 and int(before, 16) >= 0
    write_image(root / "A" / "extra.png", np.zeros((8, 8), np.uint8))
    assert load_dataset(str(root)).fingerprint != before


def test_min_image_size_is_exposed(tmp_path):
    root = write_layout(tmp_path, {"": {"A": 20, "B": 20}}, size=(40, 50))
    write_image(root / "A" / "small.png", np.zeros((12, 60), np.uint8))
    data = load_dataset(str(root))
    sizes = [s.min_image_size for s in data.splits.values()]
    assert (12, 50) in sizes  # wherever small.png landed, each side's minimum


def test_class_names_differ_between_splits(tmp_path):
    counts = {"train": {"A": 20, "B": 20}, "test": {"A": 5, "C": 5}}
    with pytest.raises(DataError, match="differ between splits"):
        load_dataset(str(write_layout(tmp_path, counts)))


def test_single_class_is_an_error(tmp_path):
    with pytest.raises(DataError, match="at least 2 classes"):
        load_dataset(str(write_layout(tmp_path, {"": {"A": 20}})))


def test_empty_class_folder_is_an_error(tmp_path):
    root = write_layout(tmp_path, {"": {"A": 20, "B": 20}})
    (root / "C").mkdir()
    with pytest.raises(DataError, match="no readable image"):
        load_dataset(str(root))


def test_dicom_folder(tmp_path):
    rng = np.random.default_rng(0)
    for name, photometric in (("A", "MONOCHROME1"), ("B", "MONOCHROME2")):
        (tmp_path / name).mkdir()
        for i in range(12):
            write_dicom(
                tmp_path / name / f"{i}.dcm",
                rng.integers(0, 4096, (20, 24)),
                photometric=photometric,
                slope=1,
                intercept=0,
                window=(2048, 4096),
            )
    data = load_dataset(str(tmp_path))
    assert_complete(data, total=24)
    assert data.native_size == (20, 24)


# --- own splits, and the whole source as one split ------------------------------------------


def test_flat_folder_has_no_own_splits_and_whole_gives_every_image(tmp_path, capsys):
    root = write_layout(tmp_path / "data", {"": {"cat": 30, "dog": 20}})
    (root / "cat" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / "dog" / "broken.png").write_bytes(b"")
    carved = load_dataset(str(root))
    assert carved.own_splits == () and not carved.has_splits
    assert len(carved.splits["train"]) < 50  # val and test were carved from it
    data = load_dataset(str(root), whole=True)
    assert list(data.splits) == ["all"] and data.own_splits == ()
    everything = data.splits["all"]
    assert everything.name == "all" and len(everything) == 50
    assert everything.counts() == {"cat": 30, "dog": 20}
    assert sorted(everything.files) == sorted(
        str(p) for p in root.rglob("*.png") if p.name != "broken.png"
    )


def test_folder_with_splits_lists_them_and_whole_joins_them(tmp_path):
    counts = {"train": {"A": 20, "B": 20}, "val": {"A": 25, "B": 25}, "test": {"A": 5, "B": 5}}
    root = write_layout(tmp_path, counts)
    assert load_dataset(str(root)).own_splits == ("train", "val", "test")
    assert load_dataset(str(root)).has_splits
    everything = load_dataset(str(root), whole=True).splits["all"]
    assert len(everything) == 100
    assert [Path(f).parts[-3] for f in everything.files[:40]] == ["train"] * 40
    missing_test = write_layout(tmp_path / "two", {k: counts[k] for k in ("train", "val")})
    assert load_dataset(str(missing_test)).own_splits == ("train", "val")


def test_array_sources_say_which_splits_they_had(tmp_path):
    assert load_dataset("digits").own_splits == ()
    npz = write_npz(tmp_path / "x.npz", n=60, splits=("train", "test"))
    assert load_dataset(str(npz)).own_splits == ("train", "test")
    assert len(load_dataset(str(npz), whole=True).splits["all"]) == 120
    assert len(load_dataset("digits", whole=True).splits["all"]) == 1797


# --- specs --------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["nope:thing", "/no/such/folder", "relative/missing"])
def test_unknown_spec_or_missing_path(spec):
    with pytest.raises(DataError, match="Received data="):
        load_dataset(spec)


def test_a_file_is_not_a_folder(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("x")
    with pytest.raises(DataError, match="no data folder"):
        load_dataset(str(path))


# --- npz and MedMNIST ---------------------------------------------------------------------


def write_npz(path, *, n=40, size=28, splits=("train", "val", "test"), label_shape=(1,)):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in splits:
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = np.arange(n * label_shape[0]) % 2
        arrays[f"{split}_labels"] = labels.reshape(n, *label_shape)
    np.savez(path, **arrays)
    return path


def test_npz_with_all_splits(tmp_path):
    data = load_dataset(f"npz:{write_npz(tmp_path / 'x.npz', n=60)}")
    assert data.name == "npz:x"
    assert data.class_names == ("0", "1")
    assert {k: len(s) for k, s in data.splits.items()} == {"train": 60, "val": 60, "test": 60}
    assert data.splits["train"].images.shape == (60, 28, 28)


def test_a_bare_npz_path_reads_as_npz(tmp_path):
    path = write_npz(tmp_path / "x.npz", n=20)
    bare = load_dataset(str(path))
    assert bare.name == "npz:x" and bare.fingerprint == load_dataset(f"npz:{path}").fingerprint


def test_npz_without_val_carves_it(tmp_path):
    data = load_dataset(f"npz:{write_npz(tmp_path / 'x.npz', n=100, splits=('train', 'test'))}")
    assert len(data.splits["val"]) == 10 and len(data.splits["train"]) == 90


def test_npz_multi_label_is_an_error(tmp_path):
    with pytest.raises(DataError, match="multi-label"):
        load_dataset(f"npz:{write_npz(tmp_path / 'x.npz', label_shape=(14,))}")


def test_npz_wrong_keys_or_missing(tmp_path):
    np.savez(tmp_path / "y.npz", images=np.zeros((2, 2)))
    with pytest.raises(DataError, match="MedMNIST format"):
        load_dataset(f"npz:{tmp_path / 'y.npz'}")
    with pytest.raises(DataError, match="no .npz file"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")


@pytest.mark.needs_data
def test_npz_on_real_pneumoniamnist(pneumoniamnist_npz):
    data = load_dataset(f"npz:{pneumoniamnist_npz}")
    assert data.class_names == ("normal", "pneumonia")
    assert {k: len(s) for k, s in data.splits.items()} == {"train": 3882, "val": 524, "test": 624}
    assert data.splits["train"].counts()["normal"] == 388
    assert data.native_size == (28, 28)


@pytest.mark.parametrize(
    "spec", ["medmnist:nosuchmnist", "medmnist:pneumoniamnist@100", "medmnist:pneumoniamnist@big"]
)
def test_medmnist_bad_spec(spec):
    with pytest.raises(DataError, match="Received data='medmnist:"):
        load_dataset(spec)


def test_medmnist_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(**kwargs):
        raise Exception(f"URL fetch failure on {kwargs['origin']}: Name or service not known")

    monkeypatch.setattr("keras.utils.get_file", offline)
    with pytest.raises(DataError) as error:
        load_dataset("medmnist:pneumoniamnist@224")
    message = str(error.value)
    assert "pneumoniamnist_224.npz" in message and str(tmp_path / "datasets") in message


def test_medmnist_loads_from_the_keras_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    cached = write_npz(tmp_path / "datasets" / "pneumoniamnist_64.npz", n=60)
    md5 = hashlib.md5(cached.read_bytes()).hexdigest()
    entry = medmnist_module.MEDMNIST["pneumoniamnist"]
    monkeypatch.setitem(entry.md5, 64, md5)
    data = load_dataset("medmnist:pneumoniamnist@64")  # no network: the md5 matches
    assert data.name == "medmnist:pneumoniamnist@64"
    assert data.class_names == ("normal", "pneumonia")


def test_medmnist_file_names():
    assert medmnist_module.medmnist_file_name("pneumoniamnist", 28) == "pneumoniamnist.npz"
    assert medmnist_module.medmnist_file_name("pneumoniamnist", 224) == "pneumoniamnist_224.npz"


# --- tensorflow-datasets --------------------------------------------------------------------


def test_tfds_with_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=60):
        data = load_dataset("tfds:mnist")
    assert data.name == "tfds:mnist"
    assert data.class_names == tuple(str(i) for i in range(10))
    assert data.native_size == (28, 28)
    assert_complete(data)
    assert data.splits["train"].images.shape[1:] == (28, 28, 1)


def test_tfds_named_split_is_carved(monkeypatch):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=100):
        data = load_dataset("tfds:cifar10:train", val_fraction=0.2)
    assert data.name == "tfds:cifar10:train"
    assert data.splits["train"].images.shape[1:] == (32, 32, 3)
    assert len(data.splits["test"]) == 20 and len(data.splits["val"]) == 16


def test_tfds_offline_fails_fast_and_says_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(DataError) as error:
        load_dataset("tfds:mnist")
    assert time.perf_counter() - start < 10
    assert "not prepared" in str(error.value) and str(tmp_path) in str(error.value)


def test_tfds_unknown_name():
    with pytest.raises(DataError, match="unknown tensorflow-datasets name"):
        load_dataset("tfds:no_such_dataset_xyz")


# --- the real chest X-rays ----------------------------------------------------------------


@pytest.mark.needs_data
def test_chest_xray_splits_keep_patients_apart(chest_xray_dir):
    lines = []
    data = load_dataset(str(chest_xray_dir), report=lines.append)
    assert lines == []  # the real set has no bad file
    assert data.name == "chest_xray_224"
    assert data.class_names == ("NORMAL", "PNEUMONIA")
    assert data.native_size == (224, 224)
    # README counts: train 1106 + 2964, val 4 + 13 (tiny: merged into train), test 238 + 609.
    assert data.splits["test"].counts() == {"NORMAL": 238, "PNEUMONIA": 609}
    trainval = {
        c: data.splits["train"].counts()[c] + data.splits["val"].counts()[c]
        for c in data.class_names
    }
    assert trainval == {"NORMAL": 1110, "PNEUMONIA": 2977}
    assert 0.08 < len(data.splits["val"]) / 4087 < 0.12
    groups = {k: set(s.groups) for k, s in data.splits.items()}
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert data.splits["train"].min_image_size == (224, 224)
    assert all(s.all_grey for s in data.splits.values())  # RGB JPEGs of grey X-rays
    assert "NORMAL" in data.summary().splitlines()[1]


def test_keras_home_follows_the_environment_at_each_call(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert medmnist_module.keras_home() == tmp_path / "user" / ".keras"
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "k"))
    assert medmnist_module.keras_datasets_dir() == tmp_path / "k" / "datasets"
