"""The model side of a prediction run: one shard of images -> result rows, maps and overlays.

:func:`predict_shard` is what every engine runs, in this process or in a Ray worker. It streams the shard through
:meth:`zsad.Detector.predict_iter` (constant memory), writes each image's map and overlay as soon as it is scored,
and returns one row per image. An image that cannot be read or scored gets a row with its error instead of
stopping the shard: the batch it was in is redone image by image, so only the bad image is lost.

Example (the tiny fixture model):
    >>> import tempfile, zsad
    >>> from pathlib import Path
    >>> from zsad import Detector
    >>> fx = Path(zsad.__file__).resolve().parents[1] / "tests" / "fixtures" / "tipsomaly-parity"
    >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=str(fx), image_size=56, device="cpu",
    ...                            prompt_checkpoint=str(fx / "learnable_params.pth"))
    >>> good = str(fx / "dataset" / "metal_nut" / "test" / "good" / "000.png")
    >>> shard = Shard(0, (good, "/no/such.png"), ("good", "missing"))
    >>> res = predict_shard(det, shard, PredictOptions(out=tempfile.mkdtemp(), class_name="metal_nut"))
    >>> [r["error"] == "" for r in res.rows], res.failed
    ([True, False], 1)
"""

from __future__ import annotations

import math
import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zsad._files import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from zsad.detector import Detector
    from zsad.results import AnomalyResult

__all__ = [
    "CALIBRATION_IMAGES",
    "PredictOptions",
    "Shard",
    "ShardResult",
    "overlay_scale",
    "part_columns",
    "predict_shard",
]

CALIBRATION_IMAGES = 32
"""The overlays of a run share one colour scale: the 1st and 99.9th percentile of the maps of its first
``CALIBRATION_IMAGES`` readable images (all of them in a smaller run)."""


@dataclass(frozen=True)
class PredictOptions:
    """What a shard must produce (picklable: engines ship it to their workers).

    Attributes:
        out: the run's output folder (maps go to ``out/maps``, overlays to ``out/overlays``).
        class_name: the class in the prompts, for every image.
        batch_size: images per forward pass (``None``: the recipe's).
        save_maps: write each map as ``maps/<output_name>.npy`` (float32, the image's size).
        overlays: write ``overlays/<output_name>.png`` on the run's shared colour scale ``overlay_scale``.
        overlay_scale: ``(vmin, vmax)`` of the overlays (see :data:`CALIBRATION_IMAGES`).
    """

    out: str
    class_name: str
    batch_size: int | None = None
    save_maps: bool = False
    overlays: bool = False
    overlay_scale: tuple[float, float] | None = None


@dataclass(frozen=True)
class Shard:
    """Consecutive images ``paths`` of the run's listing, starting at shard number ``index``, with their output
    file stems ``names``."""

    index: int
    paths: tuple[str, ...]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class ShardResult:
    """The rows of a shard (one per image, in order; ``error`` is empty for a scored image), with the wall and CPU
    seconds the worker process spent on it."""

    index: int
    rows: list[dict[str, Any]]
    failed: int
    seconds: float
    cpu_seconds: float = 0.0
    worker: str = ""
    warnings: list[tuple[type[Warning], str]] = field(default_factory=list)


def part_columns(heads: Sequence[str]) -> list[str]:
    """The columns of a shard's rows (and of its part file)."""
    return ["path", "class", "score", *heads, "output_name", "height", "width", "map_max", "error"]


def _row(path: str, name: str, class_name: str, heads: Sequence[str], result: AnomalyResult | None = None,
         error: str = "") -> dict[str, Any]:
    row: dict[str, Any] = {"path": path, "class": class_name, "score": None, **dict.fromkeys(heads),
                           "output_name": name, "height": None, "width": None, "map_max": None, "error": error}
    if result is not None:
        row.update(score=result.pred_score, **{h: result.scores[h] for h in heads})
        h, w = result.anomaly_map.shape
        row.update(height=h, width=w, map_max=float(result.anomaly_map.max()) if result.anomaly_map.size else None)
    return row


def _non_finite(result: AnomalyResult) -> str:
    bad = [k for k, v in result.scores.items() if not math.isfinite(v)]
    if not np.isfinite(result.anomaly_map).all():
        bad.append("anomaly_map")
    if not bad:
        return ""
    return (f"MetricError: the model produced NaN or infinite values ({', '.join(bad)}); check the image and the "
            "dtype (float16 can overflow; use float32 or bfloat16)")


def _write_outputs(det: Detector, result: AnomalyResult, name: str, options: PredictOptions) -> None:
    out = Path(options.out)
    if options.save_maps:
        with atomic_path(out / "maps" / f"{name}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, result.anomaly_map)
    if options.overlays and options.overlay_scale is not None:
        from zsad.io import load_image
        from zsad.viz import _atomic_save_png, overlay

        pre = det.config.preprocess
        image = load_image(result.image_path, exif_transpose=pre.exif_transpose, high_bit_depth=pre.high_bit_depth)
        vmin, vmax = options.overlay_scale
        _atomic_save_png(overlay(image, result.anomaly_map, vmin, vmax), out / "overlays" / f"{name}.png")


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")


def predict_shard(det: Detector, shard: Shard, options: PredictOptions, *, record_warnings: bool = False,
                  progress: Callable[[int], object] | None = None) -> ShardResult:
    """Score a shard (see the module docstring).

    ``record_warnings`` returns the warnings in the result instead of showing them (for workers in other
    processes); ``progress(1)`` is called after each image.
    """
    t0, cpu0 = time.perf_counter(), time.process_time()
    heads = list(det.config.heads.image_heads)
    bs = options.batch_size or det.config.batch_size
    paths, names = list(shard.paths), list(shard.names)
    rows: list[dict[str, Any]] = []

    def take(i: int, result: AnomalyResult) -> None:
        error = _non_finite(result)
        if not error:
            _write_outputs(det, result, names[i], options)
        rows.append(_row(paths[i], names[i], options.class_name, heads, result, error))
        if progress is not None:
            progress(1)

    with warnings.catch_warnings(record=record_warnings) as caught:
        if record_warnings:
            warnings.simplefilter("always")
        i = 0
        while i < len(paths):
            try:
                for result in det.predict_iter(paths[i:], options.class_name, batch_size=bs):
                    take(i, result)
                    i += 1
            except Exception:  # noqa: BLE001 - the batch starting at i failed: redo it image by image
                for j in range(i, min(i + bs, len(paths))):
                    try:
                        take(j, det.predict(paths[j], options.class_name))
                    except Exception as exc:  # noqa: BLE001 - recorded with the image, never kills the run
                        rows.append(_row(paths[j], names[j], options.class_name, heads, error=_describe(exc)))
                        if progress is not None:
                            progress(1)
                i = min(i + bs, len(paths))
    return ShardResult(
        index=shard.index,
        rows=rows,
        failed=sum(bool(r["error"]) for r in rows),
        seconds=time.perf_counter() - t0,
        cpu_seconds=time.process_time() - cpu0,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        warnings=[(w.category, str(w.message)) for w in caught or []],
    )


def overlay_scale(det: Detector, paths: Sequence[str], class_name: str, batch_size: int | None = None,
                  limit: int = CALIBRATION_IMAGES) -> tuple[float, float] | None:
    """The run's overlay colour scale from the maps of its first ``limit`` readable images (``None`` if none)."""
    from zsad.viz import class_scale

    maps: list[np.ndarray] = []
    for path in paths:
        if len(maps) >= limit:
            break
        try:
            result = det.predict(path, class_name, batch_size=batch_size)
        except Exception:  # noqa: BLE001 - unreadable images are recorded when their shard runs
            continue
        if not _non_finite(result):
            maps.append(result.anomaly_map)
    return class_scale(maps) if maps else None
