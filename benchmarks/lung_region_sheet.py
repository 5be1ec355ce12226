"""The lung-region estimate by eye and in numbers: contact sheets, fallback rates, the prior.

    # the sheets checked by eye (first 10 NORMAL and first 10 PNEUMONIA test images, sorted)
    python -m benchmarks.lung_region_sheet sheet --out docs/lung_region
    # how often the estimate falls back to the box prior, per split and class, and why
    python -m benchmarks.lung_region_sheet counts --splits test val train
    # the medians of the plausible estimates' lung boxes on train (PRIOR_BOXES)
    python -m benchmarks.lung_region_sheet prior

Each tile: the image, the estimated outline of the image-left lung (yellow) and
image-right lung (green), the `lung_region` the audit uses (the hull of both,
dilated 3%, cyan), or, where the estimate fell back, the prior boxes (red). A
tile's number says "prior" where it fell back, "joined" where a lung stayed in
pieces and was joined (a wide closing, else their convex hull; `LungMask.joined`).
Run from the repository root as a module, so that this checkout's packages are used.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from data_pipelines.lung_region import estimate_lung_mask
from data_pipelines.regions import lung_region

CLASSES = ("NORMAL", "PNEUMONIA")
COLOURS = {1: (255, 230, 0), 2: (0, 230, 0), "region": (0, 200, 255), "prior": (255, 40, 40)}


def sheet_files(data: Path, split: str = "test", per_class: int = 10) -> list[Path]:
    """The first `per_class` images of each class, sorted by name: a choice anyone can redo."""
    return [p for c in CLASSES for p in sorted((data / split / c).glob("*.jpeg"))[:per_class]]


def read_grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def _edge(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndi.binary_erosion(mask)


def draw_tile(grey: np.ndarray, number: int) -> tuple[Image.Image, object]:
    """The image with its outlines, numbered in the corner; and the LungMask."""
    lungs = estimate_lung_mask(grey)
    rgb = np.repeat(grey[:, :, None], 3, axis=2).copy()
    region = lung_region(lungs)
    rgb[_edge(region)] = COLOURS["region"]
    if lungs.fell_back:
        for value in (1, 2):
            rgb[ndi.binary_dilation(_edge(lungs.labels == value))] = COLOURS["prior"]
    else:
        for value in (1, 2):
            edge = ndi.binary_dilation(_edge(lungs.labels == value))  # 2 px: visible at 224
            rgb[edge] = COLOURS[value]
    tile = Image.fromarray(rgb)
    draw = ImageDraw.Draw(tile)
    label = f"{number}" + (" prior" if lungs.fell_back else " joined" * any(lungs.joined))
    draw.rectangle((0, 0, 8 + 7 * len(label), 12), fill=(0, 0, 0))
    draw.text((2, 0), label, fill=(255, 255, 255))
    return tile, lungs


def make_sheet(files: list[Path], first_number: int, columns: int = 5) -> tuple[Image.Image, list]:
    drawn = [draw_tile(read_grey(f), first_number + i) for i, f in enumerate(files)]
    tiles, results = [t for t, _ in drawn], [r for _, r in drawn]
    w, h = tiles[0].size
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (columns * w, rows * h))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * w, (i // columns) * h))
    return sheet, list(results)


def cmd_sheet(args) -> None:
    files = sheet_files(args.data, args.split, args.per_class)
    args.out.mkdir(parents=True, exist_ok=True)
    for k, cls in enumerate(CLASSES):
        chosen = files[k * args.per_class : (k + 1) * args.per_class]
        sheet, results = make_sheet(chosen, first_number=k * args.per_class + 1)
        path = args.out / f"{args.split}_{cls.lower()}.png"
        # A 256-colour palette: the outlines stay exact, the sheet stays small.
        sheet.quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
        for i, (f, lungs) in enumerate(zip(chosen, results, strict=True)):
            joined = [
                name
                for name, j in zip(("image-left", "image-right"), lungs.joined, strict=True)
                if j
            ]
            note = lungs.method + (f": {lungs.reason}" if lungs.fell_back else "")
            note += f" (joined from pieces: {', '.join(joined)})" if joined else ""
            print(f"  {k * args.per_class + i + 1:2d} {cls} {f.name}: {note}")


def cmd_counts(args) -> None:
    print("| split | class | images | fell back | rate | joined from pieces | s/image |")
    print("|---|---|---:|---:|---:|---:|---:|")
    reasons = collections.Counter()
    for split in args.splits:
        for cls in CLASSES:
            files = sorted((args.data / split / cls).glob("*.jpeg"))
            start, fell, hulled = time.perf_counter(), 0, 0
            for f in files:
                lungs = estimate_lung_mask(read_grey(f))
                hulled += any(lungs.joined)
                if lungs.fell_back:
                    fell += 1
                    reasons[_reason_kind(lungs.reason)] += 1
            took = (time.perf_counter() - start) / max(1, len(files))
            rate = fell / max(1, len(files))
            row = (
                f"| {split} | {cls} | {len(files)} | {fell} | {rate:.1%} | {hulled} | {took:.3f} |"
            )
            print(row)
    print("\nreasons:")
    for reason, n in reasons.most_common():
        print(f"  {n:5d}  {reason}")


def _reason_kind(reason: str) -> str:
    """A reason without its numbers, so that reasons count together."""
    return " ".join("N" if any(ch.isdigit() for ch in word) else word for word in reason.split())


def cmd_prior(args) -> None:
    boxes = {1: [], 2: []}
    files = [f for c in CLASSES for f in sorted((args.data / args.split / c).glob("*.jpeg"))]
    for f in files:
        lungs = estimate_lung_mask(read_grey(f))
        if lungs.fell_back:
            continue
        h, w = lungs.shape
        for value in (1, 2):
            rows = np.flatnonzero((lungs.labels == value).any(axis=1))
            cols = np.flatnonzero((lungs.labels == value).any(axis=0))
            boxes[value].append((rows[0] / h, cols[0] / w, (rows[-1] + 1) / h, (cols[-1] + 1) / w))
    for value, name in ((1, "left"), (2, "right")):
        found = np.array(boxes[value])
        median = ", ".join(f"{v:.2f}" for v in np.median(found, axis=0))
        iqr = np.percentile(found, 75, axis=0) - np.percentile(found, 25, axis=0)
        spread = ", ".join(f"{v:.2f}" for v in iqr)
        print(f'"{name}": ({median}),  # IQR ({spread}), {len(found)} plausible estimates')


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/chest_xray_224"))
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sheet", help="contact sheets of the estimate")
    s.add_argument("--out", type=Path, default=Path("docs/lung_region"))
    s.add_argument("--split", default="test")
    s.add_argument("--per-class", type=int, default=10)
    c = sub.add_parser("counts", help="fallback rates per split and class")
    c.add_argument("--splits", nargs="+", default=["test"])
    r = sub.add_parser("prior", help="median lung boxes of the plausible estimates")
    r.add_argument("--split", default="train")
    args = p.parse_args(argv)
    if not args.data.is_dir():
        sys.exit(f"no data at {args.data} (see ../shared/data/README.md)")
    {"sheet": cmd_sheet, "counts": cmd_counts, "prior": cmd_prior}[args.command](args)


if __name__ == "__main__":
    main()
