"""Ground-truth masks, read and resized exactly as the official Tipsomaly loader does.

The official rule (``datasets/dataset.py`` of AlirezaSalehy/Tipsomaly, also AnomalyCLIP/AdaCLIP):

* read: ``np.array(Image.open(p).convert('L')) > 0``
* resize: ``x255`` -> PIL ``'L'`` -> ``resize((S, S), Image.BILINEAR)`` -> ``/255`` -> ``> 0.5``

so a mask with grey (anti-aliased, JPEG) values is binarised with ``> 0`` before resizing. zsad does the same
and says so with a warning (see :meth:`zsad.data.AnomalyDataset.load_mask` and :func:`check_mask_values`).

The rule is written once, in :func:`binarize_mask`; the dataset reader (:meth:`~zsad.data.AnomalyDataset.load_mask`),
evaluation and training all reach it through :func:`read_ground_truth` (or :func:`read_mask` / :func:`resize_mask`).

Example:
    >>> import numpy as np
    >>> m = np.zeros((4, 4), np.uint8); m[1:3, 1:3] = 1
    >>> int(resize_mask(m, 8).sum())
    16
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps

from zsad._boundary import reading
from zsad.errors import DatasetError

if TYPE_CHECKING:  # pragma: no cover
    from zsad.data.samples import AnomalyDataset

__all__ = [
    "GroundTruth",
    "binarize_mask",
    "check_mask_values",
    "image_orientation",
    "is_binary_mask",
    "load_mask",
    "read_ground_truth",
    "read_mask",
    "read_mask_values",
    "resize_mask",
    "validate_masks",
]

_BINARY_SETS = (frozenset({0, 255}), frozenset({0, 1}))


_REEXPORT = "Replace or re-export the file (a PNG of the image's size, 0 = normal, 255 = anomalous)."


def read_mask_values(path: str | Path) -> np.ndarray:
    """The mask as PIL ``convert('L')`` gives it: an H x W uint8 array of grey values (not yet binarised).

    Raises:
        DatasetError: the file is missing, is not an image, is truncated or is a decompression bomb.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.png")
        >>> Image.fromarray(np.array([[0, 128]], np.uint8)).save(p)
        >>> read_mask_values(p).tolist()
        [[0, 128]]
    """
    with reading(path, DatasetError, what="mask", fix=_REEXPORT):
        with Image.open(path) as im:
            values = np.array(im.convert("L"))
    if values.ndim != 2 or 0 in values.shape:
        raise DatasetError(f"Mask {path} is empty ({values.shape}); {_REEXPORT}")
    return values


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask as an H x W uint8 array of 0/1: ``convert('L') > 0``, exactly as the official loader.

    Raises:
        DatasetError: the file is missing or is not an image.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.png")
        >>> Image.fromarray(np.array([[0, 255], [7, 0]], np.uint8)).save(p)
        >>> read_mask(p).tolist()
        [[0, 1], [1, 0]]
    """
    return binarize_mask(read_mask_values(path))


def _wh(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    w, h = size
    return int(w), int(h)


def binarize_mask(values: np.ndarray, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """THE ground-truth rule of the official loader: ``values > 0``; with ``size``, that binary mask x255 ->
    PIL ``'L'`` -> bilinear resize -> ``/255`` -> ``> 0.5``.

    Every mask zsad compares with a map goes through this function (evaluation, training, the dataset reader).

    Args:
        values: H x W array of grey values (any dtype; non-zero means anomalous).
        size: ``S`` for S x S, or ``(width, height)`` as PIL takes it; ``None`` keeps the size.

    Returns:
        ``(height, width)`` uint8 array of 0/1.

    Example:
        >>> binarize_mask(np.array([[0, 1, 128, 255]])).tolist()
        [[0, 1, 1, 1]]
        >>> m = np.zeros((10, 10), np.uint8); m[:, :5] = 9
        >>> binarize_mask(m, (4, 2)).tolist()
        [[1, 1, 0, 0], [1, 1, 0, 0]]
    """
    m = np.asarray(values)
    if m.ndim != 2 or 0 in m.shape:
        raise DatasetError(f"A mask must be a non-empty H x W array, got shape {m.shape}.")
    binary = (m > 0).astype(np.uint8)
    if size is None:
        return binary
    if min(_wh(size)) < 1:
        raise DatasetError(f"A mask can only be resized to a positive size, got {size}.")
    resized = np.asarray(Image.fromarray(binary * 255).resize(_wh(size), Image.BILINEAR), dtype=np.float32) / 255.0
    return (resized > 0.5).astype(np.uint8)


def resize_mask(mask: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a mask exactly as the official loader (:func:`binarize_mask` with a size).

    Args:
        mask: H x W array (any dtype; non-zero means anomalous).
        size: ``S`` for S x S, or ``(width, height)`` as PIL takes it.

    Returns:
        ``(height, width)`` uint8 array of 0/1.

    Example:
        >>> m = np.zeros((10, 10), np.uint8); m[:, :5] = 1
        >>> r = resize_mask(m, (4, 2)); r.shape, r.dtype.name, r.tolist()
        ((2, 4), 'uint8', [[1, 1, 0, 0], [1, 1, 0, 0]])
    """
    return binarize_mask(mask, size)


@dataclass(frozen=True)
class GroundTruth:
    """One ground-truth mask as :func:`read_ground_truth` read it.

    Attributes:
        mask: ``(h, w)`` uint8 0/1 at the requested size (:func:`binarize_mask`).
        native_hw: ``(height, width)`` of the file.
        grey: the file holds values other than {0, 255} / {0, 1} (binarised with ``> 0``, as the official loader).
        vanished: anomalous pixels at the native size, none left after resizing (a defect smaller than the
            resampling).
    """

    mask: np.ndarray
    native_hw: tuple[int, int]
    grey: bool
    vanished: bool


_ORIENTATION = 0x0112  # the EXIF orientation tag
_SWAPS_AXES = (5, 6, 7, 8)  # orientations that rotate by 90 degrees (width and height swap)


def image_orientation(image_path: str | Path) -> tuple[int, tuple[int, int]]:
    """The EXIF orientation (1 = none) of an image file and its stored ``(width, height)``."""
    with reading(image_path, DatasetError, what="image"), Image.open(image_path) as im:
        orientation = im.getexif().get(_ORIENTATION, 1)
        return (orientation if orientation in range(1, 9) else 1), im.size


def _orient_like_image(mask_im: Image.Image, mask_path: str | Path, image_path: str | Path) -> Image.Image:
    """Apply the image's EXIF orientation to its mask, which is stored like the image's pixels."""
    orientation, (w, h) = image_orientation(image_path)
    if orientation == 1:
        return mask_im
    rotated = (h, w) if orientation in _SWAPS_AXES else (w, h)
    if mask_im.size != (w, h) and mask_im.size == rotated:
        raise DatasetError(
            f"Mask {mask_path} is {mask_im.size[0]}x{mask_im.size[1]}, the size of its image {image_path} only after "
            f"the image's EXIF rotation (stored {w}x{h}, orientation {orientation}). With exif_transpose=true masks "
            "are turned like their images, so a mask must be stored like the image's pixels; zsad does not guess which "
            f"way this one is turned. Re-export the mask at {w}x{h}, or set exif_transpose=false."
        )
    mask_im.getexif()[_ORIENTATION] = orientation
    return ImageOps.exif_transpose(mask_im)


def read_ground_truth(
    path: str | Path,
    size: int | tuple[int, int] | None = None,
    *,
    image_path: str | Path | None = None,
    exif_transpose: bool = False,
) -> GroundTruth:
    """Read a mask file and binarise it with the official rule (:func:`binarize_mask`), noting what was done.

    With ``exif_transpose=True`` the mask is turned by its image's (``image_path``) EXIF orientation, as the
    image is, before it is binarised and resized: images, masks and overlays share one orientation.

    Raises:
        DatasetError: an unreadable mask; under ``exif_transpose`` a mask whose size fits its image only after
            the rotation (ambiguous: it is an error, not a guess).

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.png")
        >>> Image.fromarray(np.array([[0, 128], [0, 0]], np.uint8)).save(p)
        >>> gt = read_ground_truth(p, 4)
        >>> gt.mask.shape, gt.native_hw, gt.grey, gt.vanished
        ((4, 4), (2, 2), True, False)
    """
    with reading(path, DatasetError, what="mask", fix=_REEXPORT), Image.open(path) as im:
        mask_im = im.convert("L")
    if exif_transpose and image_path is not None:
        mask_im = _orient_like_image(mask_im, path, image_path)
    values = np.array(mask_im)
    mask = binarize_mask(values, size)
    vanished = size is not None and bool(values.any()) and not mask.any()
    return GroundTruth(mask, (int(values.shape[0]), int(values.shape[1])), not is_binary_mask(values), vanished)


def load_mask(
    path: str | Path | None,
    size: int | tuple[int, int] | None = None,
    image_size_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read (and optionally resize) a mask; ``path=None`` gives all zeros.

    Args:
        path: mask file, or ``None`` for a normal / unmasked sample.
        size: resize target (``S`` or ``(w, h)``); ``None`` keeps the native size.
        image_size_hw: the image's ``(height, width)``; when given, a mask of another size raises, and it sets
            the shape of the zeros when ``path`` and ``size`` are both ``None``.

    Raises:
        DatasetError: missing/unreadable file, size mismatch, or nothing to size the zeros by.

    Example:
        >>> load_mask(None, 3).tolist()
        [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
        >>> load_mask(None, image_size_hw=(1, 2)).shape
        (1, 2)
    """
    if path is None:
        if size is not None:
            w, h = _wh(size)
        elif image_size_hw is not None:
            h, w = image_size_hw
        else:
            raise DatasetError("load_mask(None) needs size= or image_size_hw= to know the shape of the zero mask.")
        return np.zeros((h, w), np.uint8)
    mask = read_mask(path)
    if image_size_hw is not None and tuple(mask.shape) != tuple(image_size_hw):
        raise DatasetError(
            f"Mask {path} is {mask.shape[1]}x{mask.shape[0]} (w x h) but its image is "
            f"{image_size_hw[1]}x{image_size_hw[0]}; the mask does not belong to the image or was resized. "
            "Re-export the mask at the image's size."
        )
    return mask if size is None else resize_mask(mask, size)


def is_binary_mask(values: np.ndarray) -> bool:
    """True when the grey values are a subset of {0, 255} or of {0, 1} (a clean binary mask).

    Example:
        >>> is_binary_mask(np.array([0, 255])), is_binary_mask(np.array([0, 1])), is_binary_mask(np.array([0, 128]))
        (True, True, False)
    """
    found = frozenset(int(v) for v in np.unique(values))
    return any(found <= allowed for allowed in _BINARY_SETS)


def _dataset_masks(dataset: AnomalyDataset, split: str | None):
    return [s for s in dataset.samples(split=split) if s.mask_path is not None]


def check_mask_values(dataset: AnomalyDataset, split: str | None = None) -> list[Path]:
    """Read every mask of the split and list those with values other than {0,255}/{0,1}.

    When there are any, one ``UserWarning`` is issued for the dataset (they are binarised with ``> 0``,
    as the official loader does; nothing is guessed). Reads whole files: use on demand, not in hot loops.

    Example:
        >>> import tempfile
        >>> from zsad.data import open_dataset
        >>> d = Path(tempfile.mkdtemp()); (d / "gt").mkdir()
        >>> Image.new("RGB", (4, 4)).save(d / "a.png")
        >>> Image.fromarray(np.array([[0, 128, 255, 0]] * 4, np.uint8)).save(d / "gt" / "a.png")
        >>> _ = (d / "meta.json").write_text('{"test": {"c": [{"img_path": "a.png", "mask_path": "gt/a.png", '
        ...                                  '"cls_name": "c", "specie_name": "x", "anomaly": 1}]}}')
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always")
        ...     [p.name for p in check_mask_values(open_dataset(d))], len(w)
        (['a.png'], 1)
    """
    grey = [s.mask_path for s in _dataset_masks(dataset, split) if not is_binary_mask(read_mask_values(s.mask_path))]
    if grey:
        shown = ", ".join(str(p) for p in grey[:3])
        warnings.warn(
            f"Dataset '{dataset.name}': {len(grey)} mask(s) hold values other than 0/255 or 0/1 (e.g. {shown}); "
            "they are binarised with > 0 as the official loader does.",
            UserWarning,
            stacklevel=2,
        )
    return grey


def validate_masks(
    dataset: AnomalyDataset,
    *,
    check_mask_sizes: bool = True,
    split: str | None = None,
    decode: bool = False,
    progress: bool = False,
) -> None:
    """Check that every mask opens and (by default) has its image's size.

    By default only file headers are read (fast); ``decode=True`` decodes every mask completely, which also finds
    truncated and corrupt masks (``zsad data check`` does this).

    Raises:
        DatasetError: listing up to 5 unreadable masks or size mismatches (``mask WxH != image WxH``) and the count.

    Example:
        >>> import tempfile
        >>> from zsad.data import open_dataset
        >>> d = Path(tempfile.mkdtemp())
        >>> for n, size in (("c/test/bad/0.png", (8, 6)), ("c/ground_truth/bad/0_mask.png", (6, 8))):
        ...     (d / n).parent.mkdir(parents=True, exist_ok=True); Image.new("L", size).save(d / n)
        >>> try:
        ...     validate_masks(open_dataset(d))
        ... except DatasetError as e:
        ...     print(str(e).splitlines()[1].split(": ", 1)[1].split(" (")[0])
        mask 6x8 != image 8x6
    """
    from tqdm.auto import tqdm

    problems: list[str] = []
    samples = _dataset_masks(dataset, split)
    for s in tqdm(samples, desc="checking masks", unit="mask", disable=not progress or len(samples) < 2):
        try:
            if decode:
                h, w = read_mask_values(s.mask_path).shape
                msize = (w, h)
            else:
                with reading(s.mask_path, DatasetError, what="mask"), Image.open(s.mask_path) as m:
                    msize = m.size
            if check_mask_sizes:
                with reading(s.img_path, DatasetError, what="image"), Image.open(s.img_path) as im:
                    isize = im.size
                if msize != isize:
                    problems.append(f"{s.mask_path}: mask {msize[0]}x{msize[1]} != image {isize[0]}x{isize[1]} ({s.img_path})")
        except DatasetError as exc:
            problems.append(str(exc))
    if problems:
        shown = "\n".join(f"  {p}" for p in problems[:5])
        more = f"\n  ... and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise DatasetError(
            f"Dataset '{dataset.name}' ({dataset.source or dataset.root}): {len(problems)} mask problem(s):\n"
            f"{shown}{more}\nEach mask must be a complete image of the same width x height as its image; "
            "fix or re-export those files (or fix the pairing in the description)."
        )
