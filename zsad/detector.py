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
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice, repeat
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence, overload

import numpy as np
import torch
import torch.nn.functional as F

from zsad.components import create_backbone, create_head, create_prompts, get_recipe
from zsad.config import DetectorConfig
from zsad.errors import ConfigError, ImageError
from zsad.heads.base import ImageHead, PixelHead, ScoreInputs
from zsad.io import prepare_batch
from zsad.prompts.templates import normalize_class_name
from zsad.results import AnomalyResult

__all__ = ["Detector", "BatchScores"]

ImageInput = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray | torch.Tensor


@dataclass
class BatchScores:
    """Everything one forward pass computes for a batch (tensors on the detector's device, fp32)."""

    scores: dict[str, torch.Tensor]  # name -> (B,)
    maps: torch.Tensor  # (B, S, S) smoothed pixel maps at the model input size
    inputs: ScoreInputs  # probabilities the heads scored


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


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
        self.config = config
        self.device = torch.device(device or _default_device())
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"device={str(device)!r} was requested but PyTorch sees no CUDA device (torch {torch.__version__}); "
                "use device='cpu', or install a CUDA build of PyTorch on a machine with an NVIDIA GPU."
            )
        self.dtype = _DTYPES[dtype] if isinstance(dtype, str) and dtype in _DTYPES else (dtype or torch.float32)
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

    # -- prototypes --------------------------------------------------------------------------------------------
    def prototypes(self, class_names: Sequence[str], kind: Literal["global", "local"] = "global") -> torch.Tensor:
        """Text prototypes ``(C, 2, D)`` (``(1, 2, D)`` for class-agnostic local prompts), cached per class."""
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
        features = self.backbone.encode_image(pixels.to(self.device))
        g_f = self.prototypes(class_names, "global")  # (B, 2, D)
        g_l = self.prototypes(class_names, "local")  # (B or 1, 2, D)
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
        self, inputs: Iterable[ImageInput], batch_size: int | None = None, *, workers: int | None = None
    ) -> Iterator[tuple[list[ImageInput], Any]]:
        """Yield ``(chunk, PreparedBatch)`` pairs of at most ``batch_size`` inputs, loading ahead.

        The next chunk is decoded while the caller works on the current one (e.g. runs the model), and the images
        of a chunk are decoded in parallel by ``workers`` threads (default: up to 8, one per CPU core). ``inputs``
        is consumed lazily (a generator works), so at most two chunks are held at a time.
        """
        size = self.config.batch_size if batch_size is None else batch_size
        if not isinstance(size, int) or size < 1:
            raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
        items = iter(inputs)
        chunk = list(islice(items, size))
        if not chunk:
            return
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=1) as ahead, ThreadPoolExecutor(max_workers=workers) as decode:
            pending = ahead.submit(self.preprocess, chunk, decode)
            while chunk:
                batch = pending.result()
                following = list(islice(items, size))
                if following:
                    pending = ahead.submit(self.preprocess, following, decode)
                yield chunk, batch
                chunk = following

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
            Every map of a list is kept in memory: for long runs iterate over :meth:`predict_iter` instead.
        """
        single = not isinstance(inputs, (list, tuple)) and not (isinstance(inputs, torch.Tensor) and inputs.ndim == 4)
        items = [inputs] if single or isinstance(inputs, torch.Tensor) else list(inputs)
        if not items:
            raise ImageError("predict() got an empty list of inputs; pass at least one image.")
        names = self._class_names(class_name, items)
        show = progress if progress is not None else len(items) > (batch_size or self.config.batch_size)
        results = list(self.predict_iter(items, names, map_size=map_size, batch_size=batch_size, progress=show,
                                         total=len(names)))
        return results[0] if single and len(results) == 1 else results

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

        Args:
            inputs, class_name, map_size, batch_size: as for :meth:`predict`.
            progress: show a progress bar (``total`` images, when known).

        Raises:
            ImageError: an input cannot be read (the error names it); results before its batch were yielded.

        Example:
            >>> import numpy as np
            >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_strategy="fixed",
            ...                            prompt_checkpoint=None, image_size=28, backbone_options={"random_arch": {}},
            ...                            device="cpu")
            >>> frames = (np.full((20, 30, 3), v, np.uint8) for v in range(5))  # a generator: nothing is listed
            >>> [r.anomaly_map.shape for r in det.predict_iter(frames, "screw", batch_size=2)]
            [(20, 30), (20, 30), (20, 30), (20, 30), (20, 30)]
        """
        if map_size not in ("original", "input"):
            raise ConfigError(f"map_size must be 'original' or 'input', got {map_size!r}.")
        names = repeat(class_name) if isinstance(class_name, str) else iter(class_name)
        from tqdm.auto import tqdm

        with torch.inference_mode(), tqdm(total=total, disable=not progress, unit="img", desc="zsad predict") as bar:
            for chunk, batch in self.iter_batches(inputs, batch_size):
                chunk_names = list(islice(names, len(batch.original_sizes)))
                if len(chunk_names) != len(batch.original_sizes):
                    raise ConfigError("class_name has fewer entries than there are images; give one name or one "
                                      "per image.")
                out = self.score_pixels(batch.pixels, chunk_names)
                yield from self._results(out, batch, chunk_names, map_size)
                bar.update(len(chunk))

    def _class_names(self, class_name: str | Sequence[str], items: list) -> list[str]:
        count = sum(int(x.shape[0]) if isinstance(x, torch.Tensor) and x.ndim == 4 else 1 for x in items)
        if isinstance(class_name, str):
            return [class_name] * count
        names = list(class_name)
        if len(names) != count:
            raise ConfigError(f"class_name has {len(names)} entries for {count} images; give one name or one per image.")
        return names

    def _results(self, out: BatchScores, batch, names: list[str], map_size: str) -> Iterable[AnomalyResult]:
        score_rows = {k: v.float().cpu().numpy() for k, v in out.scores.items()}
        main = self.config.heads.image_score
        for i, (hw, path) in enumerate(zip(batch.original_sizes, batch.paths)):
            amap = out.maps[i : i + 1]
            if map_size == "original" and tuple(amap.shape[-2:]) != hw:
                amap = F.interpolate(amap.unsqueeze(1), size=hw, mode="bilinear", align_corners=False).squeeze(1)
            scores = {k: float(v[i]) for k, v in score_rows.items()}
            yield AnomalyResult(
                pred_score=scores[main],
                scores=scores,
                anomaly_map=amap[0].float().cpu().numpy().astype(np.float32, copy=False),
                class_name=names[i],
                image_path=path,
                original_size=hw,
            )

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Detector(recipe={c.name!r}, backbone={c.backbone.name}:{c.backbone.checkpoint}, "
            f"prompts={c.prompts.strategy}, image_score={c.heads.image_score}, image_size={c.preprocess.image_size}, "
            f"device={self.device}, dtype={self.dtype})"
        )
