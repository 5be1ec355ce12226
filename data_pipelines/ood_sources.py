"""What the out-of-distribution sets are made of: offline sources and synthetic images.

The photographs and DICOM files the installed packages carry (matplotlib's and
scikit-learn's sample photographs, pydicom's test files: CT, MR, ultrasound, nuclear
medicine, radiotherapy), and generators of synthetic images (blank frames, noise,
gradients, line drawings, digits). Each generator is `(rng, n, size) -> (images, groups)`,
the groups naming each image's origin so that parts are split by origin.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# --- sources ---------------------------------------------------------------------------------


def _package_file(package: str, *parts: str) -> Path:
    import importlib

    return Path(importlib.import_module(package).__file__).parent.joinpath(*parts)


PHOTOGRAPHS = {
    "grace_hopper": ("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
    "china": ("sklearn", "datasets", "images", "china.jpg"),
    "flower": ("sklearn", "datasets", "images", "flower.jpg"),
}
# pydicom test files of other modalities and body parts (CT, MR, ultrasound, nuclear medicine,
# a segmentation, a dose grid; the dicomdirtests series are 16 px thumbnails of C-spine CR, head
# CT and MR). Secondary-capture test patterns (colour bars, text) are left out: not a modality.
DICOM_FILES = (
    "693_J2KI.dcm",
    "CT_small.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "MR_small.dcm",
    "examples_overlay.dcm",
    "ExplVR_BigEnd.dcm",
    "examples_jpeg2k.dcm",
    "examples_palette.dcm",
    "examples_rgb_color.dcm",
    "examples_ybr_color.dcm",
    "JPEG2000.dcm",
    "JPGExtended.dcm",
    "liver_1frame.dcm",
    "rtdose.dcm",
)
DICOMDIR_SERIES = "dicomdirtests"
FRAMES_PER_FILE = 5  # a 30-frame ultrasound clip is one source, not 30 images


def photographs() -> dict[str, np.ndarray]:
    """The photographs the installed packages carry, uint8 RGB, by name."""
    return {
        name: np.asarray(Image.open(_package_file(*where)).convert("RGB"))
        for name, where in PHOTOGRAPHS.items()
    }


@functools.cache
def medical_images() -> tuple[tuple[str, np.ndarray], ...]:
    """(origin, uint8 grey or RGB image) for every other-modality image found offline.

    pydicom's test files that are present (it downloads some on demand: those are skipped),
    a few frames of each multi-frame file, and matplotlib's MR brain slice (s1045.ima).
    Images with identical pixels are kept once. Read once per process (do not modify).
    """
    import warnings

    import pydicom
    from pydicom.data import get_testdata_file

    found, seen = [], set()

    def add(origin, image):
        key = zlib.crc32(image.tobytes())
        if key not in seen and image.size > 0 and image.max() > image.min():
            seen.add(key)
            found.append((origin, image))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about files it would download
        for name in DICOM_FILES:
            path = get_testdata_file(name, download=False)
            if path is None:
                continue
            for frame in _dicom_frames(pydicom.dcmread(path)):
                add(name, frame)
        ct = get_testdata_file("CT_small.dcm", download=False)
        tree = Path(ct).parent / DICOMDIR_SERIES if ct else None
        for path in sorted(tree.rglob("*")) if tree and tree.is_dir() else ():
            if path.is_file() and path.suffix == "" and path.parent.name != "TINY_ALPHA":
                try:
                    ds = pydicom.dcmread(path)
                except Exception:  # README files and the like
                    continue
                for frame in _dicom_frames(ds):
                    add(f"{DICOMDIR_SERIES}/{path.parent.name}", frame)
    brain = _package_file("matplotlib", "mpl-data", "sample_data", "s1045.ima.gz")
    if brain.is_file():
        raw = np.frombuffer(gzip.open(brain).read(), np.uint16).reshape(256, 256)
        add("matplotlib/s1045.ima", _stretch(raw))
    return tuple(found)


def _dicom_frames(ds) -> list[np.ndarray]:
    """Each frame of a DICOM dataset as uint8, min-max stretched (colour frames as stored)."""
    if "PixelData" not in ds:
        return []
    try:
        pixels = ds.pixel_array
    except Exception:  # a transfer syntax no installed plugin decodes
        return []
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    colour = int(ds.get("SamplesPerPixel", 1)) == 3
    stack = pixels if frames > 1 else pixels[np.newaxis]
    step = max(1, frames // FRAMES_PER_FILE)
    out = []
    for frame in stack[::step][:FRAMES_PER_FILE]:
        if colour and frame.dtype == np.uint8:
            out.append(frame)
            continue
        image = _stretch(frame)
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            image = 255 - image
        out.append(image)
    return out


def _stretch(values) -> np.ndarray:
    values = np.asarray(values, np.float64)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return np.round(scaled * 255.0).astype(np.uint8)


# --- image helpers ---------------------------------------------------------------------------


def to_rgb_size(image: np.ndarray, size: int) -> np.ndarray:
    """Any uint8 grey `[h, w]`, `[h, w, 1]` or RGB image to uint8 RGB `[size, size, 3]`.

    Bilinear with antialiasing (PIL's filter widens when it shrinks), as the product's
    decode resizes.
    """
    image = np.asarray(image, np.uint8)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    pil = Image.fromarray(image).convert("RGB")
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(pil)


def _grey(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).convert("L"))


def random_crop(rng, image: np.ndarray, low: float, high: float) -> np.ndarray:
    """A square crop whose side is a random share in [low, high] of the shorter side."""
    h, w = image.shape[:2]
    side = max(2, int(round(min(h, w) * rng.uniform(low, high))))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    return image[top : top + side, left : left + side]


# --- synthetic sets: (rng, n, size) -> (images, groups) ---------------------------------------


def blank(rng, n, size):
    """Constant frames, black and white first, some with faint noise or a colour tint."""
    levels = np.concatenate([[0, 255], rng.integers(0, 256, max(0, n - 2))])[:n]
    images = np.empty((n, size, size, 3), np.uint8)
    for i, level in enumerate(levels):
        frame = np.full((size, size, 3), float(level))
        if i >= 2 and rng.random() < 0.3:
            frame += rng.integers(-40, 41, 3)  # a tint
        if i >= 2 and rng.random() < 0.3:
            frame += rng.normal(0, rng.uniform(0.5, 3.0), (size, size, 1))  # sensor noise
        images[i] = np.clip(np.round(frame), 0, 255)
    return images, _own_groups("blank", n)


def noise_uniform(rng, n, size):
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        low = rng.integers(0, 128)
        high = rng.integers(low + 64, 256)
        channels = 3 if rng.random() < 0.5 else 1
        images[i] = rng.integers(low, high + 1, (size, size, channels))
    return images, _own_groups("noise_uniform", n)


def noise_gaussian(rng, n, size):
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        channels = 3 if rng.random() < 0.5 else 1
        noise = rng.normal(rng.uniform(60, 200), rng.uniform(10, 80), (size, size, channels))
        images[i] = np.clip(np.round(noise), 0, 255)
    return images, _own_groups("noise_gaussian", n)


def noise_smooth(rng, n, size):
    """Low-frequency grey noise ("clouds"): blurred Gaussian noise, stretched to a random range."""
    from scipy.ndimage import gaussian_filter

    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        field = gaussian_filter(rng.normal(0, 1, (size, size)), sigma=size * rng.uniform(0.02, 0.1))
        field = (field - field.min()) / max(np.ptp(field), 1e-9)
        low = rng.uniform(0, 120)
        high = rng.uniform(low + 60, 255)
        images[i] = np.round(low + field * (high - low))[..., np.newaxis]
    return images, _own_groups("noise_smooth", n)


def gradients(rng, n, size):
    """Linear ramps at random angles and radial ramps, grey, between random levels."""
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        if rng.random() < 0.5:
            angle = rng.uniform(0, 2 * np.pi)
            t = np.cos(angle) * xx + np.sin(angle) * yy
        else:
            cy, cx = rng.uniform(0, 1, 2)
            t = np.hypot(yy - cy, xx - cx)
        t = (t - t.min()) / max(np.ptp(t), 1e-9)
        a, b = rng.uniform(0, 255, 2)
        images[i] = np.round(a + (b - a) * t)[..., np.newaxis]
    return images, _own_groups("gradients", n)


def drawings(rng, n, size):
    """Line drawings, shapes and text on a plain background, grey or colour."""
    font = ImageFont.load_default(size=max(8, size // 10))
    words = ("CHEST", "PA", "L", "R", "scan", "report", "12:04", "OK", "test", "image", "x-ray")
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        grey = rng.random() < 0.5
        background = tuple(int(v) for v in rng.integers(0, 256, 3))
        canvas = Image.new("RGB", (size, size), background[:1] * 3 if grey else background)
        draw = ImageDraw.Draw(canvas)
        for _ in range(rng.integers(3, 12)):
            ink = tuple(int(v) for v in rng.integers(0, 256, 3))
            ink = ink[:1] * 3 if grey else ink
            box = sorted(rng.integers(0, size, 2)), sorted(rng.integers(0, size, 2))
            xy = [box[0][0], box[1][0], box[0][1], box[1][1]]
            kind = rng.integers(0, 4)
            width = int(rng.integers(1, max(2, size // 30)))
            if kind == 0:
                draw.line(xy, fill=ink, width=width)
            elif kind == 1:
                draw.rectangle(xy, outline=ink, width=width)
            elif kind == 2:
                draw.ellipse(xy, outline=ink, width=width)
            else:
                draw.text((xy[0], xy[1]), str(rng.choice(words)), fill=ink, font=font)
        images[i] = np.asarray(canvas)
    return images, _own_groups("drawings", n)


def digits(rng, n, size):
    """scikit-learn's 8x8 handwritten digits, upscaled; half as dark ink on white paper."""
    from sklearn.datasets import load_digits

    digits = np.round(load_digits().images * (255.0 / 16.0)).astype(np.uint8)
    picked = rng.choice(len(digits), size=n, replace=n > len(digits))
    images = np.empty((n, size, size, 3), np.uint8)
    for i, k in enumerate(picked):
        digit = digits[k] if rng.random() < 0.5 else 255 - digits[k]
        images[i] = to_rgb_size(digit, size)
    return images, np.asarray([f"digit:{k}" for k in picked])


def _photo_crops(rng, n, size, grey: bool):
    photos = photographs()
    names = sorted(photos)
    images = np.empty((n, size, size, 3), np.uint8)
    groups = []
    for i in range(n):
        name = names[i % len(names)]
        crop = random_crop(rng, photos[name], 0.2, 1.0)
        images[i] = to_rgb_size(_grey(crop) if grey else crop, size)
        groups.append(f"photo:{name}")
    return images, np.asarray(groups)


def photos(rng, n, size):
    """Square crops (20% to 100% of the shorter side) of the installed photographs."""
    return _photo_crops(rng, n, size, grey=False)


def photos_grey(rng, n, size):
    """The same kind of crops in grey: a colour check alone cannot refuse them."""
    return _photo_crops(rng, n, size, grey=True)


def modalities(rng, n, size):
    """Other modalities and body parts: each image found offline, then random zooms (50-90% of
    the side) of those at least 64 px wide, as a viewer's zoom would show them."""
    found = medical_images()
    large = [(origin, image) for origin, image in found if min(image.shape[:2]) >= 64]
    if not large:
        raise ValueError("no other-modality images found (pydicom's test files are missing)")
    images, groups = [], []
    for i in range(n):
        if i < len(found):
            origin, image = found[i]
        else:
            origin, image = large[(i - len(found)) % len(large)]
            image = random_crop(rng, image, 0.5, 0.9)
        images.append(to_rgb_size(image, size))
        groups.append(f"dicom:{origin}")
    return np.stack(images), np.asarray(groups)


def _own_groups(prefix: str, n: int) -> np.ndarray:
    return np.asarray([f"{prefix}:{i}" for i in range(n)])
