"""The few-shot protocol's data side: K normal training images per class, drawn with a seed.

The standard few-shot protocol of zero-shot anomaly detection papers (WinCLIP+, APRIL-GAN, AnomalyCLIP) gives a
detector K normal images of each class from the dataset's **train** split and evaluates on the test split; the
draw is repeated with several seeds and the results are reported per seed and as their mean.

:func:`draw_references` makes one draw: for each class, ``K`` distinct normal samples (``anomaly != 1``) of the
train split, chosen by ``numpy.random.default_rng([seed, crc32(class key)])`` so that a class's draw depends
only on the seed and the class (not on which other classes are drawn), returned in file order.

Example:
    >>> from pathlib import Path
    >>> from zsad.data.samples import AnomalyDataset, Sample
    >>> train = {"nut": [Sample(Path(f"/d/nut/train/good/{i}.png"), None, "nut", "good", 0) for i in range(5)]}
    >>> ds = AnomalyDataset(Path("/d"), "toy", {"test": {"nut": []}, "train": train})
    >>> [s.img_path.name for s in draw_references(ds, shots=2, seed=0)["nut"]]
    ['0.png', '1.png']
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from zsad.data.samples import AnomalyDataset, Sample
from zsad.errors import DatasetError

__all__ = ["draw_references"]


def draw_references(
    dataset: AnomalyDataset,
    shots: int,
    seed: int,
    classes: Sequence[str] | None = None,
    *,
    split: str = "train",
) -> dict[str, list[Sample]]:
    """Draw ``shots`` normal reference samples per class from the dataset's train split.

    Args:
        dataset: an opened dataset (:func:`zsad.data.open_dataset`; meta.json and MVTec-style folders keep their
            train split).
        shots: K, the number of normal images per class (>= 1).
        seed: the draw's seed.
        classes: the classes to draw for (default: every class of the dataset's current split, i.e. the evaluated
            classes).
        split: the split to draw from (``"train"``).

    Returns:
        ``{class key: [Sample, ...]}`` with ``shots`` samples per class, in file order.

    Raises:
        DatasetError: no train split, a class without train images, or fewer normal train images than ``shots``
            (the message names the dataset, class and counts).
    """
    if not isinstance(shots, (int, np.integer)) or isinstance(shots, bool) or shots < 1:
        raise DatasetError(f"shots must be a whole number >= 1, got {shots!r}.")
    if split not in dataset.splits or not dataset.splits[split]:
        raise DatasetError(
            f"Dataset '{dataset.name}' ({dataset.source or dataset.root}) has no '{split}' split with images, so "
            f"few-shot references cannot be drawn from it (it has: {sorted(k for k, v in dataset.splits.items() if v)}). "
            "Use a dataset description with training images (e.g. meta.json written by `zsad data prepare` for "
            "MVTec-AD or VisA, or MVTec-style folders with <class>/train/good/), or evaluate zero-shot (without "
            "shots= / --shots)."
        )
    wanted = list(classes) if classes is not None else dataset.classes
    out: dict[str, list[Sample]] = {}
    for cls in wanted:
        normal = [s for s in dataset.splits[split].get(cls, []) if s.anomaly != 1]
        if len(normal) < shots:
            raise DatasetError(
                f"Dataset '{dataset.name}': class {cls!r} has {len(normal)} normal image(s) in the '{split}' split, "
                f"fewer than shots={shots}. Use fewer shots or add normal training images for that class."
            )
        rng = np.random.default_rng([int(seed), zlib.crc32(cls.encode("utf-8"))])
        picked = sorted(rng.choice(len(normal), size=shots, replace=False).tolist())
        out[cls] = [normal[i] for i in picked]
    return out
