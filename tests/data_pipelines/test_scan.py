"""Scanning class folders: bad files are skipped with a warning that names them."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import DataError, SkippedFileWarning
from data_pipelines.scan import UnreadableImage, probe_image, scan_class_folders
from tests.data_pipelines.makers import (
    grey_pixels,
    write_class_folder,
    write_cmyk_jpeg,
    write_image,
)


@pytest.fixture
def folder_with_bad_files(tmp_path, image_files):
    root = tmp_path / "data"
    write_class_folder(root / "a", 3)
    write_class_folder(root / "b", 3)
    bad = root / "b"
    (bad / "zero.png").write_bytes(b"")
    (bad / "notes.txt").write_text("not an image")
    (bad / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    jpeg = write_image(tmp_path / "full.jpeg", grey_pixels(64, 64), quality=90).read_bytes()
    (bad / "truncated.jpeg").write_bytes(jpeg[: len(jpeg) * 2 // 3])
    (bad / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 40)
    write_image(bad / "one_bit.bmp", grey_pixels() > 128)
    return root


BAD = ("zero.png", "notes.txt", "corrupt.png", "truncated.jpeg", "fake.dcm", "one_bit.bmp")


def test_bad_files_are_skipped_with_a_warning_naming_each(folder_with_bad_files):
    with pytest.warns(SkippedFileWarning) as record:
        scan = scan_class_folders(folder_with_bad_files)
    messages = "\n".join(str(w.message) for w in record)
    for name in BAD:
        assert name in messages
    assert sorted(p.split("/")[-1] for p, _ in scan.skipped) == sorted(BAD)
    assert len(scan.files) == 6
    assert scan.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_reasons_say_what_is_wrong(folder_with_bad_files):
    with pytest.warns(SkippedFileWarning):
        scan = scan_class_folders(folder_with_bad_files)
    reasons = {p.split("/")[-1]: r for p, r in scan.skipped}
    assert reasons["zero.png"] == "zero-byte file"
    assert reasons["notes.txt"] == "not an image"
    assert "truncated" in reasons["truncated.jpeg"]
    assert "DICOM" in reasons["fake.dcm"]
    assert "BMP" in reasons["one_bit.bmp"]


def test_every_supported_kind_passes_the_probe(image_files):
    grey = {"jpeg": False, "png": True, "png16": True, "rgba": False, "bmp": False, "dicom": True}
    for kind, path in image_files.items():
        assert probe_image(path) == (24, 32, grey[kind]), kind


def test_grey_content_stored_as_rgb_is_grey(tmp_path):
    pixels = grey_pixels(64, 64)
    path = write_image(tmp_path / "x.jpeg", np.stack([pixels] * 3, -1), quality=90)
    assert probe_image(path).grey
    tinted = np.stack([pixels, pixels, pixels // 2], -1)
    assert not probe_image(write_image(tmp_path / "t.png", tinted)).grey


def test_sizes_come_from_headers(tmp_path):
    write_class_folder(tmp_path / "a", 2, size=(20, 30))
    write_class_folder(tmp_path / "b", 1, size=(40, 10))
    scan = scan_class_folders(tmp_path)
    np.testing.assert_array_equal(scan.sizes, [[20, 30], [20, 30], [40, 10]])


def test_empty_class_folder_is_an_error(tmp_path):
    write_class_folder(tmp_path / "a", 2)
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match="no readable image"):
        scan_class_folders(tmp_path)


def test_no_class_folders_is_an_error(tmp_path):
    write_image(tmp_path / "x.png", grey_pixels())
    with pytest.raises(DataError, match="one sub-folder per class"):
        scan_class_folders(tmp_path)


def test_probe_rejects_formats_tf_cannot_decode(tmp_path):
    path = write_image(tmp_path / "x.gif", grey_pixels())
    with pytest.raises(UnreadableImage, match="unsupported format GIF"):
        probe_image(path)


def test_cmyk_jpeg_is_read_as_an_image(tmp_path):
    rgb = np.dstack([grey_pixels(), 255 - grey_pixels(), np.full((24, 32), 90, np.uint8)])
    path = write_cmyk_jpeg(tmp_path / "cmyk.jpeg", rgb)
    assert probe_image(path) == (24, 32, False)
