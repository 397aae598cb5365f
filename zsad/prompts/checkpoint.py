"""Reading and writing learnable-prompt checkpoints.

Formats:

* zsad ``.safetensors``: tensors ``T_n`` and ``T_a`` (``(n_tokens, width)`` float32) and string metadata.
* official Tipsomaly ``.pth``: a pickled ``torch.nn.ParameterList([T_n, T_a])`` (or ``{"learnable_prompts": ...}``),
  read with ``torch.load(weights_only=True)`` allowing only ``ParameterList``: arbitrary objects are never unpickled.
* ``.npz`` with arrays ``T_n`` and ``T_a``.
* built-in names: ``tipsomaly-mvtec`` and ``tipsomaly-visa`` (the released epoch-2 prompts for TIPS v1 L/14-HR,
  trained on MVTec-AD / VisA; MIT licence, see ``zsad/assets/prompts/NOTICE``).

Example:
    >>> t_n, t_a, meta = load_prompt_checkpoint("tipsomaly-mvtec")
    >>> tuple(t_n.shape), meta["trained_on"]
    ((8, 1024), 'mvtec')
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import numpy as np
import torch

from zsad._boundary import check_finite, reading
from zsad.errors import CheckpointError

__all__ = ["load_prompt_checkpoint", "save_prompt_checkpoint", "convert_official_checkpoint", "BUILTIN_PROMPTS"]

_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "prompts"
BUILTIN_PROMPTS = {
    "tipsomaly-mvtec": _ASSETS / "tipsomaly_mvtec_epoch2.safetensors",
    "tipsomaly-visa": _ASSETS / "tipsomaly_visa_epoch2.safetensors",
}


def load_prompt_checkpoint(spec: str | Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """Return ``(T_n, T_a, metadata)`` from a built-in name or a ``.safetensors`` / ``.pth`` / ``.npz`` file."""
    path = BUILTIN_PROMPTS.get(str(spec), Path(spec).expanduser())
    if not path.is_file():
        close = difflib.get_close_matches(str(spec), BUILTIN_PROMPTS, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise CheckpointError(
            f"Prompt checkpoint {str(spec)!r} is neither a file nor a built-in name.{hint} Built-in prompts: "
            f"{', '.join(BUILTIN_PROMPTS)}; files may be zsad .safetensors, official Tipsomaly .pth or .npz."
        )
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".pth", ".pt", ".npz"):
        raise CheckpointError(
            f"Unknown prompt checkpoint type {path.name!r}: use .safetensors (zsad), .pth (official) or .npz."
        )
    with reading(path, CheckpointError, what="prompt checkpoint", fix=_EXPECTED):
        if suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                _require_names(path, set(f.keys()))
                t_n, t_a = f.get_tensor("T_n"), f.get_tensor("T_a")
        elif suffix in (".pth", ".pt"):
            t_n, t_a = _load_official_pth(path)
            meta = {"format": "tipsomaly-pth"}
        else:
            with np.load(path, allow_pickle=False) as data:
                _require_names(path, set(data.files))
                arrays = {name: data[name] for name in ("T_n", "T_a")}
            check_finite(arrays, f"Prompt checkpoint {path}", fix=_EXPECTED)
            t_n, t_a = (torch.from_numpy(np.asarray(arrays[n], dtype=np.float32)) for n in ("T_n", "T_a"))
            meta = {"format": "npz"}
    for name, t in (("T_n", t_n), ("T_a", t_a)):
        if not isinstance(t, torch.Tensor) or t.is_meta or not t.is_floating_point():
            what = "a meta-device tensor without values" if isinstance(t, torch.Tensor) and t.is_meta else (
                f"{t.dtype} values" if isinstance(t, torch.Tensor) else type(t).__name__)
            raise CheckpointError(f"Prompt checkpoint {path}: {name!r} is {what}, not float numbers. {_EXPECTED}")
    t_n, t_a = t_n.detach().float().clone(), t_a.detach().float().clone()
    if t_n.ndim != 2 or t_n.shape != t_a.shape or 0 in t_n.shape:
        raise CheckpointError(
            f"Prompt checkpoint {path} holds T_n {tuple(t_n.shape)} and T_a {tuple(t_a.shape)}; both must be "
            "(n_tokens, width) with the same shape and at least one token."
        )
    check_finite({"T_n": t_n, "T_a": t_a}, f"Prompt checkpoint {path}")
    return t_n, t_a, meta


_EXPECTED = (
    "Expected float tensors T_n and T_a of shape (n_tokens, width) (zsad .safetensors or .npz) or an official "
    "Tipsomaly ParameterList (.pth); the file may be corrupt or truncated."
)


def _require_names(path: Path, names: set[str]) -> None:
    missing = [n for n in ("T_n", "T_a") if n not in names]
    if missing:
        raise CheckpointError(
            f"Prompt checkpoint {path} has no tensor {' or '.join(repr(m) for m in missing)} (it holds "
            f"{sorted(names)[:10] or 'no tensors'}). {_EXPECTED}"
        )


def _load_official_pth(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.serialization.safe_globals([torch.nn.ParameterList]):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        if "learnable_prompts" not in obj:
            raise CheckpointError(f"{path} is a dict without 'learnable_prompts' (keys: {sorted(obj)[:10]}).")
        obj = obj["learnable_prompts"]
    params = list(obj) if isinstance(obj, (torch.nn.ParameterList, list, tuple)) else None
    if params is None or len(params) != 2:
        raise CheckpointError(
            f"{path} does not hold the official [T_n, T_a] ParameterList (got {type(obj).__name__})."
        )
    return params[0], params[1]


def save_prompt_checkpoint(path: str | Path, t_n: torch.Tensor, t_a: torch.Tensor, metadata: dict | None = None) -> Path:
    """Write ``T_n``/``T_a`` to a zsad ``.safetensors`` file atomically; metadata values are JSON-encoded."""
    from safetensors.torch import save_file

    from zsad._files import atomic_path

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    tensors = {"T_n": t_n.detach().float().cpu().contiguous(), "T_a": t_a.detach().float().cpu().contiguous()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def convert_official_checkpoint(src: str | Path, dest: str | Path, **metadata: str) -> Path:
    """Convert an official Tipsomaly ``.pth`` prompt file to zsad ``.safetensors`` (no arbitrary unpickling)."""
    t_n, t_a, _ = load_prompt_checkpoint(src)
    return save_prompt_checkpoint(dest, t_n, t_a, {"format": "zsad-prompts", "converted_from": Path(src).name, **metadata})
