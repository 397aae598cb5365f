"""Samples and datasets: the in-memory form of every dataset description zsad reads.

A :class:`Sample` is one image with its (optional) ground-truth mask and label; an :class:`AnomalyDataset`
holds the samples of one or more splits (``"test"``, ``"train"``), grouped by class in file order.

Example:
    >>> from pathlib import Path
    >>> from zsad.data.samples import AnomalyDataset, Sample
    >>> s = Sample(Path("/data/bottle/test/good/000.png"), None, "bottle", "good", 0)
    >>> ds = AnomalyDataset(Path("/data"), "toy", {"test": {"bottle": [s]}})
    >>> ds.classes, len(ds), ds.has_labels, ds.has_masks()
    (['bottle'], 1, True, False)
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zsad.errors import DatasetError

__all__ = ["AnomalyDataset", "Sample"]


@dataclass(frozen=True)
class Sample:
    """One image of a dataset.

    Attributes:
        img_path: absolute path of the image.
        mask_path: absolute path of the ground-truth mask, or ``None`` (normal image, image-level-only anomaly,
            or unlabelled image). A normal sample never carries a mask: the official loaders give normal
            images an all-zero mask whatever the file says.
        cls_name: the class key of the dataset description (e.g. ``"metal_nut"``), not the prompt text.
        specie_name: the defect type (``"good"``, ``"scratch"``, ``""`` when unknown).
        anomaly: 1 anomalous, 0 normal, ``None`` when unknown (plain folders of images).

    Example:
        >>> from pathlib import Path
        >>> s = Sample(Path("/d/a.png"), Path("/d/a_mask.png"), "wood", "hole", 1)
        >>> s.is_anomalous, s.has_mask
        (True, True)
    """

    img_path: Path
    mask_path: Path | None
    cls_name: str
    specie_name: str = ""
    anomaly: int | None = None

    @property
    def is_anomalous(self) -> bool:
        """True when the sample is labelled anomalous (``anomaly == 1``).

        Example:
            >>> from pathlib import Path
            >>> Sample(Path("/a.png"), None, "c", "", None).is_anomalous
            False
        """
        return self.anomaly == 1

    @property
    def has_mask(self) -> bool:
        """True when the sample has a ground-truth mask file.

        Example:
            >>> from pathlib import Path
            >>> Sample(Path("/a.png"), None, "c", "good", 0).has_mask
            False
        """
        return self.mask_path is not None


@dataclass
class AnomalyDataset:
    """Samples of a dataset, per split and class, in file order.

    Build one with :func:`zsad.data.open_dataset` rather than by hand.

    Attributes:
        root: folder the relative paths of the description were resolved against.
        name: a short name (the folder name unless given).
        splits: ``{split: {class: [Sample, ...]}}``; class order is the order of the description.
        split: the split used when a method's ``split`` argument is ``None`` (the one passed to ``open_dataset``).
        source: the description file (meta.json, jsonl) or folder that was read.
        notes: facts recorded while reading (e.g. anomalous images without a mask); never errors.

    Example:
        >>> from pathlib import Path
        >>> a = Sample(Path("/d/a.png"), Path("/d/a_mask.png"), "tile", "crack", 1)
        >>> b = Sample(Path("/d/b.png"), None, "tile", "good", 0)
        >>> ds = AnomalyDataset(Path("/d"), "toy", {"test": {"tile": [a, b]}})
        >>> ds.class_counts()
        {'tile': (1, 1)}
        >>> [s.img_path.name for s in ds.samples("tile")]
        ['a.png', 'b.png']
    """

    root: Path
    name: str
    splits: dict[str, dict[str, list[Sample]]]
    split: str = "test"
    source: Path | None = None
    notes: list[str] = field(default_factory=list)
    _grey_mask_warned: bool = field(default=False, init=False, repr=False, compare=False)

    def _split(self, split: str | None) -> dict[str, list[Sample]]:
        key = self.split if split is None else split
        if key not in self.splits:
            raise DatasetError(
                f"Dataset '{self.name}' ({self.source or self.root}) has no split '{key}'; "
                f"available: {sorted(self.splits)}. Pass one of those as split=."
            )
        return self.splits[key]

    @property
    def classes(self) -> list[str]:
        """Class keys of the current split, in file order.

        Example:
            >>> from pathlib import Path
            >>> AnomalyDataset(Path("/d"), "x", {"test": {"b": [], "a": []}}).classes
            ['b', 'a']
        """
        return list(self._split(None))

    def samples(self, cls: str | Sequence[str] | None = None, split: str | None = None) -> list[Sample]:
        """Samples of one class, of several classes, or of all classes (``cls=None``), in file order.

        Args:
            cls: a class key, a list of class keys, or ``None`` for all.
            split: the split; ``None`` means the split the dataset was opened with (default ``"test"``).

        Raises:
            DatasetError: unknown class or split (the message lists the known ones).

        Example:
            >>> from pathlib import Path
            >>> s = Sample(Path("/d/a.png"), None, "a", "good", 0)
            >>> ds = AnomalyDataset(Path("/d"), "x", {"test": {"a": [s]}})
            >>> len(ds.samples()), len(ds.samples("a")), len(ds.samples(["a"], split="test"))
            (1, 1, 1)
        """
        by_class = self._split(split)
        if cls is None:
            names = list(by_class)
        else:
            names = [cls] if isinstance(cls, str) else list(cls)
        unknown = [c for c in names if c not in by_class]
        if unknown:
            raise DatasetError(
                f"Dataset '{self.name}' has no class {unknown[0]!r} in split '{split or self.split}'; "
                f"known classes: {list(by_class)}."
            )
        return [s for c in names for s in by_class[c]]

    def has_masks(self, cls: str | None = None, split: str | None = None) -> bool:
        """True when at least one anomalous sample (of ``cls``, or of any class) has a mask file.

        Example:
            >>> from pathlib import Path
            >>> s = Sample(Path("/d/a.png"), None, "a", "defect", 1)
            >>> AnomalyDataset(Path("/d"), "x", {"test": {"a": [s]}}).has_masks("a")
            False
        """
        return any(s.is_anomalous and s.has_mask for s in self.samples(cls, split))

    @property
    def has_labels(self) -> bool:
        """True when every sample of the current split has a 0/1 label (plain image folders have none).

        Example:
            >>> from pathlib import Path
            >>> s = Sample(Path("/d/a.png"), None, "a", "", None)
            >>> AnomalyDataset(Path("/d"), "x", {"test": {"a": [s]}}).has_labels
            False
        """
        return all(s.anomaly is not None for s in self.samples())

    def anomalies_without_mask(self, cls: str | None = None, split: str | None = None) -> list[Sample]:
        """Anomalous samples that have no mask (image-level labels only; their masks read as all zeros).

        Example:
            >>> from pathlib import Path
            >>> s = Sample(Path("/d/a.png"), None, "a", "defect", 1)
            >>> [x.img_path.name for x in AnomalyDataset(Path("/d"), "x", {"test": {"a": [s]}}).anomalies_without_mask()]
            ['a.png']
        """
        return [s for s in self.samples(cls, split) if s.is_anomalous and not s.has_mask]

    def class_counts(self, split: str | None = None) -> dict[str, tuple[int, int]]:
        """``{class: (n_normal, n_anomalous)}`` for the split (unlabelled samples are not counted).

        Example:
            >>> from pathlib import Path
            >>> s = Sample(Path("/d/a.png"), None, "a", "good", 0)
            >>> AnomalyDataset(Path("/d"), "x", {"test": {"a": [s, s]}}).class_counts()
            {'a': (2, 0)}
        """
        out = {}
        for c, items in self._split(split).items():
            out[c] = (sum(s.anomaly == 0 for s in items), sum(s.anomaly == 1 for s in items))
        return out

    def load_mask(self, sample: Sample, size: int | tuple[int, int] | None = None, *,
                  exif_transpose: bool = False) -> np.ndarray:
        """The sample's ground truth as an H x W uint8 0/1 array, as the official Tipsomaly loader builds it.

        Normal samples and samples without a mask give zeros. ``size`` (int or ``(w, h)``) resizes with the
        official bilinear-then-0.5 rule (:func:`zsad.data.masks.resize_mask`); ``None`` keeps the image size.
        A mask holding values other than {0, 255} or {0, 1} (grey, anti-aliased, JPEG) is binarised with
        ``> 0`` as the official loader does, and a ``UserWarning`` is issued once per dataset. With
        ``exif_transpose=True`` the mask is turned by its image's EXIF orientation, as the image is when the
        detector loads it (see :func:`zsad.data.masks.read_ground_truth`).

        Example:
            >>> from pathlib import Path
            >>> s = Sample(Path("/d/a.png"), None, "a", "good", 0)
            >>> AnomalyDataset(Path("/d"), "x", {"test": {"a": [s]}}).load_mask(s, 4).shape
            (4, 4)
        """
        from zsad.data.masks import load_mask, read_ground_truth

        if sample.mask_path is None or sample.anomaly == 0:
            hw = None if size is not None else _image_hw(sample.img_path, exif_transpose)
            return load_mask(None, size, image_size_hw=hw)
        gt = read_ground_truth(sample.mask_path, size, image_path=sample.img_path, exif_transpose=exif_transpose)
        if not self._grey_mask_warned and gt.grey:
            self._grey_mask_warned = True
            warnings.warn(
                f"Dataset '{self.name}': mask {sample.mask_path} holds values other than 0/255 or 0/1 "
                f"(e.g. anti-aliased or JPEG masks); masks are binarised with > 0 as the official loader does. "
                "This warning is shown once per dataset.",
                UserWarning,
                stacklevel=2,
            )
        return gt.mask

    def __len__(self) -> int:
        return sum(len(v) for v in self._split(None).values())

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples())

    def summary(self) -> str:
        """A one-line-per-class text summary of the current split.

        Example:
            >>> from pathlib import Path
            >>> s = Sample(Path("/d/a.png"), None, "a", "good", 0)
            >>> print(AnomalyDataset(Path("/d"), "x", {"test": {"a": [s]}}).summary())
            x [test]: 1 classes, 1 images
              a: 1 normal, 0 anomalous, 0 with mask
        """
        lines = [f"{self.name} [{self.split}]: {len(self.classes)} classes, {len(self)} images"]
        for c, (n, a) in self.class_counts().items():
            masked = sum(s.is_anomalous and s.has_mask for s in self.samples(c))
            lines.append(f"  {c}: {n} normal, {a} anomalous, {masked} with mask")
        return "\n".join(lines)


def _image_hw(path: Path, exif_transpose: bool = False) -> tuple[int, int]:
    from zsad.data.masks import image_orientation

    orientation, (w, h) = image_orientation(path)
    return (w, h) if exif_transpose and orientation in (5, 6, 7, 8) else (h, w)


def group_samples(samples: Sequence[Sample]) -> dict[str, list[Sample]]:
    """Group samples by class, keeping first-appearance order of the classes and the samples.

    Example:
        >>> from pathlib import Path
        >>> ss = [Sample(Path(f"/{i}.png"), None, c, "", 0) for i, c in enumerate("bab")]
        >>> {k: len(v) for k, v in group_samples(ss).items()}
        {'b': 2, 'a': 1}
    """
    out: dict[str, list[Sample]] = {}
    for s in samples:
        out.setdefault(s.cls_name, []).append(s)
    return out


def describe_missing(paths: Sequence[Path], where: str, fix: str, limit: int = 5) -> str:
    """Message naming up to ``limit`` missing paths and their count.

    Example:
        >>> print(describe_missing([Path("/a.png")], "meta.json", "Fix the paths."))
        1 file named by meta.json does not exist:
          /a.png
        Fix the paths.
    """
    n = len(paths)
    head = f"{n} file{'s' if n != 1 else ''} named by {where} {'do' if n != 1 else 'does'} not exist:"
    shown = "\n".join(f"  {p}" for p in paths[:limit])
    more = f"\n  ... and {n - limit} more" if n > limit else ""
    return f"{head}\n{shown}{more}\n{fix}"


def check_files_exist(samples: Sequence[Sample], where: str, fix: str) -> None:
    """Raise :class:`DatasetError` listing the images and masks of ``samples`` that do not exist.

    Example:
        >>> check_files_exist([], "meta.json", "")  # nothing to check
    """
    missing: list[Path] = []
    for s in samples:
        for p in (s.img_path, s.mask_path):
            if p is not None and not p.is_file():
                missing.append(p)
    if missing:
        raise DatasetError(describe_missing(missing, where, fix))
