"""Reading and writing learnable-prompt checkpoints, and telling their kinds apart.

Kinds (what a file holds, whatever its format):

* ``tipsomaly`` -- prompt tokens ``T_n`` and ``T_a`` (``(n_tokens, width)`` float32): zsad ``.safetensors``, ``.npz``,
  or the official Tipsomaly ``.pth`` (a pickled ``torch.nn.ParameterList([T_n, T_a])`` or
  ``{"learnable_prompts": ...}``);
* ``anomalyclip`` -- an AnomalyCLIP prompt learner: the normal and abnormal contexts ``ctx_pos`` / ``ctx_neg``
  (``n_ctx`` tokens each) and the deep prompts ``compound_prompts_text.0 .. depth-2`` (``t_n_ctx`` tokens each):
  the official ``train.py`` checkpoint ``{'prompt_learner': state_dict}`` (``.pth``, typically saved from a GPU),
  or zsad ``.safetensors`` / ``.npz`` with those names.

``.pth`` files are read with ``torch.load(weights_only=True, map_location="cpu")`` allowing only
``ParameterList``: nothing arbitrary is unpickled, and tensors saved on a GPU load on the CPU. A loader given a file
of the other kind refuses it and names that kind.

Built-in names: ``tipsomaly-mvtec`` and ``tipsomaly-visa`` (the released epoch-2 prompts for TIPS v1 L/14-HR,
trained on MVTec-AD / VisA; MIT licence, see ``zsad/assets/prompts/NOTICE``), and ``anomalyclip-visa`` /
``anomalyclip-mvtec`` (the released AnomalyCLIP prompt learners, trained on VisA / MVTec-AD; MIT licence;
downloaded from the official repository on first use, see ``zsad weights list``).

Example:
    >>> t_n, t_a, meta = load_prompt_checkpoint("tipsomaly-mvtec")
    >>> tuple(t_n.shape), meta["trained_on"]
    ((8, 1024), 'mvtec')
    >>> read_prompt_file("tipsomaly-visa").kind
    'tipsomaly'
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zsad._boundary import check_finite, reading
from zsad.errors import CheckpointError

__all__ = [
    "BUILTIN_PROMPTS",
    "PromptFile",
    "AnomalyClipTokens",
    "read_prompt_file",
    "load_prompt_checkpoint",
    "save_prompt_checkpoint",
    "load_anomalyclip_checkpoint",
    "save_anomalyclip_checkpoint",
    "convert_official_checkpoint",
]

_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "prompts"
BUILTIN_PROMPTS = {
    "tipsomaly-mvtec": _ASSETS / "tipsomaly_mvtec_epoch2.safetensors",
    "tipsomaly-visa": _ASSETS / "tipsomaly_visa_epoch2.safetensors",
}
_DEEP = re.compile(r"^compound_prompts_text\.(\d+)$")
#: what each kind holds and where it is used (for messages)
_KINDS = {
    "tipsomaly": ("Tipsomaly prompt tokens (T_n, T_a)", "prompts.strategy 'decoupled' or 'learnable' (recipe tipsomaly)"),
    "anomalyclip": (
        "an AnomalyCLIP prompt learner (ctx_pos, ctx_neg, compound_prompts_text.*)",
        "prompts.strategy 'object_agnostic' (recipe anomalyclip)",
    ),
}
_EXPECTED = (
    "Expected float tensors T_n and T_a of shape (n_tokens, width) (zsad .safetensors or .npz) or an official "
    "Tipsomaly ParameterList (.pth); the file may be corrupt or truncated."
)
_EXPECTED_ANOMALYCLIP = (
    "Expected an AnomalyCLIP prompt learner: the official train.py checkpoint {'prompt_learner': state_dict} "
    "(epoch_15.pth) or its zsad conversion (`zsad prompts epoch_15.pth prompts.safetensors`)."
)


@dataclass
class PromptFile:
    """A prompt checkpoint as read: where from, which kind, its tensors and string metadata."""

    path: Path
    kind: str | None
    tensors: dict[str, Any]
    meta: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """What the file holds, in words (for messages)."""
        if self.kind in _KINDS:
            return _KINDS[self.kind][0]
        names = sorted(self.tensors)
        return f"no prompt tokens of a known kind (tensors {names[:10] or 'none'})"

    def refuse(self, wanted: str, expected: str) -> CheckpointError:
        """The error for a file of another kind than ``wanted``, naming its kind and where it is used."""
        if self.kind in _KINDS:
            return CheckpointError(
                f"Prompt checkpoint {self.path} holds {self.describe()}, not {_KINDS[wanted][0]}; use it with "
                f"{_KINDS[self.kind][1]}, or give {wanted} prompts here. {expected}"
            )
        return CheckpointError(f"Prompt checkpoint {self.path} holds {self.describe()}. {expected}")


def _kind(names) -> str | None:
    names = set(names)
    if {"T_n", "T_a"} <= names:
        return "tipsomaly"
    if {"ctx_pos", "ctx_neg"} <= names:
        return "anomalyclip"
    return None


def _resolve(spec: str | Path) -> Path:
    """A built-in name (asset or weights-table prompt checkpoint, downloaded if needed) or a path."""
    name = str(spec)
    if name in BUILTIN_PROMPTS:
        return BUILTIN_PROMPTS[name]
    from zsad.weights import ensure_checkpoint, get_checkpoint, known_checkpoint_names

    released = known_checkpoint_names("prompts")
    if name in released:
        ckpt = get_checkpoint(name)
        return ensure_checkpoint(name) / ckpt.files[0].filename
    path = Path(spec).expanduser()
    if not path.is_file():
        builtins = [*BUILTIN_PROMPTS, *released]
        close = difflib.get_close_matches(name, builtins, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise CheckpointError(
            f"Prompt checkpoint {name!r} is neither a file nor a built-in name.{hint} Built-in prompts: "
            f"{', '.join(builtins)}; files may be zsad .safetensors, official .pth (Tipsomaly, AnomalyCLIP) or .npz."
        )
    return path


def read_prompt_file(spec: str | Path) -> PromptFile:
    """Read a prompt checkpoint of any kind and format (see the module docstring) without interpreting it.

    Tensors of ``.npz`` files stay numpy arrays (checked for non-finite values and non-numbers); the kind is
    told from the tensor names.
    """
    path = _resolve(spec)
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
                tensors: dict[str, Any] = {k: f.get_tensor(k) for k in f.keys()}
        elif suffix in (".pth", ".pt"):
            tensors, meta = _read_pth(path)
        else:
            with np.load(path, allow_pickle=False) as data:
                tensors = {name: data[name] for name in data.files}
            check_finite(tensors, f"Prompt checkpoint {path}", fix=_EXPECTED)
            meta = {"format": "npz"}
    return PromptFile(path, _kind(tensors), tensors, meta)


def _read_pth(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    with torch.serialization.safe_globals([torch.nn.ParameterList]):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("prompt_learner"), dict):  # official AnomalyCLIP train.py
        return dict(obj["prompt_learner"]), {"format": "anomalyclip-pth"}
    if isinstance(obj, dict) and "learnable_prompts" not in obj:
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj), {"format": "pth"}  # a bare state dict
        raise CheckpointError(f"{path} is a dict without 'learnable_prompts' (keys: {sorted(obj)[:10]}).")
    if isinstance(obj, dict):
        obj = obj["learnable_prompts"]
    params = list(obj) if isinstance(obj, (torch.nn.ParameterList, list, tuple)) else None
    if params is None or len(params) != 2:
        raise CheckpointError(
            f"{path} does not hold the official [T_n, T_a] ParameterList (got {type(obj).__name__})."
        )
    return {"T_n": params[0], "T_a": params[1]}, {"format": "tipsomaly-pth"}


def _float_tensor(path: Path, name: str, value: Any, expected: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.asarray(value, dtype=np.float32))
    if not isinstance(value, torch.Tensor) or value.is_meta or not value.is_floating_point():
        what = "a meta-device tensor without values" if isinstance(value, torch.Tensor) and value.is_meta else (
            f"{value.dtype} values" if isinstance(value, torch.Tensor) else type(value).__name__)
        raise CheckpointError(f"Prompt checkpoint {path}: {name!r} is {what}, not float numbers. {expected}")
    return value.detach().float().clone()


# -- Tipsomaly ------------------------------------------------------------------------------------------------------
def load_prompt_checkpoint(spec: str | Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """Return ``(T_n, T_a, metadata)`` of Tipsomaly prompt tokens from a built-in name or a ``.safetensors`` /
    ``.pth`` / ``.npz`` file; a file of another kind (e.g. an AnomalyCLIP prompt learner) is refused, naming it."""
    file = read_prompt_file(spec)
    path = file.path
    if file.kind == "anomalyclip":
        raise file.refuse("tipsomaly", _EXPECTED)
    missing = [n for n in ("T_n", "T_a") if n not in file.tensors]
    if missing:
        raise CheckpointError(
            f"Prompt checkpoint {path} has no tensor {' or '.join(repr(m) for m in missing)} (it holds "
            f"{sorted(file.tensors)[:10] or 'no tensors'}). {_EXPECTED}"
        )
    t_n, t_a = (_float_tensor(path, n, file.tensors[n], _EXPECTED) for n in ("T_n", "T_a"))
    if t_n.ndim != 2 or t_n.shape != t_a.shape or 0 in t_n.shape:
        raise CheckpointError(
            f"Prompt checkpoint {path} holds T_n {tuple(t_n.shape)} and T_a {tuple(t_a.shape)}; both must be "
            "(n_tokens, width) with the same shape and at least one token."
        )
    check_finite({"T_n": t_n, "T_a": t_a}, f"Prompt checkpoint {path}")
    return t_n, t_a, file.meta


def save_prompt_checkpoint(path: str | Path, t_n: torch.Tensor, t_a: torch.Tensor, metadata: dict | None = None) -> Path:
    """Write ``T_n``/``T_a`` to a zsad ``.safetensors`` file atomically; metadata values are JSON-encoded."""
    return _save(path, {"T_n": t_n, "T_a": t_a}, metadata)


def _save(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict | None) -> Path:
    from safetensors.torch import save_file

    from zsad._files import atomic_path

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    cpu = {k: t.detach().float().cpu().contiguous() for k, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata=meta)
    return Path(path)


# -- AnomalyCLIP ----------------------------------------------------------------------------------------------------
@dataclass
class AnomalyClipTokens:
    """The learnable tensors of an AnomalyCLIP prompt learner.

    Attributes:
        ctx_pos: ``(n_ctx, width)`` context of the normal sentence.
        ctx_neg: ``(n_ctx, width)`` context of the abnormal sentence.
        deep: the deep prompts, ``(t_n_ctx, width)`` each, for text blocks ``1 .. depth - 1``.
        meta: string metadata of the file.
    """

    ctx_pos: torch.Tensor
    ctx_neg: torch.Tensor
    deep: tuple[torch.Tensor, ...]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def design(self) -> dict[str, int]:
        """``n_ctx``, ``depth`` and ``t_n_ctx`` as the shapes say (``t_n_ctx`` 0 without deep prompts)."""
        t = int(self.deep[0].shape[0]) if self.deep else 0
        return {"n_ctx": int(self.ctx_pos.shape[0]), "depth": 1 + len(self.deep), "t_n_ctx": t}

    @property
    def width(self) -> int:
        return int(self.ctx_pos.shape[1])

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors under their official names (2-D), as a zsad prompt checkpoint stores them."""
        out = {"ctx_pos": self.ctx_pos, "ctx_neg": self.ctx_neg}
        out.update({f"compound_prompts_text.{i}": t for i, t in enumerate(self.deep)})
        return out


def _context(path: Path, name: str, value: Any) -> torch.Tensor:
    t = _float_tensor(path, name, value, _EXPECTED_ANOMALYCLIP)
    if t.ndim == 4 and t.shape[:2] == (1, 1):  # official (n_cls=1, n_templates=1, n_ctx, width)
        t = t[0, 0]
    if t.ndim != 2 or 0 in t.shape:
        raise CheckpointError(
            f"Prompt checkpoint {path}: {name!r} has shape {tuple(t.shape)}; expected (n_ctx, width) or the official "
            f"(1, 1, n_ctx, width). {_EXPECTED_ANOMALYCLIP}"
        )
    return t.contiguous()


def load_anomalyclip_checkpoint(spec: str | Path) -> AnomalyClipTokens:
    """Read an AnomalyCLIP prompt learner (official ``.pth``, zsad ``.safetensors`` / ``.npz``, or a built-in name).

    The design (``n_ctx``, ``depth``, ``t_n_ctx``) is read from the shapes. What the official file holds besides the
    learnable tensors is not needed: ``compound_prompt_projections.*`` are never used by the official forward, and
    the ``token_prefix_*`` / ``token_suffix_*`` / ``tokenized_prompts_*`` buffers are the token embeddings of the
    two sentences, which the backbone recomputes. A file of another kind is refused, naming it.

    Example:
        >>> import tempfile, torch
        >>> p = save_anomalyclip_checkpoint(tempfile.mktemp(suffix=".safetensors"), AnomalyClipTokens(
        ...     torch.zeros(12, 8), torch.ones(12, 8), tuple(torch.zeros(4, 8) for _ in range(8))))
        >>> load_anomalyclip_checkpoint(p).design
        {'n_ctx': 12, 'depth': 9, 't_n_ctx': 4}
    """
    file = read_prompt_file(spec)
    path = file.path
    if file.kind != "anomalyclip":
        raise file.refuse("anomalyclip", _EXPECTED_ANOMALYCLIP)
    ctx_pos, ctx_neg = _context(path, "ctx_pos", file.tensors["ctx_pos"]), _context(path, "ctx_neg", file.tensors["ctx_neg"])
    if ctx_pos.shape != ctx_neg.shape:
        raise CheckpointError(
            f"Prompt checkpoint {path} holds ctx_pos {tuple(ctx_pos.shape)} and ctx_neg {tuple(ctx_neg.shape)}; both "
            f"must be (n_ctx, width) with the same shape. {_EXPECTED_ANOMALYCLIP}"
        )
    found = sorted(int(m.group(1)) for m in map(_DEEP.match, file.tensors) if m)
    if found != list(range(len(found))):
        raise CheckpointError(
            f"Prompt checkpoint {path} holds deep prompts compound_prompts_text.{found}; expected 0, 1, 2, ... without "
            f"gaps. {_EXPECTED_ANOMALYCLIP}"
        )
    deep = tuple(_float_tensor(path, f"compound_prompts_text.{i}", file.tensors[f"compound_prompts_text.{i}"],
                               _EXPECTED_ANOMALYCLIP).contiguous() for i in found)
    shapes = {tuple(t.shape) for t in deep}
    if deep and (len(shapes) != 1 or deep[0].ndim != 2 or deep[0].shape[1] != ctx_pos.shape[1] or 0 in deep[0].shape):
        raise CheckpointError(
            f"Prompt checkpoint {path} holds deep prompts of shapes {sorted(shapes)} for contexts {tuple(ctx_pos.shape)}; "
            f"each must be (t_n_ctx, {ctx_pos.shape[1]}). {_EXPECTED_ANOMALYCLIP}"
        )
    tokens = AnomalyClipTokens(ctx_pos, ctx_neg, deep, file.meta)
    check_finite(tokens.tensors(), f"Prompt checkpoint {path}")
    return tokens


def save_anomalyclip_checkpoint(path: str | Path, tokens: AnomalyClipTokens, metadata: dict | None = None) -> Path:
    """Write an AnomalyCLIP prompt learner to a zsad ``.safetensors`` file atomically (with its design as metadata)."""
    meta = {"format": "zsad-prompts", "method": "anomalyclip", **{k: str(v) for k, v in tokens.design.items()}}
    return _save(path, tokens.tensors(), {**meta, **(metadata or {})})


def convert_official_checkpoint(src: str | Path, dest: str | Path, **metadata: str) -> Path:
    """Convert an official prompt checkpoint (Tipsomaly ``.pth`` or AnomalyCLIP ``epoch_N.pth``) to zsad
    ``.safetensors``, without arbitrary unpickling; the kind is recognised from the file's tensors.

    For AnomalyCLIP only the learnable tensors are kept (see :func:`load_anomalyclip_checkpoint`).
    """
    file = read_prompt_file(src)
    info = {"format": "zsad-prompts", "converted_from": file.path.name, **metadata}
    if file.kind == "anomalyclip":
        dropped = {re.sub(r"\.\d+(?=\.|$)", ".*", n) for n in file.tensors
                   if n not in ("ctx_pos", "ctx_neg") and not _DEEP.match(n)}
        if dropped:
            info["dropped"] = ", ".join(sorted(dropped))
        return save_anomalyclip_checkpoint(dest, load_anomalyclip_checkpoint(file.path), info)
    t_n, t_a, _ = load_prompt_checkpoint(file.path)
    return save_prompt_checkpoint(dest, t_n, t_a, info)
