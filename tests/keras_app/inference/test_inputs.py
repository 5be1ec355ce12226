"""keras_app.inputs.read_images: what a server is sent for each file."""

from __future__ import annotations

import numpy as np

from data_pipelines.decode import decode_rgb
from data_pipelines.dicom import read_dicom
from keras_app.inference.inputs import read_images
from tests.makers import grey_pixels, ramp12, write_dicom, write_image


def test_images_are_sent_as_they_are_and_dicom_as_png(tmp_path):
    jpeg = write_image(tmp_path / "a.jpeg", grey_pixels(), quality=90)
    dicom = write_dicom(tmp_path / "b.dcm", ramp12(), window=(2048, 4096))
    sent_jpeg, sent_dicom = read_images([jpeg, dicom])
    assert sent_jpeg == jpeg.read_bytes()
    assert sent_dicom.startswith(b"\x89PNG")
    np.testing.assert_array_equal(decode_rgb(sent_dicom)[..., 0], read_dicom(dicom)[..., 0])
