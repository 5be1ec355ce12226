"""Scanning class folders: bad image files are skipped and named, non-image files ignored."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import DataError
from data_pipelines.scan import (
    UnreadableImage,
    is_image_file,
    probe_image,
    report_left_out,
    scan_class_folders,
)
from tests.makers import (
    grey_pixels,
    ramp12,
    write_class_folder,
    write_cmyk_jpeg,
    write_dicom,
    write_image,
)


@pytest.fixture
def folder_with_bad_files(tmp_path, image_files):
    root = tmp_path / "data"
    write_class_folder(root / "a", 3)
    write_class_folder(root / "b", 3)
    bad = root / "b"
    (bad / "zero.png").write_bytes(b"")
    (bad / "notes.jpeg").write_text("not an image")
    (bad / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    jpeg = write_image(tmp_path / "full.jpeg", grey_pixels(64, 64), quality=90).read_bytes()
    (bad / "truncated.jpeg").write_bytes(jpeg[: len(jpeg) * 2 // 3])
    (bad / "fake.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 40)
    write_image(bad / "one_bit.bmp", grey_pixels() > 128)
    return root


BAD = ("zero.png", "notes.jpeg", "corrupt.png", "truncated.jpeg", "fake.dcm", "one_bit.bmp")
# What operating systems and people leave in folders: not images, so not "unreadable images".
JUNK = (".DS_Store", "Thumbs.db", "desktop.ini", "._img000.png", "notes.txt", "labels.csv")


def test_bad_files_are_skipped_and_named(folder_with_bad_files):
    scan = scan_class_folders(folder_with_bad_files)
    assert sorted(p.split("/")[-1] for p, _ in scan.skipped) == sorted(BAD)
    assert scan.ignored == []
    assert len(scan.files) == 6
    assert scan.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_reasons_say_what_is_wrong(folder_with_bad_files):
    scan = scan_class_folders(folder_with_bad_files)
    reasons = {p.split("/")[-1]: r for p, r in scan.skipped}
    assert reasons["zero.png"] == "zero-byte file"
    assert reasons["notes.jpeg"] == "not an image"
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


def test_a_class_of_unreadable_files_says_why(tmp_path):
    write_class_folder(tmp_path / "a", 2)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.png").write_bytes(b"")
    (tmp_path / "b" / "y.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"no readable image \(2 unreadable, e.g. x.png: zero-byte"):
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


def test_non_image_files_are_ignored_not_skipped(tmp_path):
    write_class_folder(tmp_path / "a", 2)
    write_class_folder(tmp_path / "b", 2)
    for name in JUNK:
        (tmp_path / "a" / name).write_bytes(b"\0\0\x05\x16\0\0junk")
    (tmp_path / "b" / ".ipynb_checkpoints").mkdir()
    write_image(tmp_path / "b" / ".ipynb_checkpoints" / "img000.png", grey_pixels())
    scan = scan_class_folders(tmp_path)
    assert scan.skipped == []
    assert sorted(p.split("/")[-1] for p in scan.ignored) == sorted([*JUNK, "img000.png"])
    assert len(scan.files) == 4


def test_dicom_without_extension_is_an_image(tmp_path):
    path = write_dicom(tmp_path / "1.2.840.10008.5", ramp12())
    assert is_image_file(path)
    assert not is_image_file(write_image(tmp_path / "a.txt", grey_pixels(), format="PNG"))
    assert is_image_file(tmp_path / "a.tiff")  # reported as unsupported, not hidden


def test_report_left_out_prints_one_plain_line_per_file_and_the_totals(capsys):
    skipped = [("d/a/zero.png", "zero-byte file"), ("d/b/x.jpeg", "not an image")]
    report_left_out(skipped, ["d/a/.DS_Store", "d/a/Thumbs.db", "d/b/notes.txt"], "d")
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "skipped d/a/zero.png: zero-byte file\n"
        "skipped d/b/x.jpeg: not an image\n"
        "skipped 2 unreadable image files under d\n"
        "ignored 3 non-image files under d\n"
    )


def test_report_left_out_goes_where_the_caller_says(capsys):
    lines = []
    report_left_out([("d/a.png", "zero-byte file")], ["d/.DS_Store"], "d", lines.append)
    assert lines == [
        "skipped d/a.png: zero-byte file",
        "skipped 1 unreadable image file under d",
        "ignored 1 non-image file under d",
    ]
    assert capsys.readouterr().err == ""
    report_left_out([], [], "d", lines.append)
    assert len(lines) == 3  # nothing left out, nothing said


def test_a_damaged_jpeg_codestream_is_refused_with_libjpegs_words(tmp_path):
    """TensorFlow and Pillow decode a JPEG whose data was zeroed, warning at most; the
    probe refuses it, and a cut one, saying what libjpeg found."""
    from data_pipelines.scan import jpeg_problem, probe_image

    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(64), np.arange(64)).astype(np.uint8) * 2
    noisy = np.clip(ramp + rng.integers(0, 20, ramp.shape), 0, 255).astype(np.uint8)
    good = write_image(tmp_path / "good.jpeg", noisy, quality=90).read_bytes()
    half = len(good) // 2
    zeroed = good[:half] + b"\0" * (len(good) - half - 2) + b"\xff\xd9"
    cut = good[: int(len(good) * 0.4)]
    assert jpeg_problem(good) is None
    assert "Corrupt JPEG data" in jpeg_problem(zeroed)
    assert jpeg_problem(cut)
    for name, data in (("zeroed.jpeg", zeroed), ("cut.jpeg", cut)):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UnreadableImage, match="corrupt or truncated JPEG data"):
            probe_image(tmp_path / name)
    probe_image(tmp_path / "good.jpeg")
