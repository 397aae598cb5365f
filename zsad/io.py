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
import sys
from itertools import islice
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
from PIL import Image, ImageOps

from zsad._boundary import reading
from zsad.errors import ConfigError, ImageError

__all__ = [
    "load_image",
    "prepare",
    "prepare_array",
    "resize_square",
    "keeps_file_mode",
    "pixels_from_uint8",
    "PreparedBatch",
    "prepare_batch",
    "iter_prepared",
    "resize_tensor",
    "resize_float_planes",
    "is_tensor",
    "as_items",
    "class_names_for",
    "IMAGE_EXTENSIONS",
]

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


def keeps_file_mode(rgb_conversion: str, backend: str) -> bool:
    """Whether images stay in their file's mode until after the resize: ``rgb_conversion="after_resize"`` with the
    ``pil`` backend (the ``torch`` backend converts to RGB floats first).

    Example:
        >>> keeps_file_mode("after_resize", "pil"), keeps_file_mode("after_resize", "torch")
        (True, False)
    """
    return rgb_conversion == "after_resize" and backend == "pil"


def resize_square(image: Image.Image, size: int, resample: str = "bilinear") -> np.ndarray:
    """Pillow resize of an image to ``size x size``: a ``(size, size, 3)`` uint8 array (the official resize).

    An image that is not RGB yet (kept in its file's mode, ``rgb_conversion="after_resize"``) is resized in its own
    mode and converted to RGB afterwards.

    Example:
        >>> resize_square(Image.new("RGB", (30, 20), (255, 0, 0)), 28).shape
        (28, 28, 3)
    """
    resized = image.resize((size, size), _RESAMPLE[resample])
    return np.asarray(resized if resized.mode == "RGB" else resized.convert("RGB"), dtype=np.uint8)


def prepare_array(image: Image.Image, size: int, resample: str = "bilinear") -> np.ndarray:
    """Resize an RGB PIL image to ``size x size``: a ``(3, size, size)`` float32 array in [0, 1] (no torch needed).

    Example:
        >>> prepare_array(Image.new("RGB", (30, 20), (255, 0, 0)), 28)[:, 0, 0].tolist()
        [1.0, 0.0, 0.0]
    """
    return np.ascontiguousarray(resize_square(image, size, resample).transpose(2, 0, 1)).astype(np.float32) / np.float32(255)


def pixels_from_uint8(pixels, mean=None, std=None):
    """``(B, H, W, 3)`` uint8 tensor (any device) -> ``(B, 3, H, W)`` float32 ``/ 255``, normalised by mean/std.

    Bit-identical to :func:`prepare_array` followed by the normalisation, on every device: the division is by a
    tensor, not a Python number (CUDA divides by a scalar through its reciprocal, which is not always the correctly
    rounded quotient).

    Example:
        >>> import torch
        >>> pixels_from_uint8(torch.full((1, 2, 2, 3), 255, dtype=torch.uint8)).shape
        torch.Size([1, 3, 2, 2])
    """
    import torch

    scale = torch.tensor(255.0, device=pixels.device)
    return _normalize(pixels.permute(0, 3, 1, 2).contiguous() / scale, mean, std)  # uint8 / float32 -> float32


def _resized(image: Image.Image, size: int, resample: str, backend: str, torch_free: bool = False):
    """``(3, size, size)`` pixels in [0, 1] before normalisation: a numpy array, or a tensor (``torch`` backend).

    ``torch_free`` (the exported-model path) makes the ``torch`` backend resize float32 planes with PIL instead
    (:func:`resize_float_planes`), which agrees with torch's resize to ~1e-5 without importing it.
    """
    image = image if backend == "pil" or image.mode == "RGB" else image.convert("RGB")
    if backend == "torch" and torch_free:
        return resize_float_planes(np.asarray(image, dtype=np.uint8).astype(np.float32) / np.float32(255), size, resample)
    if backend == "torch":
        import torch

        tensor = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
        return resize_tensor(tensor[None], size, resample)[0]
    return prepare_array(image, size, resample)


def resize_float_planes(array: np.ndarray, size: int, resample: str = "bicubic") -> np.ndarray:
    """Resize a float ``(H, W, C)`` image to ``(C, size, size)`` float32, one PIL ``F`` plane per channel.

    PIL's float resampling is antialiased, not rounded and not clamped, like torch's ``interpolate(...,
    antialias=True)`` on float tensors (:func:`resize_tensor`), with which it agrees to about 1e-5: the torch-free
    form of ``resize_backend="torch"``. An image already at that size is returned unchanged.

    Example:
        >>> resize_float_planes(np.full((30, 20, 3), 0.5, np.float32), 8).shape
        (3, 8, 8)
    """
    planes = np.asarray(array, dtype=np.float32)
    if planes.shape[:2] == (size, size):
        return np.ascontiguousarray(planes.transpose(2, 0, 1))
    return np.stack([
        np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c]), mode="F").resize((size, size), _RESAMPLE[resample]))
        for c in range(planes.shape[-1])
    ])


def prepare(image: Image.Image, size: int, resample: str = "bilinear", mean=None, std=None, backend: str = "pil"):
    """Resize a PIL image to ``size x size`` and return a ``(3, size, size)`` float tensor (normalised if asked).

    ``backend="pil"`` resizes the 8-bit image with PIL (the official Tipsomaly pipeline); an image that is not RGB
    yet is resized in its own mode and converted afterwards. ``"torch"`` converts to float32 in [0, 1] first and
    resizes with :func:`resize_tensor` (torchvision's resize of float tensors, as anomalib): no rounding, no
    clamping, so bicubic values may overshoot [0, 1].
    """
    import torch

    pixels = _resized(image, size, resample, backend)
    return _normalize(torch.from_numpy(pixels) if isinstance(pixels, np.ndarray) else pixels, mean, std)


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


def _normalize(pixels, mean, std):
    """``(pixels - mean) / std`` over the channel axis of a ``(3, H, W)`` or ``(B, 3, H, W)`` tensor or array."""
    if mean is None or (tuple(mean) == (0.0, 0.0, 0.0) and tuple(std) == (1.0, 1.0, 1.0)):
        return pixels
    shape = (3, 1, 1) if pixels.ndim == 3 else (1, 3, 1, 1)
    if isinstance(pixels, np.ndarray):
        return (pixels - np.asarray(mean, np.float32).reshape(shape)) / np.asarray(std, np.float32).reshape(shape)
    import torch

    mean, std = (torch.tensor(v, device=pixels.device).view(shape) for v in (mean, std))
    return (pixels - mean) / std


def is_tensor(value: Any) -> bool:
    """Whether *value* is a ``torch.Tensor``, without importing torch (a tensor implies torch is loaded).

    Example:
        >>> is_tensor(np.zeros(3))
        False
    """
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def as_items(inputs: Any) -> tuple[list[Any], bool]:
    """``(items, single)``: the inputs of one ``predict`` call as a list, and whether one result is expected.

    A path, image, array or 3-D tensor is a single input; a list, a tuple or a 4-D tensor (one result per image)
    is not.

    Example:
        >>> as_items("a.png"), as_items(["a.png", "b.png"])
        ((['a.png'], True), (['a.png', 'b.png'], False))
    """
    single = not isinstance(inputs, (list, tuple)) and not (is_tensor(inputs) and inputs.ndim == 4)
    items = [inputs] if single or is_tensor(inputs) else list(inputs)
    if not items:
        raise ImageError("predict() got an empty list of inputs; pass at least one image.")
    return items, single


def class_names_for(class_name: str | Sequence[str], items: Sequence[Any]) -> list[str]:
    """One class name per image of *items* (a 4-D tensor holds several): one name for all or one per image.

    Example:
        >>> class_names_for("screw", ["a.png", "b.png"])
        ['screw', 'screw']
    """
    from zsad.prompts.templates import check_class_name

    count = sum(int(x.shape[0]) if is_tensor(x) and x.ndim == 4 else 1 for x in items)
    if isinstance(class_name, (str, bytes)) or not isinstance(class_name, Iterable):
        return [check_class_name(class_name)] * count
    names = [check_class_name(c) for c in class_name]
    if len(names) != count:
        raise ConfigError(f"class_name has {len(names)} entries for {count} images; give one name or one per image.")
    return names


@dataclass
class PreparedBatch:
    """Model-ready pixels with what is needed to map results back to each input.

    ``errors`` maps the position (in the inputs of this batch) of each input that could not be loaded to its
    :class:`ImageError`; the rows of ``pixels`` are the other inputs, in order. It is empty unless the caller asked
    for errors to be returned rather than raised (see :meth:`zsad.Detector.iter_batches`).
    """

    pixels: Any  # torch.Tensor or np.ndarray (B, 3, S, S)
    original_sizes: list[tuple[int, int]]
    paths: list[str | None]
    errors: dict[int, ImageError] = field(default_factory=dict)


def _tensor_items(tensor, size: int, resample: str = "bilinear") -> list[tuple[Any, tuple[int, int]]]:
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
    return [(p, (int(h), int(w))) for p in resize_tensor(batch.float(), size, resample).cpu()]


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
    output: Literal["torch", "numpy"] = "torch",
    rgb_conversion: Literal["before_resize", "after_resize"] = "before_resize",
) -> PreparedBatch:
    """Load and preprocess a list of inputs (tensors may carry several images) into one batch.

    Images are resized by ``backend`` (see :func:`prepare`); tensors always with torch, bilinear for the ``pil``
    backend and ``resample`` for the ``torch`` one. ``rgb_conversion`` says whether images are converted to RGB
    before the resize (default, official Tipsomaly) or after it (``"after_resize"``, torchvision's order).

    With an ``executor`` (e.g. a thread pool) the images are decoded and resized in parallel; Pillow releases the
    GIL while it works, so threads help. The order of the batch is the order of ``inputs``. ``output="numpy"``
    returns the pixels as a float32 array and imports torch only if an input is already a tensor (the path
    exported models run on).
    """

    def one(item: Any) -> list[tuple[Any, tuple[int, int], str | None]]:
        if is_tensor(item):
            mode = resample if backend == "torch" else "bilinear"
            return [(p, hw, None) for p, hw in _tensor_items(item, size, mode)]
        image = load_image(item, exif_transpose=exif_transpose, high_bit_depth=high_bit_depth,
                           keep_mode=keeps_file_mode(rgb_conversion, backend))
        path = str(item) if isinstance(item, (str, os.PathLike)) else None
        return [(_resized(image, size, resample, backend, output == "numpy"), (image.height, image.width), path)]

    for item in inputs:  # decode PIL images here: one lazily opened image must not be read by two threads at once
        if isinstance(item, Image.Image):
            _decode(item)
    parts = list(executor.map(one, inputs)) if executor is not None and len(inputs) > 1 else [one(x) for x in inputs]
    rows = [row for part in parts for row in part]
    if not rows:
        raise ImageError("No images to process: the input list is empty.")
    if output == "numpy":
        pixels = np.stack([r[0] if isinstance(r[0], np.ndarray) else r[0].numpy() for r in rows])
    else:
        import torch

        pixels = torch.stack([torch.from_numpy(r[0]) if isinstance(r[0], np.ndarray) else r[0] for r in rows])
    return PreparedBatch(_normalize(pixels, mean, std), [r[1] for r in rows], [r[2] for r in rows])


def iter_prepared(
    items: Iterable[Any],
    batch_size: int,
    prepare: Callable[[Sequence[Any], Executor], PreparedBatch],
    *,
    workers: int | None = None,
) -> Iterator[tuple[list[Any], PreparedBatch]]:
    """Yield ``(chunk, prepare(chunk, executor))`` for chunks of at most ``batch_size`` items, loading ahead.

    The next chunk is prepared while the caller works on the current one (e.g. runs the model), and the images of a
    chunk are decoded in parallel by ``workers`` threads (default: up to 8, one per CPU core).

    Example:
        >>> sizes = [b.original_sizes for _, b in iter_prepared([np.zeros((4, 6, 3), np.uint8)] * 3, 2,
        ...          lambda chunk, ex: prepare_batch(chunk, 8, executor=ex, output="numpy"))]
        >>> sizes
        [[(4, 6), (4, 6)], [(4, 6)]]
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
    source = iter(items)  # consumed lazily (a generator works): at most two chunks are held at a time
    chunk = list(islice(source, batch_size))
    if not chunk:
        return
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=1) as ahead, ThreadPoolExecutor(max_workers=workers) as decode:
        pending = ahead.submit(prepare, chunk, decode)
        while chunk:
            batch = pending.result()
            following = list(islice(source, batch_size))
            if following:
                pending = ahead.submit(prepare, following, decode)
            yield chunk, batch
            chunk = following
