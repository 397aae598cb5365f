"""Benchmark evaluation: a recipe and a dataset in, the per-class and mean table of the papers out.

:func:`evaluate` scores every test image of a dataset (AdaCLIP/AnomalyCLIP ``meta.json``, AA-CLIP jsonl or an
MVTec-style tree, see :func:`zsad.data.open_dataset`), computes per class the image metrics (AUROC, AP,
F1-max) of the recipe's image score and the pixel metrics (AUROC, AP, AUPRO, F1-max), averages them over the
classes, and writes everything into one output folder.

Protocols
---------
``protocol="tipsomaly"`` (default)
    The official Tipsomaly/AnomalyCLIP protocol: metrics at the model input resolution ``S x S`` (518 for
    Tipsomaly), i.e. the maps exactly as :meth:`zsad.Detector.score_pixels` returns them, against ground-truth
    masks read with ``convert('L') > 0`` and resized with the official rule (bilinear of the x255 mask, then
    ``> 0.5``, :func:`zsad.data.masks.resize_mask`). This reproduces published numbers.
``protocol="original"``
    Each map is resized back (bilinear) to its image's original size and compared with the mask at its native
    size: more faithful (no mask resampling, small defects keep their area), slower and heavier (an MVTec image is
    up to 1024x1024). A mask whose size differs from its image's is an error here (:class:`~zsad.errors.DatasetError`
    naming the files). Under ``"tipsomaly"`` such a mask is resized anyway, as the official loader does; zsad warns
    and lists it in the notes of the class.

``aupro="exact"`` (default) is the MVTec AD AUPRO; ``aupro="legacy"`` the Tipsomaly/AnomalyCLIP 200-threshold
variant (for published-number parity only; see :mod:`zsad.metrics`).

Undefined metrics
-----------------
Image metrics need normal *and* anomalous images, pixel metrics need masks with anomalous and normal pixels.
Image-only datasets (HeadCT, BrainMRI, Br35H: no masks) therefore report pixel metrics as n/a, pixel-only
datasets (ISIC, ColonDB, ClinicDB, TN3K: anomalies only) report image metrics as n/a. With ``undefined="nan"``
(default) n/a is ``null`` in JSON, ``n/a`` in the tables, and never enters a mean: ``counts`` says how many
classes each mean averages. ``undefined="zero"`` reproduces the official zero-filling (0 enters the mean), only
to compare with published tables.

Prompts
-------
The fixed prompt list follows the dataset, as in the official scripts: HeadCT, BrainMRI and Br35H use the
``medical`` list, everything else the recipe's (``industrial``). The dataset is named after its folder (or
``dataset_name=``), normalised with :func:`zsad.data.canonical_dataset_name`. An explicit ``fixed_prompts``
override always wins.

Outputs (in ``out``)
--------------------
==================  ==============================================================================================
``metrics.json``     ``{"classes": {cls: {metric: value}}, "mean": {...}, "counts": {...}, ...}``; metrics
                     ``image_auroc, image_ap, image_f1_max, pixel_auroc, pixel_ap, pixel_aupro, pixel_f1_max`` as
                     fractions in [0, 1], ``null`` = n/a; also ``image_scores`` (image metrics of every score
                     S1..S5), ``images`` (counts per class) and ``notes``
``metrics.md``       the table x100 with 2 decimals, as in the papers (Markdown)
``metrics.csv``      the same values as fractions (empty cell = n/a), one row per class and a ``Mean`` row
``scores.csv``       one row per image: ``path, class, label, score, S1, ..., S5, specie`` (``score`` = the
                     recipe's image score; ``path`` relative to the dataset folder)
``manifest.json``    versions, the full DetectorConfig, sha256 of the checkpoint files used, protocol, AUPRO mode,
                     evaluation resolution and mask rule, dataset path and description sha256, times, warnings
``classes/<c>.json`` per-class results (metrics, scores, notes), written when a class is done: the resume points
``maps/<c>.npz``     (``save_maps=True``) float32 maps at the evaluation resolution, ``paths`` and ``labels``
``overlays/<c>/``    (``save_overlays=True``) one PNG per image on the class's shared colour scale, with
                     ground-truth contours; ``figures/<c>.png``: a few normal/anomalous examples and a colour bar
==================  ==============================================================================================

Several datasets (``data=[a, b]``) give one sub-folder per dataset plus ``summary.{json,md,csv}``. Every file is
written atomically (temporary file + ``os.replace``), so an interrupted run never leaves a half-written file.

Resuming: with ``resume=True`` (default) a rerun into the same ``out`` loads finished classes from
``classes/<c>.json`` instead of recomputing them, if the manifest's fingerprint (configuration, protocol, AUPRO
mode, ``undefined``, dtype, dataset and checkpoint hashes) matches; otherwise it stops with a
:class:`~zsad.errors.ConfigError` (use a new ``out`` or ``resume=False``, which recomputes everything).

Memory: per class the maps are kept as float32 at the evaluation resolution (150 images at 518x518 are ~160 MB)
and the masks as uint8; datasets without masks keep no maps unless maps or overlays are saved.

Typical use (downloads the Tipsomaly weights on first use; MVTec-AD is evaluated with the VisA-trained prompts)::

    report = evaluate("tipsomaly", "data/mvtec", "runs/mvtec", overrides={"prompt_checkpoint": "tipsomaly-visa"})
    print(report.table())            # per-class and mean table, x100
    report.mean["pixel_aupro"]       # fraction in [0, 1]; also in runs/mvtec/metrics.json
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zsad._files import atomic_path, safe_filename, sha256_file, write_text
from zsad.errors import ConfigError, DatasetError, MetricError

if TYPE_CHECKING:  # pragma: no cover
    from zsad.config import DetectorConfig
    from zsad.data import AnomalyDataset, Sample
    from zsad.detector import Detector

__all__ = [
    "IMAGE_METRICS",
    "METRIC_KEYS",
    "PIXEL_METRICS",
    "PROTOCOLS",
    "ClassEvaluation",
    "DatasetEvaluation",
    "EvaluationReport",
    "evaluate",
    "format_table",
]

IMAGE_METRICS = ("image_auroc", "image_ap", "image_f1_max")
PIXEL_METRICS = ("pixel_auroc", "pixel_ap", "pixel_aupro", "pixel_f1_max")
METRIC_KEYS = IMAGE_METRICS + PIXEL_METRICS
"""The metric names of ``metrics.json`` (fractions in [0, 1]; NaN / ``null`` = n/a)."""

PROTOCOLS = ("tipsomaly", "original")
AUPRO_MODES = ("exact", "legacy")
UNDEFINED = ("nan", "zero")
FPR_LIMIT = 0.3
MASK_RULE = "convert('L') > 0; x255 -> PIL bilinear resize -> /255 -> > 0.5 (official Tipsomaly/AnomalyCLIP loader)"
_FORMAT_VERSION = 1

_HEADERS = {
    "image_auroc": "I-AUROC",
    "image_ap": "I-AP",
    "image_f1_max": "I-F1max",
    "pixel_auroc": "P-AUROC",
    "pixel_ap": "P-AP",
    "pixel_aupro": "P-AUPRO",
    "pixel_f1_max": "P-F1max",
}
_DTYPE_NAMES = {None: "float32", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
                "float16": "float16", "fp16": "float16"}


# ------------------------------------------------------------------------------------------------ result types


@dataclass
class ClassEvaluation:
    """The evaluation of one class (what ``classes/<class>.json`` holds).

    Attributes:
        name: the class key of the dataset description.
        metrics: :data:`METRIC_KEYS` -> fraction (NaN = n/a).
        image_scores: image metrics of every computed image score (``{"S1": {"image_auroc": ...}, ...}``).
        images: ``{"total", "normal", "anomalous", "with_mask"}`` counts.
        notes: why a metric is n/a, warnings raised while evaluating (masks resized, grey masks, ...).
        rows: one ``scores.csv`` row per image.
        saved: which optional outputs were written (``{"maps": bool, "overlays": bool}``).
        resumed: True when loaded from a previous run instead of computed.
    """

    name: str
    metrics: dict[str, float]
    image_scores: dict[str, dict[str, float]]
    images: dict[str, int]
    notes: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    saved: dict[str, bool] = field(default_factory=dict)
    resumed: bool = False

    def to_dict(self, fingerprint: str) -> dict[str, Any]:
        return {
            "format_version": _FORMAT_VERSION,
            "class": self.name,
            "fingerprint_sha256": fingerprint,
            "metrics": _jsonable(self.metrics),
            "image_scores": _jsonable(self.image_scores),
            "images": self.images,
            "notes": self.notes,
            "saved": self.saved,
            "scores": _jsonable(self.rows),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ClassEvaluation:
        return cls(
            name=data["class"],
            metrics=_floats(data["metrics"]),
            image_scores={k: _floats(v) for k, v in data.get("image_scores", {}).items()},
            images=dict(data.get("images", {})),
            notes=list(data.get("notes", [])),
            rows=list(data.get("scores", [])),
            saved=dict(data.get("saved", {})),
            resumed=True,
        )


@dataclass
class DatasetEvaluation:
    """Per-class and mean metrics of one dataset (what ``metrics.json`` holds).

    Attributes:
        name: the dataset name (folder name or ``dataset_name=``).
        path: the dataset description or folder that was read.
        out: the folder the outputs were written to.
        classes: class -> :class:`ClassEvaluation`, in dataset order.
        mean: :data:`METRIC_KEYS` -> mean over the classes where the metric is defined (NaN if none).
        counts: metric -> number of classes that entered the mean.
        settings: recipe, image score, protocol, AUPRO mode, resolution, ``undefined``, prompt list.
    """

    name: str
    path: Path
    out: Path
    classes: dict[str, ClassEvaluation]
    mean: dict[str, float]
    counts: dict[str, int]
    image_scores_mean: dict[str, dict[str, float]]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """``{class: {metric: value}}`` (fractions, NaN = n/a)."""
        return {c: ce.metrics for c, ce in self.classes.items()}

    def table(self, fmt: str = "text") -> str:
        """The table x100 with 2 decimals: ``fmt="text"`` (terminal) or ``"markdown"``."""
        rows = [[c, *(self.classes[c].metrics.get(k, math.nan) for k in METRIC_KEYS)] for c in self.classes]
        rows.append(["Mean", *(self.mean.get(k, math.nan) for k in METRIC_KEYS)])
        headers = ["class", *(_HEADERS[k] for k in METRIC_KEYS)]
        n = len(self.classes)
        if any(self.counts.get(k, 0) != n for k in METRIC_KEYS):
            rows.append(["classes in mean", *(str(self.counts.get(k, 0)) for k in METRIC_KEYS)])
        return format_table(headers, rows, fmt)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": _FORMAT_VERSION,
            "dataset": self.name,
            "path": str(self.path),
            **self.settings,
            "metrics": list(METRIC_KEYS),
            "classes": {c: _jsonable(ce.metrics) for c, ce in self.classes.items()},
            "mean": _jsonable(self.mean),
            "counts": dict(self.counts),
            "n_classes": len(self.classes),
            "image_scores": {c: _jsonable(ce.image_scores) for c, ce in self.classes.items()},
            "image_scores_mean": _jsonable(self.image_scores_mean),
            "images": {c: ce.images for c, ce in self.classes.items()},
            "notes": {"dataset": self.notes, **{c: ce.notes for c, ce in self.classes.items() if ce.notes}},
        }


@dataclass
class EvaluationReport:
    """What :func:`evaluate` returns: one :class:`DatasetEvaluation` per dataset, and where the files are.

    For a single dataset, ``classes``, ``mean`` and ``counts`` are that dataset's.
    """

    out: Path
    datasets: dict[str, DatasetEvaluation]

    def _single(self) -> DatasetEvaluation:
        if len(self.datasets) != 1:
            raise ConfigError(
                f"This report holds {len(self.datasets)} datasets ({', '.join(self.datasets)}); "
                "use report.datasets[name].mean (or .classes, .counts)."
            )
        return next(iter(self.datasets.values()))

    @property
    def classes(self) -> dict[str, dict[str, float]]:
        """``{class: {metric: value}}`` of the (single) dataset."""
        return self._single().metrics

    @property
    def mean(self) -> dict[str, float]:
        """Mean over classes of the (single) dataset."""
        return self._single().mean

    @property
    def counts(self) -> dict[str, int]:
        """Classes that entered each mean, for the (single) dataset."""
        return self._single().counts

    def table(self, fmt: str = "text") -> str:
        """The per-class table of one dataset, or one row (the mean) per dataset for several."""
        if len(self.datasets) == 1:
            return self._single().table(fmt)
        rows = [[name, *(d.mean.get(k, math.nan) for k in METRIC_KEYS)] for name, d in self.datasets.items()]
        return format_table(["dataset", *(_HEADERS[k] for k in METRIC_KEYS)], rows, fmt)

    def __str__(self) -> str:
        return self.table()


# ---------------------------------------------------------------------------------------------- small helpers


def _jsonable(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _floats(d: Mapping[str, Any]) -> dict[str, float]:
    return {k: (math.nan if v is None else float(v)) for k, v in d.items()}


def _fmt100(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100.0 * value:.2f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "text") -> str:
    """A table with numbers shown x100 with 2 decimals (NaN -> ``n/a``; strings as given).

    Example:
        >>> print(format_table(["class", "AUROC"], [["bottle", 0.98765], ["Mean", float("nan")]]))
        class   AUROC
        ------  -----
        bottle  98.77
        Mean      n/a
        >>> print(format_table(["class", "AUROC"], [["bottle", 0.5]], "markdown"))
        | class | AUROC |
        |:--|--:|
        | bottle | 50.00 |
    """
    cells = [[str(r[0]), *(_fmt100(v) for v in r[1:])] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|:--|" + "--:|" * (len(headers) - 1)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    if fmt != "text":
        raise ConfigError(f"Table format must be 'text' or 'markdown', got {fmt!r}.")
    widths = [max(len(str(h)), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        first = values[0].ljust(widths[0])
        return "  ".join([first, *(v.rjust(w) for v, w in zip(values[1:], widths[1:]))]).rstrip()

    return "\n".join([line(list(headers)), line(["-" * w for w in widths]), *(line(c) for c in cells)])


def _atomic_json(path: Path, data: Any) -> Path:
    return write_text(path, json.dumps(_jsonable(data), indent=2, allow_nan=False) + "\n")


def _atomic_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return path


def _csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v) for k, v in r.items()})
    return buf.getvalue()


def _sha256_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(_jsonable(data), sort_keys=True).encode()).hexdigest()


def _safe_name(name: str) -> str:
    """A file name for a class key (``/`` and other odd characters -> ``_``)."""
    return safe_filename(name, "class")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("zsad", "torch", "transformers", "numpy", "scipy", "pillow"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    if out.get("zsad") is None:
        import zsad

        out["zsad"] = zsad.__version__
    return out


def _undefined_fill(undefined: str) -> float:
    return 0.0 if undefined == "zero" else math.nan


def _coerce_override(value: Any) -> Any:
    """Command-line strings: JSON lists/objects parsed, ``none``/``null`` -> None; the rest is left to pydantic."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.lower() in ("none", "null"):
        return None
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return value
    return value


# --------------------------------------------------------------------------------------------- checkpoints


def _folder_hashes(folder: Path) -> dict[str, str]:
    """sha256 of the visible files directly in a checkpoint folder (weights, tokenizer, model.json, config)."""
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith((".lock", ".part", ".tmp"))
    )
    return {p.name: sha256_file(p) for p in files}


def _backbone_folder(spec: str | None, source: str | None = None) -> Path | None:
    for candidate in (source, spec):
        if candidate and Path(candidate).expanduser().is_dir():
            return Path(candidate).expanduser()
    if spec:
        try:
            from zsad.weights import checkpoint_dir, known_checkpoint_names

            if spec in known_checkpoint_names() and checkpoint_dir(spec).is_dir():
                return checkpoint_dir(spec)
        except Exception:  # noqa: BLE001 - hub specs etc.: nothing local to hash
            return None
    return None


def _checkpoint_info(config: DetectorConfig, backbone_source: str | None = None) -> dict[str, Any]:
    """sha256 of the checkpoint files a config uses, when they are local (no download is triggered)."""
    spec = config.backbone.checkpoint
    folder = _backbone_folder(spec, backbone_source)
    backbone: dict[str, Any] = {"checkpoint": spec, "folder": str(folder.resolve()) if folder else None,
                                "files_sha256": _folder_hashes(folder) if folder else None}
    if folder is None:
        backbone["note"] = ("not a local folder (yet): a hub model or a checkpoint not downloaded when the run "
                            "started" if spec else "no checkpoint (random weights)")
    prompts: dict[str, Any] = {"checkpoint": config.prompts.checkpoint, "file": None, "sha256": None}
    if config.prompts.checkpoint:
        from zsad.prompts.checkpoint import BUILTIN_PROMPTS

        p = Path(BUILTIN_PROMPTS.get(str(config.prompts.checkpoint), Path(config.prompts.checkpoint).expanduser()))
        if p.is_file():
            prompts.update(file=str(p.resolve()), sha256=sha256_file(p))
    return {"backbone": backbone, "prompts": prompts}


# ------------------------------------------------------------------------------------------------- datasets


def _dataset_fingerprint(ds: AnomalyDataset) -> dict[str, Any]:
    source = ds.source if ds.source is not None and Path(ds.source).is_file() else None
    listing = [[str(s.img_path), str(s.mask_path or ""), s.cls_name, s.anomaly] for s in ds.samples()]
    return {
        "name": ds.name,
        "path": str(Path(ds.source or ds.root).resolve()),
        "split": ds.split,
        "description": str(source) if source else None,
        "description_sha256": sha256_file(Path(source)) if source else None,
        "samples_sha256": _sha256_json(listing),
    }


def _relpath(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix() if Path(path).is_relative_to(root) else str(path)
    except ValueError:  # other drive on Windows
        return str(path)


def _open(path: str | os.PathLike, split: str, name: str | None, check_sizes: bool) -> AnomalyDataset:
    from zsad.data import open_dataset

    return open_dataset(path, split, name=name, check_mask_sizes=check_sizes)


# --------------------------------------------------------------------------------------------- pixel metrics


def _ragged_pixel_metrics(maps: list[np.ndarray], masks: list[np.ndarray], aupro: str, undefined: str) -> dict[str, float]:
    """:func:`zsad.metrics.pixel_metrics` for maps of different sizes (protocol ``original``).

    All pixels of all images are pooled exactly as ``pixel_metrics`` pools an (N, H, W) stack; regions are
    labelled per image. Built from the metrics module's own steps, so the numbers are identical to stacking.
    """
    from zsad.metrics import pixel_metrics
    from zsad.metrics.aupro import PixelStream, check_pixel_args, prepare_pixels
    from zsad.metrics.pixel import metrics_from_stream

    if len({m.shape for m in maps}) == 1:
        return pixel_metrics(np.stack(maps), np.stack(masks), aupro=aupro, fpr_limit=FPR_LIMIT, undefined=undefined)
    parts, offset = [], 0
    pos, region, areas = [], [], []
    for m, k in zip(maps, masks):
        s, b = check_pixel_args(m[None], k[None], aupro, FPR_LIMIT, undefined, mode_name="aupro")
        ps = prepare_pixels(s, b)
        parts.append(ps.sorted_all)
        pos.append(ps.pos_values)
        region.append(ps.region + offset)
        areas.append(ps.areas)
        offset += ps.areas.size
    ps = PixelStream(
        sorted_all=np.sort(np.concatenate(parts), kind="stable"),  # sorted runs: timsort merges them
        pos_values=np.concatenate(pos),
        region=np.concatenate(region).astype(np.int64),
        areas=np.concatenate(areas).astype(np.int64),
    )
    return metrics_from_stream(ps, aupro, FPR_LIMIT, undefined)


# ---------------------------------------------------------------------------------------------- the run


@dataclass
class _Run:
    """Arguments shared by all datasets of one :func:`evaluate` call."""

    protocol: str
    aupro: str
    undefined: str
    device: Any
    dtype: Any
    batch_size: int | None
    save_maps: bool
    save_overlays: bool
    resume: bool
    progress: bool
    split: str
    detectors: dict[str, Detector] = field(default_factory=dict)
    shared_backbone: Any = None
    given_detector: Any = None

    def detector(self, config: DetectorConfig) -> Detector:
        """A detector for *config*, built once per configuration; the backbone is shared when it is the same."""
        from zsad.detector import Detector

        key = config.model_dump_json()
        if key in self.detectors:
            return self.detectors[key]
        base = self.given_detector
        backbone = None
        if base is not None and base.config.backbone == config.backbone:
            if base.config == config:
                self.detectors[key] = base
                return base
            backbone = base.backbone
        elif self.shared_backbone is not None and self.shared_backbone[0] == config.backbone:
            backbone = self.shared_backbone[1]
        device = self.device if base is None or self.device is not None else base.device
        dtype = self.dtype if base is None or self.dtype is not None else base.dtype
        det = Detector(config, device=device, dtype=dtype, backbone=backbone)
        if self.shared_backbone is None:
            self.shared_backbone = (config.backbone, det.backbone)
        self.detectors[key] = det
        return det


def _dataset_config(base: DetectorConfig, overrides: Mapping[str, Any], dataset: str) -> tuple[DetectorConfig, str]:
    """The config for a dataset: the medical prompt list for HeadCT/BrainMRI/Br35H unless fixed_prompts is set."""
    from zsad.data import default_prompt_type

    if any(k in overrides for k in ("fixed_prompts", "prompts.fixed")):
        return base, "fixed_prompts override"
    wanted = default_prompt_type(dataset)
    if base.prompts.fixed in ("industrial", "medical") and base.prompts.fixed != wanted:
        return base.with_overrides(fixed_prompts=wanted), f"dataset default for {dataset!r}"
    return base, "recipe" if wanted == base.prompts.fixed else "recipe (non-standard list kept)"


def _fingerprint(config: DetectorConfig, run: _Run, dataset: dict, checkpoints: dict) -> dict[str, Any]:
    cfg = config.model_dump(mode="json")
    cfg.pop("batch_size", None)  # does not change the numbers
    dtype = run.dtype if run.dtype is not None or run.given_detector is None else run.given_detector.dtype
    if dtype is None or isinstance(dtype, str):
        dtype_name = _DTYPE_NAMES.get(dtype, str(dtype))
    else:
        dtype_name = str(dtype).replace("torch.", "")
    # a local backbone folder can change in place: hash it; named checkpoints are verified by the weights store
    local_backbone = bool(config.backbone.checkpoint) and Path(config.backbone.checkpoint).expanduser().is_dir()
    return {
        "format_version": _FORMAT_VERSION,
        "config": cfg,
        "protocol": run.protocol,
        "aupro": run.aupro,
        "fpr_limit": FPR_LIMIT,
        "undefined": run.undefined,
        "dtype": dtype_name,
        "dataset": {k: dataset[k] for k in ("path", "split", "description_sha256", "samples_sha256")},
        "prompt_checkpoint_sha256": checkpoints["prompts"]["sha256"],
        "backbone_files_sha256": checkpoints["backbone"]["files_sha256"] if local_backbone else None,
    }


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _diff_keys(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if old == new else [prefix or "(root)"]


def _check_resume(out: Path, fingerprint: dict, run: _Run) -> dict | None:
    """The previous manifest when its run may be resumed; raise when it belongs to another configuration."""
    manifest_path = out / "manifest.json"
    class_dir = out / "classes"
    has_classes = class_dir.is_dir() and any(class_dir.glob("*.json"))
    if not run.resume:
        if class_dir.is_dir():
            for p in class_dir.glob("*.json"):
                p.unlink()
        return None
    if not manifest_path.is_file():
        if has_classes:
            raise ConfigError(
                f"{out} holds per-class results (classes/) but no manifest.json, so zsad cannot tell how they were "
                "made. Use a new output folder, or pass resume=False (--no-resume) to recompute everything."
            )
        return None
    try:
        old = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{manifest_path} cannot be read ({exc}); use a new output folder or resume=False.") from exc
    if not has_classes:
        return old if old.get("fingerprint") == fingerprint else None
    if old.get("fingerprint") != fingerprint:
        diff = _diff_keys(old.get("fingerprint"), fingerprint)
        shown = ", ".join(diff[:8]) + (f" and {len(diff) - 8} more" if len(diff) > 8 else "")
        raise ConfigError(
            f"The output folder {out} holds results of a different evaluation (differs in: {shown}). "
            "zsad will not mix them. Use a new output folder, or pass resume=False (--no-resume) to recompute and "
            "overwrite these results."
        )
    return old


def _load_class(out: Path, cls: str, fingerprint_sha: str, run: _Run) -> ClassEvaluation | None:
    path = out / "classes" / f"{_safe_name(cls)}.json"
    if not run.resume or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # an unreadable file is recomputed (writes are atomic, so this means outside damage)
    if data.get("fingerprint_sha256") != fingerprint_sha or data.get("class") != cls:
        return None
    saved = data.get("saved", {})
    if (run.save_maps and not saved.get("maps")) or (run.save_overlays and not saved.get("overlays")):
        return None  # outputs asked for now were not made then
    return ClassEvaluation.from_dict(data)


def _warning_notes(caught: list[warnings.WarningMessage]) -> list[str]:
    notes: list[str] = []
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in notes:
            notes.append(text)
    return notes


def _evaluate_class(
    det: Detector, ds: AnomalyDataset, cls: str, run: _Run, out: Path, dataset_label: str
) -> ClassEvaluation:
    """Score one class and compute its metrics (the unit of resumption)."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from zsad.data.masks import is_binary_mask, read_mask_values, resize_mask
    from zsad.metrics import image_metrics

    samples: list[Sample] = ds.samples(cls)
    n = len(samples)
    size = det.config.preprocess.image_size
    heads = list(det.config.heads.image_heads)
    main = det.config.heads.image_score
    has_masks = any(s.is_anomalous and s.has_mask for s in samples)
    keep_maps = has_masks or run.save_maps or run.save_overlays
    original = run.protocol == "original"
    maps_arr = np.empty((n, size, size), np.float32) if keep_maps and not original else None
    maps_list: list[np.ndarray] = []
    masks_arr = np.zeros((n, size, size), np.uint8) if has_masks and not original else None
    masks_list: list[np.ndarray] = []
    scores = {h: np.empty(n, np.float64) for h in heads}
    notes: list[str] = []
    resized_masks: list[str] = []
    empty_after_resize: list[str] = []
    grey_masks: list[str] = []
    batch_size = run.batch_size or det.config.batch_size
    i0 = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bar = tqdm(total=n, desc=f"{dataset_label}/{cls}", unit="img", disable=not run.progress, leave=False)
        with torch.inference_mode(), bar:
            for chunk, batch in det.iter_batches([str(s.img_path) for s in samples], batch_size):
                k = len(chunk)
                out_scores = det.score_pixels(batch.pixels, [cls] * k)
                maps_t = out_scores.maps.float()
                maps_np = None if original or not keep_maps else maps_t.cpu().numpy()
                finite = torch.isfinite(maps_t).flatten(1).all(dim=1)
                for t in out_scores.scores.values():
                    finite &= torch.isfinite(t.float())
                if not bool(finite.all()):
                    bad = [chunk[j] for j in torch.nonzero(~finite).flatten().tolist()]
                    raise MetricError(
                        f"The model produced NaN or infinite scores/maps for {len(bad)} image(s) of class {cls!r}: "
                        f"{', '.join(bad[:5])}. Check these images (e.g. constant or corrupt files) and the dtype "
                        "(float16 can overflow; use float32 or bfloat16)."
                    )
                for h in heads:
                    scores[h][i0 : i0 + k] = out_scores.scores[h].double().cpu().numpy()
                for j in range(k):
                    s = samples[i0 + j]
                    hw = tuple(batch.original_sizes[j])
                    if keep_maps:
                        if original:
                            m = F.interpolate(maps_t[j][None, None], size=hw, mode="bilinear", align_corners=False)
                            maps_list.append(m[0, 0].cpu().numpy().astype(np.float32, copy=False))
                        else:
                            maps_arr[i0 + j] = maps_np[j]
                    if not has_masks:
                        continue
                    if s.is_anomalous and s.has_mask:
                        values = read_mask_values(s.mask_path)  # native size, as PIL convert('L') gives it
                        if not is_binary_mask(values):
                            grey_masks.append(str(s.mask_path))
                        mask = (values > 0).astype(np.uint8)  # the official binarisation
                        if tuple(mask.shape) != hw and not original:
                            resized_masks.append(f"{s.mask_path} ({mask.shape[1]}x{mask.shape[0]}) vs image "
                                                 f"{s.img_path} ({hw[1]}x{hw[0]})")
                    else:
                        mask = None
                    if original:
                        if mask is not None and tuple(mask.shape) != hw:  # validate_masks ran first; belt and braces
                            raise DatasetError(f"Mask {s.mask_path} is {mask.shape[1]}x{mask.shape[0]} but its image "
                                               f"{s.img_path} is {hw[1]}x{hw[0]}; protocol 'original' needs equal sizes.")
                        masks_list.append(mask if mask is not None else np.zeros(hw, np.uint8))
                    elif mask is not None:
                        masks_arr[i0 + j] = resize_mask(mask, size)
                        if mask.any() and not masks_arr[i0 + j].any():
                            empty_after_resize.append(str(s.mask_path))
                i0 += k
                bar.update(k)

        labels = [s.anomaly for s in samples]
        metrics: dict[str, float] = {}
        image_scores: dict[str, dict[str, float]] = {}
        if any(y is None for y in labels):
            notes.append("image metrics n/a: some images have no normal/anomalous label")
            fill = _undefined_fill(run.undefined)
            image_scores = {h: dict.fromkeys(IMAGE_METRICS, fill) for h in heads}
        else:
            y = np.asarray(labels, np.int64)
            for h in [main] + [x for x in heads if x != main]:
                if h != main:
                    warnings.simplefilter("ignore")  # the main score already reported why a metric is undefined
                r = image_metrics(scores[h], y, undefined=run.undefined)
                image_scores[h] = {f"image_{k}": v for k, v in r.items()}
            warnings.simplefilter("always")
        metrics.update(image_scores[main])
        if has_masks:
            if original:
                r = _ragged_pixel_metrics(maps_list, masks_list, run.aupro, run.undefined)
            else:
                from zsad.metrics import pixel_metrics

                r = pixel_metrics(maps_arr, masks_arr, aupro=run.aupro, fpr_limit=FPR_LIMIT, undefined=run.undefined)
            metrics.update({f"pixel_{k}": v for k, v in r.items()})
        else:
            notes.append("pixel metrics n/a: the class has no ground-truth masks")
            metrics.update(dict.fromkeys(PIXEL_METRICS, _undefined_fill(run.undefined)))
    extra = []
    if grey_masks:
        extra.append(f"{len(grey_masks)} mask(s) hold values other than 0/255 or 0/1 and were binarised with > 0 as "
                     f"the official loader does, e.g. {grey_masks[0]}")
    if resized_masks:
        extra.append(f"{len(resized_masks)} mask(s) differ in size from their image and were resized to "
                     f"{size}x{size} like the image (as the official loader does), e.g. {resized_masks[0]}")
    if empty_after_resize:
        extra.append(f"{len(empty_after_resize)} anomalous mask(s) vanish when resized to {size}x{size} (defect "
                     f"smaller than the resampling), e.g. {empty_after_resize[0]}; protocol 'original' keeps them")
    notes += [x for x in _warning_notes(caught) if x not in notes]
    for w in caught:  # let callers see the warnings too (after the progress bar)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for text in extra:
        warnings.warn(f"Class {cls!r}: {text}.", UserWarning, stacklevel=3)
    notes += extra

    rows = []
    for i, s in enumerate(samples):
        row = {"path": _relpath(s.img_path, ds.root), "class": cls, "label": s.anomaly, "score": scores[main][i]}
        row.update({h: scores[h][i] for h in heads})
        row["specie"] = s.specie_name
        rows.append(row)
    ce = ClassEvaluation(
        name=cls,
        metrics={k: float(metrics[k]) for k in METRIC_KEYS},
        image_scores=image_scores,
        images={"total": n, "normal": sum(s.anomaly == 0 for s in samples),
                "anomalous": sum(s.anomaly == 1 for s in samples),
                "with_mask": sum(bool(s.is_anomalous and s.has_mask) for s in samples)},
        notes=notes,
        rows=rows,
        saved={"maps": False, "overlays": False},
    )
    maps_out = maps_list if original else maps_arr
    if run.save_maps:
        _save_maps(out, cls, maps_out, samples, ds.root)
        ce.saved["maps"] = True
    if run.save_overlays:
        masks_out = None if not has_masks else (masks_list if original else masks_arr)
        _save_class_overlays(out, cls, maps_out, masks_out, samples, ds.root)
        ce.saved["overlays"] = True
    return ce


def _save_maps(out: Path, cls: str, maps: Any, samples: list[Sample], root: Path) -> None:
    arrays: dict[str, np.ndarray] = {
        "paths": np.array([_relpath(s.img_path, root) for s in samples]),
        "labels": np.array([-1 if s.anomaly is None else s.anomaly for s in samples], np.int8),
    }
    if isinstance(maps, np.ndarray):
        arrays["maps"] = maps
    else:  # protocol original: one array per image (sizes differ)
        arrays.update({f"map_{i:05d}": m for i, m in enumerate(maps)})
    _atomic_npz(out / "maps" / f"{_safe_name(cls)}.npz", arrays)


def _save_class_overlays(out: Path, cls: str, maps: Any, masks: Any, samples: list[Sample], root: Path) -> None:
    from zsad.viz import _atomic_save_png, class_figure, class_scale, overlay

    vmin, vmax = class_scale(maps)
    folder = out / "overlays" / _safe_name(cls)
    for i, s in enumerate(samples):
        mask = None if masks is None else masks[i]
        img = overlay(s.img_path, maps[i], vmin, vmax, contours_mask=mask if mask is not None and mask.any() else None)
        rel = Path(_relpath(s.img_path, root))
        name = "__".join(_safe_name(p) for p in (s.specie_name, rel.stem) if p) + ".png"
        _atomic_save_png(img, folder / name)
    labels = [s.anomaly for s in samples]
    fig = class_figure([s.img_path for s in samples], maps, labels, None if masks is None else list(masks),
                       vmin=vmin, vmax=vmax, title=f"{cls}  (shared scale {vmin:.3g} .. {vmax:.3g})")
    _atomic_save_png(fig, out / "figures" / f"{_safe_name(cls)}.png")


def _evaluate_dataset(
    path: str | os.PathLike,
    out: Path,
    base: DetectorConfig,
    overrides: Mapping[str, Any],
    run: _Run,
    classes: Sequence[str] | None,
    dataset_name: str | None,
) -> DatasetEvaluation:
    from zsad.data import canonical_dataset_name, dataset_task
    from zsad.metrics import mean_over_classes

    started = _now()
    t0 = time.perf_counter()
    ds = _open(path, run.split, dataset_name, check_sizes=run.protocol == "original")
    name = dataset_name or ds.name
    canonical = canonical_dataset_name(name)
    config, prompt_source = _dataset_config(base, overrides, canonical)
    if classes is None:
        selected = ds.classes
    else:
        unknown = [c for c in classes if c not in ds.classes]
        if unknown:
            raise DatasetError(f"Dataset {name!r} has no class {unknown[0]!r}; its classes are {ds.classes}.")
        selected = [c for c in ds.classes if c in set(classes)]
    dataset_info = _dataset_fingerprint(ds)
    checkpoints = _checkpoint_info(config)
    fingerprint = _fingerprint(config, run, dataset_info, checkpoints)
    fp_sha = _sha256_json(fingerprint)
    out.mkdir(parents=True, exist_ok=True)
    previous = _check_resume(out, fingerprint, run)
    size = config.preprocess.image_size
    resolution = f"{size}x{size} (model input)" if run.protocol == "tipsomaly" else "original image size"
    settings = {
        "recipe": config.name,
        "image_score": config.heads.image_score,
        "protocol": run.protocol,
        "aupro": run.aupro,
        "fpr_limit": FPR_LIMIT,
        "undefined": run.undefined,
        "resolution": resolution,
        "fixed_prompts": config.prompts.fixed,
    }
    manifest: dict[str, Any] = {
        "format_version": _FORMAT_VERSION,
        "status": "running",
        "started_at": started,
        "first_started_at": (previous or {}).get("first_started_at") or (previous or {}).get("started_at") or started,
        "finished_at": None,
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else None,
        "versions": _versions(),
        "config": config.model_dump(mode="json"),
        "checkpoints": checkpoints,
        "protocol": run.protocol,
        "protocol_description": (
            "maps at the model input size vs masks resized with the official rule" if run.protocol == "tipsomaly"
            else "maps resized (bilinear) to each image's original size vs masks at their native size"),
        "aupro": run.aupro,
        "fpr_limit": FPR_LIMIT,
        "undefined": run.undefined,
        "evaluation_resolution": resolution,
        "mask_rule": MASK_RULE if run.protocol == "tipsomaly" else "convert('L') > 0 at the native size",
        "image_score": config.heads.image_score,
        "fixed_prompts": {"list": config.prompts.fixed, "source": prompt_source},
        "device": None,
        "dtype": fingerprint["dtype"],
        "dataset": {**dataset_info, "canonical_name": canonical, "task": dataset_task(canonical),
                    "classes": selected, "n_images": len(ds.samples(selected)), "notes": ds.notes},
        "fingerprint": fingerprint,
        "fingerprint_sha256": fp_sha,
        "resumed_classes": [],
        "warnings": [],
    }
    _atomic_json(out / "manifest.json", manifest)

    results: dict[str, ClassEvaluation] = {}
    det = None
    for cls in selected:
        ce = _load_class(out, cls, fp_sha, run)
        if ce is None:
            if det is None:
                det = run.detector(config)
                manifest["device"] = str(det.device)
                if checkpoints["backbone"]["files_sha256"] is None:
                    manifest["checkpoints"] = _checkpoint_info(config, getattr(det.backbone, "source", None))
            ce = _evaluate_class(det, ds, cls, run, out, name)
            _atomic_json(out / "classes" / f"{_safe_name(cls)}.json", ce.to_dict(fp_sha))
        else:
            manifest["resumed_classes"].append(cls)
        results[cls] = ce

    mean, counts = mean_over_classes({c: ce.metrics for c, ce in results.items()})
    mean = {k: mean.get(k, math.nan) for k in METRIC_KEYS}
    counts = {k: counts.get(k, 0) for k in METRIC_KEYS}
    heads = list(config.heads.image_heads)
    image_scores_mean = {
        h: mean_over_classes({c: ce.image_scores.get(h, {}) for c, ce in results.items()})[0] for h in heads
    }
    report = DatasetEvaluation(name, Path(ds.source or ds.root), out, results, mean, counts, image_scores_mean,
                               settings, notes=list(ds.notes))
    metrics_doc = report.to_dict()
    _atomic_json(out / "metrics.json", metrics_doc)
    write_text(out / "metrics.md", _markdown(report))
    csv_rows = [{"class": c, **ce.images, **ce.metrics} for c, ce in results.items()]
    csv_rows.append({"class": "Mean", **mean})
    write_text(out / "metrics.csv", _csv_text(["class", "total", "normal", "anomalous", "with_mask", *METRIC_KEYS],
                                                csv_rows))
    score_cols = ["path", "class", "label", "score", *heads, "specie"]
    write_text(out / "scores.csv", _csv_text(score_cols, [r for ce in results.values() for r in ce.rows]))
    manifest.update(
        status="complete",
        finished_at=_now(),
        elapsed_s=round(time.perf_counter() - t0, 3),
        warnings=[f"{c}: {n}" for c, ce in results.items() for n in ce.notes],
    )
    _atomic_json(out / "manifest.json", manifest)
    return report


def _markdown(report: DatasetEvaluation) -> str:
    s = report.settings
    lines = [
        f"# {report.name}: {s['recipe']}",
        "",
        f"- image score: {s['image_score']}; fixed prompts: {s['fixed_prompts']}",
        f"- protocol: {s['protocol']} ({s['resolution']}); AUPRO: {s['aupro']} (FPR < {s['fpr_limit']})",
        "- values x100; n/a = undefined for the class "
        + ("(never averaged: the mean is over the classes with a value)" if s["undefined"] == "nan"
           else "(undefined='zero': counted as 0, as the official code does)"),
        "",
        report.table("markdown"),
        "",
    ]
    notes = [f"- {c}: {n}" for c, ce in report.classes.items() for n in ce.notes]
    notes += [f"- dataset: {n}" for n in report.notes]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ entry point


def evaluate(
    recipe: str = "tipsomaly",
    data: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    out: str | os.PathLike | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    aupro: str = "exact",
    protocol: str = "tipsomaly",
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int | None = None,
    classes: Sequence[str] | str | None = None,
    save_maps: bool = False,
    save_overlays: bool = False,
    resume: bool = True,
    progress: bool = True,
    undefined: str = "nan",
    dataset_name: str | Sequence[str] | None = None,
    split: str = "test",
    backbone_options: Mapping[str, Any] | None = None,
    detector: Detector | None = None,
) -> EvaluationReport:
    """Evaluate a recipe on one or more datasets and write the tables (see the module docstring for the files).

    Args:
        recipe: a recipe name (``zsad recipes``) or a recipe JSON path.
        data: a dataset (meta.json or its folder, an AA-CLIP jsonl, an MVTec-style folder), or a list of them
            (one sub-folder of ``out`` per dataset, plus ``summary.*``; a one-element list is a single dataset).
        out: output folder (created).
        overrides: recipe overrides as ``zsad evaluate --set key=value`` gives them (``{"image_size": "336"}``;
            strings are validated and converted by the config; JSON lists and ``none`` are understood).
        aupro: ``"exact"`` (MVTec AD AUPRO, default) or ``"legacy"`` (Tipsomaly's 200-threshold grid).
        protocol: ``"tipsomaly"`` (default: at the model input resolution, official mask resizing) or
            ``"original"`` (maps resized to each image's size; more faithful, slower).
        device, dtype: as for :class:`~zsad.detector.Detector` (default: CUDA if available; float32).
        batch_size: images per forward pass (default: the recipe's); does not change the numbers.
        classes: evaluate only these classes (names or a comma-separated string); default: all.
        save_maps: write ``maps/<class>.npz`` (float32 at the evaluation resolution).
        save_overlays: write overlays (shared colour scale per class) and a figure per class.
        resume: load classes finished by a previous run into the same ``out`` (same settings only).
        progress: progress bars per class and the table printed at the end.
        undefined: ``"nan"`` (default: n/a, excluded from means) or ``"zero"`` (official zero-filling).
        dataset_name: the dataset name that selects the default prompt list (default: the folder name); one
            per dataset for a list.
        split: the split of the description to evaluate (``"test"``).
        backbone_options: merged into ``backbone.options`` (e.g. ``{"random_arch": {}}`` for smoke tests).
        detector: an already built :class:`~zsad.detector.Detector` to use instead of ``recipe`` (its backbone
            is reused; the dataset prompt-list default and ``overrides`` still apply).

    Returns:
        An :class:`EvaluationReport` (``report.mean``, ``report.classes``, ``report.table()``).

    Raises:
        DatasetError: missing files named by the description, masks of another size (protocol ``original``),
            unknown classes.
        MetricError: the model produced NaN/inf for some images (named).
        ConfigError: bad arguments or overrides, or ``out`` holds results of a different configuration.

    Example (the tiny random-weight TIPS model and 6-image dataset of zsad's test fixtures):
        >>> import tempfile, zsad
        >>> from pathlib import Path
        >>> fx = Path(zsad.__file__).resolve().parents[1] / "tests" / "fixtures" / "tipsomaly-parity"
        >>> report = evaluate("tipsomaly", fx / "dataset", tempfile.mkdtemp(), progress=False, aupro="legacy",
        ...                   overrides={"backbone_checkpoint": str(fx), "image_size": 56,
        ...                              "prompt_checkpoint": str(fx / "learnable_params.pth")}, device="cpu")
        >>> sorted(report.classes), sorted(report.mean)[:3]
        (['metal_nut', 'pipe_fryum'], ['image_ap', 'image_auroc', 'image_f1_max'])
    """
    from zsad.components import get_recipe

    if protocol not in PROTOCOLS:
        raise ConfigError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}.")
    if aupro not in AUPRO_MODES:
        raise ConfigError(f"aupro must be one of {AUPRO_MODES}, got {aupro!r}.")
    if undefined not in UNDEFINED:
        raise ConfigError(f"undefined must be one of {UNDEFINED}, got {undefined!r}.")
    if data is None or out is None:
        raise ConfigError("evaluate() needs data= (a dataset path or a list of them) and out= (an output folder).")
    if batch_size is not None and int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}.")
    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if not paths:
        raise ConfigError("data= is an empty list; give at least one dataset.")
    names = [dataset_name] * len(paths) if dataset_name is None or isinstance(dataset_name, str) else list(dataset_name)
    if len(names) != len(paths):
        raise ConfigError(f"Got {len(paths)} datasets but {len(names)} dataset names.")
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]

    ov = {k: _coerce_override(v) for k, v in (overrides or {}).items()}
    base = detector.config if detector is not None else get_recipe(recipe)
    if backbone_options:
        ov["backbone.options"] = {**base.backbone.options, **backbone_options}
    if ov:
        base = base.with_overrides(**ov)
    run = _Run(protocol, aupro, undefined, device, dtype, None if batch_size is None else int(batch_size),
               save_maps, save_overlays, resume, progress, split, given_detector=detector)
    out = Path(out)
    reports: dict[str, DatasetEvaluation] = {}
    if len(paths) == 1:
        rep = _evaluate_dataset(paths[0], out, base, ov, run, classes, names[0])
        reports[rep.name] = rep
    else:
        used: set[str] = set()
        for p, nm in zip(paths, names):
            folder = _safe_name(nm or _dataset_label(p))
            stem, k = folder, 1
            while folder in used:
                k += 1
                folder = f"{stem}_{k}"
            used.add(folder)
            rep = _evaluate_dataset(p, out / folder, base, ov, run, classes, nm)
            reports[folder] = rep
        _write_summary(out, reports)
    report = EvaluationReport(out, reports)
    if progress:
        for name, rep in reports.items():
            st = rep.settings
            print(f"\n{name}: recipe {st['recipe']} ({st['image_score']}), protocol {st['protocol']} "
                  f"({st['resolution']}), AUPRO {st['aupro']}, values x100")
            print(rep.table())
        if len(reports) > 1:
            print("\nSummary (mean over classes):")
            print(report.table())
        print(f"\nResults in {out}")
    return report


def _dataset_label(path: str | os.PathLike) -> str:
    p = Path(path)
    return p.parent.name if p.is_file() else p.name


def _write_summary(out: Path, reports: Mapping[str, DatasetEvaluation]) -> None:
    doc = {
        "format_version": _FORMAT_VERSION,
        "metrics": list(METRIC_KEYS),
        "datasets": {
            name: {"dataset": r.name, "path": str(r.path), "out": name, **r.settings,
                   "mean": _jsonable(r.mean), "counts": r.counts, "n_classes": len(r.classes)}
            for name, r in reports.items()
        },
    }
    _atomic_json(out / "summary.json", doc)
    report = EvaluationReport(out, dict(reports))
    write_text(out / "summary.md", "# Summary (mean over classes, x100)\n\n" + report.table("markdown") + "\n")
    rows = [{"dataset": name, **r.mean} for name, r in reports.items()]
    write_text(out / "summary.csv", _csv_text(["dataset", *METRIC_KEYS], rows))
