"""Small data makers shared by tests."""

from __future__ import annotations

import numpy as np
from PIL import Image


def write_folder(root, n_per_class=24, size=40, splits=("train", "val", "test")):
    """A chest-X-ray-layout folder whose two classes differ in brightness (learnable)."""
    rng = np.random.default_rng(0)
    for split in splits:
        for label, (name, base) in enumerate((("NORMAL", 60), ("PNEUMONIA", 170))):
            folder = root / split / name
            folder.mkdir(parents=True)
            count = n_per_class if split == "train" else n_per_class // 2
            for i in range(count):
                pixels = np.clip(rng.normal(base, 30, (size, size)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"person{label}{i:03d}_img_{i}.png")
    return root
