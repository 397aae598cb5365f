"""The settings of one evaluation run, its fingerprint, and the resume rules of its output folder.

The fingerprint is everything that changes the numbers: the detector configuration (but not the batch size),
protocol, AUPRO mode, ``undefined``, dtype, the dataset (path, split, description and sample-list hashes) and the
checkpoint hashes, and for a few-shot run the shots, the seeds and a hash of the references drawn (every class's
reference paths for every seed). Where the model runs (engine, workers, device) is not part of it: the numbers do
not depend on it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsad._files import sha256_file
from zsad.errors import ConfigError
from zsad.evaluation.reports import class_file
from zsad.evaluation.results import FORMAT_VERSION, ClassEvaluation
from zsad.evaluation.scorer import FPR_LIMIT
from zsad.runs import describe_diff, sha256_json

if TYPE_CHECKING:  # pragma: no cover
    from zsad.config import DetectorConfig
    from zsad.data import AnomalyDataset
    from zsad.engines import Engine
    from zsad.runtime import RuntimeOptions

__all__ = [
    "AUPRO_MODES",
    "PROTOCOLS",
    "UNDEFINED",
    "EvaluationSettings",
    "check_resume",
    "class_result_files",
    "coerce_override",
    "dataset_config",
    "dataset_fingerprint",
    "few_shot_arguments",
    "fingerprint",
    "load_class",
    "seed_folder",
]

PROTOCOLS = ("tipsomaly", "original")
AUPRO_MODES = ("exact", "legacy")
UNDEFINED = ("nan", "zero")
MASK_RULE = "convert('L') > 0; x255 -> PIL bilinear resize -> /255 -> > 0.5 (official Tipsomaly/AnomalyCLIP loader)"
SEED_FOLDER_PREFIX = "seed_"
_DTYPE_NAMES = {None: "float32", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
                "float16": "float16", "fp16": "float16"}


@dataclass
class EvaluationSettings:
    """Arguments shared by all datasets of one :func:`~zsad.evaluation.evaluate` call.

    ``engine`` runs the model (:mod:`zsad.engines`); ``dtype`` is the name recorded in the fingerprint; ``runtime``
    the runtime options the detectors run with (what of them changes the numbers is in the fingerprint).
    """

    protocol: str
    aupro: str
    undefined: str
    dtype: str
    batch_size: int | None
    save_maps: bool
    save_overlays: bool
    resume: bool
    progress: bool
    split: str
    engine: Engine
    shots: int | None = None
    seeds: tuple[int, ...] = ()
    runtime: RuntimeOptions | None = None

    def __post_init__(self) -> None:
        for name, value, allowed in (("protocol", self.protocol, PROTOCOLS), ("aupro", self.aupro, AUPRO_MODES),
                                     ("undefined", self.undefined, UNDEFINED)):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {value!r}.")
        if self.batch_size is not None and int(self.batch_size) < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.shots is None:
            if self.seeds:
                raise ConfigError("seeds= (--seed) needs shots= (--shots K): the seeds draw the K normal reference "
                                  "images of the few-shot protocol; without shots the evaluation is zero-shot.")
            return
        if isinstance(self.shots, bool) or not isinstance(self.shots, int) or self.shots < 1:
            raise ConfigError(f"shots must be a whole number >= 1 (normal reference images per class), got "
                              f"{self.shots!r}.")
        if not self.seeds:
            raise ConfigError("shots= needs at least one seed (e.g. seeds=[0, 1, 2]; --seed 0 1 2).")
        if self.split == "train":
            raise ConfigError("Few-shot references are drawn from the train split, so split='train' would score "
                              "the references themselves; evaluate the test split (split='test').")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ConfigError(f"Seeds must be whole numbers >= 0, got {seed!r}.")
        twice = sorted({s for s in self.seeds if self.seeds.count(s) > 1})
        if twice:
            raise ConfigError(f"Seed {twice[0]} is given twice; each seed is one draw of the references.")

    @property
    def few_shot(self) -> bool:
        """True when classes are scored with K normal references drawn per seed (``shots`` is set)."""
        return self.shots is not None


def few_shot_arguments(shots: Any, seeds: Any) -> tuple[int | None, tuple[int, ...]]:
    """``evaluate(shots=, seeds=)`` as :class:`EvaluationSettings` takes them: seeds default to ``(0,)`` with
    shots; a single number for ``seeds`` is refused (is it one seed or a number of seeds?).

    Example:
        >>> few_shot_arguments(4, None), few_shot_arguments(None, None), few_shot_arguments(2, [3, 1])
        ((4, (0,)), (None, ()), (2, (3, 1)))
    """
    import numbers

    def whole(value: Any) -> Any:  # numpy integers -> int; the rest is checked by EvaluationSettings
        return int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value

    if seeds is None:
        return whole(shots), ((0,) if shots is not None else ())
    if isinstance(seeds, (numbers.Number, str)):
        raise ConfigError(f"seeds= is a list of seeds, e.g. seeds=[0, 1, 2] (got {seeds!r}).")
    return whole(shots), tuple(whole(s) for s in seeds)


def dtype_name(dtype: Any) -> str:
    """The canonical name of a dtype argument (``None`` -> ``"float32"``, ``"bf16"`` -> ``"bfloat16"``)."""
    if dtype is None or isinstance(dtype, str):
        return _DTYPE_NAMES.get(dtype, str(dtype))
    return str(dtype).replace("torch.", "")


def coerce_override(value: Any) -> Any:
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


def dataset_config(base: DetectorConfig, overrides: Mapping[str, Any], dataset: str) -> tuple[DetectorConfig, str]:
    """The config for a dataset: the medical prompt list for HeadCT/BrainMRI/Br35H unless fixed_prompts is set."""
    from zsad.data import default_prompt_type

    if any(k in overrides for k in ("fixed_prompts", "prompts.fixed")):
        return base, "fixed_prompts override"
    wanted = default_prompt_type(dataset)
    if base.prompts.fixed in ("industrial", "medical") and base.prompts.fixed != wanted:
        return base.with_overrides(fixed_prompts=wanted), f"dataset default for {dataset!r}"
    return base, "recipe" if wanted == base.prompts.fixed else "recipe (non-standard list kept)"


def dataset_fingerprint(ds: AnomalyDataset) -> dict[str, Any]:
    """Where the dataset is and hashes of its description file and of its sample list."""
    source = ds.source if ds.source is not None and Path(ds.source).is_file() else None
    listing = [[str(s.img_path), str(s.mask_path or ""), s.cls_name, s.anomaly] for s in ds.samples()]
    return {
        "name": ds.name,
        "path": str(Path(ds.source or ds.root).resolve()),
        "split": ds.split,
        "description": str(source) if source else None,
        "description_sha256": sha256_file(Path(source)) if source else None,
        "samples_sha256": sha256_json(listing),
    }


def fingerprint(config: DetectorConfig, run: EvaluationSettings, dataset: dict, checkpoints: dict,
                references: Mapping[int, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Everything that changes an evaluation's numbers (see the module docstring).

    ``references`` (few-shot runs): ``{seed: {class: [reference paths]}}``, the draw of every seed.
    """
    cfg = config.model_dump(mode="json")
    cfg.pop("batch_size", None)  # does not change the numbers
    # a local backbone folder can change in place: hash it; named checkpoints are verified by the weights store
    local_backbone = bool(config.backbone.checkpoint) and Path(config.backbone.checkpoint).expanduser().is_dir()
    fp: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "config": cfg,
        "protocol": run.protocol,
        "aupro": run.aupro,
        "fpr_limit": FPR_LIMIT,
        "undefined": run.undefined,
        "dtype": run.dtype,
        "dataset": {k: dataset[k] for k in ("path", "split", "description_sha256", "samples_sha256")},
        "prompt_checkpoint_sha256": checkpoints["prompts"]["sha256"],
        "backbone_files_sha256": checkpoints["backbone"]["files_sha256"] if local_backbone else None,
    }
    if run.runtime is not None:
        fp.update(run.runtime.fingerprint())
    if run.few_shot:  # only then: zero-shot fingerprints (and resumable folders) stay what they were
        fp["few_shot"] = {"shots": run.shots, "seeds": list(run.seeds), "split": "train",
                          "references_sha256": sha256_json(references or {})}
    return fp


def check_resume(out: Path, fingerprint: dict, run: EvaluationSettings) -> dict | None:
    """The previous manifest when its run may be resumed; raise when it belongs to another configuration."""
    manifest_path = out / "manifest.json"
    class_files = class_result_files(out)
    has_classes = bool(class_files)
    if not run.resume:
        for p in class_files:
            p.unlink()
        return None
    if not manifest_path.is_file():
        if has_classes:
            raise ConfigError(
                f"{out} holds per-class results ({class_files[0].parent.relative_to(out).as_posix()}/) but no manifest.json, so zsad cannot tell how they were "
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
        raise ConfigError(
            f"The output folder {out} holds results of a different evaluation (differs in: "
            f"{describe_diff(old.get('fingerprint'), fingerprint)}). zsad will not mix them. Use a new output "
            "folder, or pass resume=False (--no-resume) to recompute and overwrite these results."
        )
    return old


def class_result_files(out: Path) -> list[Path]:
    """The per-class results in ``out``: ``classes/*.json`` (zero-shot) and ``seed_*/classes/*.json`` (few-shot)."""
    return sorted([*out.glob("classes/*.json"), *out.glob(f"{SEED_FOLDER_PREFIX}*/classes/*.json")])


def seed_folder(seed: int) -> str:
    """The sub-folder of a few-shot run holding one seed's per-class results, scores, maps and overlays.

    Example:
        >>> seed_folder(3)
        'seed_3'
    """
    return f"{SEED_FOLDER_PREFIX}{int(seed)}"


def load_class(out: Path, cls: str, fingerprint_sha: str, run: EvaluationSettings) -> ClassEvaluation | None:
    """The finished class from a previous run into ``out``, when it may be reused (same fingerprint, and the
    optional outputs asked for now were made then); else ``None``."""
    path = class_file(out, cls)
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
