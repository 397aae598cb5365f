"""Predict with an exported graph, without PyTorch: :class:`ExportedDetector`.

It loads a file written by :meth:`zsad.Detector.export` (or ``zsad export``), checks its metadata, and predicts like
the PyTorch detector: the same input kinds and preprocessing (:mod:`zsad.io`, one implementation for both), the
same :class:`~zsad.results.AnomalyResult` (built by :func:`zsad.results.batch_results`), maps resized back to each
image's size with the same bilinear rule. Neither loading nor predicting imports torch.

Example (export a tiny random model, then run it with ONNX Runtime):
    >>> import tempfile, pathlib, numpy as np
    >>> from zsad import Detector
    >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_strategy="fixed",
    ...                            prompt_checkpoint=None, image_size=56, backbone_options={"random_config": {}},
    ...                            device="cpu")
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.onnx"
    >>> _ = det.export(path, ["metal_nut", "screw"])
    >>> exported = Detector.from_export(path, runtime="onnxruntime")
    >>> exported.class_names
    ('metal_nut', 'screw')
    >>> r = exported.predict(np.zeros((40, 60, 3), np.uint8), class_name="screw")
    >>> r.anomaly_map.shape, sorted(r.scores)
    ((40, 60), ['S1', 'S2', 'S3', 'S4', 'S5'])
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from zsad.config import DetectorConfig
from zsad.errors import ConfigError, ImageError
from zsad.export.metadata import ExportMetadata
from zsad.export.runners import Runner, open_runner
from zsad.io import (
    PreparedBatch,
    iter_prepared,
    prepare_batch,
)
from zsad.predicting import check_map_size, named_batches, predict_all
from zsad.prompts.templates import normalize_class_name
from zsad.results import AnomalyResult, batch_results, resize_map

__all__ = ["ExportedDetector"]

ImageInput = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray (| torch.Tensor when torch is loaded anyway)


def _key(name: str) -> str:
    return normalize_class_name(name).strip().lower()


class ExportedDetector:
    """An exported detector run by ONNX Runtime or OpenVINO (see :meth:`load`); predicts like :class:`zsad.Detector`.

    Attributes:
        path: the model file.
        metadata: the :class:`~zsad.export.metadata.ExportMetadata` stored in it.
        runtime: ``"onnxruntime"`` or ``"openvino"``.
    """

    def __init__(self, runner: Runner, metadata: ExportMetadata, path: Path, device: str = "cpu") -> None:
        self.runner, self.metadata, self.path = runner, metadata, path
        self.runtime = runner.name
        self.device = device
        self._index = {_key(name): i for i, name in enumerate(metadata.class_names)}

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        runtime: Literal["onnxruntime", "openvino"] | None = None,
        *,
        device: str = "cpu",
        threads: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> ExportedDetector:
        """Open an exported model.

        Args:
            path: ``*.onnx`` (ONNX Runtime or OpenVINO) or ``*.xml`` (OpenVINO IR).
            runtime: ``"onnxruntime"`` or ``"openvino"``; default: OpenVINO for ``*.xml``, else ONNX Runtime when
                installed, else OpenVINO.
            device: ``"cpu"`` (default); ``"cuda[:N]"`` for onnxruntime-gpu; ``"gpu"``, ``"npu"``, ``"auto"`` for
                OpenVINO.
            threads: CPU threads (default: the runtime's, usually one per core).
            options: runtime settings: ONNX Runtime session config entries, or OpenVINO properties (see
                :mod:`zsad.export.runners`).
        """
        path = Path(path)
        runner = open_runner(path, runtime, device=device, threads=threads, options=options)
        metadata = ExportMetadata.from_json(runner.metadata_json, source=str(path))
        runner.start()
        return cls(runner, metadata, path, device)

    # -- what the graph is -------------------------------------------------------------------------------------
    @property
    def config(self) -> DetectorConfig:
        """The recipe the graph was exported from."""
        return self.metadata.recipe

    @property
    def class_names(self) -> tuple[str, ...]:
        """The exported classes, in ``class_index`` order."""
        return self.metadata.class_names

    @property
    def image_size(self) -> int:
        return self.metadata.preprocessing.image_size

    @property
    def dtype(self) -> str:
        """The precision the graph computes in (``"float32"`` or ``"float16"``)."""
        return self.metadata.dtype

    @property
    def weights_source(self) -> str:
        """Where the weights came from: the model file (recorded in run manifests)."""
        return str(self.path)

    def class_index(self, class_names: Sequence[str]) -> np.ndarray:
        """``class_index`` values (int64) of class names (``"metal_nut"`` and ``"metal nut"`` are the same class)."""
        out = []
        for name in class_names:
            index = self._index.get(_key(name))
            if index is None:
                raise ConfigError(
                    f"Class {name!r} was not exported into {self.path.name}; it scores {', '.join(self.class_names)}. "
                    f"Export it again with this class (zsad export ... --class-name {name!r})."
                )
            out.append(index)
        return np.asarray(out, dtype=np.int64)

    # -- running -----------------------------------------------------------------------------------------------
    def run(self, pixels: np.ndarray, class_index: np.ndarray | Sequence[int]) -> dict[str, np.ndarray]:
        """Run the graph on a preprocessed batch, after checking it.

        Args:
            pixels: float32 ``(B, 3, S, S)`` RGB in [0, 1] (``S`` = :attr:`image_size`).
            class_index: ``(B,)`` integers in ``[0, len(class_names))``.

        Returns:
            ``{"pred_score": (B,), "scores": (B, K), "anomaly_map": (B, S, S)}`` float32 arrays; ``scores`` follows
            ``metadata.score_names``.
        """
        s = self.image_size
        expected = f"float32 pixels of shape (B, 3, {s}, {s}), RGB in [0, 1]"
        if not isinstance(pixels, np.ndarray):
            raise ImageError(f"{self.path.name} takes a numpy array of {expected}; got {type(pixels).__name__}.")
        if pixels.dtype != np.float32:
            raise ImageError(
                f"{self.path.name} takes {expected}; got dtype {pixels.dtype}. Convert with pixels.astype(np.float32)"
                " (uint8 images: divide by 255), or pass images to predict(), which prepares them."
            )
        if pixels.ndim != 4 or pixels.shape[0] < 1 or pixels.shape[1:] != (3, s, s):
            raise ImageError(
                f"{self.path.name} takes {expected}; got shape {pixels.shape}. Resize images to {s} x {s} (predict() "
                "does it the way the model was built for)."
            )
        finite = bool(np.isfinite(pixels).all())
        # a float bicubic resize (resize_backend "torch", WinCLIP) legitimately overshoots [0, 1] a little
        slack = 0.25 if self.metadata.preprocessing.resize_backend == "torch" else 0.0
        if not finite or pixels.min() < -slack or pixels.max() > 1 + slack:
            found = f"values in [{float(pixels.min()):.3g}, {float(pixels.max()):.3g}]" if finite else "NaN or infinity"
            raise ImageError(
                f"{self.path.name} takes {expected} (normalisation is inside the graph); got {found}. Divide 8-bit "
                "values by 255 and do not normalise them."
            )
        index = np.asarray(class_index)
        if index.dtype.kind not in "iu" or index.shape != (pixels.shape[0],):
            raise ConfigError(
                f"class_index must hold one integer per image, shape ({pixels.shape[0]},); got dtype {index.dtype} "
                f"and shape {index.shape}."
            )
        if index.size and (index.min() < 0 or index.max() >= len(self.class_names)):
            raise ConfigError(
                f"class_index values must be in [0, {len(self.class_names) - 1}] (the exported classes "
                f"{', '.join(f'{i}={n}' for i, n in enumerate(self.class_names))}); got {index.tolist()}."
            )
        return self.runner(np.ascontiguousarray(pixels), index.astype(np.int64))

    def preprocess(self, inputs: Sequence[ImageInput], executor: Executor | None = None) -> PreparedBatch:
        """Load and resize inputs into a :class:`zsad.io.PreparedBatch` of float32 pixels in [0, 1]."""
        pre = self.metadata.preprocessing
        return prepare_batch(
            inputs, pre.image_size, resample=pre.resample, exif_transpose=pre.exif_transpose,
            high_bit_depth=pre.high_bit_depth, executor=executor, backend=pre.resize_backend, output="numpy",
        )

    def iter_batches(
        self, inputs: Sequence[ImageInput], batch_size: int | None = None, *, workers: int | None = None
    ) -> Iterator[tuple[list[ImageInput], PreparedBatch]]:
        """Yield ``(chunk, PreparedBatch)`` pairs, loading ahead (see :func:`zsad.io.iter_prepared`)."""
        size = self.config.batch_size if batch_size is None else batch_size
        yield from iter_prepared(inputs, size, self.preprocess, workers=workers)

    @overload
    def predict(self, inputs: Sequence[ImageInput], class_name: str | Sequence[str] | None = ..., **kw: Any) -> list[AnomalyResult]: ...
    @overload
    def predict(self, inputs: ImageInput, class_name: str | Sequence[str] | None = ..., **kw: Any) -> AnomalyResult: ...

    def predict(
        self,
        inputs: ImageInput | Sequence[ImageInput],
        class_name: str | Sequence[str] | None = None,
        *,
        map_size: Literal["original", "input"] = "original",
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> AnomalyResult | list[AnomalyResult]:
        """Predict anomaly scores and maps, as :meth:`zsad.Detector.predict` does.

        Args:
            inputs: one input or a list: file paths, ``PIL.Image``, ``HxWx3`` uint8 RGB arrays (and torch tensors
                when torch is in use anyway).
            class_name: one of the exported classes for all inputs, or one per input; may be left out when the
                model was exported for one class.
            map_size: ``"original"`` (maps at each input's size) or ``"input"`` (at the model input size).
            batch_size: images per run (default: the recipe's).
            progress: show a progress bar (default: when there is more than one batch).
        """
        return predict_all(self.predict_iter, inputs, self._default_class(class_name), map_size=map_size,
                           batch_size=batch_size, progress=progress, default_batch_size=self.config.batch_size)

    def predict_iter(
        self,
        inputs: Iterable[ImageInput],
        class_name: str | Iterable[str] | None = None,
        *,
        map_size: Literal["original", "input"] = "original",
        batch_size: int | None = None,
        progress: bool = False,
        total: int | None = None,
    ) -> Iterator[AnomalyResult]:
        """Yield one :class:`AnomalyResult` per image, in input order, holding only the batch in flight.

        The streaming form of :meth:`predict`, as :meth:`zsad.Detector.predict_iter`: ``inputs`` may be a
        generator, ``class_name`` one name or an iterable with one name per image.
        """
        check_map_size(map_size)
        from tqdm.auto import tqdm

        batches = self.iter_batches(inputs, batch_size)
        with tqdm(total=total, disable=not progress, unit="img", desc="zsad predict") as bar:
            for chunk, batch, chunk_names in named_batches(batches, self._default_class(class_name),
                                                           lambda b: len(b.original_sizes)):
                out = self.run(batch.pixels, self.class_index(chunk_names))
                maps = [
                    resize_map(m, hw) if map_size == "original" and m.shape != hw else m.copy()
                    for m, hw in zip(out["anomaly_map"], batch.original_sizes)
                ]
                scores = {name: out["scores"][:, k] for k, name in enumerate(self.metadata.score_names)}
                yield from batch_results(scores, maps, batch, chunk_names, self.metadata.image_score)
                bar.update(len(chunk))

    def _default_class(self, class_name: Any) -> Any:
        """``class_name``, or the only exported class when it is left out."""
        if class_name is not None:
            return class_name
        if len(self.class_names) != 1:
            raise ConfigError(
                f"{self.path.name} scores {len(self.class_names)} classes ({', '.join(self.class_names)}); pass "
                "class_name= (one for all inputs or one per input)."
            )
        return self.class_names[0]

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"ExportedDetector(path={str(self.path)!r}, runtime={self.runtime!r}, recipe={m.recipe.name!r}, "
            f"classes={list(m.class_names)}, image_size={m.preprocessing.image_size}, dtype={m.dtype})"
        )
