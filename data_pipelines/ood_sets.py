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

import io
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from data_pipelines import ood_sources as sources

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
    return sources.to_rgb_size(sources.random_crop(rng, film, 0.25, 0.5), film.shape[0])


def _tiled(rng, films):
    """A 2x2 or 3x3 grid of different films, each shrunk."""
    size = films.shape[1]
    k = int(rng.choice([2, 3]))
    cell = -(-size // k)
    tiles = [sources.to_rgb_size(_pick(rng, films), cell) for _ in range(k * k)]
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
    return sources.to_rgb_size(sources.random_crop(rng, film, 0.85, 0.95), film.shape[0])


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
    "blank": SetSpec(
        sources.blank, "synthetic", True, "constant frames (black, white, grey, tinted)"
    ),
    "noise_uniform": SetSpec(
        sources.noise_uniform, "synthetic", True, "uniform noise, grey or colour"
    ),
    "noise_gaussian": SetSpec(
        sources.noise_gaussian, "synthetic", True, "Gaussian noise, grey or colour"
    ),
    "noise_smooth": SetSpec(sources.noise_smooth, "synthetic", True, "blurred grey noise (clouds)"),
    "gradients": SetSpec(sources.gradients, "synthetic", True, "linear and radial grey ramps"),
    "drawings": SetSpec(sources.drawings, "synthetic", True, "lines, shapes and text"),
    "digits": SetSpec(sources.digits, "synthetic", True, "scikit-learn's 8x8 digits, upscaled"),
    "photos": SetSpec(sources.photos, "synthetic", True, "crops of 3 colour photographs"),
    "photos_grey": SetSpec(sources.photos_grey, "synthetic", True, "the same crops in grey"),
    "modalities": SetSpec(
        sources.modalities, "synthetic", True, "CT, MR, US, NM, CR c-spine (DICOM)"
    ),
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
    out = np.stack([sources.to_rgb_size(images[k], size) for k in picked])
    return out, np.asarray([f"pneumoniamnist:{k}" for k in picked])
