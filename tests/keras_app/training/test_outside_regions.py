"""--outside-lungs in training: on chest films the train split's regions, elsewhere skipped."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from data_pipelines import Split
from keras_app.recipe.config import parse_config
from keras_app.training.datasets import outside_args, outside_regions
from tests.makers import shortcut_films


def data_of(images, labels):
    return SimpleNamespace(splits={"train": Split("train", ("a", "b"), labels, images=images)})


def test_chest_films_get_their_regions(capsys):
    films, labels = shortcut_films(6, np.random.default_rng(0), size=32)
    config = parse_config(
        ["--outside-lungs", "swap", "--image-size", "32", "--model", "simple_cnn"]
    )
    regions = outside_regions(config, data_of(films, labels))
    assert regions.shape == (6, 32, 32) and regions.any(axis=(1, 2)).all()
    assert "--outside-lungs swap on 100% of the training images" in capsys.readouterr().out
    args = outside_args(config, regions)
    assert args["outside_lungs"] == "swap" and args["outside_p"] == 1.0


def test_thumbnails_and_flat_images_skip_it_and_say_so(capsys):
    config = parse_config(
        ["--outside-lungs", "erase", "--image-size", "32", "--model", "simple_cnn"]
    )
    digits = np.random.default_rng(1).integers(0, 17, (6, 8, 8), dtype=np.uint8)
    assert outside_regions(config, data_of(digits, np.arange(6) % 2)) is None
    assert "--outside-lungs erase skipped: images of 8x8 px are thumbnails" in (
        capsys.readouterr().out
    )
    flat = np.full((6, 40, 40), 90, np.uint8)
    assert outside_regions(config, data_of(flat, np.arange(6) % 2)) is None
    assert "falls back to its box prior on 100%" in capsys.readouterr().out
    assert outside_args(config, None) == {}
    off = parse_config(["--outside-lungs", "none"])
    assert outside_regions(off, data_of(flat, np.arange(6) % 2)) is None


def test_a_train_split_whose_regions_would_not_fit_in_memory_skips_it(capsys, monkeypatch):
    from keras_app.training import datasets

    films, labels = shortcut_films(6, np.random.default_rng(0), size=32)
    config = parse_config(
        ["--outside-lungs", "swap", "--image-size", "32", "--model", "simple_cnn"]
    )
    # 6 films of 32 x 32 px: 6,144 bytes of regions; one byte less is too much.
    monkeypatch.setattr(datasets, "MAX_REGION_BYTES", 6 * 32 * 32 - 1)
    assert outside_regions(config, data_of(films, labels)) is None
    assert "skipped: the lung regions of 6 training images at 32 px would take" in (
        capsys.readouterr().out
    )
    monkeypatch.setattr(datasets, "MAX_REGION_BYTES", 6 * 32 * 32)
    assert outside_regions(config, data_of(films, labels)).shape == (6, 32, 32)
