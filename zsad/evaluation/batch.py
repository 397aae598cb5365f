"""Per-batch scoring for evaluation: one preprocessed batch of a class -> scores, maps and ground truth (numpy).

This is the model side of an evaluation, run wherever the detector lives (in this process, or in a Ray worker:
see :mod:`zsad.engines`). What it returns, a :class:`ScoredBatch`, is plain numpy data that the per-class scorer
(:class:`zsad.evaluation.scorer.ClassScorer`) turns into metrics without a model.

Example (the tiny fixture model; ``plan`` says what the class needs):
    >>> import zsad
    >>> from pathlib import Path
    >>> from zsad import Detector
    >>> fx = Path(zsad.__file__).resolve().parents[1] / "tests" / "fixtures" / "tipsomaly-parity"
    >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=str(fx), image_size=56, device="cpu",
    ...                            prompt_checkpoint=str(fx / "learnable_params.pth"))
    >>> from zsad.data import open_dataset
    >>> samples = open_dataset(fx / "dataset").samples("metal_nut")
    >>> plan = ClassPlan.for_samples(samples, det.config, protocol="tipsomaly")
    >>> [sb.start for sb in iter_scored(det, samples, "metal_nut", plan, batch_size=2)]
    [0, 2]
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from zsad.errors import ConfigError, DatasetError, MetricError

if TYPE_CHECKING:  # pragma: no cover
    from zsad.config import DetectorConfig
    from zsad.data import Sample
    from zsad.detector import Detector

__all__ = ["ClassPlan", "ReferenceSlot", "ScoredBatch", "iter_scored", "score_batch"]


@dataclass(frozen=True)
class ClassPlan:
    """What scoring the images of one class must produce (picklable, so engines can ship it to workers).

    Attributes:
        protocol: ``"tipsomaly"`` (maps at the model input size ``S``, masks resized to it) or ``"original"``
            (maps resized to each image's size, masks at their native size).
        size: the model input size ``S``.
        keep_maps: return the maps (needed for pixel metrics, saved maps and overlays).
        read_masks: read the ground-truth masks (the class has masks).
        exif_transpose: turn masks by their image's EXIF orientation, as the detector turns the images.
        references: the paths of the class's normal reference images (few-shot; empty: zero-shot). The engine
            gives them to the detector that scores the class (:class:`ReferenceSlot`) before scoring.
    """

    protocol: str
    size: int
    keep_maps: bool
    read_masks: bool
    exif_transpose: bool = False
    references: tuple[str, ...] = ()

    @classmethod
    def for_samples(cls, samples: Sequence[Sample], config: DetectorConfig, *, protocol: str,
                    save_maps: bool = False, save_overlays: bool = False,
                    references: Sequence[Sample] = ()) -> ClassPlan:
        has_masks = any(s.is_anomalous and s.has_mask for s in samples)
        return cls(protocol, int(config.preprocess.image_size), has_masks or save_maps or save_overlays, has_masks,
                   config.preprocess.exif_transpose, tuple(str(s.img_path) for s in references))

    @property
    def original(self) -> bool:
        return self.protocol == "original"


@dataclass
class ScoredBatch:
    """Scores, maps and ground truth of consecutive samples ``start .. start + len(paths)`` of one class.

    Attributes:
        start: index of the first sample in the class.
        paths: the image paths, as given.
        sizes: each image's ``(height, width)``.
        scores: image-score name -> ``(k,)`` float64.
        maps: ``(k, S, S)`` float32 (protocol ``tipsomaly``), a list of ``(h, w)`` float32 maps (``original``),
            or ``None`` when the plan keeps no maps.
        masks: per sample the binarised mask at the evaluation resolution, ``None`` for no mask (all normal);
            the whole list is ``None`` when the plan reads no masks.
        grey, resized, vanished: the masks binarised from grey values, resized from another size than their
            image's, or emptied by the resize (texts naming the files), for the class's notes.
        warnings: ``(category, message)`` of the warnings raised where the batch was scored, for engines that
            score in another process (the in-process engine leaves it empty: its warnings are seen directly).
    """

    start: int
    paths: list[str]
    sizes: list[tuple[int, int]]
    scores: dict[str, np.ndarray]
    maps: Any = None
    masks: list[np.ndarray | None] | None = None
    grey: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    warnings: list[tuple[type[Warning], str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


class ReferenceSlot:
    """The normal references an engine gives one detector for the class it scores: one class at a time.

    :meth:`use` makes the detector hold exactly ``plan.references`` for the class (adding them with
    :meth:`Detector.add_references <zsad.detector.Detector.add_references>`, loaded and preprocessed like the
    images scored); it does nothing when it already holds them, so a worker scoring a class shard by shard encodes
    them once. Another class's references, put in place by this slot, are removed first. :meth:`release` removes
    them, leaving the detector as it was.

    Example (tiny random weights):
        >>> import numpy as np, tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> from zsad import Detector
        >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_strategy="fixed",
        ...                            prompt_checkpoint=None, image_size=56, device="cpu",
        ...                            backbone_options={"random_config": "tiny"})
        >>> ref = Path(tempfile.mkdtemp()) / "good.png"
        >>> Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(ref)
        >>> slot = ReferenceSlot(det)
        >>> slot.use("nut", [str(ref)]); det.references
        {'nut': 1}
        >>> slot.release(); det.references
        {}
    """

    def __init__(self, detector: Detector):
        self.detector = detector
        self.held: tuple[str, tuple[str, ...]] | None = None

    def use(self, cls: str, references: Sequence[str], batch_size: int | None = None) -> None:
        """Make the detector hold exactly ``references`` (paths) for ``cls`` (none: the class is zero-shot).

        Raises:
            ConfigError: the detector already holds references for ``cls`` that this slot did not add (they
                would be mixed with the evaluation's).
            ImageError: reference images that cannot be loaded (all named).
        """
        wanted = (cls, tuple(references)) if references else None
        if wanted == self.held:
            return
        self.release()
        if wanted is None:
            return
        if cls in self.detector.references:
            raise ConfigError(
                f"The detector already holds {self.detector.references[cls]} normal reference image(s) for class "
                f"{cls!r}; the evaluation adds its own. Clear them first (detector.clear_references())."
            )
        self.detector.add_references(list(wanted[1]), class_name=cls, batch_size=batch_size, progress=False)
        self.held = wanted

    def release(self) -> None:
        """Remove the references this slot put in place (if any)."""
        if self.held is not None:
            self.detector.clear_references(self.held[0])
            self.held = None


def _check_references(det: Detector, cls: str, plan: ClassPlan) -> None:
    """The engine's side of the contract: the detector holds exactly the plan's references for the class."""
    held = det.references.get(cls, 0)
    if held != len(plan.references):
        raise ConfigError(
            f"Class {cls!r} is to be scored with {len(plan.references)} normal reference image(s) but the detector "
            f"holds {held}. " + ("Clear the detector's references (detector.clear_references()) before evaluating "
                                 "it." if held else "The engine must add them first (ReferenceSlot.use).")
        )


def _check_finite(out: Any, chunk: Sequence[str], cls: str) -> None:
    import torch

    finite = torch.isfinite(out.maps.float()).flatten(1).all(dim=1)
    for t in out.scores.values():
        finite &= torch.isfinite(t.float())
    if not bool(finite.all()):
        bad = [chunk[j] for j in torch.nonzero(~finite).flatten().tolist()]
        raise MetricError(
            f"The model produced NaN or infinite scores/maps for {len(bad)} image(s) of class {cls!r}: "
            f"{', '.join(bad[:5])}. Check these images (e.g. constant or corrupt files) and the dtype "
            "(float16 can overflow; use float32 or bfloat16)."
        )


def _maps(out: Any, sizes: Sequence[tuple[int, int]], plan: ClassPlan) -> Any:
    import torch.nn.functional as F

    maps_t = out.maps.float()
    if not plan.original:
        return maps_t.cpu().numpy()
    resized = []
    for j, hw in enumerate(sizes):
        m = F.interpolate(maps_t[j][None, None], size=hw, mode="bilinear", align_corners=False)
        resized.append(m[0, 0].cpu().numpy().astype(np.float32, copy=False))
    return resized


def _ground_truth(sb: ScoredBatch, samples: Sequence[Sample], plan: ClassPlan) -> None:
    from zsad.data.masks import read_ground_truth

    sb.masks = []
    for s, hw in zip(samples, sb.sizes):
        if not (s.is_anomalous and s.has_mask):
            sb.masks.append(None)
            continue
        gt = read_ground_truth(s.mask_path, None if plan.original else plan.size, image_path=s.img_path,
                               exif_transpose=plan.exif_transpose)
        if gt.grey:
            sb.grey.append(str(s.mask_path))
        if gt.native_hw != hw:
            if plan.original:  # validate_masks ran first; belt and braces
                raise DatasetError(f"Mask {s.mask_path} is {gt.native_hw[1]}x{gt.native_hw[0]} but its image "
                                   f"{s.img_path} is {hw[1]}x{hw[0]}; protocol 'original' needs equal sizes.")
            sb.resized.append(f"{s.mask_path} ({gt.native_hw[1]}x{gt.native_hw[0]}) vs image "
                              f"{s.img_path} ({hw[1]}x{hw[0]})")
        if gt.vanished:
            sb.vanished.append(str(s.mask_path))
        sb.masks.append(gt.mask)


def score_batch(det: Detector, batch: Any, samples: Sequence[Sample], cls: str, plan: ClassPlan,
                start: int = 0) -> ScoredBatch:
    """Score one preprocessed batch (:meth:`Detector.preprocess` of ``samples``' images) of class ``cls``.

    Raises:
        MetricError: the model produced NaN/inf for some images (named).
        DatasetError: a mask of another size than its image under protocol ``original``.
    """
    paths = [str(s.img_path) for s in samples]
    out = det.score_pixels(batch.pixels, [cls] * len(samples))
    _check_finite(out, paths, cls)
    sizes = [tuple(int(v) for v in hw) for hw in batch.original_sizes]
    sb = ScoredBatch(
        start=start,
        paths=paths,
        sizes=sizes,  # type: ignore[arg-type]
        scores={h: t.double().cpu().numpy() for h, t in out.scores.items()},
        maps=_maps(out, sizes, plan) if plan.keep_maps else None,  # type: ignore[arg-type]
    )
    if plan.read_masks:
        _ground_truth(sb, samples, plan)
    return sb


def iter_scored(det: Detector, samples: Sequence[Sample], cls: str, plan: ClassPlan, batch_size: int | None = None,
                *, start: int = 0, record_warnings: bool = False) -> Iterator[ScoredBatch]:
    """Score ``samples`` (all of class ``cls``) batch by batch, in order, loading the next batch ahead.

    ``start`` is the class index of ``samples[0]`` (engines score a class in shards). The detector must hold
    exactly ``plan.references`` for ``cls`` (:class:`ReferenceSlot`). With ``record_warnings``
    the warnings raised while loading and scoring a batch are returned in :attr:`ScoredBatch.warnings` instead of
    being shown (for engines whose workers run in other processes).
    """
    import torch

    _check_references(det, cls, plan)
    i = 0
    with torch.inference_mode():
        batches = det.iter_batches([str(s.img_path) for s in samples], batch_size or det.config.batch_size)
        while True:
            with warnings.catch_warnings(record=record_warnings) as caught:
                if record_warnings:
                    warnings.simplefilter("always")
                item = next(batches, None)
                if item is None:
                    return
                chunk, batch = item
                sb = score_batch(det, batch, samples[i : i + len(chunk)], cls, plan, start + i)
            if caught:
                sb.warnings = [(w.category, str(w.message)) for w in caught]
            i += len(chunk)
            yield sb
