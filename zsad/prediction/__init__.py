"""Batch prediction over files: :func:`predict_files` (what ``zsad predict`` calls).

The inputs (files, folders, glob patterns, text files of paths: :mod:`zsad.prediction.inputs`) are listed once
and cut into shards of ``shard_size`` images. Each shard is scored by the engine (in this process, or by Ray
workers: :mod:`zsad.engines`) with :func:`~zsad.prediction.shards.predict_shard`, and its rows are written to a part
file as soon as it is done; at the end the parts are merged (:mod:`zsad.prediction.parts`). Nothing accumulates:
memory stays flat however many images there are. The only thing that grows with the number of images is the list
of input paths and output names the driver holds (about 250 bytes per image: 250 MB for a million images).

What a run writes to ``out``:

==================  ==============================================================================================
``scores.csv``       one row per scored image, in input order: ``path, class, score, S1..S5, output_name``
``scores.json``      ``{"recipe", "image_score", "results": [...]}`` (``AnomalyResult.to_dict()`` per image)
``errors.csv``       images that could not be read or scored, with the error (only when there are any)
``maps/``            ``<output_name>.npy`` float32 maps at the image size (``save_maps=True``)
``overlays/``        ``<output_name>.png`` on one shared colour scale (``overlays=True``; see
                     :data:`~zsad.prediction.shards.CALIBRATION_IMAGES`)
``parts/``           ``part-NNNNN.csv``: the rows of each finished shard (what a resumed run skips)
``manifest.json``    settings, fingerprint, versions, checkpoint hashes, engine, progress and counts
                     (``shard_cpu_s``: CPU seconds the workers spent on this call's shards)
==================  ==============================================================================================

``output_name`` is the image's file stem, or its path below the inputs' common folder joined with ``__`` when
stems collide (:func:`zsad.viz.output_stems`); ``scores.csv`` says which file is which.

Resuming: a rerun with the same settings into the same ``out`` skips the shards whose part file exists. A rerun
with other settings (recipe, overrides, inputs, class name, outputs, shard size) stops with a
:class:`~zsad.errors.ConfigError` naming the differences, unless ``resume=False`` (then the previous run's files
are removed first). Two runs never write one folder at once (:class:`zsad.runs.OutputLock`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsad._files import write_name_map
from zsad.errors import ConfigError
from zsad.prediction.inputs import list_inputs
from zsad.prediction.parts import (
    PARTS_DIR,
    merge_parts,
    part_path,
    read_part,
    write_part,
)
from zsad.prediction.shards import (
    CALIBRATION_IMAGES,
    PredictOptions,
    Shard,
    part_columns,
)
from zsad.runs import (
    OutputLock,
    RunManifest,
    checkpoint_info,
    describe_diff,
    read_json,
    sha256_json,
)

if TYPE_CHECKING:  # pragma: no cover
    from zsad.config import DetectorConfig
    from zsad.detector import Detector
    from zsad.engines import Engine
    from zsad.runtime import RuntimeOptions

__all__ = ["PredictionRun", "list_inputs", "predict_files"]

FORMAT_VERSION = 1
DEFAULT_SHARD_SIZE = 256


@dataclass
class PredictionRun:
    """What :func:`predict_files` did.

    Attributes:
        out: the output folder.
        images: images listed; ``scored`` + ``failed`` of them.
        shards: shards in the run; ``resumed_shards`` of them were finished by an earlier run.
        seconds: wall time of this call.
        files: the merged outputs (``scores_csv``, ``scores_json``, ``manifest``, and ``errors_csv`` when some
            images failed).
    """

    out: Path
    images: int
    scored: int
    failed: int
    shards: int
    resumed_shards: int
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)


def _fingerprint(config: DetectorConfig, dtype: str, listing_sha: str, n: int, options: PredictOptions,
                 shard_size: int, runtime: RuntimeOptions) -> dict[str, Any]:
    cfg = config.model_dump(mode="json")
    cfg.pop("batch_size", None)  # does not change the results
    return {"format_version": FORMAT_VERSION, "config": cfg, "dtype": dtype,
            "inputs": {"count": n, "sha256": listing_sha}, "class_name": options.class_name,
            "save_maps": options.save_maps, "overlays": options.overlays, "shard_size": shard_size,
            **runtime.fingerprint()}


def _clear(out: Path) -> None:
    """Remove what a previous prediction run wrote into ``out`` (its part files name every output)."""
    for part in sorted((out / PARTS_DIR).glob("part-*.csv")):
        for row in read_part(part):
            (out / "maps" / f"{row['output_name']}.npy").unlink(missing_ok=True)
            (out / "overlays" / f"{row['output_name']}.png").unlink(missing_ok=True)
        part.unlink()
    for name in ("scores.csv", "scores.json", "names.json", "errors.csv", "manifest.json"):
        (out / name).unlink(missing_ok=True)


def _previous(out: Path, fingerprint: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """The previous run's manifest when it may be resumed; refuse to mix runs of other settings."""
    manifest = out / "manifest.json"
    has_parts = any((out / PARTS_DIR).glob("part-*.csv"))
    old = read_json(manifest, "manifest") if manifest.is_file() else None
    if old is not None and old.get("kind") != "prediction":
        raise ConfigError(f"{out} holds the results of another kind of run ({manifest} is not a prediction "
                          "manifest); choose another output folder.")
    if old is None and has_parts:
        raise ConfigError(f"{out} holds part files ({PARTS_DIR}/) but no manifest.json, so zsad cannot tell how they "
                          "were made. Use another output folder, or resume=False (--no-resume) to replace them.")
    if old is not None and old.get("fingerprint") == fingerprint and resume:
        return old
    if old is not None and resume and has_parts:
        raise ConfigError(
            f"{out} holds the results of a different prediction run (differs in: "
            f"{describe_diff(old.get('fingerprint'), fingerprint)}). zsad will not mix them. Use another output "
            "folder, or resume=False (--no-resume) to replace them."
        )
    _clear(out)
    return None


def _shards(paths: Sequence[str], names: Sequence[str], size: int, todo: Sequence[int]) -> Iterator[Shard]:
    for k in todo:
        sl = slice(k * size, (k + 1) * size)
        yield Shard(k, tuple(paths[sl]), tuple(names[sl]))


def predict_files(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike = "zsad-predictions",
    *,
    recipe: str = "tipsomaly",
    overrides: Mapping[str, Any] | None = None,
    class_name: str = "object",
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int | None = None,
    overlays: bool = True,
    save_maps: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
    resume: bool = True,
    progress: bool = True,
    engine: str | Engine = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    detector: Detector | None = None,
    runtime: RuntimeOptions | dict | None = None,
) -> PredictionRun:
    """Score every image of ``inputs`` and write the results to ``out`` (see the module docstring).

    ``zsad predict INPUTS... --out DIR [--class-name C] [--set k=v] [--engine ray --workers N --ray-address A]
    [--compile] [--no-tf32] [--preprocess device] [--decode-workers N]`` maps one to one onto the arguments.

    Args:
        inputs: image files, folders (searched recursively), glob patterns and ``.txt`` files listing paths.
        out: output folder (created).
        recipe, overrides: the detector, as for :meth:`zsad.Detector.from_recipe` (``detector=`` instead uses an
            already built one).
        class_name: the object class in the prompts, for every image.
        device, dtype, batch_size: as for :class:`zsad.Detector` and :meth:`~zsad.Detector.predict`.
        overlays: write an overlay PNG per image (one colour scale for the run).
        save_maps: write each map as ``.npy`` (float32, at the image size).
        shard_size: images per shard: the unit of work of an engine worker, of a part file and of resuming.
        resume: continue a run interrupted in ``out`` (same settings); ``False`` replaces its files.
        progress: show a progress bar.
        engine: ``"local"`` (this process), ``"ray"`` (Ray workers; ``pip install "zsad[ray]"``) or an
            :class:`~zsad.engines.Engine`.
        workers, ray_address: for ``engine="ray"``: number of workers (default: one per GPU, else one) and the
            cluster to join (``None``: a local Ray runtime in this process; ``"auto"``: the running cluster).
        detector: an already built detector (for ``engine="local"`` it is used directly; Ray workers build their
            own from its configuration).
        runtime: the runtime options of the detectors the engine builds, in this process or in Ray workers
            (:class:`~zsad.runtime.RuntimeOptions` or a dict: ``compile``, ``tf32``, ``pipeline``; see
            :mod:`zsad.runtime`); ``None``: the given detector's, else the defaults. Recorded in the manifest;
            ``pipeline={"preprocess": "device"}`` changes the pixels, so a run with it does not resume one without.

    Returns:
        A :class:`PredictionRun` (counts and file paths).

    Raises:
        DatasetError: an input path matches nothing.
        ConfigError: bad arguments, ``out`` holds another run, another run is writing into ``out``.

    Example (the tiny fixture model; an unreadable file is recorded, not fatal):
        >>> import tempfile, zsad
        >>> from pathlib import Path
        >>> fx = Path(zsad.__file__).resolve().parents[1] / "tests" / "fixtures" / "tipsomaly-parity"
        >>> d = Path(tempfile.mkdtemp()); _ = (d / "broken.png").write_bytes(b"not an image")
        >>> images = [fx / "dataset" / "metal_nut" / "test" / "good" / "000.png", d / "broken.png"]
        >>> run = predict_files(images, d / "out", class_name="metal_nut", device="cpu", progress=False,
        ...                     overrides={"backbone_checkpoint": str(fx), "image_size": 56,
        ...                                "prompt_checkpoint": str(fx / "learnable_params.pth")})
        >>> run.scored, run.failed, sorted(run.files)
        (1, 1, ['errors_csv', 'manifest', 'names', 'scores_csv', 'scores_json'])
    """
    from zsad.components import get_recipe
    from zsad.engines import get_engine
    from zsad.evaluation.settings import coerce_override, dtype_name
    from zsad.runtime import resolve_runtime
    from zsad.viz import output_stems

    t0 = time.perf_counter()
    if not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigError(f"shard_size must be a whole number >= 1, got {shard_size!r}.")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ConfigError(f"batch_size must be a whole number >= 1, got {batch_size!r}.")
    runtime, effective = resolve_runtime(runtime, detector)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder (it is created when missing).")
    config = detector.config if detector is not None else get_recipe(recipe)
    ov = {k: coerce_override(v) for k, v in (overrides or {}).items()}
    if ov:
        config = config.with_overrides(**ov)
    given = [str(i) for i in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)]
    paths = [str(p) for p in list_inputs(inputs)]  # str: half the memory of Path objects
    names = output_stems(paths)
    n = len(paths)
    n_shards = math.ceil(n / shard_size)
    options = PredictOptions(str(out), class_name, batch_size, save_maps, overlays)
    listing_sha = sha256_json([[p, s] for p, s in zip(paths, names)])
    dtype_label = dtype_name(dtype if dtype is not None or detector is None else detector.dtype)
    fp = _fingerprint(config, dtype_label, listing_sha, n, options, shard_size, effective)
    fp_sha = sha256_json(fp)
    columns = part_columns(list(config.heads.image_heads))
    eng = get_engine(engine, device=device, dtype=dtype, detector=detector, workers=workers, address=ray_address,
                     runtime=runtime)
    with eng:
        eng.connect()  # an unreachable cluster fails before anything in `out` is touched
        with OutputLock(out, "prediction"):
            previous = _previous(out, fp, resume)
            done = [k for k in range(n_shards) if part_path(out, k).is_file()] if previous else []
            todo = [k for k in range(n_shards) if k not in set(done)]
            manifest = RunManifest(out / "manifest.json", {
                "format_version": FORMAT_VERSION,
                "kind": "prediction",
                "config": config.model_dump(mode="json"),
                "checkpoints": checkpoint_info(config),
                "inputs": {"given": given, "count": n, "sha256": listing_sha},
                "class_name": class_name,
                "outputs": {"maps": save_maps, "overlays": overlays},
                "overlay_scale": (previous or {}).get("overlay_scale"),
                "shard_size": shard_size,
                "shards": n_shards,
                "resumed_shards": done,
                "shards_done": len(done),
                "shard_cpu_s": 0.0,
                "engine": eng.describe(),
                "device": None,
                "runtime": None,
                "dtype": dtype_label,
                "fingerprint": fp,
                "fingerprint_sha256": fp_sha,
            }, previous)
            if todo:
                _run_shards(eng, config, paths, names, todo, options, manifest, columns, progress,
                            initial=sum(min(shard_size, n - k * shard_size) for k in done))
            header = {"recipe": config.name, "image_score": config.heads.image_score}
            scored, failed = merge_parts(out, n_shards, list(config.heads.image_heads), header)
            write_name_map(out / "names.json", names, paths)
            manifest.complete(images_scored=scored, images_failed=failed,
                              elapsed_s=round(time.perf_counter() - t0, 3))
    files = {"scores_csv": out / "scores.csv", "scores_json": out / "scores.json", "names": out / "names.json",
             "manifest": out / "manifest.json"}
    if failed:
        files["errors_csv"] = out / "errors.csv"
    return PredictionRun(out, n, scored, failed, n_shards, len(done), time.perf_counter() - t0, files)


def _run_shards(eng: Engine, config: DetectorConfig, paths: Sequence[str], names: Sequence[str], todo: list[int],
                options: PredictOptions, manifest: RunManifest, columns: list[str], progress: bool,
                initial: int) -> None:
    from dataclasses import replace

    from tqdm.auto import tqdm

    runner = eng.runner(config)
    manifest.update(device=runner.device, engine=eng.describe(), runtime=runner.runtime_options,
                    checkpoints=checkpoint_info(config, runner.backbone_source))
    out = Path(options.out)
    if options.overlays:
        scale = manifest["overlay_scale"]
        if scale is None:
            scale = runner.overlay_scale(list(paths[: 4 * CALIBRATION_IMAGES]), options.class_name,
                                         options.batch_size)
            manifest.update(overlay_scale=scale)
        options = replace(options, overlay_scale=None if scale is None else tuple(scale))
    size = manifest["shard_size"]
    with tqdm(total=len(paths), initial=initial, unit="img", desc="zsad predict", disable=not progress) as bar:
        for res in runner.predict_shards(_shards(paths, names, size, todo), options, progress=bar.update):
            write_part(out, res.index, res.rows, columns)
            manifest.update(shards_done=manifest["shards_done"] + 1,
                            shard_cpu_s=round(manifest["shard_cpu_s"] + res.cpu_seconds, 3))
