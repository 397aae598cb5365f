"""The host side of prediction: inputs -> model-ready batches on the model's device, loaded ahead of the model.

:class:`InputPipeline` turns inputs (a list or any iterable, consumed lazily) into batches of pixels on the device
while the model works on the previous batch:

* **files** are decoded and resized by a pool of worker processes sized to the usable CPU cores (``workers``), kept
  alive between calls, when the model is on a GPU; for a model on the CPU, for small jobs (one batch) and for
  in-memory inputs (PIL images, arrays), threads of this process decode instead (Pillow releases the GIL); tensors
  and recipes that resize with torch (``preprocess.resize_backend="torch"``) are prepared in threads;
* batches are assembled as uint8 (4x fewer bytes than float32), in pinned memory when the device is a GPU, copied
  with ``non_blocking=True``, and converted to float (``/255``, mean/std) on the device, bit-identical to
  :func:`zsad.io.prepare_batch`;
* ``prefetch`` batches are submitted ahead, so decoding of batch k+1 overlaps the model on batch k; at most
  ``prefetch + 1`` chunks of the inputs are held at a time.

Two preprocessing modes (:class:`PipelineOptions`):

``"exact"`` (default)
    Pillow decode, ``convert("RGB")`` and the recipe's resize on the host (Pillow's, or torch's for
    ``resize_backend="torch"``): the reference preprocessing, bit for bit (the parity tests hold).
``"device"``
    Resize on the model's device, and JPEG files decoded by torchvision on that device, one batched call per batch
    (nvJPEG on a GPU: ``torchvision.io.decode_jpeg(..., device="cuda")``; libjpeg-turbo in the calling process for
    a CPU model); other formats are decoded by Pillow in the workers. Pillow-resize recipes (the Tipsomaly ones)
    get torch bilinear with antialiasing rounded to 8-bit levels, at most one level from Pillow's pixels;
    torch-resize recipes (WinCLIP) get their own torch resize, on the device. On a GPU it moves less data and work
    through the host; the measured effect on maps and scores is on the performance page of the docs.

The rules for odd inputs are those of :func:`zsad.io.load_image` in both modes: JPEG files that are CMYK/YCCK, that
do not end with an end-of-image marker (truncated), that the device decoder rejects, or any JPEG when
``exif_transpose`` is on, take the Pillow path; 16-bit images follow ``high_bit_depth``; a file that cannot be read
gives the same :class:`~zsad.errors.ImageError` as there, naming the file, and the other images of its batch are
still loaded.

Example (three arrays loaded in threads for a CPU model, in batches of two):
    >>> import numpy as np
    >>> pipe = InputPipeline(Preprocess(size=28), device="cpu")
    >>> [(len(chunk), batch.pixels.shape) for chunk, batch in pipe.batches([np.zeros((20, 30, 3), np.uint8)] * 3, 2)]
    [(2, torch.Size([2, 3, 28, 28])), (1, torch.Size([1, 3, 28, 28]))]
    >>> pipe.close()
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

import numpy as np
from PIL import Image

from zsad.errors import ConfigError, ImageError
from zsad.io import (
    PreparedBatch,
    _decode,
    is_tensor,
    keeps_file_mode,
    load_image,
    pixels_from_uint8,
    prepare_batch,
    resize_square,
)

__all__ = ["InputPipeline", "PipelineOptions", "Preprocess", "usable_cores"]

# Worker processes are forked (as torch's DataLoader does on Linux): they only run Pillow and numpy, never torch or
# CUDA, and unlike "spawn"/"forkserver" a fork does not re-import the user's main script. Elsewhere threads load.
_FORK = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


@dataclass(frozen=True)
class PipelineOptions:
    """How a :class:`~zsad.Detector` loads its inputs (runtime settings, like device and dtype).

    Args:
        preprocess: ``"exact"`` (the recipe's preprocessing on the host, bit-identical to the reference) or
            ``"device"`` (resize, and JPEG decoding, on the model's device; see the module docstring).
        workers: decoding worker processes. Default: for a model on a GPU, one per usable CPU core (at most 32);
            for a model on the CPU, none: the cores are the model's, and threads of this process, which Pillow
            runs in parallel, cost less there. ``0`` never starts processes; a number starts that many whatever
            the device.
        prefetch: batches loaded ahead of the one the model is working on (default: 2 for a GPU model, 1 for a CPU
            model, whose cores also run the model).

    Example:
        >>> PipelineOptions(preprocess="device", workers=4)
        PipelineOptions(preprocess='device', workers=4, prefetch=None)
    """

    preprocess: Literal["exact", "device"] = "exact"
    workers: int | None = None
    prefetch: int | None = None

    def __post_init__(self) -> None:
        if self.preprocess not in ("exact", "device"):
            raise ConfigError(f"preprocess must be 'exact' or 'device', got {self.preprocess!r}.")
        for name in ("workers", "prefetch"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                what = " (0 = no worker processes)" if name == "workers" else ""
                raise ConfigError(f"{name} must be a whole number >= 0{what}, got {value!r}.")

    def ahead(self, device_type: str) -> int:
        """Batches loaded ahead for a model on a device of this type (see ``prefetch``)."""
        if self.prefetch is not None:
            return self.prefetch
        return 1 if device_type == "cpu" else 2

    def processes(self, device_type: str) -> int:
        """Worker processes for a model on a device of this type (see ``workers``)."""
        if self.workers is not None:
            return self.workers
        return 0 if device_type == "cpu" else min(32, usable_cores())


@dataclass(frozen=True)
class Preprocess:
    """What is done to every image: the detector's preprocessing (picklable, it travels to worker processes)."""

    size: int
    resample: str = "bilinear"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    exif_transpose: bool = False
    high_bit_depth: str = "error"
    backend: str = "pil"
    rgb_conversion: str = "before_resize"

    @property
    def keeps_file_mode(self) -> bool:
        """Whether images are resized in their file's mode and converted to RGB afterwards."""
        return keeps_file_mode(self.rgb_conversion, self.backend)

    def prepare(self, items: Sequence[Any], executor: Executor | None = None) -> PreparedBatch:
        """:func:`zsad.io.prepare_batch` of ``items`` with these settings (float pixels on the CPU)."""
        return prepare_batch(items, self.size, resample=self.resample, mean=self.mean, std=self.std,
                             exif_transpose=self.exif_transpose, high_bit_depth=self.high_bit_depth,
                             executor=executor, backend=self.backend,  # type: ignore[arg-type]
                             rgb_conversion=self.rgb_conversion)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------------
# work done per image (in worker processes or threads; no torch in _load, so workers start fast)
# ------------------------------------------------------------------------------------------------------------
@dataclass
class _Loaded:
    """One loaded image: ``pixels`` is ``(size, size, 3)`` uint8 (exact mode) or ``(H, W, 3)`` (device mode);
    or ``jpeg`` holds the undecoded bytes of a file for the device's JPEG decoder."""

    original_size: tuple[int, int]
    pixels: np.ndarray | None = None
    jpeg: bytes | None = None


def _load(item: Any, spec: Preprocess, resize: bool, jpeg_bytes: bool) -> _Loaded | ImageError:
    """Load one input as uint8; a failure is returned (as the :class:`ImageError` of the CPU path), not raised."""
    try:
        if jpeg_bytes and isinstance(item, (str, os.PathLike)) and not spec.exif_transpose:
            try:
                with open(item, "rb") as fh:
                    data = fh.read()
            except OSError:
                data = b""  # the loader below says why, in its words
            size = _plain_jpeg_size(data)
            if size is not None:
                return _Loaded(size, jpeg=data)
        image = load_image(item, exif_transpose=spec.exif_transpose, high_bit_depth=spec.high_bit_depth,
                           keep_mode=resize and spec.keeps_file_mode)
        pixels = resize_square(image, spec.size, spec.resample) if resize else np.array(image, dtype=np.uint8)
        return _Loaded((image.height, image.width), pixels)
    except ImageError as exc:
        return exc


def _prepare_float(item: Any, spec: Preprocess) -> PreparedBatch | ImageError:
    """Prepare one input the float way (:meth:`Preprocess.prepare`): tensors, torch-resize recipes."""
    try:
        return spec.prepare([item])
    except ImageError as exc:
        return exc


def _plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` of a complete 8-bit JPEG with 1 or 3 components (what nvJPEG decodes like libjpeg);
    None for anything else (CMYK/YCCK, 12-bit, truncated, not a JPEG), which goes to Pillow."""
    if data[:3] != b"\xff\xd8\xff" or data.rstrip(b"\x00")[-2:] != b"\xff\xd9":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):  # baseline, extended, progressive Huffman
            if pos + 10 > len(data):
                return None
            precision, height, width, components = (data[pos + 4], int.from_bytes(data[pos + 5 : pos + 7], "big"),
                                                    int.from_bytes(data[pos + 7 : pos + 9], "big"), data[pos + 9])
            ok = precision == 8 and components in (1, 3) and height > 0 and width > 0
            return (height, width) if ok else None
        if 0xC3 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # lossless, hierarchical, arithmetic
            return None
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _watch_parent(parent: int) -> None:
    """In a decoding worker: exit when the process that started it is gone (killed, for instance), so that no
    worker outlives its detector's process."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="zsad-parent-watch", daemon=True).start()


def _done(value: Any) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


# ------------------------------------------------------------------------------------------------------------
# the pipeline
# ------------------------------------------------------------------------------------------------------------
class InputPipeline:
    """Loads batches of inputs for a model on ``device`` (see the module docstring).

    Args:
        spec: the per-image preprocessing.
        device: the model's device; batches are delivered there.
        options: :class:`PipelineOptions` (default: exact preprocessing; worker processes for a GPU model).
    """

    def __init__(self, spec: Preprocess, device: Any = "cpu", options: PipelineOptions | None = None) -> None:
        import torch

        self.spec, self.options = spec, options or PipelineOptions()
        self.device = torch.device(device)
        self._pool: ProcessPoolExecutor | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _shutdown, self.__dict__)
        if self.options.preprocess == "device":
            if spec.backend == "pil" and spec.resample != "bilinear":
                raise ConfigError(
                    f"preprocess='device' resizes Pillow-resize recipes with the bilinear filter only; this recipe "
                    f"asks for {spec.resample!r}. Use preprocess='exact'."
                )
            if self.device.type == "cuda":
                from zsad.errors import require

                require("torchvision", "gpu", "Decoding JPEG files on the GPU")

    @property
    def device_decode(self) -> bool:
        """Whether JPEG files are decoded by torchvision on the model's device (``preprocess="device"``)."""
        if self.options.preprocess != "device":
            return False
        try:
            import torchvision.io  # noqa: F401
        except ImportError:
            return False
        return True

    def close(self) -> None:
        """Stop the worker processes and threads (a later call starts new ones)."""
        _shutdown(self.__dict__)

    def __enter__(self) -> InputPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- executors ---------------------------------------------------------------------------------------------
    def _process_pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                workers = self.options.processes(self.device.type)
                pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                           initializer=_watch_parent, initargs=(os.getpid(),))
                with warnings.catch_warnings():  # Python >= 3.12 warns about forking a multi-threaded process
                    warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
                    pool.submit(int).result()  # start the workers now, from this thread
                self._pool = pool
            return self._pool

    def _thread_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(max(1, min(8, usable_cores())), thread_name_prefix="zsad-load")
            return self._threads

    def _use_processes(self, chunk: Sequence[Any], more: bool) -> bool:
        """Worker processes for a chunk of files only, when they are worth starting (more than one batch)."""
        return (_FORK and self.options.processes(self.device.type) > 0 and (self._pool is not None or more)
                and all(isinstance(x, (str, os.PathLike)) for x in chunk))

    # -- batches -----------------------------------------------------------------------------------------------
    def batches(
        self, items: Iterable[Any], batch_size: int, *, errors: Literal["raise", "return"] = "raise"
    ) -> Iterator[tuple[list[Any], PreparedBatch]]:
        """Yield ``(chunk, PreparedBatch)`` for consecutive chunks of at most ``batch_size`` inputs, loading ahead.

        With ``errors="raise"`` an input that cannot be loaded raises its :class:`ImageError` when its batch is
        reached (the batches before it were yielded); with ``"return"`` it is reported in ``PreparedBatch.errors``
        and the rest of the batch is loaded.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
        if errors not in ("raise", "return"):
            raise ConfigError(f"errors must be 'raise' or 'return', got {errors!r}.")
        source = iter(items)
        prefetch = self.options.ahead(self.device.type)
        chunks: deque[list[Any]] = deque()
        while len(chunks) <= prefetch and (chunk := list(islice(source, batch_size))):
            chunks.append(chunk)
        if not chunks:
            return
        ahead: deque[tuple[list[Any], list[Future]]] = deque()
        try:
            more = len(chunks) > 1
            for chunk in chunks:
                ahead.append((chunk, self._submit(chunk, more)))
            while ahead:
                chunk, futures = ahead.popleft()
                batch = self._assemble(chunk, [_result(f, self) for f in futures])
                if batch.errors and errors == "raise":
                    raise batch.errors[min(batch.errors)]
                yield chunk, batch  # the model works on it while `prefetch` chunks load
                following = list(islice(source, batch_size))
                if following:
                    ahead.append((following, self._submit(following, True)))
        finally:
            for _, futures in ahead:
                for f in futures:
                    f.cancel()

    def _submit(self, chunk: list[Any], more: bool) -> list[Future]:
        spec = self.spec
        if (spec.backend != "pil" and self.options.preprocess == "exact") or any(is_tensor(x) for x in chunk):
            threads = self._thread_pool()  # torch work: threads of this process
            return [_predecoded(x) or threads.submit(_prepare_float, x, spec) for x in chunk]
        executor: Executor = self._process_pool() if self._use_processes(chunk, more) else self._thread_pool()
        resize = self.options.preprocess == "exact"
        jpeg = self.device_decode
        return [_predecoded(x) or executor.submit(_load, x, spec, resize, jpeg) for x in chunk]

    def _assemble(self, chunk: list[Any], loaded: list[Any]) -> PreparedBatch:
        import torch

        errors = {i: r for i, r in enumerate(loaded) if isinstance(r, ImageError)}
        jpegs = [i for i, r in enumerate(loaded) if isinstance(r, _Loaded) and r.jpeg is not None]
        if jpegs:
            for i, image in zip(jpegs, self._decode_jpegs([loaded[i].jpeg for i in jpegs])):
                if isinstance(image, Exception):  # the device decoder refused it: the Pillow path decides
                    image = _load(chunk[i], self.spec, False, False)
                    if isinstance(image, ImageError):
                        errors[i] = loaded[i] = image
                        continue
                    image = image.pixels
                loaded[i] = _Loaded(loaded[i].original_size, image)
        rows = [(i, r) for i, r in enumerate(loaded) if i not in errors]
        u8 = [r.pixels for _, r in rows if isinstance(r, _Loaded)]
        u8_pixels = self._uint8_pixels(u8) if u8 else None
        parts, sizes, paths, k = [], [], [], 0
        for i, r in rows:
            if isinstance(r, _Loaded):
                parts.append(u8_pixels[k : k + 1])
                sizes.append(r.original_size)
                paths.append(str(chunk[i]) if isinstance(chunk[i], (str, os.PathLike)) else None)
                k += 1
            else:
                parts.append(r.pixels.to(self.device, non_blocking=True))
                sizes.extend(r.original_sizes)
                paths.extend(r.paths)
        if not parts:
            pixels = torch.empty((0, 3, self.spec.size, self.spec.size), device=self.device)
        elif len(parts) == len(u8):
            pixels = u8_pixels
        else:
            pixels = torch.cat(parts)
        return PreparedBatch(pixels, sizes, paths, dict(sorted(errors.items())))

    def _uint8_pixels(self, images: list[Any]):
        """uint8 ``(H, W, 3)`` images (host arrays or device tensors) -> normalised float pixels on the device."""
        s = self.spec
        if self.options.preprocess == "exact":
            return pixels_from_uint8(self._upload(np.stack(images)), s.mean, s.std)
        return self._resize_on_device(images)

    def _upload(self, array: np.ndarray):
        """A host uint8 array -> tensor on the device (through pinned memory, without blocking, on a GPU)."""
        import torch

        host = torch.from_numpy(array)
        if self.device.type != "cuda":
            return host.to(self.device)
        pinned = torch.empty(host.shape, dtype=host.dtype, pin_memory=True)
        pinned.copy_(host)
        return pinned.to(self.device, non_blocking=True)

    def _decode_jpegs(self, datas: list[bytes]) -> list[Any]:
        """Decode JPEG bytes on the device, batched; an image the decoder refuses is returned as its exception."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        encoded = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        device = str(self.device)
        with warnings.catch_warnings():  # torchvision >= 0.29 announces a move of its decoders to TorchCodec
            warnings.filterwarnings("ignore", message=".*TorchCodec.*", category=DeprecationWarning)
            try:
                return [t.permute(1, 2, 0) for t in decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)]
            except RuntimeError:  # one bad file fails the whole batched call: find it, keep the others
                out: list[Any] = []
                for t in encoded:
                    try:
                        out.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device).permute(1, 2, 0))
                    except RuntimeError as exc:
                        out.append(exc)
                return out

    def _resize_on_device(self, images: list[Any]):
        """Full-size ``(H, W, 3)`` uint8 images -> ``(B, 3, S, S)`` normalised float pixels, resized on the device
        (equal sizes together). Pillow-resize recipes: bilinear with antialiasing (Pillow's filter), rounded to
        8-bit levels; torch-resize recipes: :func:`zsad.io.resize_tensor` of the float image, as on the host."""
        import torch

        from zsad.io import _normalize, resize_tensor

        s = self.spec
        tensors = [self._upload(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x for x in images]
        out = torch.empty((len(tensors), 3, s.size, s.size), dtype=torch.float32, device=self.device)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault(tuple(t.shape[:2]), []).append(i)
        for idx in groups.values():
            batch = torch.stack([tensors[i] for i in idx])
            if s.backend == "pil":
                if tuple(batch.shape[1:3]) != (s.size, s.size):
                    resized = resize_tensor(batch.permute(0, 3, 1, 2).float(), s.size, "bilinear")
                    batch = resized.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
                out[idx] = pixels_from_uint8(batch, s.mean, s.std)
            else:
                out[idx] = _normalize(resize_tensor(pixels_from_uint8(batch), s.size, s.resample), s.mean, s.std)
        return out


def _predecoded(item: Any) -> Future | None:
    """Decode a lazily opened PIL image here, once, before threads share it; a failure becomes its result."""
    if isinstance(item, Image.Image):
        try:
            _decode(item)
        except ImageError as exc:
            return _done(exc)
    return None


def _result(future: Future, pipeline: InputPipeline) -> Any:
    try:
        return future.result()
    except BrokenProcessPool:
        pipeline.close()  # a worker died (e.g. killed for memory): the next call starts a fresh pool
        raise


def _shutdown(state: dict) -> None:
    for key in ("_pool", "_threads"):
        executor = state.get(key)
        state[key] = None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

