"""Input loading: paths, PIL images, arrays and tensors -> model-ready ``(3, S, S)`` float tensors in [0, 1].

The default pipeline reproduces the official Tipsomaly preprocessing exactly:
``PIL.Image.open(p).convert("RGB").resize((S, S), Image.BILINEAR)`` -> ``/255`` (no crop, no mean/std unless the
backbone declares them; aspect ratio is not kept, maps are resized back to the original size).

Accepted inputs (documented in :meth:`zsad.Detector.predict`):

* a path (``str`` / ``os.PathLike``) to any image Pillow reads;
* a ``PIL.Image.Image``: RGB as is; ``L``, ``LA``, ``P``, ``RGBA``, ``CMYK``, ``YCbCr`` ... through
  ``convert("RGB")`` as the official pipeline (alpha is dropped without compositing); 16-bit and float modes
  (``I;16``, ``I``, ``F``) per ``high_bit_depth``: refused by default, since ``convert("RGB")`` clips them at 255;
  ``rgb_conversion="after_resize"`` resizes in the file's own mode and converts afterwards (the AnomalyCLIP /
  torchvision order: ``P`` images are then resized with nearest neighbours, ``RGBA`` with premultiplied alpha);
* a ``numpy.ndarray``: ``H x W x 3`` (or ``x 4``, alpha dropped; or ``H x W`` grayscale) ``uint8`` RGB;
* a ``torch.Tensor``: ``3 x H x W`` or ``B x 3 x H x W`` float in [0, 1] (resized with torch bilinear+antialias
  when not already ``S x S``).

Example:
    >>> import numpy as np
    >>> img = load_image(np.zeros((20, 30, 3), np.uint8))
    >>> img.size, img.mode
    ((30, 20), 'RGB')
    >>> prepare(img, 28).shape
    torch.Size([3, 28, 28])
"""

from __future__ import annotations

import os
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from PIL import Image, ImageOps

from zsad._boundary import reading
from zsad.errors import ImageError

__all__ = ["load_image", "prepare", "PreparedBatch", "prepare_batch", "resize_tensor", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}
_HIGH_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
_REEXPORT = "The file is corrupt, truncated or not an image format Pillow supports; re-export it (e.g. as PNG)."


def _describe(source: Any) -> str:
    return str(source) if isinstance(source, (str, os.PathLike)) else f"input of type {type(source).__name__}"


def load_image(
    source: str | os.PathLike | Image.Image | np.ndarray,
    *,
    exif_transpose: bool = False,
    high_bit_depth: Literal["error", "scale", "clip"] = "error",
    keep_mode: bool = False,
) -> Image.Image:
    """Load a path, PIL image or uint8 array as an RGB ``PIL.Image`` (see the module docstring for the rules).

    ``keep_mode=True`` leaves 8-bit images in their own mode (``P``, ``RGBA``, ``L``, ...) for a resize before the
    conversion; 16-bit and float modes are still handled per ``high_bit_depth``.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"Image file {path} does not exist (or is not a file); check the path.")
        with reading(path, ImageError, what="image", fix=_REEXPORT):
            with Image.open(path) as im:
                im.load()
                image = im.copy() if not exif_transpose else ImageOps.exif_transpose(im)
    elif isinstance(source, Image.Image):
        _decode(source)
        with reading("the PIL image", ImageError, fix=_REEXPORT):
            image = ImageOps.exif_transpose(source) if exif_transpose else source
    elif isinstance(source, np.ndarray):
        image = _from_array(source)
    else:
        raise ImageError(
            f"Unsupported input of type {type(source).__name__}: pass a file path, a PIL image, an HxWx3 uint8 "
            "array or a 3xHxW / Bx3xHxW float tensor in [0, 1]."
        )
    if image.width < 1 or image.height < 1:
        raise ImageError(f"{_describe(source)} is empty ({image.width}x{image.height} pixels); give a real image.")
    if keep_mode and image.mode not in _HIGH_BIT_MODES:
        return image
    with reading(_describe(source), ImageError, fix=_REEXPORT):
        return _to_rgb(image, _describe(source), high_bit_depth)


def _decode(image: Image.Image) -> None:
    """Decode a (possibly lazily opened) PIL image now, turning decoder failures into :class:`ImageError`."""
    with reading(f"the PIL image {getattr(image, 'filename', '') or '(in memory)'}", ImageError, fix=_REEXPORT):
        image.load()


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise ImageError(
            f"Array inputs must be uint8 RGB (HxWx3) or grayscale (HxW); got dtype {array.dtype} with shape "
            f"{array.shape}. Convert with (array * 255).round().astype('uint8') if it holds [0, 1] floats, or pass a "
            "3xHxW float tensor instead."
        )
    if 0 in array.shape:
        raise ImageError(f"Array input has shape {array.shape}: it holds no pixels; give a real image.")
    if array.ndim == 2:
        return Image.fromarray(array, mode=None).convert("L")
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(array[..., :3]))
    if array.ndim == 3 and array.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(array[..., 0]))
    raise ImageError(
        f"Array input has shape {array.shape}; expected HxW, HxWx1, HxWx3 or HxWx4 (channels last). For "
        "channels-first data pass a torch tensor."
    )


def _to_rgb(image: Image.Image, what: str, high_bit_depth: str) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_BIT_MODES:
        return _high_bit_to_rgb(image, what, high_bit_depth)
    return image.convert("RGB")


def _high_bit_to_rgb(image: Image.Image, what: str, high_bit_depth: str) -> Image.Image:
    """16-bit / 32-bit / float modes per ``high_bit_depth`` (``scale`` maps the dtype's range to 0-255)."""
    if high_bit_depth == "error":
        raise ImageError(
            f"{what} has the {image.mode} pixel mode (16-bit or float). The official pipeline's "
            "convert('RGB') clips such values at 255, which saturates most images. Choose explicitly with "
            "preprocess.high_bit_depth='scale' (map the image's dtype range to 0-255) or 'clip' "
            "(reproduce the official behaviour), or convert the image to 8-bit yourself."
        )
    if high_bit_depth == "scale":
        arr = np.nan_to_num(np.asarray(image, dtype=np.float64))
        top = 65535.0 if image.mode.startswith("I;16") else (1.0 if image.mode == "F" else max(float(arr.max()), 1.0))
        arr = np.clip(np.round(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    return image.convert("RGB")


def prepare(image: Image.Image, size: int, resample: str = "bilinear", mean=None, std=None, backend: str = "pil"):
    """Resize a PIL image to ``size x size`` and return a ``(3, size, size)`` float tensor (normalised if asked).

    ``backend="pil"`` resizes the 8-bit image with PIL (the official Tipsomaly pipeline); an image that is not RGB
    yet is resized in its own mode and converted afterwards. ``"torch"`` converts to float32 in [0, 1] first and
    resizes with :func:`resize_tensor` (torchvision's resize of float tensors, as anomalib): no rounding, no
    clamping, so bicubic values may overshoot [0, 1].
    """
    import torch

    if backend == "torch":
        image = image if image.mode == "RGB" else image.convert("RGB")
        tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
        return _normalize(resize_tensor(tensor[None], size, resample)[0], mean, std)
    resized = image.resize((size, size), _RESAMPLE[resample])
    resized = resized if resized.mode == "RGB" else resized.convert("RGB")
    tensor = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    return _normalize(tensor, mean, std)


def resize_tensor(batch, size: int, resample: str = "bilinear"):
    """Resize a float ``(B, C, H, W)`` batch to ``size x size`` with torch (antialiased unless ``nearest``).

    A batch already at that size is returned unchanged.
    """
    import torch.nn.functional as F

    if tuple(batch.shape[-2:]) == (size, size):
        return batch
    if resample == "nearest":
        return F.interpolate(batch, size=(size, size), mode="nearest")
    return F.interpolate(batch, size=(size, size), mode=resample, align_corners=False, antialias=True)


def _normalize(tensor, mean, std):
    import torch

    if mean is None or (tuple(mean) == (0.0, 0.0, 0.0) and tuple(std) == (1.0, 1.0, 1.0)):
        return tensor
    shape = (3, 1, 1) if tensor.ndim == 3 else (1, 3, 1, 1)
    return (tensor - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


@dataclass
class PreparedBatch:
    """Model-ready pixels with what is needed to map results back to each input."""

    pixels: Any  # torch.Tensor (B, 3, S, S)
    original_sizes: list[tuple[int, int]]
    paths: list[str | None]


def _tensor_items(tensor, size: int, mean, std, resample: str = "bilinear") -> list[tuple[Any, tuple[int, int]]]:
    import torch

    if not torch.is_floating_point(tensor):
        raise ImageError(
            f"Tensor inputs must be float in [0, 1] with shape 3xHxW or Bx3xHxW; got dtype {tensor.dtype}. "
            "Divide uint8 tensors by 255."
        )
    if tensor.is_meta:
        raise ImageError(
            "Tensor input is on the 'meta' device: it has a shape but no values. Pass a tensor holding pixels "
            "(e.g. on 'cpu' or 'cuda')."
        )
    batch = tensor.unsqueeze(0) if tensor.ndim == 3 else tensor
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ImageError(f"Tensor input has shape {tuple(tensor.shape)}; expected 3xHxW or Bx3xHxW (RGB).")
    if 0 in batch.shape[-2:]:
        raise ImageError(f"Tensor input has shape {tuple(tensor.shape)}: it holds no pixels; give a real image.")
    if batch.numel() and (not torch.isfinite(batch).all() or batch.min() < 0 or batch.max() > 1):
        raise ImageError(
            "Tensor input values must be finite and in [0, 1] (got range "
            f"[{float(batch.min()):.3g}, {float(batch.max()):.3g}]); divide by 255 or undo any normalisation."
        )
    h, w = batch.shape[-2:]
    pixels = _normalize(resize_tensor(batch.float(), size, resample).cpu(), mean, std)
    return [(p, (int(h), int(w))) for p in pixels]


def prepare_batch(
    inputs: Sequence[Any],
    size: int,
    *,
    resample: str = "bilinear",
    mean=None,
    std=None,
    exif_transpose: bool = False,
    high_bit_depth: Literal["error", "scale", "clip"] = "error",
    executor: Executor | None = None,
    backend: Literal["pil", "torch"] = "pil",
    rgb_conversion: Literal["before_resize", "after_resize"] = "before_resize",
) -> PreparedBatch:
    """Load and preprocess a list of inputs (tensors may carry several images) into one batch.

    Images are resized by ``backend`` (see :func:`prepare`); tensors always with torch, bilinear for the ``pil``
    backend and ``resample`` for the ``torch`` one. ``rgb_conversion`` says whether images are converted to RGB
    before the resize (default, official Tipsomaly) or after it (``"after_resize"``, torchvision's order).

    With an ``executor`` (e.g. a thread pool) the images are decoded and resized in parallel; Pillow releases the
    GIL while it works, so threads help. The order of the batch is the order of ``inputs``.
    """
    import torch

    def one(item: Any) -> list[tuple[Any, tuple[int, int], str | None]]:
        if isinstance(item, torch.Tensor):
            mode = resample if backend == "torch" else "bilinear"
            return [(p, hw, None) for p, hw in _tensor_items(item, size, mean, std, mode)]
        image = load_image(item, exif_transpose=exif_transpose, high_bit_depth=high_bit_depth,
                           keep_mode=rgb_conversion == "after_resize" and backend == "pil")
        path = str(item) if isinstance(item, (str, os.PathLike)) else None
        return [(prepare(image, size, resample, mean, std, backend), (image.height, image.width), path)]

    for item in inputs:  # decode PIL images here: one lazily opened image must not be read by two threads at once
        if isinstance(item, Image.Image):
            _decode(item)
    parts = list(executor.map(one, inputs)) if executor is not None and len(inputs) > 1 else [one(x) for x in inputs]
    rows = [row for part in parts for row in part]
    if not rows:
        raise ImageError("No images to process: the input list is empty.")
    return PreparedBatch(torch.stack([r[0] for r in rows]), [r[1] for r in rows], [r[2] for r in rows])
