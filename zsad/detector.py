"""The :class:`Detector`: a backbone, a prompt strategy and scoring heads assembled from a recipe.

The data path of one prediction is a straight line: input loading -> backbone -> prompts (cached prototypes) ->
heads (fused with the class's normal references, if any) -> :class:`~zsad.results.AnomalyResult`. The per-batch
scoring is :class:`zsad.heads.scoring.BatchScorer`; the detector adds loading, prototypes and per-class state.

Example (a tiny random model; real recipes download weights on first use):
    >>> from zsad import Detector
    >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_strategy="fixed",
    ...                            prompt_checkpoint=None, image_size=56, backbone_options={"random_config": "tiny"},
    ...                            device="cpu")
    >>> import numpy as np
    >>> r = det.predict(np.zeros((40, 60, 3), np.uint8), class_name="metal_nut")
    >>> r.anomaly_map.shape, sorted(r.scores)
    ((40, 60), ['S1', 'S2', 'S3', 'S4', 'S5'])
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from zsad.components import create_backbone, create_prompts, get_recipe
from zsad.config import DetectorConfig
from zsad.errors import ConfigError, ImageError
from zsad.pipeline import InputPipeline, PipelineOptions, Preprocess
from zsad.predicting import check_map_size, named_batches, predict_all
from zsad.results import AnomalyResult, batch_results
from zsad.runtime import RuntimeOptions, ScoringRuntime, use_tf32
from zsad.transfer import one_behind, scores_to_host
from zsad.weights.table import patch_size_of

if TYPE_CHECKING:  # torch is imported where it is used, so that Detector.from_export works without it
    import torch

    from zsad.export import ExportedDetector, ExportReport
    from zsad.heads.base import ImageHead, PixelHead
    from zsad.heads.memory import ReferenceMemory
    from zsad.heads.scoring import BatchScorer, BatchScores

__all__ = ["Detector", "BatchScores"]


def __getattr__(name: str) -> Any:  # BatchScores lives with the scorer (torch); importing it here would load torch
    if name == "BatchScores":
        from zsad.heads.scoring import BatchScores

        return BatchScores
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

ImageInput = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray | torch.Tensor
_REFERENCES_FILE = "references.safetensors"


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16",
           "fp16": "float16"}


class Detector:
    """Zero-shot anomaly detector (see :meth:`from_recipe` and :meth:`predict`).

    Args:
        config: the complete configuration (a recipe).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... (default: CUDA when available).
        dtype: backbone precision, ``"float32"`` (default) or ``"bfloat16"``; scoring is always fp32.
        backbone: an already built backbone to use instead of ``config.backbone`` (e.g. shared between detectors);
            it is moved to ``device``/``dtype`` in place and frozen.
        compile: ``torch.compile`` the image encoder and the scoring step (``True``, or a mode such as
            ``"max-autotune"`` / ``"reduce-overhead"``); see :mod:`zsad.runtime`.
        tf32: let a float32 backbone use TF32 on CUDA (default: yes on CUDA; scoring stays IEEE float32).
        pipeline: how inputs are loaded, a :class:`~zsad.pipeline.PipelineOptions` or its fields as a dict
            (default: the recipe's exact preprocessing; worker processes for a GPU model; see :mod:`zsad.pipeline`).

    ``compile``, ``tf32`` and ``pipeline`` (together :attr:`runtime_options`, a :class:`~zsad.runtime.RuntimeOptions`)
    are runtime settings like ``device``: they are not part of the recipe and are not saved.

    A detector that loaded files with worker processes keeps them for its next calls; :meth:`close` (or a
    ``with`` block) stops them, as does the end of the program.
    """

    def __init__(
        self,
        config: DetectorConfig,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        backbone: Any = None,
        compile: bool | str = False,
        tf32: bool | None = None,
        pipeline: PipelineOptions | dict | None = None,
    ) -> None:
        import torch

        self.runtime_options = RuntimeOptions(compile=compile, tf32=tf32, pipeline=pipeline)
        self.config = config
        self.device = torch.device(device or _default_device())
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"device={str(device)!r} was requested but PyTorch sees no CUDA device (torch {torch.__version__}); "
                "use device='cpu', or install a CUDA build of PyTorch on a machine with an NVIDIA GPU."
            )
        named = isinstance(dtype, str) and dtype in _DTYPES
        self.dtype = getattr(torch, _DTYPES[dtype]) if named else (dtype or torch.float32)
        if not isinstance(self.dtype, torch.dtype):
            raise ConfigError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
        if backbone is None and (patch := patch_size_of(config.backbone.checkpoint)):  # before any weights load
            from zsad.backbones.base import check_patch_multiple

            check_patch_multiple(config.preprocess.image_size, patch, f"checkpoint {config.backbone.checkpoint}")
        self.backbone = backbone if backbone is not None else create_backbone(
            config.backbone.name, checkpoint=config.backbone.checkpoint, **config.backbone.options
        )
        self.backbone.check_image_size(config.preprocess.image_size)
        self.backbone.to(device=self.device, dtype=self.dtype).eval()
        self.backbone.requires_grad_(False)
        self.prompts = create_prompts(config.prompts.strategy, config.prompts)
        self.prompts.bind(self.backbone)
        self.prompts.to(self.device)
        from zsad.heads.scoring import build_scorer

        self.scorer: BatchScorer = build_scorer(self.backbone, config.heads)
        #: whether the backbone's float32 matmuls use TF32 (see :func:`zsad.runtime.use_tf32`)
        self.tf32 = use_tf32(tf32, self.device, self.dtype)
        self._scoring = ScoringRuntime(self.scorer, self.device, tf32=self.tf32, compile=self.runtime_options.compile)
        self._pipeline: InputPipeline | None = None
        self._cache: dict[tuple, torch.Tensor] = {}
        self._warned_untrained = False

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def from_recipe(
        cls,
        name: str = "tipsomaly",
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        backbone_options: dict | None = None,
        compile: bool | str = False,
        tf32: bool | None = None,
        pipeline: PipelineOptions | dict | None = None,
        **overrides: Any,
    ) -> "Detector":
        """Build a detector from a named recipe (or a recipe JSON path) with field overrides.

        Overrides are flat names (``backbone_checkpoint``, ``prompt_checkpoint``, ``image_size``, ``sigma``,
        ``fixed_prompts``, ``image_score``, ... see :data:`zsad.config.OVERRIDE_ALIASES`) or dotted paths
        (``"heads.sigma"`` via ``**{"heads.sigma": 2}``). ``backbone_options`` are merged into
        ``backbone.options``. ``device``, ``dtype``, ``compile``, ``tf32`` and ``pipeline`` are the runtime
        arguments of :class:`Detector`.
        """
        config = get_recipe(name)
        if backbone_options:
            overrides["backbone.options"] = {**config.backbone.options, **backbone_options}
        if overrides:
            config = config.with_overrides(**overrides)
        return cls(config, device=device, dtype=dtype, compile=compile, tf32=tf32, pipeline=pipeline)

    @classmethod
    def from_config(cls, config: DetectorConfig | dict | str | os.PathLike, **kwargs: Any) -> "Detector":
        """Build a detector from a config object, dict or JSON file."""
        if isinstance(config, dict):
            config = DetectorConfig.from_dict(config)
        elif not isinstance(config, DetectorConfig):
            config = DetectorConfig.load(config)
        return cls(config, **kwargs)

    def save(self, folder: str | os.PathLike) -> Path:
        """Save the configuration, trained prompt tokens and normal references (if any) to *folder*; see :meth:`load`.

        Files: ``config.json``, ``prompts.safetensors`` (learnable tokens that were trained or loaded) and
        ``references.safetensors`` (the normal references of every class).
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = self.config
        if self.prompts.has_learnable_tokens and self.prompts.trained:
            self.prompts.save_tokens(folder / "prompts.safetensors")
            config = config.with_overrides(prompt_checkpoint="prompts.safetensors")
        references = folder / _REFERENCES_FILE
        if self.memory.counts():
            self.memory.save(references, self.config.heads.memory)
        elif references.exists():
            references.unlink()  # a folder reused for a detector without references must not keep old ones
        config.save(folder / "config.json")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, **kwargs: Any) -> "Detector":
        """Load a detector saved with :meth:`save` (configuration, prompt tokens and normal references)."""
        folder = Path(folder)
        config = DetectorConfig.load(folder / "config.json")
        ckpt = config.prompts.checkpoint
        if ckpt and not Path(ckpt).is_absolute() and (folder / ckpt).is_file():
            config = config.with_overrides(prompt_checkpoint=str(folder / ckpt))
        detector = cls(config, **kwargs)
        if (folder / _REFERENCES_FILE).is_file():
            detector.memory.load(folder / _REFERENCES_FILE, config.heads.memory, detector.device)
        return detector

    # -- components ----------------------------------------------------------------------------------------------
    @property
    def weights_source(self) -> str | None:
        """Where the backbone's weights were loaded from, when it says (recorded in run manifests)."""
        return getattr(self.backbone, "source", None)

    @property
    def image_heads(self) -> dict[str, ImageHead]:
        """The image heads by name."""
        return dict(self.scorer.image_heads.items())

    @property
    def pixel_head(self) -> PixelHead:
        """The pixel head."""
        return self.scorer.pixel_head

    @property
    def memory(self) -> ReferenceMemory:
        """The head-side memory holding the normal references of each class."""
        return self.scorer.memory

    # -- normal references (few-shot) ------------------------------------------------------------------------------
    def add_references(
        self,
        images: ImageInput | Sequence[ImageInput],
        class_name: str,
        *,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> "Detector":
        """Add normal reference images of ``class_name``: from now on its predictions are few-shot.

        The references are loaded and preprocessed exactly like :meth:`predict` inputs (any size or mode),
        encoded, and kept by the recipe's memory (:mod:`zsad.heads.memory`); a second call adds to the class's
        references. Other classes stay zero-shot. :meth:`save` persists them.

        Args:
            images: one input or a list (paths, PIL images, arrays, tensors; see :meth:`predict`).
            class_name: the class key, exactly as it will be passed to :meth:`predict`.
            batch_size: images per forward pass (default: the recipe's).
            progress: show a progress bar (default: when there is more than one batch).

        Raises:
            ImageError: no images, or images that cannot be loaded (all of them named).

        Example (tiny random weights):
            >>> import numpy as np
            >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_strategy="fixed",
            ...                            prompt_checkpoint=None, image_size=56, device="cpu",
            ...                            backbone_options={"random_config": "tiny"})
            >>> det.add_references([np.full((40, 60, 3), 90, np.uint8)], class_name="nut").references
            {'nut': 1}
            >>> det.clear_references("nut").references
            {}
        """
        import torch

        single = not isinstance(images, (list, tuple)) and not (isinstance(images, torch.Tensor) and images.ndim == 4)
        items = [images] if single or isinstance(images, torch.Tensor) else list(images)
        if not items or (isinstance(images, torch.Tensor) and images.shape[0] == 0):
            raise ImageError(f"add_references() got no images for class {class_name!r}; pass at least one normal image.")
        pixels = self._preprocess_references(items, class_name)
        size = batch_size or self.config.batch_size
        request = self.scorer.reference_request()
        from tqdm.auto import tqdm

        show = progress if progress is not None else pixels.shape[0] > size
        parts: list[dict[str, torch.Tensor]] = []
        with torch.inference_mode(), tqdm(total=pixels.shape[0], disable=not show, unit="img",
                                          desc=f"zsad references ({class_name})") as bar:
            for chunk in pixels.split(size):
                features = self.backbone.encode_image(chunk.to(self.device), request)
                parts.append(self.memory.entries(features))
                bar.update(chunk.shape[0])
        entries = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        self.memory.add(class_name, entries, images=int(pixels.shape[0]))
        return self

    def _preprocess_references(self, items: list, class_name: str) -> torch.Tensor:
        """Preprocess every reference; name all that fail (not only the first)."""
        import torch

        failures: list[str] = []
        tensors: list[torch.Tensor] = []
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            def one(item):
                try:
                    return self.preprocess([item]).pixels, None
                except ImageError as exc:
                    return None, f"{item if isinstance(item, (str, os.PathLike)) else type(item).__name__}: {exc}"

            for pixels, error in pool.map(one, items):
                if error is not None:
                    failures.append(error)
                else:
                    tensors.append(pixels)
        if failures:
            listed = "\n  ".join(failures)
            raise ImageError(
                f"{len(failures)} of {len(items)} reference image(s) for class {class_name!r} cannot be used; no "
                f"reference was added:\n  {listed}"
            )
        return torch.cat(tensors)

    def clear_references(self, class_name: str | None = None) -> "Detector":
        """Forget the normal references of ``class_name`` (or of every class): it is scored zero-shot again."""
        self.memory.clear(class_name)
        return self

    @property
    def references(self) -> dict[str, int]:
        """Number of normal reference images per class (classes without references are zero-shot)."""
        return self.memory.counts()

    # -- deployment --------------------------------------------------------------------------------------------
    def export(
        self,
        path: str | os.PathLike,
        class_names: Sequence[str],
        *,
        format: Literal["onnx", "openvino"] | None = None,
        verify: bool = True,
        opset: int | None = None,
        progress: bool = False,
    ) -> ExportReport:
        """Write one ONNX or OpenVINO graph of this detector for ``class_names``, prototypes baked in.

        The graph takes ``pixels`` (``(B, 3, S, S)`` float32 RGB in [0, 1]) and ``class_index`` (``(B,)`` int64,
        positions in ``class_names``) and returns ``pred_score``, ``scores`` and ``anomaly_map``; run it without
        PyTorch with :meth:`from_export`. See :func:`zsad.export.export_detector` for the arguments.
        """
        from zsad.export.graph import export_detector

        return export_detector(self, class_names, path, format=format, verify=verify, opset=opset, progress=progress)

    @classmethod
    def from_export(
        cls,
        path: str | os.PathLike,
        runtime: Literal["onnxruntime", "openvino"] | None = None,
        **options: Any,
    ) -> ExportedDetector:
        """Load a graph written by :meth:`export` (or ``zsad export``) to run with ONNX Runtime or OpenVINO.

        The result predicts like a detector (same :class:`AnomalyResult`, same preprocessing) and neither this call
        nor its predictions import torch. See :meth:`zsad.export.ExportedDetector.load` for ``runtime`` and the
        options (``device``, ``threads``, ``options``).
        """
        from zsad.export.runtime import ExportedDetector

        return ExportedDetector.load(path, runtime, **options)

    # -- prototypes --------------------------------------------------------------------------------------------
    def prototypes(self, class_names: Sequence[str], kind: Literal["global", "local"] = "global") -> torch.Tensor:
        """Text prototypes ``(C, 2, D)`` (``(1, 2, D)`` for class-agnostic local prompts), cached per class.

        Class names are passed to the prompt strategy as given (it decides how they are written into prompts).
        """
        import torch

        token = self.prompts.cache_token(kind)
        agnostic = kind == "local" and self.prompts.class_agnostic_local
        names = ["*"] if agnostic else list(class_names)
        missing = [c for c in dict.fromkeys(names) if (token, c) not in self._cache]
        if missing:
            with torch.no_grad():
                build = self.prompts.global_prototypes if kind == "global" else self.prompts.local_prototypes
                protos = build(self.backbone, missing)
            for c, p in zip(missing, protos):
                self._cache[(token, c)] = p.float()
        return torch.stack([self._cache[(token, c)] for c in names])

    def clear_cache(self) -> None:
        """Forget cached prototypes (they are also invalidated automatically when prompt tokens change)."""
        self._cache.clear()

    # -- scoring -----------------------------------------------------------------------------------------------
    def score_pixels(self, pixels: torch.Tensor, class_names: Sequence[str]) -> BatchScores:
        """Score a preprocessed batch ``(B, 3, S, S)``; ``class_names`` has one entry per image.

        Images of classes with normal references are scored few-shot (see :meth:`add_references`).
        """
        self._warn_if_untrained()
        g_f = self.prototypes(class_names, "global")  # (B, 2, D)
        g_l = self.prototypes(class_names, "local")  # (B or 1, 2, D)
        banks = [self.memory.bank(c) for c in class_names]
        return self.score_with_prototypes(pixels.to(self.device), g_f, g_l, banks if any(b is not None for b in banks) else None)

    def score_with_prototypes(
        self, pixels: torch.Tensor, g_f: torch.Tensor, g_l: torch.Tensor, banks: Any = None
    ) -> BatchScores:
        """Score a preprocessed batch against given prototypes: the per-batch scoring as a tensor function.

        ``pixels`` ``(B, 3, S, S)`` are on the detector's device; ``g_f`` are the global prototypes ``(B, 2, D)``,
        ``g_l`` the local ones ``(B or 1, 2, D)`` (see :meth:`prototypes`), ``banks`` the normal-reference banks
        (one for all images, one per image, or ``None`` for zero-shot; see :mod:`zsad.heads.memory`).

        :meth:`score_pixels` calls it with the prototypes and references of the class names; :meth:`export` traces
        it with the prototypes of the exported classes baked in. The runtime options apply here (TF32 for the
        backbone, ``compile``); the traced graph is the plain :attr:`scorer`.
        """
        return self._scoring(pixels, g_f, g_l, banks)

    def _warn_if_untrained(self) -> None:
        if not self.prompts.trained and not self._warned_untrained:
            self._warned_untrained = True
            warnings.warn(
                "The learnable prompts of this detector are untrained (random initialisation): pixel maps and "
                "local evidence are meaningless until you pass prompt_checkpoint=... or train them (zsad train).",
                stacklevel=3,
            )

    @property
    def preprocessing(self) -> Preprocess:
        """What is done to every input image: the recipe's preprocessing with the backbone's normalisation."""
        pre, spec = self.config.preprocess, self.backbone.preprocessing
        return Preprocess(pre.image_size, pre.resample or spec.resample, spec.mean, spec.std, pre.exif_transpose,
                          pre.high_bit_depth, pre.resize_backend, pre.rgb_conversion)

    def preprocess(self, inputs: Sequence[ImageInput], executor: Executor | None = None):
        """Load and preprocess inputs into a :class:`zsad.io.PreparedBatch` for this detector's backbone (CPU
        float pixels; ``executor``, e.g. a thread pool, decodes the images in parallel)."""
        return self.preprocessing.prepare(inputs, executor)

    def iter_batches(
        self,
        inputs: Iterable[ImageInput],
        batch_size: int | None = None,
        *,
        errors: Literal["raise", "return"] = "raise",
    ) -> Iterator[tuple[list[ImageInput], Any]]:
        """Yield ``(chunk, PreparedBatch)`` pairs of at most ``batch_size`` inputs, pixels on the device.

        Batches are loaded ahead by the input pipeline (:mod:`zsad.pipeline`, set with ``pipeline=``): while the
        caller runs the model on one batch, the next ones are decoded. ``inputs`` is consumed lazily (a generator
        works). An input that cannot be loaded raises its :class:`~zsad.errors.ImageError` when its batch is
        reached (``errors="raise"``), or, with ``errors="return"``, is reported in ``PreparedBatch.errors``
        while the rest of its batch is loaded.
        """
        size = self.config.batch_size if batch_size is None else batch_size
        yield from self.input_pipeline().batches(inputs, size, errors=errors)

    def input_pipeline(self) -> InputPipeline:
        """The :class:`~zsad.pipeline.InputPipeline` that loads this detector's inputs (created on first use)."""
        if self._pipeline is None:
            self._pipeline = InputPipeline(self.preprocessing, self.device, self.runtime_options.pipeline)
        return self._pipeline

    def close(self) -> None:
        """Stop the input pipeline's worker processes (the detector stays usable; they restart when needed)."""
        if self._pipeline is not None:
            self._pipeline.close()

    def __enter__(self) -> Detector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @overload
    def predict(self, inputs: Sequence[ImageInput], class_name: str | Sequence[str] = ..., **kw: Any) -> list[AnomalyResult]: ...
    @overload
    def predict(self, inputs: ImageInput, class_name: str | Sequence[str] = ..., **kw: Any) -> AnomalyResult: ...

    def predict(
        self,
        inputs: ImageInput | Sequence[ImageInput],
        class_name: str | Sequence[str] = "object",
        *,
        map_size: Literal["original", "input"] = "original",
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> AnomalyResult | list[AnomalyResult]:
        """Predict anomaly scores and maps.

        Args:
            inputs: one input or a list. An input is a file path, a ``PIL.Image``, an ``HxWx3`` uint8 RGB array, or
                a ``3xHxW`` / ``Bx3xHxW`` float tensor in [0, 1] (a 4-D tensor yields one result per image).
            class_name: the object class (its prompts are built from it, e.g. "metal_nut" -> "metal nut" for the
                Tipsomaly recipes; its normal references are used if it has any); one name for all inputs or
                one per input.
            map_size: ``"original"`` (maps at each input's size) or ``"input"`` (at the model input size).
            batch_size: images per forward pass (default: the recipe's).
            progress: show a progress bar (default: when there is more than one batch).

        Returns:
            One :class:`AnomalyResult` for a single input (a path, image, array or 3-D tensor); a list otherwise.
            Every map of a list is kept in memory: for long runs iterate over :meth:`predict_iter` instead.
        """
        return predict_all(self.predict_iter, inputs, class_name, map_size=map_size, batch_size=batch_size,
                           progress=progress, default_batch_size=self.config.batch_size)

    def predict_iter(
        self,
        inputs: Iterable[ImageInput],
        class_name: str | Iterable[str] = "object",
        *,
        map_size: Literal["original", "input"] = "original",
        batch_size: int | None = None,
        progress: bool = False,
        total: int | None = None,
    ) -> Iterator[AnomalyResult]:
        """Yield one :class:`AnomalyResult` per image, in input order, holding only the batch in flight.

        The streaming form of :meth:`predict` for long runs: memory stays constant whatever the number of images
        (the caller keeps or drops each result). ``inputs`` may be a generator; ``class_name`` is one name or an
        iterable with one name per image (consumed alongside). A 4-D tensor input yields one result per image.
        On a GPU the results of a batch are copied to the host while the model runs the next batch, so they are
        yielded one batch later.

        Args:
            inputs, class_name, map_size, batch_size: as for :meth:`predict`.
            progress: show a progress bar (``total`` images, when known).

        Raises:
            ImageError: an input cannot be read (the error names it); results before its batch were yielded.

        Example:
            >>> import numpy as np
            >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_strategy="fixed",
            ...                            prompt_checkpoint=None, image_size=28, backbone_options={"random_config": {}},
            ...                            device="cpu")
            >>> frames = (np.full((20, 30, 3), v, np.uint8) for v in range(5))  # a generator: nothing is listed
            >>> [r.anomaly_map.shape for r in det.predict_iter(frames, "screw", batch_size=2)]
            [(20, 30), (20, 30), (20, 30), (20, 30), (20, 30)]
        """
        check_map_size(map_size)
        import torch
        from tqdm.auto import tqdm

        def scored() -> Iterator[Callable[[], Iterator[AnomalyResult]]]:
            batches = self.iter_batches(inputs, batch_size)
            for chunk, batch, chunk_names in named_batches(batches, class_name, lambda b: len(b.original_sizes)):
                out = self.score_pixels(batch.pixels, chunk_names)
                wait = scores_to_host(out.scores, out.maps, batch.original_sizes if map_size == "original" else None)
                yield partial(self._results, wait, batch, chunk_names, len(chunk), bar)

        # on a GPU the copies of a batch's results to the host overlap the next batch's model work
        with torch.inference_mode(), tqdm(total=total, disable=not progress, unit="img", desc="zsad predict") as bar:
            yield from one_behind(scored(), self.device.type == "cuda")

    def _results(self, wait, batch, names: list[str], count: int, bar) -> Iterator[AnomalyResult]:
        scores, maps = wait()
        yield from batch_results(scores, maps, batch, names, self.config.heads.image_score)
        bar.update(count)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Detector(recipe={c.name!r}, backbone={c.backbone.name}:{c.backbone.checkpoint}, "
            f"prompts={c.prompts.strategy}, image_score={c.heads.image_score}, image_size={c.preprocess.image_size}, "
            f"device={self.device}, dtype={self.dtype})"
        )
