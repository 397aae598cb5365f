"""Training checkpoints: prompt tokens + Adam state + epoch + RNG states in one checksummed ``.safetensors`` file.

A training checkpoint holds the tensors ``T_n`` and ``T_a`` under the same names as a zsad prompt checkpoint, so
it is *also* a prompt checkpoint (``Detector.from_recipe(..., prompt_checkpoint="…/epoch_002.safetensors")``).
Besides them it stores the optimiser state (``optim.<param>.<key>`` tensors; scalars and param groups in the
metadata), the RNG states of torch / numpy / Python, the epoch, the loss history and a fingerprint of the run
(data, hyper-parameters, detector config) that a resume is checked against. Nothing is unpickled on load.

Files are written to a temporary name, flushed to disk and renamed over the target, so a finished checkpoint is
never replaced by a partial one. A checksum over tensors and metadata detects corruption on load.

Example:
    >>> import tempfile, torch
    >>> p = Path(tempfile.mkdtemp()) / "epoch_001.safetensors"
    >>> _ = write_train_state(p, {"T_n": torch.zeros(2, 4), "T_a": torch.ones(2, 4)}, {"epoch": 1})
    >>> tensors, meta = read_train_state(p)
    >>> meta["epoch"], tensors["T_a"].sum().item()
    (1, 8.0)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zsad._files import atomic_path
from zsad.errors import CheckpointError

__all__ = [
    "TRAIN_STATE_FORMAT",
    "write_train_state",
    "read_train_state",
    "optimizer_to_state",
    "optimizer_from_state",
    "rng_to_state",
    "rng_from_state",
]

TRAIN_STATE_FORMAT = "zsad-train-state"
_RESERVED = ("format", "checksum", "meta")


def _checksum(tensors: dict[str, torch.Tensor], meta_json: str) -> str:
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_train_state(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write tensors and JSON-ready metadata to ``path`` atomically, with a checksum; returns the path.

    The metadata also carries ``format: "zsad-prompts"``-compatible string fields so that prompt-checkpoint
    readers accept the file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    meta_json = json.dumps(meta, sort_keys=True)
    header = {"format": TRAIN_STATE_FORMAT, "meta": meta_json, "checksum": _checksum(cpu, meta_json)}
    for key in ("prompt_list", "n_tokens", "class_word"):
        if key in meta:
            header[key] = str(meta[key])
    with atomic_path(path, durable=True) as tmp:
        save_file(cpu, str(tmp), metadata=header)
    return path


def read_train_state(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a training checkpoint; any problem raises :class:`CheckpointError` naming the file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Training checkpoint {path} does not exist.")
    hint = (
        "The file is corrupt or truncated (e.g. the disk filled up or it was copied partially). Resume from an "
        "earlier epoch's checkpoint in the same folder, or start a new run; no finished epoch was changed."
    )
    try:
        with safe_open(str(path), framework="pt") as f:
            header = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several exception types
        raise CheckpointError(f"Cannot read training checkpoint {path}: {type(exc).__name__}: {exc}. {hint}") from exc
    if header.get("format") != TRAIN_STATE_FORMAT:
        raise CheckpointError(
            f"{path} is not a zsad training checkpoint (format {header.get('format')!r}); a resume needs a "
            f"checkpoints/epoch_NNN.safetensors file written by zsad train (a prompt checkpoint is not enough)."
        )
    meta_json = header.get("meta", "")
    if _checksum(tensors, meta_json) != header.get("checksum"):
        raise CheckpointError(f"Training checkpoint {path} fails its checksum. {hint}")
    try:
        meta = json.loads(meta_json)
    except json.JSONDecodeError as exc:  # pragma: no cover - covered by the checksum
        raise CheckpointError(f"Training checkpoint {path} has unreadable metadata: {exc}. {hint}") from exc
    return tensors, meta


def optimizer_to_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (``optim.<param>.<key>``) and JSON-ready metadata.

    Example:
        >>> import torch
        >>> p = torch.nn.Parameter(torch.zeros(2)); opt = torch.optim.Adam([p])
        >>> p.grad = torch.ones(2); opt.step()
        >>> tensors, meta = optimizer_to_state(opt)
        >>> sorted(tensors), meta["param_groups"][0]["lr"]
        (['optim.0.exp_avg', 'optim.0.exp_avg_sq', 'optim.0.step'], 0.001)
    """
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Inverse of :func:`optimizer_to_state`: load the saved state into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_to_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The torch (CPU and CUDA), numpy and Python RNG states as tensors + JSON metadata."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss_next = random.getstate()
    meta = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
    }
    return tensors, meta


def rng_from_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Restore the RNG states saved by :func:`rng_to_state` (CUDA states only when CUDA is in use)."""
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        for i, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.to(torch.uint8), i)
    np_meta = meta.get("numpy")
    if np_meta and "rng.numpy" in tensors:
        keys = tensors["rng.numpy"].numpy().astype(np.uint32)
        np.random.set_state((np_meta["kind"], keys, np_meta["pos"], np_meta["has_gauss"], np_meta["cached_gaussian"]))
    py = meta.get("python")
    if py:
        random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
