"""How each DICOM pixel decoder reports a damaged codestream, and what the integrity
guard (data_pipelines.dicom_integrity) makes of it: the table in docs/DICOM_NODE.md.

One real chest X-ray (../shared/data/chest_xray_224) in each compressed transfer syntax
the node reads, damaged three ways: cut at 40%, 64 bytes overwritten at the middle, a
quarter of the codestream zeroed from the middle. For each, pydicom's own decoding
(`ds.pixel_array`, every plugin it has) and `read_dicom` (the guard) are tried.

    .venv/bin/python benchmarks/dicom_integrity_table.py
"""

from __future__ import annotations

import io
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from pydicom import uid  # noqa: E402
from pydicom.encaps import encapsulate, generate_frames  # noqa: E402

from data_pipelines.dicom import read_dicom  # noqa: E402
from tests.keras_app.hospital import xray_dicom  # noqa: E402

DAMAGES = ("cut at 40%", "64 bytes overwritten", "a quarter zeroed")


def encoded() -> dict[str, pydicom.Dataset]:
    import imagecodecs
    from pydicom.data import get_testdata_file

    jpeg = xray_dicom.xray_files(1)[0]
    cr = pydicom.dcmread(io.BytesIO(xray_dicom.make_xray(jpeg, "cr", accession="T")[0]))
    dx = pydicom.dcmread(io.BytesIO(xray_dicom.make_xray(jpeg, "dx16", accession="T")[0]))
    found = {}
    for name, source, ts, frame in [
        ("JPEG baseline 8-bit", cr, uid.JPEGBaseline8Bit, {"level": 95}),
        ("JPEG lossless 8-bit", cr, uid.JPEGLosslessSV1, {"lossless": True, "predictor": 1}),
        ("JPEG lossless 16-bit", dx, uid.JPEGLosslessSV1, {"lossless": True, "predictor": 1}),
    ]:
        ds = _copy(source)
        bits = int(ds.BitsStored)
        data = imagecodecs.jpeg8_encode(ds.pixel_array, bitspersample=bits, **frame)
        ds.PixelData, ds.file_meta.TransferSyntaxUID = encapsulate([data]), ts
        ds["PixelData"].VR = "OB"
        found[name] = ds
    extended = get_testdata_file("JPGExtended.dcm", download=False)
    if extended:
        found["JPEG extended 12-bit (pydicom's file)"] = pydicom.dcmread(extended)
    for name, ts, options in [
        ("JPEG 2000 lossless", uid.JPEG2000Lossless, {}),
        ("JPEG 2000 lossy 20:1", uid.JPEG2000, {"j2k_cr": [20]}),
        ("RLE lossless", uid.RLELossless, {}),
    ]:
        ds = _copy(cr)
        ds.compress(ts, **options)
        found[name] = ds
    return found


def damaged(ds: pydicom.Dataset, how: str) -> bytes:
    frame = bytearray(next(generate_frames(ds.PixelData, number_of_frames=1)))
    middle, quarter = len(frame) // 2, len(frame) // 4
    if how == DAMAGES[0]:
        frame = frame[: int(len(frame) * 0.4)]
    elif how == DAMAGES[1]:
        frame[middle : middle + 64] = (
            np.random.default_rng(0).integers(0, 256, 64, np.uint8).tobytes()
        )
    else:
        frame[middle : middle + quarter] = bytes(quarter)
    copy = _copy(ds)
    copy.PixelData = encapsulate([bytes(frame)])
    return _bytes(copy)


def raw(data: bytes, whole: np.ndarray) -> str:
    try:
        pixels = pydicom.dcmread(io.BytesIO(data)).pixel_array
    except Exception as err:  # noqa: BLE001
        return f"raises ({str(err).splitlines()[-1].strip()[:60]})"
    diff = np.abs(pixels.astype(float) - whole.astype(float)).mean()
    return f"decodes silently (mean error {diff:.1f})"


def guarded(data: bytes) -> str:
    try:
        read_dicom(data)
    except ValueError as err:
        return f"refused: {str(err)[:90]}"
    return "decoded (not detectable)"


def _copy(ds: pydicom.Dataset) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(_bytes(ds)))


def _bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def main() -> None:
    logging.disable(logging.CRITICAL)  # pydicom logs a traceback per failed plugin
    print("| syntax | damage | pydicom alone | with the integrity guard |")
    print("| --- | --- | --- | --- |")
    for name, ds in encoded().items():
        whole = ds.pixel_array
        for how in DAMAGES:
            data = damaged(ds, how)
            print(f"| {name} | {how} | {raw(data, whole)} | {guarded(data)} |")


if __name__ == "__main__":
    main()
