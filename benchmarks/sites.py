"""Shifted sites built from the shared data: the README model meets another hospital (issue 28).

    python benchmarks/sites.py --out /work/scratch/sites

Writes three sites, each a folder `local/` (at most 200 labelled images: what a hospital
would label to calibrate on) and `rest/` (every other image of that site: judged, never
fitted or tuned on), both folders of class folders NORMAL/ and PNEUMONIA/:

- `siteB`: the chest X-ray test split (patients the README model never saw) rendered as
  another site would render it. Four changes, fixed before any model was run on them:
  tighter collimation (the field zoomed 1.12x, dark collimator edges), a brighter
  look-up table (gamma 0.7 with a lifted floor), a little blur (Gaussian, sigma 1.2 px)
  and a burnt-in side marker and text line. Patient-grouped: a patient's films are all
  in `local/` or all in `rest/` (patient ids from the release's file names, which are
  kept so that `data_pipelines` groups them too).
- `siteA`: the control, the same test-split films and the same local/rest patients as
  site B, unchanged: the README model's own kind of film, at a new hospital's patients.
- `siteC`: PneumoniaMNIST (the same source at 28 px, read upscaled). `local/` is 200
  images drawn from its val split (the source's training pool: the README model has
  seen those patients at 224 px, so they serve for calibration only); `rest/` is its
  whole test split (the source's test patients, never seen).

Deterministic: the same seed writes the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CLASSES = ("NORMAL", "PNEUMONIA")
LOCAL_MAX = 200  # the budget of labelled local images

# Site B's rendering: each constant is one difference between two hospitals' films.
ZOOM = 1.12  # tighter collimation: the field of view 11% narrower
EDGE = (0.07, 0.04)  # collimator edges, as a fraction of width (left/right) and height
GAMMA, FLOOR = 0.7, 28  # a brighter look-up table: gamma < 1 and a lifted black
BLUR = 1.2  # Gaussian sigma in pixels: a softer detector or heavier processing
MARKER = "R"  # the burnt-in side marker, and a text line as many sites print
TEXT = "PORTABLE AP"


def render_site_b(image: Image.Image) -> Image.Image:
    """One film of the chest X-ray test split as site B would have rendered it."""
    grey = image.convert("L")
    w, h = grey.size
    cw, ch = round(w / ZOOM), round(h / ZOOM)
    left, top = (w - cw) // 2, (h - ch) // 2
    grey = grey.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BILINEAR)
    x = np.asarray(grey, np.float64) / 255
    x = FLOOR + (255 - FLOOR) * x**GAMMA
    ex, ey = round(EDGE[0] * w), round(EDGE[1] * h)
    x[:, :ex] = x[:, w - ex :] = 8
    x[:ey, :] = x[h - ey :, :] = 8
    out = Image.fromarray(np.clip(x, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(BLUR)
    )
    draw = ImageDraw.Draw(out)
    draw.text((w - ex - 30, ey + 6), MARKER, fill=250, font=ImageFont.load_default(size=26))
    draw.text((ex + 6, h - ey - 18), TEXT, fill=235, font=ImageFont.load_default(size=12))
    return out.convert("RGB")


def local_patients(groups: np.ndarray, rng: np.random.Generator, budget: int) -> set[str]:
    """Whole patients, in a seeded random order, while their films fit in `budget`."""
    patients, counts = np.unique(groups, return_counts=True)
    chosen, total = set(), 0
    for i in rng.permutation(len(patients)):
        if total + counts[i] <= budget:
            chosen.add(str(patients[i]))
            total += counts[i]
    return chosen


def build_test_split_site(out: Path, seed: int, site: str, render) -> dict:
    """The chest X-ray test split, patient-grouped into local and rest (the same patients
    for every seed-equal call), each film rendered by `render` (None: copied unchanged)."""
    from data_pipelines.splits import patient_id

    files = sorted((SHARED / "chest_xray_224" / "test").glob("*/*.jpeg"))
    groups = np.asarray([patient_id(f) or f.name for f in files])
    local = local_patients(groups, np.random.default_rng(seed), LOCAL_MAX)
    counts = {}
    for f, group in zip(files, groups, strict=True):
        part = "local" if group in local else "rest"
        target = out / site / part / f.parent.name / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if render is None:
            target.write_bytes(f.read_bytes())
        else:
            render(Image.open(f)).save(target, quality=90)
        counts[(part, f.parent.name)] = counts.get((part, f.parent.name), 0) + 1
    return counts


def build_site_a(out: Path, seed: int) -> dict:
    return build_test_split_site(out, seed, "siteA", None)


def build_site_b(out: Path, seed: int) -> dict:
    return build_test_split_site(out, seed, "siteB", render_site_b)


def build_site_c(out: Path, seed: int) -> dict:
    npz = np.load(SHARED / "pneumoniamnist.npz")
    rng = np.random.default_rng(seed)
    val_images, val_labels = npz["val_images"], npz["val_labels"].reshape(-1)
    picked = np.sort(rng.permutation(len(val_labels))[:LOCAL_MAX])
    parts = {
        "local": (val_images[picked], val_labels[picked], picked, "val"),
        "rest": (npz["test_images"], npz["test_labels"].reshape(-1), None, "test"),
    }
    counts = {}
    for part, (images, labels, index, source) in parts.items():
        index = np.arange(len(labels)) if index is None else index
        for image, label, i in zip(images, labels, index, strict=True):
            name = CLASSES[int(label)]
            target = out / "siteC" / part / name / f"pneumoniamnist-{source}-{i:04d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target)
            counts[(part, name)] = counts.get((part, name), 0) + 1
    return counts


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/work/scratch/sites"))
    p.add_argument("--seed", type=int, default=28)
    args = p.parse_args(argv)
    sites = (("siteA", build_site_a), ("siteB", build_site_b), ("siteC", build_site_c))
    taken = [site for site, _ in sites if (args.out / site).exists()]
    if taken:
        raise SystemExit(f"{args.out} already holds {', '.join(taken)}: remove them first")
    for site, build in sites:
        counts = build(args.out, args.seed)
        line = ", ".join(f"{part}/{name} {n}" for (part, name), n in sorted(counts.items()))
        print(f"{site}: {line}")


if __name__ == "__main__":
    main()
