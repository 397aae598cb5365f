"""The datasets of an evaluation run: opened, checked, their configuration and classes chosen, and for the
few-shot protocol their references drawn, before anything is scored."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zsad.errors import ConfigError, DatasetError
from zsad.evaluation.fewshot import draw_all
from zsad.evaluation.settings import EvaluationSettings, dataset_config

if TYPE_CHECKING:  # pragma: no cover
    from zsad.config import DetectorConfig
    from zsad.data import AnomalyDataset, Sample
    from zsad.detector import Detector

__all__ = ["OpenedDataset", "check_labels", "open_for_evaluation"]


def check_labels(ds: AnomalyDataset, classes: Sequence[str], path: str | os.PathLike) -> None:
    """Refuse a dataset with neither normal/anomalous labels nor masks: every metric would be n/a."""
    samples = ds.samples(classes)
    if samples and all(s.anomaly is None for s in samples) and not any(s.has_mask for s in samples):
        raise DatasetError(
            f"{path} has no labels: it was read as a plain folder of images (no meta.json, no AA-CLIP jsonl, no "
            "MVTec-style <class>/test/<good|defect>/ folders), so no image is known to be normal or anomalous and "
            "every metric would be n/a. To score unlabelled images use `zsad predict`; to evaluate, give a labelled "
            "dataset (see `zsad data prepare`)."
        )


@dataclass
class OpenedDataset:
    """One dataset of an :func:`~zsad.evaluation.evaluate` call, opened and checked (and its few-shot references
    drawn) before anything is scored, so that a bad dataset among several stops the run before the first one is
    computed."""

    path: str | os.PathLike
    ds: AnomalyDataset
    name: str
    canonical: str
    config: DetectorConfig
    prompt_source: str
    selected: list[str]
    draws: dict[int, dict[str, list[Sample]]] | None


def open_for_evaluation(path: str | os.PathLike, base: DetectorConfig, overrides: Mapping[str, Any],
                  run: EvaluationSettings, classes: Sequence[str] | None, dataset_name: str | None,
                  detector: Detector | None) -> OpenedDataset:
    """Open the dataset at ``path``, choose its configuration (prompt list) and classes, and check it.

    Raises:
        DatasetError: unknown classes, no labels, and for few-shot runs no train split or too few normal train
            images (:func:`zsad.data.draw_references`).
        ConfigError: the given detector holds references for an evaluated class.
    """
    from zsad.data import canonical_dataset_name, open_dataset

    ds = open_dataset(path, run.split, name=dataset_name, check_mask_sizes=run.protocol == "original")
    name = dataset_name or ds.name
    canonical = canonical_dataset_name(name)
    config, prompt_source = dataset_config(base, overrides, canonical)
    if classes is None:
        selected = ds.classes
    else:
        unknown = [c for c in classes if c not in ds.classes]
        if unknown:
            raise DatasetError(f"Dataset {name!r} has no class {unknown[0]!r}; its classes are {ds.classes}.")
        selected = [c for c in ds.classes if c in set(classes)]
    check_labels(ds, selected, path)
    held = [c for c in selected if detector is not None and c in detector.references]
    if held:
        raise ConfigError(
            f"The detector given to evaluate() holds normal references for {', '.join(map(repr, held))}, a class of "
            f"{name!r}; an evaluation scores zero-shot, or few-shot with references drawn from the dataset's train "
            "split (shots=, seeds=). Clear them first (detector.clear_references())."
        )
    draws = draw_all(ds, run.shots, run.seeds, selected) if run.few_shot else None  # type: ignore[arg-type]
    return OpenedDataset(path, ds, name, canonical, config, prompt_source, selected, draws)
