"""Out-of-distribution image sets for measuring an image guard, built offline and deterministically.

What a chest X-ray screening model must refuse rather than score: photographs, noise, blank
frames, drawings, digits, other modalities and body parts, and chest films made unreadable
(rotated, upside down, negative, cropped to a patch, tiled, with extreme contrast). Everything
comes from files the installed packages carry (matplotlib's and scikit-learn's sample
photographs, scikit-learn's digits, pydicom's test files) or is synthesised here; the film
transforms take held-out films (the test split) from the caller, so that nothing a guard was
fitted on appears in them.

Every set is split into a tuning part (to choose a method on) and a held-out part (to report
only), by origin: no photograph, patient, DICOM file or film is in both parts. Film-based sets
all use the same partition of patients.

Look-alikes of valid input are built too, to be passed (`OodSet.refuse` False): test films
mirrored left-right, rotated or tilted a few degrees, brighter or darker, recompressed as
low-quality JPEG, or zoomed a little (what training augmentation or another export shows
the model). And PneumoniaMNIST upscaled from 28 px, the same source degraded, has no right
answer (`refuse` None): a 28 px film is not diagnostic, but it is a chest film. Both kinds are
reported apart.

Example:
    >>> sets = build_ood_sets(films, patients, size=224, per_set=200)
    >>> s = sets["rot90"]
    >>> s.part("tuning").shape, s.part("held_out").shape, s.refuse
    ((100, 224, 224, 3), (100, 224, 224, 3), True)
"""

from __future__ import annotations

import functools
import gzip
import io
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PARTS = ("tuning", "held_out")


@dataclass(frozen=True, eq=False)
class OodSet:
    """One named set of images, split into a tuning and a held-out part by origin.

    Attributes:
        name: the registry name (a key of `OOD_SETS`).
        images: uint8 `[n, size, size, 3]`.
        groups: the origin of each image (a photograph, a patient, a DICOM file, a seed),
            str `[n]`; no group is in both parts.
        held_out: bool `[n]`, True for the held-out part.
        refuse: True where a guard should flag these images; False for look-alikes of valid
            input, to be passed; None where neither answer is wrong (reported apart).
        provenance: where the images come from and how they were made.
    """

    name: str
    images: np.ndarray
    groups: np.ndarray
    held_out: np.ndarray
    refuse: bool | None
    provenance: str

    def __len__(self) -> int:
        return len(self.images)

    def part(self, which: str) -> np.ndarray:
        """The images of one part, "tuning" or "held_out"."""
        if which not in PARTS:
            raise ValueError(f"part must be one of {PARTS}. Received which={which!r}")
        return self.images[self.held_out == (which == "held_out")]


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


def _random_crop(rng, image: np.ndarray, low: float, high: float) -> np.ndarray:
    """A square crop whose side is a random share in [low, high] of the shorter side."""
    h, w = image.shape[:2]
    side = max(2, int(round(min(h, w) * rng.uniform(low, high))))
    top, left = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    return image[top : top + side, left : left + side]


# --- synthetic sets: (rng, n, size) -> (images, groups) ---------------------------------------


def _blank(rng, n, size):
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


def _noise_uniform(rng, n, size):
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        low = rng.integers(0, 128)
        high = rng.integers(low + 64, 256)
        channels = 3 if rng.random() < 0.5 else 1
        images[i] = rng.integers(low, high + 1, (size, size, channels))
    return images, _own_groups("noise_uniform", n)


def _noise_gaussian(rng, n, size):
    images = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        channels = 3 if rng.random() < 0.5 else 1
        noise = rng.normal(rng.uniform(60, 200), rng.uniform(10, 80), (size, size, channels))
        images[i] = np.clip(np.round(noise), 0, 255)
    return images, _own_groups("noise_gaussian", n)


def _noise_smooth(rng, n, size):
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


def _gradients(rng, n, size):
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


def _drawings(rng, n, size):
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


def _digits(rng, n, size):
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
        crop = _random_crop(rng, photos[name], 0.2, 1.0)
        images[i] = to_rgb_size(_grey(crop) if grey else crop, size)
        groups.append(f"photo:{name}")
    return images, np.asarray(groups)


def _photos(rng, n, size):
    """Square crops (20% to 100% of the shorter side) of the installed photographs."""
    return _photo_crops(rng, n, size, grey=False)


def _photos_grey(rng, n, size):
    """The same kind of crops in grey: a colour check alone cannot refuse them."""
    return _photo_crops(rng, n, size, grey=True)


def _modalities(rng, n, size):
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
            image = _random_crop(rng, image, 0.5, 0.9)
        images.append(to_rgb_size(image, size))
        groups.append(f"dicom:{origin}")
    return np.stack(images), np.asarray(groups)


def _own_groups(prefix: str, n: int) -> np.ndarray:
    return np.asarray([f"{prefix}:{i}" for i in range(n)])


# --- film transforms: (rng, films uint8 [m, size, size, 3]) -> one image --------------------


def _rot90(rng, films):
    return np.rot90(_pick(rng, films), k=int(rng.choice([1, 3])))


def _rot180(rng, films):
    return np.rot90(_pick(rng, films), k=2)


def _flip_ud(rng, films):
    return _pick(rng, films)[::-1]


def _inverted(rng, films):
    return 255 - _pick(rng, films)


def _crops(rng, films):
    """A patch of 25% to 50% of the side, zoomed to the full frame."""
    film = _pick(rng, films)
    return to_rgb_size(_random_crop(rng, film, 0.25, 0.5), film.shape[0])


def _tiled(rng, films):
    """A 2x2 or 3x3 grid of different films, each shrunk."""
    size = films.shape[1]
    k = int(rng.choice([2, 3]))
    cell = -(-size // k)
    tiles = [to_rgb_size(_pick(rng, films), cell) for _ in range(k * k)]
    rows = [np.concatenate(tiles[r * k : (r + 1) * k], axis=1) for r in range(k)]
    return np.concatenate(rows, axis=0)[:size, :size]


def _contrast_extreme(rng, films):
    """Binarised at a random quantile, contrast x4 clipped, or gamma 0.15 or 6."""
    film = _pick(rng, films).astype(np.float64)
    kind = rng.integers(0, 3)
    if kind == 0:
        out = np.where(film >= np.quantile(film, rng.uniform(0.3, 0.7)), 255.0, 0.0)
    elif kind == 1:
        out = (film - film.mean()) * 4.0 + film.mean()
    else:
        out = 255.0 * (film / 255.0) ** float(rng.choice([0.15, 6.0]))
    return np.clip(np.round(out), 0, 255)


def _mirrored(rng, films):
    return _pick(rng, films)[:, ::-1]


def _rotated_small(rng, films):
    """Rotated 5 to 15 degrees either way, black fill: within training augmentation."""
    angle = rng.uniform(5, 15) * rng.choice([-1, 1])
    return np.asarray(Image.fromarray(_pick(rng, films)).rotate(angle, Image.Resampling.BILINEAR))


def _tilted(rng, films):
    """Rotated 5 to 15 degrees either way, the corners filled with the film's border mean:
    a patient tilted on the detector, with no black corners to give it away."""
    film = _pick(rng, films)
    border = np.concatenate([film[0], film[-1], film[:, 0], film[:, -1]]).mean(axis=0)
    angle = rng.uniform(5, 15) * rng.choice([-1, 1])
    fill = tuple(int(round(v)) for v in border)
    return np.asarray(
        Image.fromarray(film).rotate(angle, Image.Resampling.BILINEAR, fillcolor=fill)
    )


def _exposure(rng, films):
    """Brightness +-10% of the range and contrast x0.8 to x1.2: within training augmentation."""
    film = _pick(rng, films).astype(np.float64)
    out = (film - film.mean()) * rng.uniform(0.8, 1.2) + film.mean() + rng.uniform(-25.5, 25.5)
    return np.clip(np.round(out), 0, 255)


def _jpeg(rng, films):
    """Recompressed as JPEG at quality 15 to 40, as a lossy export would."""
    buffer = io.BytesIO()
    Image.fromarray(_pick(rng, films)).save(buffer, "JPEG", quality=int(rng.integers(15, 41)))
    return np.asarray(Image.open(buffer).convert("RGB"))


def _zoom_small(rng, films):
    """A crop of 85% to 95% of the side, resized back: another collimation or framing."""
    film = _pick(rng, films)
    return to_rgb_size(_random_crop(rng, film, 0.85, 0.95), film.shape[0])


def _pick(rng, films):
    return films[rng.integers(0, len(films))]


# --- the registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SetSpec:
    """How one set is made.

    Attributes:
        make: `(rng, n, size) -> (images, groups)` for a standalone set; for a film set,
            `(rng, films) -> one image` applied to held-out films; for the PneumoniaMNIST set,
            None (made from the images passed in).
        source: "synthetic" (needs nothing), "films" or "pneumoniamnist" (given by the caller).
        refuse: True to flag, False to pass, None for no right answer (see `OodSet`).
        what: one line for tables and docs.
    """

    make: Callable | None
    source: str
    refuse: bool | None
    what: str


OOD_SETS: dict[str, SetSpec] = {
    "blank": SetSpec(_blank, "synthetic", True, "constant frames (black, white, grey, tinted)"),
    "noise_uniform": SetSpec(_noise_uniform, "synthetic", True, "uniform noise, grey or colour"),
    "noise_gaussian": SetSpec(_noise_gaussian, "synthetic", True, "Gaussian noise, grey or colour"),
    "noise_smooth": SetSpec(_noise_smooth, "synthetic", True, "blurred grey noise (clouds)"),
    "gradients": SetSpec(_gradients, "synthetic", True, "linear and radial grey ramps"),
    "drawings": SetSpec(_drawings, "synthetic", True, "lines, shapes and text"),
    "digits": SetSpec(_digits, "synthetic", True, "scikit-learn's 8x8 digits, upscaled"),
    "photos": SetSpec(_photos, "synthetic", True, "crops of 3 colour photographs"),
    "photos_grey": SetSpec(_photos_grey, "synthetic", True, "the same crops in grey"),
    "modalities": SetSpec(_modalities, "synthetic", True, "CT, MR, US, NM, CR c-spine (DICOM)"),
    "rot90": SetSpec(_rot90, "films", True, "test films rotated 90 degrees either way"),
    "rot180": SetSpec(_rot180, "films", True, "test films rotated 180 degrees"),
    "flip_ud": SetSpec(_flip_ud, "films", True, "test films upside down"),
    "inverted": SetSpec(_inverted, "films", True, "test films as negatives"),
    "crops": SetSpec(_crops, "films", True, "a 25-50% patch of a test film, zoomed"),
    "tiled": SetSpec(_tiled, "films", True, "2x2 or 3x3 grids of test films"),
    "contrast_extreme": SetSpec(
        _contrast_extreme, "films", True, "test films binarised, contrast x4 or gamma 0.15/6"
    ),
    "mirrored": SetSpec(_mirrored, "films", False, "test films mirrored left-right (valid)"),
    "rotated_small": SetSpec(_rotated_small, "films", False, "test films rotated 5-15 degrees"),
    "tilted": SetSpec(_tilted, "films", False, "test films tilted 5-15 degrees, no black corners"),
    "exposure": SetSpec(_exposure, "films", False, "brightness +-10%, contrast x0.8-1.2"),
    "jpeg": SetSpec(_jpeg, "films", False, "test films as JPEG quality 15-40"),
    "zoom_small": SetSpec(_zoom_small, "films", False, "an 85-95% crop of a test film"),
    "pneumoniamnist": SetSpec(
        None, "pneumoniamnist", None, "PneumoniaMNIST test films, 28 px upscaled"
    ),
}


def build_ood_sets(
    films: np.ndarray | None = None,
    film_groups: Sequence[str] | None = None,
    *,
    pneumoniamnist: np.ndarray | None = None,
    size: int = 224,
    per_set: int = 200,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> dict[str, OodSet]:
    """Builds the named sets, each split into a tuning and a held-out part by origin.

    Args:
        films: held-out chest films (the test split), uint8 `[m, size, size, 3]` (or grey
            `[m, size, size]`), for the film transforms. Never films a guard was fitted on.
        film_groups: the patient of each film; the patients are split once into a tuning and
            a held-out half, shared by every film set.
        pneumoniamnist: PneumoniaMNIST images (uint8 `[k, 28, 28]`), for its look-alike set.
        size: the side of every image (the model's input size).
        per_set: images per set (each part about half).
        seed: the same seed (and inputs) gives the same sets, byte for byte.
        names: the sets to build; None builds every set whose source was given.

    Returns:
        `{name: OodSet}` in registry order.

    Raises:
        ValueError: an unknown name, a set whose source was not given, films of the wrong
            shape, or too few images or patients for two parts.
    """
    if size < 8 or per_set < 2:
        raise ValueError(f"need size >= 8 and per_set >= 2. Received size={size}, per={per_set}")
    given = {
        "synthetic": True,
        "films": films is not None,
        "pneumoniamnist": pneumoniamnist is not None,
    }
    unknown = sorted(set(names or ()) - set(OOD_SETS))
    if unknown:
        raise ValueError(f"unknown OOD sets {unknown}; known: {sorted(OOD_SETS)}")
    if names is None:
        names = [n for n, spec in OOD_SETS.items() if given[spec.source]]
    missing = [n for n in names if not given[OOD_SETS[n].source]]
    if missing:
        raise ValueError(f"sets {missing} need their source images. Received none")
    halves = _film_halves(films, film_groups, size, seed) if films is not None else None
    sets = {}
    for name in [n for n in OOD_SETS if n in names]:
        spec = OOD_SETS[name]
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if spec.source == "films":
            images, groups, held_out = _film_set(spec.make, rng, halves, per_set)
            provenance = f"{spec.what}; films of test-split patients, split by patient"
        elif spec.source == "pneumoniamnist":
            images, groups = _pneumoniamnist(rng, pneumoniamnist, per_set, size)
            held_out = split_by_group(groups, seed)
            provenance = spec.what
        else:
            images, groups = spec.make(rng, per_set, size)
            held_out = split_by_group(groups, seed)
            provenance = spec.what
        sets[name] = OodSet(name, images, groups, held_out, spec.refuse, provenance)
    return sets


def split_by_group(groups: Sequence[str], seed: int = 0) -> np.ndarray:
    """bool `[n]`: True for the held-out part; every group whole in one part, about half each.

    Groups are shuffled with `seed`, then each goes to the part that has fewer images.

    Raises:
        ValueError: fewer than two groups.
    """
    groups = np.asarray(groups)
    unique, counts = np.unique(groups, return_counts=True)
    if len(unique) < 2:
        raise ValueError(f"need at least two groups to make two parts. Received {len(unique)}")
    order = np.random.default_rng(seed).permutation(len(unique))
    held_out_groups, sizes = set(), [0, 0]
    for i in order:
        part = int(sizes[1] < sizes[0])
        sizes[part] += counts[i]
        if part:
            held_out_groups.add(unique[i])
    return np.isin(groups, list(held_out_groups))


def _film_halves(films, film_groups, size, seed) -> tuple[np.ndarray, np.ndarray]:
    films = np.asarray(films)
    if films.ndim == 3:
        films = np.repeat(films[..., np.newaxis], 3, axis=-1)
    if films.dtype != np.uint8 or films.ndim != 4 or films.shape[1:] != (size, size, 3):
        raise ValueError(
            f"films must be uint8 [m, {size}, {size}, 3]. Received {films.dtype} {films.shape}"
        )
    if film_groups is None or len(film_groups) != len(films):
        raise ValueError("film_groups must give the patient of each film")
    held_out = split_by_group(film_groups, seed)
    if held_out.all() or not held_out.any():
        raise ValueError("the films' patients do not make two parts")
    return films[~held_out], films[held_out]


def _film_set(make, rng, halves, per_set):
    images, groups, held_out = [], [], []
    for part, films in enumerate(halves):
        n = per_set // 2 if part == 0 else per_set - per_set // 2
        images += [np.asarray(make(rng, films), np.uint8) for _ in range(n)]
        groups += [f"films:{PARTS[part]}"] * n
        held_out += [bool(part)] * n
    return np.stack(images), np.asarray(groups), np.asarray(held_out)


def _pneumoniamnist(rng, images, per_set, size):
    images = np.asarray(images)
    picked = rng.choice(len(images), size=min(per_set, len(images)), replace=False)
    out = np.stack([to_rgb_size(images[k], size) for k in picked])
    return out, np.asarray([f"pneumoniamnist:{k}" for k in picked])
