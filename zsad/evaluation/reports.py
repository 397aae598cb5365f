"""The report writers of an evaluation: ``metrics.{json,md,csv}``, ``scores.csv``, ``classes/<c>.json``,
``maps/<c>.npz``, overlays and figures, and ``summary.*`` for several datasets. Every file is written atomically."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zsad._files import atomic_path, distinct_filename, write_name_map, write_text
from zsad.evaluation.results import (
    FORMAT_VERSION,
    ClassEvaluation,
    DatasetEvaluation,
    EvaluationReport,
)
from zsad.evaluation.scorer import relpath
from zsad.evaluation.tables import METRIC_KEYS
from zsad.runs import jsonable, write_json

if TYPE_CHECKING:  # pragma: no cover
    from zsad.data import Sample

__all__ = [
    "class_file",
    "class_file_name",
    "csv_text",
    "markdown",
    "save_class_overlays",
    "save_maps",
    "write_class",
    "write_dataset_reports",
    "write_summary",
]


def class_file_name(cls: str) -> str:
    """The file stem of a class's outputs: distinct for every class name (:func:`zsad._files.distinct_filename`)."""
    return distinct_filename(cls, "class")


def class_file(out: Path, cls: str) -> Path:
    """``out/classes/<class>.json``: the per-class results, the resume point of a class."""
    return out / "classes" / f"{class_file_name(cls)}.json"


def write_class(out: Path, ce: ClassEvaluation, fingerprint_sha256: str) -> Path:
    """Write ``classes/<class>.json`` (the class is then finished for a resumed run)."""
    return write_json(class_file(out, ce.name), ce.to_dict(fingerprint_sha256))


def csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV with the given columns (extra keys ignored; NaN and ``None`` -> empty cell)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v) for k, v in r.items()})
    return buf.getvalue()


def markdown(report: DatasetEvaluation) -> str:
    """``metrics.md``: the settings, the x100 table and the notes (few-shot: the mean over the seeds, then each
    seed's table)."""
    s = report.settings
    lines = [
        f"# {report.name}: {s['recipe']}",
        "",
        f"- image score: {s['image_score']}; fixed prompts: {s['fixed_prompts']}",
        f"- protocol: {s['protocol']} ({s['resolution']}); AUPRO: {s['aupro']} (FPR < {s['fpr_limit']})",
    ]
    if report.few_shot:
        seeds = ", ".join(str(seed) for seed in report.seeds)
        lines += [
            f"- few-shot: {s['shots']} normal reference image(s) per class drawn from the train split with each "
            f"seed ({seeds}); the table is the mean over the seeds, then each seed's mean over classes"
            + (" and their standard deviation" if len(report.seeds) > 1 else ""),
            ("- per-seed tables below; the references of every seed and class are listed in metrics.json "
             "(`references`), the scores per image in `seed_<s>/scores.csv`"),
        ]
    lines += [
        "- values x100; n/a = undefined for the class "
        + ("(never averaged: the mean is over the classes with a value)" if s["undefined"] == "nan"
           else "(undefined='zero': counted as 0, as the official code does)"),
        "",
        report.table("markdown"),
        "",
    ]
    for seed, ev in report.seeds.items():
        lines += [f"## Seed {seed}", "", ev.table("markdown"), ""]
    notes = [f"- {c}: {n}" for c, ce in report.classes.items() for n in ce.notes]
    notes += [f"- dataset: {n}" for n in report.notes]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def _metric_rows(report: DatasetEvaluation, **extra: Any) -> list[dict[str, Any]]:
    rows = [{**extra, "class": c, **ce.images, **ce.metrics} for c, ce in report.classes.items()]
    rows.append({**extra, "class": "Mean", **report.mean})
    return rows


def write_dataset_reports(out: Path, report: DatasetEvaluation, heads: Sequence[str]) -> None:
    """``metrics.json``, ``metrics.md``, ``metrics.csv`` and ``scores.csv`` of one dataset.

    Few-shot: ``metrics.csv`` gets a first column ``seed`` (``mean`` for the mean over the seeds, ``std`` for
    the standard deviation of the mean over classes, then one block per seed), and each seed's ``scores.csv`` is
    written into its folder (``seed_<s>/scores.csv``).
    """
    write_json(out / "metrics.json", report.to_dict())
    write_text(out / "metrics.md", markdown(report))
    columns = ["class", "total", "normal", "anomalous", "with_mask", *METRIC_KEYS]
    score_cols = ["path", "class", "label", "score", *heads, "specie"]
    if not report.few_shot:
        write_text(out / "metrics.csv", csv_text(columns, _metric_rows(report)))
        write_text(out / "scores.csv", csv_text(score_cols, [r for ce in report.classes.values() for r in ce.rows]))
        return
    rows = _metric_rows(report, seed="mean")
    if len(report.seeds) > 1:
        rows.append({"seed": "std", "class": "Mean", **report.std})
    for seed, ev in report.seeds.items():
        rows += _metric_rows(ev, seed=seed)
        write_text(ev.out / "scores.csv", csv_text(score_cols, [r for ce in ev.classes.values() for r in ce.rows]))
    write_text(out / "metrics.csv", csv_text(["seed", *columns], rows))


def write_summary(out: Path, reports: Mapping[str, DatasetEvaluation]) -> None:
    """``summary.{json,md,csv}``: one row (the mean over classes) per dataset."""
    doc = {
        "format_version": FORMAT_VERSION,
        "metrics": list(METRIC_KEYS),
        "datasets": {
            name: {"dataset": r.name, "path": str(r.path), "out": name, **r.settings,
                   "mean": jsonable(r.mean), "counts": r.counts, "n_classes": len(r.classes)}
            for name, r in reports.items()
        },
    }
    write_json(out / "summary.json", doc)
    report = EvaluationReport(out, dict(reports))
    write_text(out / "summary.md", "# Summary (mean over classes, x100)\n\n" + report.table("markdown") + "\n")
    rows = [{"dataset": name, **r.mean} for name, r in reports.items()]
    write_text(out / "summary.csv", csv_text(["dataset", *METRIC_KEYS], rows))


def save_maps(out: Path, cls: str, maps: Any, samples: Sequence[Sample], root: Path) -> None:
    """``maps/<class>.npz``: the maps at the evaluation resolution with ``paths`` and ``labels``."""
    arrays: dict[str, np.ndarray] = {
        "paths": np.array([relpath(s.img_path, root) for s in samples]),
        "labels": np.array([-1 if s.anomaly is None else s.anomaly for s in samples], np.int8),
    }
    if isinstance(maps, np.ndarray):
        arrays["maps"] = maps
    else:  # protocol original: one array per image (sizes differ)
        arrays.update({f"map_{i:05d}": m for i, m in enumerate(maps)})
    with atomic_path(out / "maps" / f"{class_file_name(cls)}.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


class _Images(Sequence):
    """The class's images, loaded on demand as the detector loads them (EXIF orientation, high bit depth)."""

    def __init__(self, samples: Sequence[Sample], preprocess: Any):
        self.samples = samples
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Any:  # type: ignore[override]
        from zsad.io import load_image

        pre = self.preprocess
        return load_image(self.samples[i].img_path, exif_transpose=pre.exif_transpose,
                          high_bit_depth=pre.high_bit_depth)


def save_class_overlays(out: Path, cls: str, maps: Any, masks: Any, samples: Sequence[Sample], root: Path,
                        preprocess: Any) -> None:
    """``overlays/<class>/*.png`` on the class's shared colour scale and ``figures/<class>.png``.

    ``preprocess`` (the detector's :class:`~zsad.config.PreprocessConfig`) says how images are loaded, so that
    images, maps and masks share one orientation.
    """
    from zsad.viz import _atomic_save_png, class_figure, class_scale, output_stems, overlay

    vmin, vmax = class_scale(maps)
    images = _Images(samples, preprocess)
    folder = out / "overlays" / class_file_name(cls)
    stems = output_stems([s.img_path for s in samples])  # distinct even when images share a file stem
    for i, (s, stem) in enumerate(zip(samples, stems)):
        mask = None if masks is None else masks[i]
        img = overlay(images[i], maps[i], vmin, vmax, contours_mask=mask if mask is not None and mask.any() else None)
        _atomic_save_png(img, folder / f"{stem}.png")
    write_name_map(folder / "names.json", stems, [relpath(s.img_path, root) for s in samples])
    labels = [s.anomaly for s in samples]
    fig = class_figure(images, maps, labels, None if masks is None else list(masks),
                       vmin=vmin, vmax=vmax, title=f"{cls}  (shared scale {vmin:.3g} .. {vmax:.3g})")
    _atomic_save_png(fig, out / "figures" / f"{class_file_name(cls)}.png")
