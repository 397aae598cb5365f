"""Anomaly-map overlays with a colour scale shared across a class (numpy + Pillow; matplotlib optional).

The official Tipsomaly visualiser normalises every map to its own min-max before colouring it. That makes the
least anomalous image of a class look as "hot" as the most anomalous one: a normal image becomes a red blob.
zsad never does that by default: all images of a class share one scale ``(vmin, vmax)`` from
:func:`class_scale`, so the same map value always gets the same colour, and normal images look cool.

* :func:`class_scale` -- the shared scale of a class (``"percentile"`` 1st / 99.9th by default, or ``"minmax"``).
* :func:`colorize` -- values -> RGB through a colormap (``"jet"``, as OpenCV's ``COLORMAP_JET``, implemented with
  numpy; ``"gray"``; any matplotlib colormap name when matplotlib is installed).
* :func:`overlay` -- heat map blended over the image, with optional ground-truth contours (pale green
  ``(120, 251, 120)``, as the official code draws them).
* :func:`save_overlays` -- one PNG per image for a set of results or maps, on a shared scale.
* :func:`class_figure` -- a grid of a few normal and anomalous examples with a colour bar (one PNG per class).

Example:
    >>> import numpy as np
    >>> maps = [np.full((8, 8), 0.2, np.float32), np.linspace(0.2, 0.9, 64, dtype=np.float32).reshape(8, 8)]
    >>> vmin, vmax = class_scale(maps, method="minmax")
    >>> (round(vmin, 2), round(vmax, 2))
    (0.2, 0.9)
    >>> img = overlay(np.zeros((8, 8, 3), np.uint8), maps[0], vmin, vmax)
    >>> img.size, img.mode
    ((8, 8), 'RGB')
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from zsad._files import atomic_path, unique_names
from zsad.errors import ConfigError

__all__ = [
    "CONTOUR_COLOR",
    "class_figure",
    "class_scale",
    "colorize",
    "colormap_lut",
    "mask_contours",
    "normalize",
    "overlay",
    "save_overlays",
]

CONTOUR_COLOR = (120, 251, 120)
"""Pale green of the ground-truth contours (the official ``visualize.py`` colour)."""


# ------------------------------------------------------------------------------------------------- colour maps


def _jet_lut() -> np.ndarray:
    """The classic 256-entry jet table (OpenCV ``COLORMAP_JET`` / MATLAB ``jet``) as uint8 RGB."""
    x = np.linspace(0.0, 1.0, 256)
    r = np.clip(1.5 - np.abs(4.0 * x - 3.0), 0.0, 1.0)
    g = np.clip(1.5 - np.abs(4.0 * x - 2.0), 0.0, 1.0)
    b = np.clip(1.5 - np.abs(4.0 * x - 1.0), 0.0, 1.0)
    return np.round(np.stack([r, g, b], axis=1) * 255.0).astype(np.uint8)


def colormap_lut(name: str = "jet") -> np.ndarray:
    """A ``(256, 3)`` uint8 RGB lookup table: ``"jet"`` and ``"gray"`` built in, other names from matplotlib.

    Raises:
        ConfigError: an unknown name, or a matplotlib name without matplotlib installed.

    Example:
        >>> lut = colormap_lut("jet")
        >>> lut.shape, lut[0].tolist(), lut[-1].tolist()  # dark blue ... dark red
        ((256, 3), [0, 0, 128], [128, 0, 0])
    """
    if name == "jet":
        return _jet_lut()
    if name in ("gray", "grey"):
        return np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    try:
        import matplotlib
    except ImportError:
        raise ConfigError(
            f"Colormap {name!r} needs matplotlib (pip install 'zsad[viz]'); 'jet' and 'gray' work without it."
        ) from None
    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ConfigError(f"Unknown colormap {name!r}; use 'jet', 'gray' or a matplotlib colormap name.") from None
    return np.round(cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)


def normalize(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """``(values - vmin) / (vmax - vmin)`` clipped to [0, 1] (float32); with ``vmax <= vmin``: ``values > vmin``.

    Example:
        >>> normalize(np.array([0.0, 0.5, 2.0]), 0.0, 1.0).tolist()
        [0.0, 0.5, 1.0]
    """
    v = np.asarray(values, dtype=np.float32)
    if not float(vmax) > float(vmin):
        return (v > vmin).astype(np.float32)
    return np.clip((v - np.float32(vmin)) / np.float32(float(vmax) - float(vmin)), 0.0, 1.0)


def colorize(values: np.ndarray, vmin: float, vmax: float, colormap: str = "jet") -> np.ndarray:
    """Map values to ``H x W x 3`` uint8 RGB colours on the fixed scale ``[vmin, vmax]``.

    Example:
        >>> colorize(np.array([[0.0, 1.0]]), 0.0, 1.0).tolist()
        [[[0, 0, 128], [128, 0, 0]]]
    """
    idx = np.round(normalize(values, vmin, vmax) * 255.0).astype(np.intp)
    return colormap_lut(colormap)[idx]


# ----------------------------------------------------------------------------------------------------- scale


def class_scale(
    maps: Any, method: str = "percentile", percentiles: tuple[float, float] = (1.0, 99.9)
) -> tuple[float, float]:
    """The colour scale ``(vmin, vmax)`` shared by all maps of a class.

    Args:
        maps: an ``(N, H, W)`` array or a list of ``H x W`` arrays (sizes may differ).
        method: ``"percentile"`` (default): the ``percentiles`` (1st and 99.9th) of all values of all maps, which
            ignores a few extreme pixels; ``"minmax"``: the smallest and largest value over the class.
        percentiles: the lower and upper percentile of ``"percentile"``.

    Returns:
        ``(vmin, vmax)`` as floats (``vmin < vmax`` unless every value is equal).

    Example:
        >>> maps = np.stack([np.zeros((10, 10)), np.ones((10, 10))])
        >>> class_scale(maps, "minmax"), class_scale(maps)
        ((0.0, 1.0), (0.0, 1.0))
    """
    if isinstance(maps, np.ndarray):
        flat = maps.reshape(-1)
    else:
        flat = np.concatenate([np.asarray(m, dtype=np.float32).reshape(-1) for m in maps])
    if flat.size == 0:
        raise ConfigError("class_scale needs at least one map value.")
    if method == "minmax":
        return float(flat.min()), float(flat.max())
    if method == "percentile":
        lo, hi = percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
        vmin, vmax = np.percentile(flat, [lo, hi])
        return float(vmin), float(vmax)
    raise ConfigError(f"class_scale method must be 'percentile' or 'minmax', got {method!r}.")


# --------------------------------------------------------------------------------------------------- overlays


def _as_rgb(image: Any, exif_transpose: bool = False, high_bit_depth: str = "scale") -> Image.Image:
    """The picture under an overlay: paths and PIL images exactly as :func:`zsad.io.load_image` loads them for
    the model (same EXIF orientation, same 16-bit handling), arrays as given."""
    if isinstance(image, (str, os.PathLike, Image.Image)):
        from zsad.io import load_image

        return load_image(image, exif_transpose=exif_transpose, high_bit_depth=high_bit_depth)  # type: ignore[arg-type]
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr * 255.0 if arr.max() <= 1.0 else arr), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[2] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # C x H x W
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    return Image.fromarray(arr).convert("RGB")


def mask_contours(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The inner boundary band of a binary mask: ``mask XOR binary_erosion(mask, iterations=width)``.

    Example:
        >>> m = np.zeros((6, 6), bool); m[1:5, 1:5] = True
        >>> int(mask_contours(m, 1).sum())  # the 12 border pixels of the 4x4 square
        12
    """
    from scipy import ndimage

    m = np.asarray(mask) > 0
    if not m.any():
        return np.zeros_like(m)
    eroded = ndimage.binary_erosion(m, structure=np.ones((3, 3), bool), iterations=max(int(width), 1), border_value=0)
    return m ^ eroded


def overlay(
    image: Any,
    anomaly_map: np.ndarray,
    vmin: float,
    vmax: float,
    alpha: float = 0.5,
    colormap: str = "jet",
    contours_mask: np.ndarray | None = None,
    *,
    contour_color: tuple[int, int, int] = CONTOUR_COLOR,
    contour_width: int = 2,
    exif_transpose: bool = False,
    high_bit_depth: str = "scale",
) -> Image.Image:
    """Blend the coloured map over the image: ``(1 - alpha) * image + alpha * colour(map)``, on a fixed scale.

    The result has the map's size: the image is resized to it (PIL bilinear) when they differ, as the official
    code resizes images to the 518x518 maps. Pass the *class* scale (:func:`class_scale`) as ``vmin``/``vmax``
    so that overlays of one class are comparable; never a per-image min-max. An image path or PIL image is
    loaded as the detector loaded it: give the detector's ``exif_transpose`` and ``high_bit_depth`` settings
    (``config.preprocess``), so the overlay shows the picture the map belongs to. A map that fits the image
    only turned by 90 degrees is refused (its orientation differs from the image's), never squashed.

    Args:
        image: a path, a ``PIL.Image``, or an ``H x W x 3`` array (uint8, or float in [0, 1]).
        anomaly_map: ``H x W`` float map.
        vmin, vmax: the colour scale (values below/above are clipped).
        alpha: weight of the heat map (0.5 = the official blend).
        colormap: ``"jet"`` (default), ``"gray"`` or a matplotlib colormap name.
        contours_mask: optional ground-truth mask (any size; resized with the official mask rule); its boundary
            is drawn in ``contour_color`` (pale green), ``contour_width`` pixels wide.
        exif_transpose: apply the EXIF orientation of an image file / PIL image (as the detector did).
        high_bit_depth: 16-bit and float images: ``"scale"`` (default: their range to 0-255), ``"clip"``.

    Example:
        >>> m = np.zeros((4, 4), np.float32); m[0, 0] = 1.0
        >>> o = np.asarray(overlay(np.zeros((4, 4, 3), np.uint8), m, 0.0, 1.0, alpha=1.0))
        >>> o[0, 0].tolist(), o[3, 3].tolist()
        ([128, 0, 0], [0, 0, 128])
    """
    amap = np.asarray(anomaly_map, dtype=np.float32)
    if amap.ndim != 2:
        raise ConfigError(f"anomaly_map must be H x W, got shape {amap.shape}.")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be in [0, 1], got {alpha}.")
    h, w = amap.shape
    base = _as_rgb(image, exif_transpose, high_bit_depth)
    if base.size == (h, w) and h != w:
        raise ConfigError(
            f"The anomaly map is {w}x{h} (w x h) but the image is {h}x{w}: they are turned 90 degrees against each "
            "other, usually by an EXIF orientation applied to one and not the other. Pass the detector's "
            "exif_transpose setting (exif_transpose=True if it applied the EXIF orientation)."
        )
    if base.size != (w, h):
        base = base.resize((w, h), Image.BILINEAR)
    heat = colorize(amap, vmin, vmax, colormap).astype(np.float32)
    out = (1.0 - alpha) * np.asarray(base, dtype=np.float32) + alpha * heat
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    if contours_mask is not None:
        mask = np.asarray(contours_mask)
        if mask.shape != (h, w):
            from zsad.data.masks import resize_mask

            mask = resize_mask(mask, (w, h))
        out[mask_contours(mask, contour_width)] = contour_color
    return Image.fromarray(out)


def _atomic_save_png(img: Image.Image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def output_stems(paths: Sequence[str | os.PathLike | None]) -> list[str]:
    """One distinct file stem per input image, for its per-image outputs (maps, overlays).

    An image keeps its own stem when no other image has it; images sharing a stem get their path relative to the
    inputs' common folder joined with ``__`` (``good/000.png``, ``crack/000.png`` -> ``good__000``,
    ``crack__000``), then with the extension (``000.png``, ``000.jpg`` -> ``000_png``, ``000_jpg``), and as a
    last resort a hash (see :func:`zsad._files.unique_names`; names are compared case-insensitively). Inputs
    without a path (arrays, PIL images) are named by position (``0000``, ``0001``, ...). Write the mapping with
    :func:`zsad._files.write_name_map` next to the outputs.

    Example:
        >>> output_stems(["d/good/000.png", "d/crack/000.png", "d/crack/001.png"])
        ['good__000', 'crack__000', '001']
        >>> output_stems(["d/000.png", "d/000.jpg", None])
        ['000_png', '000_jpg', '0002']
    """
    keys = [os.path.abspath(p) if p is not None else f"<input {i}>" for i, p in enumerate(paths)]
    located = [k for k, p in zip(keys, paths) if p is not None]
    root = os.path.commonpath([os.path.dirname(k) for k in located]) if located else ""
    levels: list[list[str]] = [[], [], []]
    for i, (key, p) in enumerate(zip(keys, paths)):
        if p is None:
            for level in levels:
                level.append(f"{i:04d}")
            continue
        rel = Path(os.path.relpath(key, root))
        parts = rel.with_suffix("").parts
        levels[0].append(rel.stem)
        levels[1].append("__".join(parts))
        levels[2].append("__".join(parts) + "_" + rel.suffix.lstrip(".") if rel.suffix else "__".join(parts))
    return unique_names(keys, *levels)


def save_overlays(
    results_or_maps: Sequence[Any],
    images: Sequence[Any] | None,
    out_dir: str | os.PathLike,
    *,
    masks: Sequence[np.ndarray | None] | None = None,
    scale: tuple[float, float] | str = "percentile",
    names: Sequence[str] | None = None,
    alpha: float = 0.5,
    colormap: str = "jet",
    exif_transpose: bool = False,
    high_bit_depth: str = "scale",
) -> list[Path]:
    """Write one overlay PNG per image into ``out_dir``, all on one shared colour scale.

    Args:
        results_or_maps: :class:`~zsad.results.AnomalyResult` s or ``H x W`` maps (one per image).
        images: the images (paths, PIL images, arrays); ``None`` takes each result's ``image_path``.
        out_dir: folder to write into (created).
        masks: optional ground-truth masks (or ``None`` entries) whose contours are drawn.
        scale: ``(vmin, vmax)``, or a :func:`class_scale` method computed over all the given maps.
        names: file stems (default: :func:`output_stems` of the image paths). Stems that would collide (equal
            after :func:`zsad._files.safe_filename`, or differing only in case) get a short hash each, so every
            image has its own file.
        alpha, colormap, exif_transpose, high_bit_depth: as in :func:`overlay`.

    Returns:
        The written paths, in input order.

    Example:
        >>> import tempfile
        >>> maps = [np.zeros((4, 4), np.float32), np.ones((4, 4), np.float32)]
        >>> imgs = [np.zeros((4, 4, 3), np.uint8)] * 2
        >>> [p.name for p in save_overlays(maps, imgs, tempfile.mkdtemp(), scale="minmax")]
        ['0000.png', '0001.png']
    """
    items = list(results_or_maps)
    maps = [np.asarray(getattr(r, "anomaly_map", r), dtype=np.float32) for r in items]
    if images is None:
        images = [getattr(r, "image_path", None) for r in items]
        if any(i is None for i in images):
            raise ConfigError("save_overlays: pass images= when the results carry no image_path.")
    if len(images) != len(maps) or (masks is not None and len(masks) != len(maps)):
        raise ConfigError(f"save_overlays: {len(maps)} maps, {len(images)} images" +
                          (f", {len(masks)} masks" if masks is not None else "") + "; give one of each per image.")
    vmin, vmax = class_scale(maps, scale) if isinstance(scale, str) else (float(scale[0]), float(scale[1]))
    out = Path(out_dir)
    if names is not None:
        stems = unique_names([f"{i}:{n}" for i, n in enumerate(names)], list(names))
    else:
        stems = output_stems([img if isinstance(img, (str, os.PathLike)) else None for img in images])
    written = []
    for i, (amap, image) in enumerate(zip(maps, images)):
        mask = masks[i] if masks is not None else None
        img = overlay(image, amap, vmin, vmax, alpha, colormap, mask, exif_transpose=exif_transpose,
                      high_bit_depth=high_bit_depth)
        written.append(_atomic_save_png(img, out / f"{stems[i]}.png"))
    return written


# ------------------------------------------------------------------------------------------------------ figure


def _colorbar(height: int, vmin: float, vmax: float, colormap: str, width: int = 16) -> Image.Image:
    """A vertical colour bar (high values on top) with the scale's ends and middle written beside it."""
    font = ImageFont.load_default()
    labels = [f"{v:.3g}" for v in (vmax, (vmin + vmax) / 2.0, vmin)]
    text_w = max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(t, font=font)) for t in labels) + 6
    bar = Image.new("RGB", (width + text_w, height), (255, 255, 255))
    ramp = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None].repeat(width, axis=1)
    bar.paste(Image.fromarray(colorize(ramp, 0.0, 1.0, colormap)), (0, 0))
    draw = ImageDraw.Draw(bar)
    for text, y in zip(labels, (0, height // 2 - 5, height - 11)):
        draw.text((width + 3, max(y, 0)), text, fill=(0, 0, 0), font=font)
    return bar


def class_figure(
    images: Sequence[Any],
    maps: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence[int | None],
    masks: Sequence[np.ndarray | None] | None = None,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    n_normal: int = 3,
    n_anomalous: int = 3,
    tile: int = 160,
    title: str | None = None,
    alpha: float = 0.5,
    colormap: str = "jet",
    exif_transpose: bool = False,
    high_bit_depth: str = "scale",
) -> Image.Image:
    """A grid PNG of a class: a row of normal and a row of anomalous examples on one colour scale, with a colour bar.

    The first ``n_normal`` normal (label 0) and ``n_anomalous`` anomalous (label 1) images are shown in input
    order, each as an overlay of ``tile x tile`` pixels with ground-truth contours when ``masks`` are given. The
    scale defaults to :func:`class_scale` over *all* maps given (not only the shown ones). ``exif_transpose`` and
    ``high_bit_depth`` are as in :func:`overlay`.

    Example:
        >>> maps = [np.zeros((8, 8), np.float32), np.ones((8, 8), np.float32)]
        >>> fig = class_figure([np.zeros((8, 8, 3), np.uint8)] * 2, maps, [0, 1], tile=32, title="toy")
        >>> fig.mode, fig.size[0] > 64
        ('RGB', True)
    """
    maps = [np.asarray(m, dtype=np.float32) for m in maps]
    if not (len(images) == len(maps) == len(labels)) or (masks is not None and len(masks) != len(maps)):
        raise ConfigError("class_figure: give one image, map and label (and mask, if any) per example.")
    if vmin is None or vmax is None:
        lo, hi = class_scale(maps)
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    rows = []
    for wanted, n in ((0, n_normal), (1, n_anomalous)):
        picks = [i for i, y in enumerate(labels) if y == wanted][: max(n, 0)]
        if picks:
            rows.append((("normal", "anomalous")[wanted], picks))
    pad, header = 4, 14
    top = 16 if title else 0
    ncols = max((len(p) for _, p in rows), default=1)
    grid_h = top + len(rows) * (tile + header + pad) + pad
    bar = _colorbar(max(len(rows), 1) * (tile + header + pad) - pad - header, vmin, vmax, colormap)
    fig = Image.new("RGB", (pad + ncols * (tile + pad) + bar.width + pad, grid_h), (255, 255, 255))
    draw = ImageDraw.Draw(fig)
    font = ImageFont.load_default()
    if title:
        draw.text((pad, 2), title, fill=(0, 0, 0), font=font)
    y = top + pad
    for name, picks in rows:
        draw.text((pad, y), name, fill=(0, 0, 0), font=font)
        for col, i in enumerate(picks):
            ov = overlay(images[i], maps[i], vmin, vmax, alpha, colormap, None if masks is None else masks[i],
                         exif_transpose=exif_transpose, high_bit_depth=high_bit_depth)
            fig.paste(ov.resize((tile, tile), Image.BILINEAR), (pad + col * (tile + pad), y + header))
        y += tile + header + pad
    fig.paste(bar, (pad + ncols * (tile + pad), top + pad + header))
    return fig
