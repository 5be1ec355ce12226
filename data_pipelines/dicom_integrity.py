"""Whether a DICOM image's pixel data is whole: checked before decoding and while decoding.

Decoders differ in what they say about a damaged codestream. Measured on chest X-rays
(pydicom 3.0, pylibjpeg-libjpeg 2.5, pylibjpeg-openjpeg 2.6, pylibjpeg-rle 2.2; the
table and its script are in docs/DICOM_NODE.md):

- JPEG (baseline, extended, lossless): a codestream cut at 40% decodes without a word,
  the missing part filled in; libjpeg raises on some overwritten bytes, and pydicom then
  falls back to Pillow, which decodes them without a word.
- JPEG 2000: a cut codestream raises; overwritten or zeroed bytes decode without a word.
- RLE: a cut or zeroed segment raises (its length is wrong); overwritten bytes do not.

So, before decoding, every frame's codestream must be framed as its format says (JPEG:
SOI ... EOI; JPEG 2000: SOC ... EOC; RLE: a header whose segments lie inside the
frame), which catches every cut codestream; 8-bit JPEG is decoded once more by
libjpeg-turbo in strict mode, where every warning ("Corrupt JPEG data: ...") is an error;
and only the pylibjpeg decoders decode, so an error is never retried by a more lenient
plugin. What stays undetectable without a checksum: overwritten bytes that still form a
valid codestream in 12/16-bit JPEG, JPEG 2000 and RLE.
"""

from __future__ import annotations

import struct

import numpy as np
import pydicom
from pydicom import uid
from pydicom.encaps import generate_frames

JPEG = frozenset(
    {
        uid.JPEGBaseline8Bit,
        uid.JPEGExtended12Bit,
        uid.JPEGLossless,
        uid.JPEGLosslessSV1,
        uid.JPEGLSLossless,
        uid.JPEGLSNearLossless,
    }
)
JPEG_2000 = frozenset(
    {
        uid.JPEG2000Lossless,
        uid.JPEG2000,
        uid.HTJ2KLossless,
        uid.HTJ2KLosslessRPCL,
        uid.HTJ2K,
    }
)
JPEG_LS = frozenset({uid.JPEGLSLossless, uid.JPEGLSNearLossless})  # not libjpeg-turbo's
SOI, EOI = b"\xff\xd8", b"\xff\xd9"  # JPEG start and end of image
SOC, EOC = b"\xff\x4f", b"\xff\xd9"  # JPEG 2000 start and end of codestream
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"  # a JP2 file rather than a bare codestream
RLE_HEADER = 64  # bytes: the number of segments and 15 offsets (PS3.5 G.3)


class PixelDataError(ValueError):
    """The pixel data is cut short or damaged: the image must not be classified."""


def decode_checked(ds: pydicom.Dataset) -> np.ndarray:
    """`ds.pixel_array`, refused when the pixel data is not whole.

    Raises:
        PixelDataError: with what is wrong, in the decoder's words where it has some.
    """
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_encapsulated:
        frames = _frames(ds)
        for i, frame in enumerate(frames):
            where = f"frame {i + 1}: " if len(frames) > 1 else ""
            problem = frame_problem(frame, syntax, ds)
            if problem:
                raise PixelDataError(f"damaged pixel data ({where}{problem})")
        _pin_plugin(ds, syntax)
    try:
        return ds.pixel_array
    except Exception as err:  # noqa: BLE001 (each decoder raises its own types)
        raise PixelDataError(f"pixel data not decodable ({_first_line(err)})") from None


def frame_problem(frame: bytes, syntax: str, ds: pydicom.Dataset) -> str | None:
    """What is wrong with one encapsulated frame's codestream, or None."""
    if syntax in JPEG:
        problem = _framing(frame, SOI, EOI, "JPEG", "end-of-image")
        if problem is None and syntax not in JPEG_LS and _bits(ds) <= 8:
            problem = strict_jpeg_problem(frame)
        return problem
    if syntax in JPEG_2000:
        if frame.startswith(JP2_SIGNATURE):
            return None  # a JP2 box structure: its codestream box is checked by the decoder
        return _framing(frame, SOC, EOC, "JPEG 2000", "end-of-codestream")
    if syntax == uid.RLELossless:
        return _rle_problem(frame, ds)
    return None


def strict_jpeg_problem(frame: bytes) -> str | None:
    """libjpeg-turbo's complaint about an 8-bit JPEG codestream, or None.

    Strict mode makes its warnings errors: "Premature end of JPEG file" (cut),
    "Corrupt JPEG data: ..." (overwritten or zeroed entropy-coded data).
    """
    import simplejpeg

    try:
        simplejpeg.decode_jpeg(frame, colorspace="GRAY", strict=True)
    except ValueError as err:
        text = str(err).strip()
        if "Unsupported JPEG data precision" in text or "colorspace" in text.lower():
            return None  # not one libjpeg-turbo decodes this way: the framing check stands
        return f"libjpeg-turbo: {text or 'undecodable'}"
    return None


def _framing(frame: bytes, start: bytes, end: bytes, name: str, marker: str) -> str | None:
    # After the end marker: an odd-length fragment's zero byte, or an encoder's 0xFF fill.
    data = frame.rstrip(b"\x00\xff")
    if not data.startswith(start):
        return f"not a {name} codestream: it starts with {frame[:2].hex()}"
    if not data.endswith(end):
        return f"{name} codestream cut short: no {marker} marker ({len(frame)} bytes)"
    return None


def _rle_problem(frame: bytes, ds: pydicom.Dataset) -> str | None:
    if len(frame) < RLE_HEADER:
        return f"RLE frame of {len(frame)} bytes is shorter than its 64-byte header"
    count, *offsets = struct.unpack("<16L", frame[:RLE_HEADER])
    expected = int(ds.get("SamplesPerPixel", 1) or 1) * ((_bits(ds, allocated=True) + 7) // 8)
    if count != expected:
        return f"RLE header names {count} segments; the image needs {expected}"
    starts = offsets[:count]
    if starts[0] != RLE_HEADER or any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
        return f"RLE segment offsets {starts} are not in order after the header"
    if starts[-1] >= len(frame):
        return f"RLE frame cut short: segment {count} starts at {starts[-1]} of {len(frame)} bytes"
    return None


def _frames(ds: pydicom.Dataset) -> list[bytes]:
    count = int(ds.get("NumberOfFrames", 1) or 1)
    try:
        return list(generate_frames(ds.PixelData, number_of_frames=count))
    except Exception as err:  # noqa: BLE001 (a damaged item structure raises many types)
        raise PixelDataError(f"damaged pixel data items ({_first_line(err)})") from None


def _pin_plugin(ds: pydicom.Dataset, syntax: str) -> None:
    """Decode with pylibjpeg alone where it can: pydicom otherwise retries a decoder's
    error with the next plugin, and Pillow decodes damaged JPEG without a word."""
    from pydicom.pixels import get_decoder

    try:
        plugins = get_decoder(syntax).available_plugins
    except NotImplementedError:
        return
    if "pylibjpeg" in plugins:
        ds.pixel_array_options(decoding_plugin="pylibjpeg")


def _bits(ds: pydicom.Dataset, *, allocated: bool = False) -> int:
    keyword = "BitsAllocated" if allocated else "BitsStored"
    return int(ds.get(keyword) or ds.get("BitsAllocated") or 8)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    # pydicom: "Unable to decode as exceptions were raised by all available plugins:" and
    # then one line per plugin; the plugin's line says what is wrong.
    text = lines[-1] if len(lines) > 1 and lines[0].endswith(":") else (lines or [""])[0]
    return (text or type(err).__name__)[:200]
