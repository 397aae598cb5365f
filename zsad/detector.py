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
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence, overload

import numpy as np
import torch
import torch.nn.functional as F

from zsad.backbones.base import check_patch_multiple
from zsad.components import create_backbone, create_prompts, get_recipe
from zsad.config import DetectorConfig
from zsad.errors import ConfigError, ImageError
from zsad.heads.base import ImageHead, PixelHead
from zsad.heads.memory import ReferenceMemory
from zsad.heads.scoring import BatchScorer, BatchScores, build_scorer
from zsad.io import prepare_batch
from zsad.prompts.templates import check_class_name
from zsad.results import AnomalyResult, check_finite_outputs
from zsad.weights.table import patch_size_of

__all__ = ["Detector", "BatchScores"]

ImageInput = Any  # str | os.PathLike | PIL.Image.Image | np.ndarray | torch.Tensor
_REFERENCES_FILE = "references.safetensors"


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
        if backbone is None and (patch := patch_size_of(config.backbone.checkpoint)):  # before any weights load
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
        self.scorer: BatchScorer = build_scorer(self.backbone, config.heads)
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

    # -- prototypes --------------------------------------------------------------------------------------------
    def prototypes(self, class_names: Sequence[str], kind: Literal["global", "local"] = "global") -> torch.Tensor:
        """Text prototypes ``(C, 2, D)`` (``(1, 2, D)`` for class-agnostic local prompts), cached per class.

        Class names are passed to the prompt strategy as given (it decides how they are written into prompts).
        """
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
        return self.scorer(pixels.to(self.device), g_f, g_l, banks if any(b is not None for b in banks) else None)

    def _warn_if_untrained(self) -> None:
        if not self.prompts.trained and not self._warned_untrained:
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
            backend=pre.resize_backend,
            rgb_conversion=pre.rgb_conversion,
        )

    def iter_batches(
        self, inputs: Sequence[ImageInput], batch_size: int | None = None, *, workers: int | None = None
    ) -> Iterator[tuple[list[ImageInput], Any]]:
        """Yield ``(chunk, PreparedBatch)`` pairs of at most ``batch_size`` inputs, loading ahead.

        The next chunk is decoded while the caller works on the current one (e.g. runs the model), and the images
        of a chunk are decoded in parallel by ``workers`` threads (default: up to 8, one per CPU core).
        """
        items = list(inputs)
        size = self.config.batch_size if batch_size is None else batch_size
        if not isinstance(size, int) or size < 1:
            raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        if not chunks:
            return
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=1) as ahead, ThreadPoolExecutor(max_workers=workers) as decode:
            pending = ahead.submit(self.preprocess, chunks[0], decode)
            for index, chunk in enumerate(chunks):
                batch = pending.result()
                if index + 1 < len(chunks):
                    pending = ahead.submit(self.preprocess, chunks[index + 1], decode)
                yield chunk, batch

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
        """
        if map_size not in ("original", "input"):
            raise ConfigError(f"map_size must be 'original' or 'input', got {map_size!r}.")
        single = not isinstance(inputs, (list, tuple)) and not (isinstance(inputs, torch.Tensor) and inputs.ndim == 4)
        items = [inputs] if single or isinstance(inputs, torch.Tensor) else list(inputs)
        if not items:
            raise ImageError("predict() got an empty list of inputs; pass at least one image.")
        names = self._class_names(class_name, items)
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

    def _class_names(self, class_name: str | Sequence[str], items: list) -> list[str]:
        count = sum(int(x.shape[0]) if isinstance(x, torch.Tensor) and x.ndim == 4 else 1 for x in items)
        if isinstance(class_name, (str, bytes)) or not isinstance(class_name, Iterable):
            return [check_class_name(class_name)] * count
        names = [check_class_name(c) for c in class_name]
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
            anomaly_map = amap[0].float().cpu().numpy().astype(np.float32, copy=False)
            check_finite_outputs(scores, anomaly_map, path or f"input {i} of the batch")
            yield AnomalyResult(
                pred_score=scores[main],
                scores=scores,
                anomaly_map=anomaly_map,
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
