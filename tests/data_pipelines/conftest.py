"""Fixtures: one tiny readable file of each supported kind."""

from __future__ import annotations

import numpy as np
import pytest

from tests.makers import grey_pixels, ramp12, write_dicom, write_image


@pytest.fixture
def image_files(tmp_path):
    """One readable file of each supported kind, keyed by kind."""
    grey = grey_pixels()
    rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1)
    files = {
        "jpeg": write_image(tmp_path / "a.jpeg", rgb, quality=95),
        "png": write_image(tmp_path / "grey.png", grey),
        "png16": write_image(tmp_path / "grey16.png", grey.astype(np.uint16) * 257),
        "rgba": write_image(tmp_path / "rgba.png", np.dstack([rgb, np.full_like(grey, 255)])),
        "bmp": write_image(tmp_path / "a.bmp", rgb),
        "dicom": write_dicom(tmp_path / "a.dcm", ramp12(24, 32), window=(2048, 4096)),
    }
    return files
