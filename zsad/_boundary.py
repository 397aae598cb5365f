"""Loader boundaries: where untrusted bytes enter zsad, library exceptions become one :class:`~zsad.errors.ZsadError`.

Images, masks, dataset descriptions and checkpoints are parsed by Pillow, numpy, safetensors, torch and the
standard library, each with its own exceptions (``OSError``, ``SyntaxError``, ``struct.error``, ``SafetensorError``,
``DecompressionBombError``, ``RuntimeError`` from torch's zip reader, ``MemoryError`` for a forged header, ...).
Every loader wraps its parsing in :func:`reading` once, so a bad file always gives one error of the loader's
kind that names the file, says what is wrong and how to fix it, never a traceback from a library. Numbers read
from checkpoints go through :func:`check_finite`, so NaN/Inf weights are refused when they are loaded (naming the
file and tensor), not discovered later as NaN scores.

Example:
    >>> from zsad.errors import CheckpointError
    >>> try:
    ...     with reading("weights.bin", CheckpointError, fix="Download it again."):
    ...         raise ValueError("bad magic")
    ... except CheckpointError as e:
    ...     print(e)
    Cannot read weights.bin: ValueError: bad magic. Download it again.
    >>> import numpy as np
    >>> try:
    ...     check_finite({"w": np.array([1.0, np.nan])}, "w.npz")
    ... except CheckpointError as e:
    ...     print(str(e).split(";")[0])
    w.npz holds non-finite values (NaN or Inf) in tensor 'w' (1 of 2 values)
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from zsad.errors import CheckpointError, ZsadError

__all__ = ["reading", "library_errors", "check_finite"]


def library_errors() -> tuple[type[BaseException], ...]:
    """The exceptions parsing libraries raise on bad input (imported lazily: safetensors is optional here)."""
    errors: list[type[BaseException]] = [
        OSError, ValueError, TypeError, KeyError, IndexError, EOFError, SyntaxError, struct.error,
        zipfile.BadZipFile, pickle.UnpicklingError, MemoryError, OverflowError, RuntimeError, ZeroDivisionError,
        AttributeError, AssertionError,
    ]
    try:
        from PIL import Image

        errors.append(Image.DecompressionBombError)
    except ImportError:  # pragma: no cover - Pillow is a core dependency
        pass
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def _reason(exc: BaseException) -> str:
    from PIL import Image

    if isinstance(exc, Image.DecompressionBombError):
        return (
            f"it is a possible decompression bomb ({exc}). zsad keeps Pillow's limit; if you trust the file, raise "
            "PIL.Image.MAX_IMAGE_PIXELS in your code, or downscale the image"
        )
    if isinstance(exc, Image.UnidentifiedImageError):
        return "it is not an image format Pillow can read"
    if isinstance(exc, MemoryError):
        return "its header asks for more memory than is available (a corrupt or forged header)"
    if isinstance(exc, RecursionError):
        return "it is nested too deeply to parse"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def reading(
    source: Any, error: type[ZsadError] = CheckpointError, *, what: str = "", fix: str = ""
) -> Iterator[None]:
    """Turn any library exception raised inside the block into ``error("Cannot read <what> <source>: ... <fix>")``.

    A :class:`~zsad.errors.ZsadError` raised inside passes through unchanged; so does ``FileNotFoundError``'s
    message, which is rewritten to say the file does not exist.
    """
    try:
        yield
    except ZsadError:
        raise
    except FileNotFoundError as exc:
        raise error(f"{(what + ' ') if what else ''}{source} does not exist. {fix}".strip()) from exc
    except library_errors() as exc:
        label = f"{what} {source}" if what else f"{source}"
        raise error(f"Cannot read {label}: {_reason(exc)}. {fix}".strip()) from exc


_REPLACE = "Replace it with a good copy."


def _floating_values(value: Any) -> Any:
    """*value* as a numpy or torch object whose finiteness can be checked, or None when it cannot hold NaN/Inf."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value if value.dtype.kind in "fc" else None
    try:
        import torch
    except ImportError:  # pragma: no cover
        return None
    if isinstance(value, torch.Tensor):
        return value if (value.is_floating_point() or value.is_complex()) and not value.is_meta else None
    return None


def check_finite(
    tensors: Mapping[str, Any] | Iterable[tuple[str, Any]], source: str | os.PathLike, error: type[ZsadError] = CheckpointError,
    *, fix: str = "",
) -> None:
    """Raise *error* naming *source* and every tensor holding NaN or Inf values (numpy arrays or torch tensors).

    Numpy arrays of strings, bytes or objects are refused too (they hold no numbers); integer and boolean
    tensors pass. The default fix says the file is corrupt or comes from a diverged
    training run.
    """
    import numpy as np

    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    bad: list[str] = []
    for name, value in items:
        if isinstance(value, np.ndarray) and value.dtype.kind not in "biufc":
            raise error(f"{source}: tensor '{name}' holds {value.dtype} values, not numbers. " + (fix or _REPLACE))
        values = _floating_values(value)
        if values is None:
            continue
        if isinstance(values, np.ndarray):
            total = int(values.size)
            count = total - int(np.count_nonzero(np.isfinite(values)))
        else:
            import torch

            total = int(values.numel())
            count = total - int(torch.isfinite(values.detach()).sum().item()) if total else 0
        if count:
            bad.append(f"'{name}' ({count} of {total} values)")
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise error(
            f"{source} holds non-finite values (NaN or Inf) in tensor{'s' if len(bad) > 1 else ''} {shown}; "
            + (fix or "the file is corrupt or was saved from a diverged training run. " + _REPLACE)
        )
