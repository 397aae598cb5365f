"""The :class:`Detector`: a backbone, a prompt strategy and scoring heads assembled from a recipe.

The data path of one prediction is a straight line: input loading -> backbone -> prompts (cached prototypes) ->
heads -> :class:`~zsad.results.AnomalyResult`.

Example (a tiny random model; real recipes download weights on first use):
    >>> from zsad import Detector
    >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_strategy="fixed",
    ...                            prompt_checkpoint=None, image_size=56, backbone_options={"random_arch": {}},
    ...                            device="cpu")
    >>> import numpy as np
    >>> r = det.predict(np.zeros((40, 60, 3), np.uint8), class_name="metal_nut")
    >>> r.anomaly_map.shape, sorted(r.scores)
    ((40, 60), ['S1', 'S2', 'S3', 'S4', 'S5'])
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, Sequence, overload

import numpy as np

from zsad.components import create_backbone, create_head, create_prompts, get_recipe
from zsad.config import DetectorConfig
from zsad.errors import ConfigError
from zsad.io import as_items, class_names_for, iter_prepared, prepare_batch
from zsad.prompts.templates import normalize_class_name
from zsad.results import AnomalyResult, batch_results

if TYPE_CHECKING:  # torch is imported where it is used, so that Detector.from_export works without it
    import torch

    from zsad.export import ExportedDetector, ExportReport
    from zsad.heads.base import ImageHead, PixelHead, ScoreInputs

__all__ = ["Detector", "BatchScores"]

ImageInput = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray | torch.Tensor


@dataclass
class BatchScores:
    """Everything one forward pass computes for a batch (tensors on the detector's device, fp32)."""

    scores: dict[str, torch.Tensor]  # name -> (B,)
    maps: torch.Tensor  # (B, S, S) smoothed pixel maps at the model input size
    inputs: ScoreInputs  # probabilities the heads scored


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
    """

    def __init__(
        self,
        config: DetectorConfig,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        backbone: Any = None,
    ) -> None:
        import torch

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
        self.backbone = backbone if backbone is not None else create_backbone(
            config.backbone.name, checkpoint=config.backbone.checkpoint, **config.backbone.options
        )
        self.backbone.check_image_size(config.preprocess.image_size)
        self.backbone.to(device=self.device, dtype=self.dtype).eval()
        self.backbone.requires_grad_(False)
        self.prompts = create_prompts(config.prompts.strategy, config.prompts)
        if hasattr(self.prompts, "bind"):
            self.prompts.bind(self.backbone)
        self.prompts.to(self.device)
        self.image_heads: dict[str, ImageHead] = {name: create_head(name) for name in config.heads.image_heads}
        self.pixel_head: PixelHead = create_head(config.heads.pixel, sigma=config.heads.sigma, truncate=config.heads.truncate)
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
        **overrides: Any,
    ) -> "Detector":
        """Build a detector from a named recipe (or a recipe JSON path) with field overrides.

        Overrides are flat names (``backbone_checkpoint``, ``prompt_checkpoint``, ``image_size``, ``sigma``,
        ``fixed_prompts``, ``image_score``, ... see :data:`zsad.config.OVERRIDE_ALIASES`) or dotted paths
        (``"heads.sigma"`` via ``**{"heads.sigma": 2}``). ``backbone_options`` are merged into
        ``backbone.options``.
        """
        config = get_recipe(name)
        if backbone_options:
            overrides["backbone.options"] = {**config.backbone.options, **backbone_options}
        if overrides:
            config = config.with_overrides(**overrides)
        return cls(config, device=device, dtype=dtype)

    @classmethod
    def from_config(cls, config: DetectorConfig | dict | str | os.PathLike, **kwargs: Any) -> "Detector":
        """Build a detector from a config object, dict or JSON file."""
        if isinstance(config, dict):
            config = DetectorConfig.from_dict(config)
        elif not isinstance(config, DetectorConfig):
            config = DetectorConfig.load(config)
        return cls(config, **kwargs)

    def save(self, folder: str | os.PathLike) -> Path:
        """Save the configuration (and learned prompt tokens, if any) to *folder*; see :meth:`load`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = self.config
        learned = getattr(self.prompts, "learned", self.prompts)
        if hasattr(learned, "save") and getattr(learned, "T_n", None) is not None and getattr(learned, "trained", True):
            learned.save(folder / "prompts.safetensors")
            config = config.with_overrides(prompt_checkpoint="prompts.safetensors")
        config.save(folder / "config.json")
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, **kwargs: Any) -> "Detector":
        """Load a detector saved with :meth:`save`."""
        folder = Path(folder)
        config = DetectorConfig.load(folder / "config.json")
        ckpt = config.prompts.checkpoint
        if ckpt and not Path(ckpt).is_absolute() and (folder / ckpt).is_file():
            config = config.with_overrides(prompt_checkpoint=str(folder / ckpt))
        return cls(config, **kwargs)

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
        """Text prototypes ``(C, 2, D)`` (``(1, 2, D)`` for class-agnostic local prompts), cached per class."""
        import torch

        token = self.prompts.cache_token(kind)
        agnostic = kind == "local" and self.prompts.class_agnostic_local
        names = ["*"] if agnostic else [normalize_class_name(c) for c in class_names]
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
        """Score a preprocessed batch ``(B, 3, S, S)``; ``class_names`` has one entry per image."""
        self._warn_if_untrained()
        g_f = self.prototypes(class_names, "global")  # (B, 2, D)
        g_l = self.prototypes(class_names, "local")  # (B or 1, 2, D)
        return self.score_with_prototypes(pixels.to(self.device), g_f, g_l)

    def score_with_prototypes(self, pixels: torch.Tensor, g_f: torch.Tensor, g_l: torch.Tensor) -> BatchScores:
        """Score a preprocessed batch against given prototypes: the per-batch scoring as a tensor function.

        ``pixels`` ``(B, 3, S, S)`` are on the detector's device; ``g_f`` are the global prototypes ``(B, 2, D)``,
        ``g_l`` the local ones ``(B or 1, 2, D)`` (see :meth:`prototypes`).

        :meth:`score_pixels` calls it with the prototypes of the class names; :meth:`export` traces it with the
        prototypes of the exported classes baked in.
        """
        from zsad.heads.base import ScoreInputs

        features = self.backbone.encode_image(pixels)
        global_probs = {
            role: self.backbone.probabilities(vec.unsqueeze(1), g_f).squeeze(1) for role, vec in features.globals.items()
        }
        patch_probs = self.backbone.probabilities(features.patches, g_l)
        inputs = ScoreInputs(global_probs, patch_probs, features.grid)
        scores = {name: head(inputs).float() for name, head in self.image_heads.items()}
        size = tuple(pixels.shape[-2:])
        maps = self.pixel_head(patch_probs, features.grid, size)
        return BatchScores(scores, maps, inputs)

    def _warn_if_untrained(self) -> None:
        learned = getattr(self.prompts, "learned", self.prompts)
        if getattr(learned, "trained", True) is False and not self._warned_untrained:
            self._warned_untrained = True
            warnings.warn(
                "The learnable prompts of this detector are untrained (random initialisation): pixel maps and "
                "local evidence are meaningless until you pass prompt_checkpoint=... or train them (zsad train).",
                stacklevel=3,
            )

    def preprocess(self, inputs: Sequence[ImageInput], executor: Executor | None = None):
        """Load and preprocess inputs into a :class:`zsad.io.PreparedBatch` for this detector's backbone."""
        pre = self.config.preprocess
        spec = self.backbone.preprocessing
        return prepare_batch(
            inputs,
            pre.image_size,
            resample=pre.resample or spec.resample,
            mean=spec.mean,
            std=spec.std,
            exif_transpose=pre.exif_transpose,
            high_bit_depth=pre.high_bit_depth,
            executor=executor,
        )

    def iter_batches(
        self, inputs: Sequence[ImageInput], batch_size: int | None = None, *, workers: int | None = None
    ) -> Iterator[tuple[list[ImageInput], Any]]:
        """Yield ``(chunk, PreparedBatch)`` pairs of at most ``batch_size`` inputs, loading ahead.

        The next chunk is decoded while the caller works on the current one (e.g. runs the model), and the images
        of a chunk are decoded in parallel by ``workers`` threads (default: up to 8, one per CPU core).
        """
        size = self.config.batch_size if batch_size is None else batch_size
        yield from iter_prepared(inputs, size, self.preprocess, workers=workers)

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
            class_name: the object class in the prompts ("metal_nut" -> "metal nut"); one name for all inputs or
                one per input.
            map_size: ``"original"`` (maps at each input's size) or ``"input"`` (at the model input size).
            batch_size: images per forward pass (default: the recipe's).
            progress: show a progress bar (default: when there is more than one batch).

        Returns:
            One :class:`AnomalyResult` for a single input (a path, image, array or 3-D tensor); a list otherwise.
        """
        import torch

        if map_size not in ("original", "input"):
            raise ConfigError(f"map_size must be 'original' or 'input', got {map_size!r}.")
        items, single = as_items(inputs)
        names = class_names_for(class_name, items)
        results: list[AnomalyResult] = []
        from tqdm.auto import tqdm

        show = progress if progress is not None else len(items) > (batch_size or self.config.batch_size)
        with torch.inference_mode(), tqdm(total=len(items), disable=not show, unit="img", desc="zsad predict") as bar:
            for chunk, batch in self.iter_batches(items, batch_size):
                n = len(batch.original_sizes)
                chunk_names = names[len(results) : len(results) + n]
                out = self.score_pixels(batch.pixels, chunk_names)
                results.extend(self._results(out, batch, chunk_names, map_size))
                bar.update(len(chunk))
        return results[0] if single and len(results) == 1 else results

    def _results(self, out: BatchScores, batch, names: list[str], map_size: str) -> Iterable[AnomalyResult]:
        import torch.nn.functional as F

        maps = []
        for i, hw in enumerate(batch.original_sizes):
            amap = out.maps[i : i + 1]
            if map_size == "original" and tuple(amap.shape[-2:]) != hw:
                amap = F.interpolate(amap.unsqueeze(1), size=hw, mode="bilinear", align_corners=False).squeeze(1)
            maps.append(amap[0].float().cpu().numpy().astype(np.float32, copy=False))
        scores = {k: v.float().cpu().numpy() for k, v in out.scores.items()}
        return batch_results(scores, maps, batch, names, self.config.heads.image_score)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Detector(recipe={c.name!r}, backbone={c.backbone.name}:{c.backbone.checkpoint}, "
            f"prompts={c.prompts.strategy}, image_score={c.heads.image_score}, image_size={c.preprocess.image_size}, "
            f"device={self.device}, dtype={self.dtype})"
        )
