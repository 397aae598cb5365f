"""A tiny MVTec-style dataset with a train split, for the few-shot evaluation tests (written with PIL)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_fewshot_dataset(root: Path, classes=("cap", "nut"), train: int = 4, test: int = 2, size: int = 32,
                          seed: int = 0) -> Path:
    """``<class>/train/good/`` (``train`` images), ``<class>/test/good/`` and ``<class>/test/crack/`` (``test`` each,
    the cracks with box masks in ``<class>/ground_truth/crack/``). Normal images of a class share a smooth
    texture plus noise; cracks add a bright box, so references matter."""
    rng = np.random.default_rng(seed)

    def save(array, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)

    for k, cls in enumerate(classes):
        base = np.linspace(40 + 30 * k, 160, size, dtype=np.float32)[None, :, None].repeat(size, 0).repeat(3, 2)

        def normal(base=base):
            return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)

        for i in range(train):
            save(normal(), root / cls / "train" / "good" / f"{i:03d}.png")
        for i in range(test):
            save(normal(), root / cls / "test" / "good" / f"{i:03d}.png")
            img = normal()
            y, x = rng.integers(2, size // 2, 2)
            img[y : y + size // 4, x : x + size // 4] = 250
            mask = np.zeros((size, size), np.uint8)
            mask[y : y + size // 4, x : x + size // 4] = 255
            save(img, root / cls / "test" / "crack" / f"{i:03d}.png")
            save(mask, root / cls / "ground_truth" / "crack" / f"{i:03d}_mask.png")
    return root
