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

With ``exif_transpose=true`` (``--set exif_transpose=true``) images are turned by their EXIF orientation, and so
are their masks (masks are stored like the image's pixels); a mask whose size fits its image only after the
rotation is an error (:func:`zsad.data.masks.read_ground_truth`), and overlays show the turned images.

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

Few-shot (``shots=K, seeds=[...]``, :mod:`zsad.evaluation.fewshot`): every class is scored with K normal train
images per seed as its references. ``classes/``, ``maps/``, ``overlays/``, ``figures/`` and ``scores.csv`` are
then written per seed into ``seed_<s>/``; ``metrics.json`` holds the mean over the seeds (``classes``, ``mean``,
``counts``), ``std`` (of the seeds' means), ``per_seed`` (each seed's classes and mean) and ``references``
(``{seed: {class: [paths]}}``, also in the manifest); ``metrics.md`` shows the mean, each seed's mean and their
standard deviation, then one table per seed; ``metrics.csv`` gets a first column ``seed`` (``mean``, ``std``, or
the seed).

Several datasets (``data=[a, b]``) give one sub-folder per dataset plus ``summary.{json,md,csv}``. Every file is
written atomically (temporary file + ``os.replace``), so an interrupted run never leaves a half-written file, and
``out`` is locked while a run writes into it (``.zsad-run.lock``): a second run into the same folder stops with an
error naming the first (:class:`zsad.runs.OutputLock`).

Resuming: with ``resume=True`` (default) a rerun into the same ``out`` loads finished classes from
``classes/<c>.json`` instead of recomputing them, if the manifest's fingerprint (configuration, protocol, AUPRO
mode, ``undefined``, dtype, dataset and checkpoint hashes; few-shot: shots, seeds and the references drawn)
matches; otherwise it stops with a :class:`~zsad.errors.ConfigError` (use a new ``out`` or ``resume=False``, which
recomputes everything). A few-shot run resumes per seed and class (``seed_<s>/classes/<c>.json``).

Memory: per class the maps are kept as float32 at the evaluation resolution (150 images at 518x518 are ~160 MB)
and the masks as uint8; datasets without masks keep no maps unless maps or overlays are saved.

Where the parts are
-------------------
This module is the workflow (:func:`evaluate`: datasets -> classes -> files). Its parts, by name:

* :mod:`zsad.evaluation.batch`: per-batch scoring (model side): :func:`~zsad.evaluation.batch.iter_scored`
  turns a class's images into :class:`~zsad.evaluation.batch.ScoredBatch` es (scores, maps, binarised masks);
* :mod:`zsad.evaluation.scorer`: the per-class scorer (no model):
  :class:`~zsad.evaluation.scorer.ClassScorer` turns scored batches into a
  :class:`~zsad.evaluation.results.ClassEvaluation`;
* :mod:`zsad.evaluation.settings`: the run's settings, fingerprint and resume rules (on top of the bookkeeping
  shared with training, :mod:`zsad.runs`); :mod:`zsad.evaluation.inputs`: the datasets opened and checked (and
  their references drawn) before anything is scored; :mod:`zsad.evaluation.fewshot`: the few-shot protocol;
* :mod:`zsad.evaluation.reports`: the writers of every file below; :mod:`zsad.evaluation.results`: the result
  types; :mod:`zsad.evaluation.tables`: metric names and x100 tables;
* :mod:`zsad.engines`: where the model runs (in this process by default, or on Ray workers with
  ``engine="ray"``: they run the same per-batch scoring, and the per-class scorer runs here).

Typical use (downloads the Tipsomaly weights on first use; MVTec-AD is evaluated with the VisA-trained prompts)::

    report = evaluate("tipsomaly", "data/mvtec", "runs/mvtec", overrides={"prompt_checkpoint": "tipsomaly-visa"})
    print(report.table())            # per-class and mean table, x100
    report.mean["pixel_aupro"]       # fraction in [0, 1]; also in runs/mvtec/metrics.json
    # few-shot: 4 normal train images per class, three draws; the mean over the seeds and each seed
    report = evaluate("tipsomaly", "data/visa", "runs/visa-4shot", shots=4, seeds=[0, 1, 2])
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsad._files import distinct_filename
from zsad.errors import ConfigError
from zsad.evaluation.batch import ClassPlan
from zsad.evaluation.fewshot import DRAW_RULE, combine_seeds, reference_paths
from zsad.evaluation.inputs import OpenedDataset, open_for_evaluation
from zsad.evaluation.reports import (
    save_class_overlays,
    save_maps,
    write_class,
    write_dataset_reports,
    write_summary,
)
from zsad.evaluation.results import (
    FORMAT_VERSION,
    ClassEvaluation,
    DatasetEvaluation,
    EvaluationReport,
)
from zsad.evaluation.scorer import FPR_LIMIT, ClassScorer, relpath
from zsad.evaluation.scorer import ragged_pixel_metrics as _ragged_pixel_metrics  # noqa: F401 - historical name
from zsad.evaluation.settings import (
    AUPRO_MODES,
    MASK_RULE,
    PROTOCOLS,
    UNDEFINED,
    EvaluationSettings,
    check_resume,
    coerce_override,
    dataset_fingerprint,
    dtype_name,
    few_shot_arguments,
    fingerprint,
    load_class,
    seed_folder,
)
from zsad.evaluation.tables import (
    IMAGE_METRICS,
    METRIC_KEYS,
    PIXEL_METRICS,
    format_table,
)
from zsad.runs import OutputLock, RunManifest, checkpoint_info, sha256_json

if TYPE_CHECKING:  # pragma: no cover
    from zsad.data import AnomalyDataset, Sample
    from zsad.detector import Detector
    from zsad.engines import Engine, Runner
    from zsad.runtime import RuntimeOptions

__all__ = [
    "AUPRO_MODES",
    "IMAGE_METRICS",
    "METRIC_KEYS",
    "PIXEL_METRICS",
    "PROTOCOLS",
    "UNDEFINED",
    "ClassEvaluation",
    "DatasetEvaluation",
    "EvaluationReport",
    "evaluate",
    "format_table",
]

def _warning_notes(caught: list[warnings.WarningMessage]) -> list[str]:
    notes: list[str] = []
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in notes:
            notes.append(text)
    return notes


def _evaluate_class(
    runner: Runner, ds: AnomalyDataset, cls: str, run: EvaluationSettings, out: Path, dataset_label: str,
    references: Sequence[Sample] | None = None,
) -> ClassEvaluation:
    """Score one class on the engine's runner and compute its metrics (the unit of resumption).

    The runner produces scored batches (model side); the per-class scorer turns them into metrics here, the same
    for every engine. Warnings raised on the way become the class's notes (and are shown after the progress bar).
    ``references`` (few-shot): the class's normal reference samples, held by the detector while it scores.
    """
    samples = ds.samples(cls)
    config = runner.config
    plan = ClassPlan.for_samples(samples, config, protocol=run.protocol, save_maps=run.save_maps,
                                 save_overlays=run.save_overlays, references=references or ())
    scorer = ClassScorer(cls, samples, plan, heads=list(config.heads.image_heads),
                         image_score=config.heads.image_score, aupro=run.aupro, undefined=run.undefined)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for sb in runner.score_class(samples, cls, plan, batch_size=run.batch_size, label=dataset_label,
                                     progress=run.progress):
            scorer.add(sb)
        ce = scorer.finish(ds.root)
    extra = scorer.mask_notes()
    ce.notes += [x for x in _warning_notes(caught) if x not in ce.notes]
    for w in caught:  # let callers see the warnings too (after the progress bar)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for text in extra:
        warnings.warn(f"Class {cls!r}: {text}.", UserWarning, stacklevel=3)
    ce.notes += extra
    if references is not None:
        ce.references = [relpath(s.img_path, ds.root) for s in references]
    if run.save_maps:
        save_maps(out, cls, scorer.maps, samples, ds.root)
        ce.saved["maps"] = True
    if run.save_overlays:
        save_class_overlays(out, cls, scorer.maps, scorer.masks, samples, ds.root, config.preprocess)
        ce.saved["overlays"] = True
    return ce


def _evaluate_dataset(d: OpenedDataset, out: Path, run: EvaluationSettings) -> DatasetEvaluation:
    from zsad.data import dataset_task

    t0 = time.perf_counter()
    ds, name, config = d.ds, d.name, d.config
    dataset_info = dataset_fingerprint(ds)
    checkpoints = checkpoint_info(config)
    references = reference_paths(d.draws, ds.root) if d.draws is not None else None
    fp = fingerprint(config, run, dataset_info, checkpoints, references)
    fp_sha = sha256_json(fp)
    out.mkdir(parents=True, exist_ok=True)
    previous = check_resume(out, fp, run)
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
    if run.few_shot:
        settings.update(shots=run.shots, seeds=list(run.seeds))
    manifest = RunManifest(out / "manifest.json", {
        "format_version": FORMAT_VERSION,
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
        "fixed_prompts": {"list": config.prompts.fixed, "source": d.prompt_source},
        "engine": run.engine.describe(),
        "device": None,
        "runtime": None,
        "dtype": fp["dtype"],
        "dataset": {**dataset_info, "canonical_name": d.canonical, "task": dataset_task(d.canonical),
                    "classes": d.selected, "n_images": len(ds.samples(d.selected)), "notes": ds.notes},
        **({"few_shot": {"shots": run.shots, "seeds": list(run.seeds), "split": "train", "draw": DRAW_RULE,
                         "references": references}} if run.few_shot else {}),
        "fingerprint": fp,
        "fingerprint_sha256": fp_sha,
        "resumed_classes": [],
        "warnings": [],
    }, previous)

    runner = None
    heads = list(config.heads.image_heads)
    per_seed: dict[int | None, DatasetEvaluation] = {}
    for seed in run.seeds if run.few_shot else [None]:
        folder = out if seed is None else out / seed_folder(seed)
        label = name if seed is None else f"{name} seed {seed}"
        results: dict[str, ClassEvaluation] = {}
        for cls in d.selected:
            ce = load_class(folder, cls, fp_sha, run)
            if ce is None:
                if runner is None:
                    runner = run.engine.runner(config)
                    manifest["device"] = runner.device
                    manifest["runtime"] = runner.runtime_options
                    manifest["engine"] = run.engine.describe()
                    if checkpoints["backbone"]["files_sha256"] is None:
                        manifest["checkpoints"] = checkpoint_info(config, runner.backbone_source)
                refs = None if d.draws is None or seed is None else d.draws[seed][cls]
                ce = _evaluate_class(runner, ds, cls, run, folder, label, references=refs)
                write_class(folder, ce, fp_sha)
            else:
                manifest["resumed_classes"].append(cls if seed is None else {"seed": seed, "class": cls})
            results[cls] = ce
        per_seed[seed] = DatasetEvaluation.from_classes(name, Path(ds.source or ds.root), folder, results, heads,
                                                        settings, ds.notes)
    if run.few_shot:
        report = combine_seeds({s: ev for s, ev in per_seed.items() if s is not None}, heads, settings, out)
    else:
        report = per_seed[None]
    write_dataset_reports(out, report, heads)
    manifest.complete(
        elapsed_s=round(time.perf_counter() - t0, 3),
        warnings=[f"{'' if s is None else f'seed {s}, '}{c}: {n}"
                  for s, ev in per_seed.items() for c, ce in ev.classes.items() for n in ce.notes],
    )
    return report


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
    engine: str | Engine = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    shots: int | None = None,
    seeds: Sequence[int] | None = None,
    runtime: RuntimeOptions | Mapping[str, Any] | None = None,
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
            is reused; the dataset prompt-list default and ``overrides`` still apply). Ray workers build their
            own detectors from its configuration.
        engine: where the model runs: ``"local"`` (this process) or ``"ray"`` (Ray workers, one detector each;
            ``pip install "zsad[ray]"``). The files written are the same (scores within float32 noise).
        workers, ray_address: for ``engine="ray"``: number of workers (default: one per GPU, else one) and the
            cluster to join (``None``: a local Ray runtime started in this process; ``"auto"``: the running
            cluster).
        shots: the few-shot protocol (:mod:`zsad.evaluation.fewshot`): K normal images per class drawn from the
            dataset's train split with each seed are the class's references while it is scored; ``None``
            (default): zero-shot.
        seeds: the seeds of the few-shot draws (default ``[0]``); one evaluation per seed, reported per seed and
            as the mean over the seeds. Only with ``shots``.
        runtime: the runtime options of the detectors the engine builds, here or in Ray workers (``compile``,
            ``tf32``, ``pipeline``: :class:`~zsad.runtime.RuntimeOptions` or a dict; ``None``: the given
            detector's, else the defaults; ``zsad evaluate --compile --no-tf32 --preprocess device
            --decode-workers N``). Recorded in the manifest; ``pipeline={"preprocess": "device"}`` changes the
            pixels, so it is part of the fingerprint (such a run does not resume one without it).

    Returns:
        An :class:`EvaluationReport` (``report.mean``, ``report.classes``, ``report.table()``).

    Raises:
        DatasetError: missing files named by the description, masks of another size (protocol ``original``),
            unknown classes; few-shot: a dataset without a train split, a class with fewer than ``shots`` normal
            train images.
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
    from zsad.engines import get_engine
    from zsad.runtime import resolve_runtime

    if data is None or out is None:
        raise ConfigError("evaluate() needs data= (a dataset path or a list of them) and out= (an output folder).")
    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if not paths:
        raise ConfigError("data= is an empty list; give at least one dataset.")
    names = [dataset_name] * len(paths) if dataset_name is None or isinstance(dataset_name, str) else list(dataset_name)
    if len(names) != len(paths):
        raise ConfigError(f"Got {len(paths)} datasets but {len(names)} dataset names.")
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
    shots, seeds = few_shot_arguments(shots, seeds)
    given, effective = resolve_runtime(runtime, detector)
    engine = get_engine(engine, device=device, dtype=dtype, detector=detector, workers=workers, address=ray_address,
                        runtime=given)
    run = EvaluationSettings(
        protocol, aupro, undefined, dtype_name(dtype if dtype is not None or detector is None else detector.dtype),
        None if batch_size is None else int(batch_size), save_maps, save_overlays, resume, progress, split, engine,
        shots, seeds, effective,
    )

    ov = {k: coerce_override(v) for k, v in (overrides or {}).items()}
    base = detector.config if detector is not None else get_recipe(recipe)
    if backbone_options:
        ov["backbone.options"] = {**base.backbone.options, **backbone_options}
    if ov:
        base = base.with_overrides(**ov)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"The output folder {out} is a file; give a folder (it is created when missing).")
    reports: dict[str, DatasetEvaluation] = {}
    with engine:
        engine.connect()  # an unreachable cluster fails before anything in `out` is touched
        with OutputLock(out, "evaluation"):
            opened = [open_for_evaluation(p, base, ov, run, classes, nm, detector) for p, nm in zip(paths, names)]
            if len(opened) == 1:
                rep = _evaluate_dataset(opened[0], out, run)
                reports[rep.name] = rep
            else:
                used: set[str] = set()
                for d, nm in zip(opened, names):
                    folder = distinct_filename(nm or _dataset_label(d.path), "dataset")
                    stem, k = folder, 1
                    while folder in used:
                        k += 1
                        folder = f"{stem}_{k}"
                    used.add(folder)
                    with OutputLock(out / folder, "evaluation"):
                        rep = _evaluate_dataset(d, out / folder, run)
                    reports[folder] = rep
                write_summary(out, reports)
    report = EvaluationReport(out, reports)
    if progress:
        _print_report(report)
    return report


def _print_report(report: EvaluationReport) -> None:
    for name, rep in report.datasets.items():
        st = rep.settings
        shots = (f", {st['shots']}-shot (mean over seeds {', '.join(map(str, st['seeds']))})"
                 if rep.few_shot else "")
        print(f"\n{name}: recipe {st['recipe']} ({st['image_score']}), protocol {st['protocol']} "
              f"({st['resolution']}), AUPRO {st['aupro']}{shots}, values x100")
        print(rep.table())
    if len(report.datasets) > 1:
        print("\nSummary (mean over classes):")
        print(report.table())
    print(f"\nResults in {report.out}")


def _dataset_label(path: str | os.PathLike) -> str:
    p = Path(path)
    return p.parent.name if p.is_file() else p.name
