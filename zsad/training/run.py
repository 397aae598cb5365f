"""A whole prompt-learning run over a dataset: :func:`train_prompts` (what ``zsad train`` calls).

Protocol (official Tipsomaly defaults, §4 of the spec): the source dataset's ``test`` split (images + masks) in
meta.json order, batches of 8, 2 epochs, Adam(lr 1e-3, betas (0.5, 0.999)), seed 111, tokens initialised
N(0, 0.02²), loss focal + dice(p_a, mask) + dice(p_n, 1 - mask). The official HEAD loads data with
``shuffle=False`` (and the paper-era code reused one fixed permutation every epoch), so the default here is the
same order every epoch; ``shuffle=True`` draws a fresh permutation per epoch from ``(seed, epoch)``.

What a run writes to ``out``:

* ``prompts.safetensors`` — the learned tokens (a zsad prompt checkpoint, rewritten after every epoch):
  ``Detector.from_recipe(recipe, prompt_checkpoint="out/prompts.safetensors")``;
* ``config.json`` — the detector configuration pointing at it: ``Detector.load("out")``;
* ``training.json`` — the record: configuration, data (path, classes, counts), seed, per-epoch mean losses,
  versions, timings; ``completed`` is true once the last epoch is done;
* ``checkpoints/epoch_NNN.safetensors`` — one training checkpoint per epoch (tokens, Adam state, epoch, RNG states;
  also usable as a prompt checkpoint). ``resume=`` continues from one (or from the latest in a folder).

Every file is written atomically (temporary file + rename), so an interrupted run never damages a finished epoch.
Image features are computed once per image under no-grad and reused every epoch (in RAM, or on disk with
``feature_cache=DIR``; see :mod:`zsad.training.cache`).
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from zsad.errors import CheckpointError, ConfigError, DatasetError
from zsad.heads.losses import SegmentationLoss
from zsad.runs import describe_diff, jsonable, now, sha256_json, write_json
from zsad.training.cache import (
    DiskFeatureCache,
    MemoryFeatureStore,
    feature_cache_key,
    feature_entry,
    file_stamp,
    stack_entries,
)
from zsad.training.state import (
    optimizer_from_state,
    optimizer_to_state,
    read_train_state,
    rng_from_state,
    rng_to_state,
    write_train_state,
)
from zsad.training.trainer import PromptTrainer

__all__ = ["train_prompts", "TrainResult", "find_latest_checkpoint", "CHECKPOINT_DIR"]

log = logging.getLogger("zsad.training")

CHECKPOINT_DIR = "checkpoints"
PROMPTS_FILE = "prompts.safetensors"
CONFIG_FILE = "config.json"
RECORD_FILE = "training.json"
_EPOCH_RE = re.compile(r"^epoch_(\d+)\.safetensors$")


@dataclass
class TrainResult:
    """What :func:`train_prompts` produced.

    Attributes:
        out: the output folder.
        prompt_checkpoint: ``out/prompts.safetensors`` (the learned tokens).
        config_path: ``out/config.json`` (``Detector.load(out)`` rebuilds the trained detector).
        record_path: ``out/training.json``.
        checkpoints: the per-epoch training checkpoints written or found, in epoch order.
        history: per-epoch mean losses ``{"epoch", <the heads' loss components>, "total", "steps", "seconds"}``
            (``focal``, ``dice_pos``, ``dice_neg``; ``image`` for AnomalyCLIP).
        epochs_completed: epochs done (including those before a resume).
        resumed_from: the checkpoint a resumed run started from.
        detector: the trained detector (in memory).
        record: the content of ``training.json``.
    """

    out: Path
    prompt_checkpoint: Path
    config_path: Path
    record_path: Path
    checkpoints: list[Path]
    history: list[dict[str, float]]
    epochs_completed: int
    resumed_from: Path | None
    detector: Any = field(repr=False)
    record: dict[str, Any] = field(repr=False)


def _epoch_files(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _EPOCH_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def find_latest_checkpoint(path: str | os.PathLike) -> Path:
    """The training checkpoint to resume from: ``path`` itself, or the highest ``epoch_NNN.safetensors`` in ``path``
    or in ``path/checkpoints``.

    Raises:
        CheckpointError: nothing to resume from.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "checkpoints").mkdir()
        >>> for e in (1, 2): _ = (d / "checkpoints" / f"epoch_{e:03d}.safetensors").write_bytes(b"")
        >>> find_latest_checkpoint(d).name
        'epoch_002.safetensors'
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        found = _epoch_files(p / CHECKPOINT_DIR) or _epoch_files(p)
        if found:
            return found[-1][1]
        raise CheckpointError(
            f"No training checkpoint (epoch_NNN.safetensors) in {p} or {p / CHECKPOINT_DIR}; pass the output folder "
            "of a previous `zsad train` run or one of its checkpoint files."
        )
    raise CheckpointError(f"Resume checkpoint {p} does not exist.")


def _data_summary(dataset, samples: Sequence, data_arg: Any, classes: list[str]) -> dict[str, Any]:
    root = Path(dataset.root)

    def rel(p: Path | None) -> str:
        if p is None:
            return ""
        try:
            return str(Path(p).relative_to(root))
        except ValueError:
            return str(p)

    listing = [[rel(s.img_path), rel(s.mask_path), s.anomaly, s.cls_name] for s in samples]
    counts = {}
    for c in classes:
        items = [s for s in samples if s.cls_name == c]
        counts[c] = {
            "images": len(items),
            "normal": sum(s.anomaly == 0 for s in items),
            "anomalous": sum(s.anomaly == 1 for s in items),
            "with_mask": sum(bool(s.is_anomalous and s.has_mask) for s in items),
        }
    return {
        "path": str(data_arg if not hasattr(data_arg, "samples") else (dataset.source or dataset.root)),
        "name": dataset.name,
        "source": str(dataset.source or dataset.root),
        "split": dataset.split,
        "classes": classes,
        "images": len(samples),
        "counts": counts,
        "fingerprint": sha256_json(listing),
    }


def _select_samples(dataset, classes: Sequence[str] | None) -> tuple[list, list[str]]:
    names = list(dataset.classes) if classes is None else ([classes] if isinstance(classes, str) else list(classes))
    if not names:
        raise DatasetError(f"Dataset '{dataset.name}' has no classes in split '{dataset.split}': nothing to train on.")
    for c in names:
        if not dataset.samples(c):
            raise DatasetError(
                f"Class {c!r} of dataset '{dataset.name}' ({dataset.source or dataset.root}) has no images in split "
                f"'{dataset.split}'. Remove the class from the description or train on the other classes (classes=[...])."
            )
    samples = dataset.samples(names)
    if not any(s.is_anomalous and s.has_mask for s in samples):
        raise DatasetError(
            f"Dataset '{dataset.name}' ({dataset.source or dataset.root}) has no ground-truth masks for its anomalous "
            "images (image-level labels only). Prompt learning uses a localisation loss (focal + dice on pixel maps) "
            "that needs pixel masks: train on a dataset with masks, e.g. the MVTec-AD or VisA test split."
        )
    unmasked = [s for s in samples if s.is_anomalous and not s.has_mask]
    if unmasked:
        warnings.warn(
            f"{len(unmasked)} anomalous image(s) of dataset '{dataset.name}' have no mask (e.g. {unmasked[0].img_path}); "
            "they are trained with an all-normal mask, as the official loader does.",
            UserWarning,
            stacklevel=3,
        )
    return samples, names


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _recipe_config(recipe: str, overrides: dict):
    """The recipe with the run's overrides; training starts from random tokens unless a checkpoint is given."""
    from zsad.components import get_recipe

    overrides = dict(overrides)
    if "prompt_checkpoint" not in overrides and "prompts.checkpoint" not in overrides:
        overrides["prompt_checkpoint"] = None  # train from a random initialisation unless told otherwise
    return get_recipe(recipe).with_overrides(**overrides)


def _build_detector(recipe: str, overrides: dict, seed: int, device, dtype):
    from zsad.detector import Detector

    config = _recipe_config(recipe, overrides)
    detector = Detector(config, device=device, dtype=dtype)
    if config.prompts.checkpoint is None and "seed" not in config.prompts.options:
        detector.prompts.initialize(seed)  # the run's seed draws the initial tokens (an explicit option wins)
    return detector


def _resume_relevant(detector_cfg: dict) -> dict:
    """The detector config as a resume must match it: without the starting prompts, with resolved local paths."""
    cfg = {k: v for k, v in detector_cfg.items() if k != "prompts"}
    cfg["prompts"] = {k: v for k, v in detector_cfg["prompts"].items() if k != "checkpoint"}
    ckpt = detector_cfg["backbone"].get("checkpoint")
    if ckpt and Path(ckpt).expanduser().exists():
        cfg["backbone"] = {**detector_cfg["backbone"], "checkpoint": str(Path(ckpt).expanduser().resolve())}
    return cfg


def _compare_runs(saved: dict, current: dict, path: Path) -> None:
    sections = ("data", "training", "detector")
    before = {k: saved.get(k, {}) for k in sections}
    now_ = {k: current.get(k, {}) for k in sections}
    if before != now_:
        raise ConfigError(
            f"Cannot resume from {path}: it belongs to a different run "
            f"({describe_diff(before, now_, limit=6, values=('checkpoint', 'now'))}). Resume with the same data, "
            "recipe, overrides and hyper-parameters (only epochs, device, feature cache and progress may change), or "
            "start a new run in another folder."
        )


def _pack(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask.reshape(-1).astype(bool))


def _unpack(packed: np.ndarray, size: int) -> np.ndarray:
    return np.unpackbits(packed, count=size * size).reshape(size, size)


def train_prompts(
    recipe: str = "tipsomaly",
    *,
    data: str | os.PathLike | Any,
    out: str | os.PathLike,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 111,
    overrides: dict[str, Any] | None = None,
    device: str | None = None,
    feature_cache: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    progress: bool = True,
    betas: tuple[float, float] = (0.5, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    shuffle: bool | None = None,
    split: str = "test",
    classes: Sequence[str] | None = None,
    loss: SegmentationLoss | None = None,
    dtype: str | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Learn prompt tokens on a dataset with masks and write a prompt checkpoint (see the module docstring).

    ``zsad train --recipe NAME --data DIR --out DIR [--set key=value ...] [--epochs N] [--batch-size N] [--lr X]
    [--seed N] [--device D] [--resume PATH] [--feature-cache DIR]`` maps one to one onto the arguments.

    Args:
        recipe: recipe name or recipe JSON path; its backbone and prompt strategy are trained (``tipsomaly``), with
            its training defaults (``training`` section: epochs, batch size, lr, shuffling) where an argument is
            ``None``.
        data: a dataset folder / meta.json / jsonl (anything :func:`zsad.data.open_dataset` reads) or an
            :class:`~zsad.data.AnomalyDataset`. Anomalous images need masks.
        out: output folder (created). A folder holding epoch checkpoints is refused unless ``resume`` or
            ``overwrite`` is given, so a finished run is never clobbered by accident.
        epochs: total epochs (recipe default: 2 for Tipsomaly, 15 for AnomalyCLIP, as their released checkpoints);
            with ``resume``, the total to reach.
        batch_size: images per optimiser step (recipe default: 8).
        lr: Adam learning rate (recipe default: 1e-3).
        seed: seeds torch / numpy / random at the start, the token initialisation and the shuffling (111).
        overrides: recipe overrides as in :meth:`Detector.from_recipe` (``{"backbone_checkpoint": DIR,
            "image_size": 336, "fixed_prompts": "industrial", "prompt_checkpoint": FILE}``, dotted paths too);
            ``--set key=value`` on the command line. Training starts from random tokens unless
            ``prompt_checkpoint`` is given here (then it fine-tunes those).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` (default: CUDA when available).
        feature_cache: a folder to cache image features on disk (reused across runs and epochs); ``None`` keeps
            them in RAM for the run. Either way they take ``N x D x 4`` bytes per image (5.6 MB for TIPS L/14 at
            518 px, about 10 GB for the 1725 MVTec-AD test images).
        resume: a training checkpoint (``out/checkpoints/epoch_NNN.safetensors``) or a run folder (its latest
            checkpoint) to continue from; data, recipe, overrides and hyper-parameters must match.
        progress: show tqdm progress bars (with running mean losses).
        betas, eps, weight_decay: Adam settings (official: (0.5, 0.999), 1e-8, 0).
        shuffle: ``False`` (meta.json order every epoch, Tipsomaly at HEAD) or ``True`` (a seeded permutation per
            epoch, AnomalyCLIP's shuffling loader); default: the recipe's.
        split: the dataset split to train on (``"test"``, the zero-shot protocol).
        classes: train on these classes only (default: all).
        loss: loss settings (default: focal gamma 2 + the two dice terms, as official).
        dtype: backbone precision (``"float32"`` default, ``"bfloat16"`` on GPU).
        overwrite: allow writing into a folder that already holds checkpoints of another run.

    Returns:
        a :class:`TrainResult`.

    Raises:
        DatasetError: no masks in the data (image-level labels only), an empty or unknown class.
        ConfigError: bad settings, a prompt width that does not match the backbone, a backbone or prompt strategy
            without learnable prompts, a resume checkpoint of another run.
        CheckpointError: a corrupt or missing resume checkpoint (the message names the file).

    Example (tiny random model, two synthetic images):
        >>> import tempfile, json
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> d = Path(tempfile.mkdtemp())
        >>> Image.new("RGB", (32, 32), "gray").save(d / "ok.png"); Image.new("RGB", (32, 32), "red").save(d / "bad.png")
        >>> Image.new("L", (32, 32), 255).save(d / "bad_mask.png")
        >>> recs = [{"img_path": "ok.png", "mask_path": "", "cls_name": "toy", "specie_name": "good", "anomaly": 0},
        ...         {"img_path": "bad.png", "mask_path": "bad_mask.png", "cls_name": "toy", "specie_name": "x", "anomaly": 1}]
        >>> _ = (d / "meta.json").write_text(json.dumps({"test": {"toy": recs}}))
        >>> res = train_prompts("tipsomaly", data=d, out=d / "run", epochs=1, batch_size=2, device="cpu",
        ...                     overrides={"backbone_checkpoint": None, "image_size": 28,
        ...                                "backbone.options": {"random_config": "tiny"}}, progress=False)
        >>> res.epochs_completed, sorted(res.history[0])[:3], res.prompt_checkpoint.name
        (1, ['dice_neg', 'dice_pos', 'epoch'], 'prompts.safetensors')
    """
    import zsad
    from zsad.data import AnomalyDataset, open_dataset

    started = time.perf_counter()
    defaults = _recipe_config(recipe, overrides or {}).training
    epochs = defaults.epochs if epochs is None else epochs
    batch_size = defaults.batch_size if batch_size is None else batch_size
    lr = defaults.lr if lr is None else lr
    shuffle = defaults.shuffle if shuffle is None else shuffle
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be an integer >= 1, got {epochs!r}.")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
    if not isinstance(shuffle, bool):
        raise ConfigError(f"shuffle must be True or False, got {shuffle!r}.")
    loss = loss or SegmentationLoss()
    out = Path(out).expanduser()
    ckpt_dir = out / CHECKPOINT_DIR

    # -- resume checkpoint first: a bad one fails before any slow work and before anything is written -------------
    resume_path: Path | None = None
    resume_tensors: dict[str, torch.Tensor] = {}
    resume_meta: dict[str, Any] = {}
    if resume is not None:
        resume_path = find_latest_checkpoint(resume)
        resume_tensors, resume_meta = read_train_state(resume_path)
    elif _epoch_files(ckpt_dir) and not overwrite:
        raise ConfigError(
            f"{out} already holds training checkpoints ({ckpt_dir}); continue that run with resume={str(out)!r} "
            "(--resume), choose another output folder, or pass overwrite=True to start over there."
        )

    # -- data ------------------------------------------------------------------------------------------------------
    dataset = data if isinstance(data, AnomalyDataset) else open_dataset(data, split=split)
    samples, class_names = _select_samples(dataset, classes)
    data_info = _data_summary(dataset, samples, data, class_names)

    # -- model and trainer -----------------------------------------------------------------------------------------
    _seed_everything(seed)
    detector = _build_detector(recipe, overrides or {}, seed, device, dtype)
    trainer = PromptTrainer(detector, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, loss=loss)
    size = int(detector.config.preprocess.image_size)
    train_cfg = {
        "batch_size": batch_size,
        "lr": lr,
        "betas": list(betas),
        "eps": eps,
        "weight_decay": weight_decay,
        "seed": seed,
        "shuffle": shuffle,
        "split": dataset.split,
        "classes": class_names,
        "loss": loss.to_dict(),
    }
    detector_cfg = detector.config.model_dump(mode="json")
    run_fingerprint = jsonable({
        "data": {"fingerprint": data_info["fingerprint"], "split": dataset.split},
        "training": train_cfg,
        "detector": _resume_relevant(detector_cfg),
    })

    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume_path is not None:
        _compare_runs(resume_meta.get("run", {}), run_fingerprint, resume_path)
        try:
            _restore_params(trainer, resume_tensors)
            optimizer_from_state(trainer.optimizer, resume_tensors, resume_meta["optimizer"])
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"Training checkpoint {resume_path} cannot be restored: {type(exc).__name__}: {exc}.") from exc
        rng_from_state(resume_tensors, resume_meta.get("rng", {}))
        start_epoch = int(resume_meta["epoch"])
        trainer.steps = int(resume_meta.get("steps", 0))
        history = list(resume_meta.get("history", []))
        trainer.learned.mark_trained(str(resume_path))
        if start_epoch > epochs:
            raise ConfigError(f"{resume_path} is already at epoch {start_epoch} > epochs={epochs}; ask for more epochs.")

    record: dict[str, Any] = {
        "format": "zsad-training-record",
        "zsad_version": zsad.__version__,
        "torch_version": torch.__version__,
        "recipe": str(recipe),
        "overrides": jsonable(overrides or {}),
        "detector_config": detector_cfg,
        "training": {"epochs": epochs, **train_cfg},
        "seed": seed,
        "device": str(detector.device),
        "dtype": str(detector.dtype),
        "data": data_info,
        "feature_cache": None if feature_cache is None else str(feature_cache),
        "resumed_from": None if resume_path is None else str(resume_path),
        "started_at": now(),
        "prompt_checkpoint": PROMPTS_FILE,
        "config": CONFIG_FILE,
    }
    out.mkdir(parents=True, exist_ok=True)
    if resume_path is None and overwrite:
        for _, stale in _epoch_files(ckpt_dir):  # asked to start over: the old run's epochs must not mix with ours
            stale.unlink()
    checkpoints = [p for e, p in _epoch_files(ckpt_dir) if e <= start_epoch] if resume_path is not None else []

    def write_outputs(epoch: int) -> None:
        learned = trainer.learned
        meta = {
            "trained_on": dataset.name,
            "epoch": epoch,
            "seed": seed,
            "recipe": str(recipe),
            "backbone": f"{detector.config.backbone.name}:{detector.config.backbone.checkpoint}",
            "image_size": size,
            "zsad_version": zsad.__version__,
        }
        learned.save_tokens(out / PROMPTS_FILE, meta)
        saved = {"prompt_checkpoint": PROMPTS_FILE}
        backbone_ckpt = detector.config.backbone.checkpoint
        if backbone_ckpt and not Path(backbone_ckpt).is_absolute() and Path(backbone_ckpt).exists():
            saved["backbone_checkpoint"] = str(Path(backbone_ckpt).resolve())  # config.json works from any folder
        detector.config.with_overrides(**saved).save(out / CONFIG_FILE)
        record.update(
            history=history,
            epochs_completed=epoch,
            completed=epoch >= epochs,
            checkpoints=[str(p.relative_to(out)) if p.is_relative_to(out) else str(p) for p in checkpoints],
            updated_at=now(),
            seconds=round(time.perf_counter() - started, 3),
        )
        write_json(out / RECORD_FILE, record, durable=True)

    # -- features (once per image, no-grad) and masks ----------------------------------------------------------------
    n = len(samples)
    if start_epoch < epochs:
        from tqdm.auto import tqdm

        store = _feature_store(detector, dataset, feature_cache, trainer.request)
        stamps = [file_stamp(s.img_path) for s in samples]
        items = [st["path"] for st in stamps]
        exif = detector.config.preprocess.exif_transpose
        masks = [_pack(dataset.load_mask(s, size, exif_transpose=exif)) for s in samples]
        labels = torch.tensor([int(s.anomaly) for s in samples], dtype=torch.long)  # as the official loaders
        grid = _compute_features(trainer, store, samples, items, stamps, batch_size, progress, tqdm)

        for epoch in range(start_epoch + 1, epochs + 1):
            t0 = time.perf_counter()
            order = np.arange(n) if not shuffle else np.random.default_rng([seed, epoch]).permutation(n)
            batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
            sums: dict[str, float] = {}
            with tqdm(total=len(batches), desc=f"zsad train: epoch {epoch}/{epochs}", unit="step",
                      disable=not progress, leave=True) as bar:
                for step, idx in enumerate(batches, 1):
                    features = stack_entries([_get(store, items[i], stamps[i])[0] for i in idx], grid)
                    mask = torch.from_numpy(np.stack([_unpack(masks[i], size) for i in idx]))
                    losses = trainer.step_features(features, mask, labels[torch.as_tensor(idx)])
                    for k, v in losses.items():
                        sums[k] = sums.get(k, 0.0) + v
                    bar.set_postfix({k: f"{v / step:.4f}" for k, v in sums.items()}, refresh=False)
                    bar.update(1)
            means = {k: v / len(batches) for k, v in sums.items()}
            history.append({"epoch": epoch, **means, "steps": len(batches), "seconds": round(time.perf_counter() - t0, 3)})
            log.info("epoch %d/%d: %s", epoch, epochs, ", ".join(f"{k} {v:.4f}" for k, v in means.items()))
            checkpoints.append(_save_checkpoint(ckpt_dir, epoch, trainer, history, run_fingerprint, record))
            write_outputs(epoch)
    else:
        write_outputs(start_epoch)

    return TrainResult(
        out=out,
        prompt_checkpoint=out / PROMPTS_FILE,
        config_path=out / CONFIG_FILE,
        record_path=out / RECORD_FILE,
        checkpoints=list(checkpoints),
        history=list(history),
        epochs_completed=max(start_epoch, history[-1]["epoch"] if history else 0),
        resumed_from=resume_path,
        detector=detector,
        record=record,
    )


def _feature_store(detector, dataset, feature_cache, request):
    if feature_cache is None:
        return MemoryFeatureStore()
    cfg = detector.config
    label = f"{dataset.name}-{cfg.backbone.name}-{cfg.preprocess.image_size}"
    return DiskFeatureCache(feature_cache, feature_cache_key(detector, dataset, request), label=label)


def _get(store, item: str, stamp: dict):
    got = store.get(item, stamp)
    if got is None:  # pragma: no cover - only when a cache file vanishes during the run
        raise CheckpointError(f"The cached features of {item} disappeared during training; rerun (they are recomputed).")
    return got


def _compute_features(trainer, store, samples, items, stamps, batch_size, progress, tqdm) -> tuple[int, int]:
    """Encode every image missing from ``store`` (in meta order, ``batch_size`` at a time) with what the heads
    need (``trainer.request``); return the patch grid."""
    grid = None
    missing = []
    for i in range(len(samples)):
        known = store.grid_of(items[i], stamps[i])
        if known is None:
            missing.append(i)
        else:
            grid = known
    with tqdm(total=len(missing), desc="zsad train: image features", unit="img", disable=not progress or not missing) as bar:
        for start in range(0, len(missing), batch_size):
            chunk = missing[start : start + batch_size]
            feats, _ = trainer.encode_images([samples[i].img_path for i in chunk])
            grid = tuple(feats.grid)
            for j, i in enumerate(chunk):
                store.put(items[i], stamps[i], feature_entry(feats, j), grid)
            bar.update(len(chunk))
    return grid  # type: ignore[return-value]


def _save_checkpoint(folder: Path, epoch: int, trainer: PromptTrainer, history, run_fingerprint, record) -> Path:
    """Tokens under the prompt-checkpoint names of the strategy (so the file is a prompt checkpoint too), the
    optimised parameters in order (``param.<i>``), the Adam state and the RNG states."""
    opt_tensors, opt_meta = optimizer_to_state(trainer.optimizer)
    rng_tensors, rng_meta = rng_to_state()
    learned = trainer.learned
    meta = {
        "epoch": epoch,
        "steps": trainer.steps,
        "history": history,
        "optimizer": opt_meta,
        "rng": rng_meta,
        "run": run_fingerprint,
        "zsad_version": record["zsad_version"],
        **learned.checkpoint_metadata(),
    }
    params = {f"param.{i}": p.detach().clone() for i, p in enumerate(trainer.params)}
    tensors = {**learned.token_tensors(), **params, **opt_tensors, **rng_tensors}
    return write_train_state(folder / f"epoch_{epoch:03d}.safetensors", tensors, jsonable(meta))


def _restore_params(trainer: PromptTrainer, tensors: dict[str, torch.Tensor]) -> None:
    """Put the saved parameters back in place (``param.<i>``; files of earlier versions hold ``T_n``/``T_a``)."""
    if "param.0" not in tensors:
        trainer.set_tokens(tensors["T_n"], tensors["T_a"])
        return
    saved = [tensors[f"param.{i}"] for i in range(len(trainer.params))]
    if f"param.{len(trainer.params)}" in tensors:
        raise ValueError(f"the checkpoint holds more than the {len(trainer.params)} parameters of this run")
    trainer.set_tokens(*saved)
