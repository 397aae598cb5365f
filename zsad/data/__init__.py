"""Datasets for zero-shot anomaly detection: read descriptions, load masks, write meta.json.

This package knows no model (numpy and Pillow only).

* :func:`open_dataset` reads AdaCLIP/AnomalyCLIP ``meta.json``, AA-CLIP ``jsonl``, MVTec-style folders or plain
  image folders into an :class:`AnomalyDataset` of :class:`Sample` s.
* :func:`list_images` resolves files, folders and globs to image paths (for prediction).
* :mod:`zsad.data.masks`: masks read and resized exactly as the official Tipsomaly loader does.
* :func:`draw_references` draws K normal training images per class with a seed (the few-shot protocol).
* :func:`prepare_dataset` writes meta.json for the 14 benchmark datasets from their published raw layouts.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> d = Path(tempfile.mkdtemp())
    >>> for n in ("tile/test/good/0.png", "tile/test/crack/1.png", "tile/ground_truth/crack/1_mask.png"):
    ...     (d / n).parent.mkdir(parents=True, exist_ok=True); Image.new("L", (8, 8)).save(d / n)
    >>> ds = open_dataset(d)
    >>> ds.classes, [s.anomaly for s in ds.samples("tile")], ds.load_mask(ds.samples()[0], 4).shape
    (['tile'], [1, 0], (4, 4))
"""

from __future__ import annotations

from zsad.data.masks import (
    check_mask_values,
    is_binary_mask,
    load_mask,
    read_mask,
    resize_mask,
    validate_masks,
)
from zsad.data.prepare import (
    DATASET_CLASSES,
    DATASET_TASKS,
    DEFAULT_PROMPTS,
    PAPER_TEST_COUNTS,
    PREPARERS,
    canonical_dataset_name,
    dataset_task,
    default_prompt_type,
    list_prepare_datasets,
    prepare_dataset,
    write_meta_json,
)
from zsad.data.readers import (
    IMAGE_EXTENSIONS,
    list_images,
    open_dataset,
    pair_by_stem,
    read_image_folder,
    read_jsonl,
    read_meta_json,
    read_mvtec_folders,
)
from zsad.data.samples import AnomalyDataset, Sample
from zsad.data.shots import draw_references

__all__ = [
    "DATASET_CLASSES",
    "DATASET_TASKS",
    "DEFAULT_PROMPTS",
    "IMAGE_EXTENSIONS",
    "PAPER_TEST_COUNTS",
    "PREPARERS",
    "AnomalyDataset",
    "Sample",
    "canonical_dataset_name",
    "check_mask_values",
    "dataset_task",
    "draw_references",
    "default_prompt_type",
    "is_binary_mask",
    "list_images",
    "list_prepare_datasets",
    "load_mask",
    "open_dataset",
    "pair_by_stem",
    "prepare_dataset",
    "read_image_folder",
    "read_jsonl",
    "read_mask",
    "read_meta_json",
    "read_mvtec_folders",
    "resize_mask",
    "validate_masks",
    "write_meta_json",
]
