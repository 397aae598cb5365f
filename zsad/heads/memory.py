"""Normal references (few-shot): a head-side memory of features of normal images, per class.

A :class:`ReferenceMemory` turns the features of normal reference images into stored entries
(:meth:`~ReferenceMemory.entries`), keeps them per class (:meth:`~ReferenceMemory.add`,
:meth:`~ReferenceMemory.clear`; the detector's few-shot state, persisted by ``Detector.save``), and scores test
features against one class's bank (:meth:`~ReferenceMemory.evidence`): a ``(B, N)`` map on the patch grid in
``[0, 1]``, higher = less like any reference. The scorer (:mod:`zsad.heads.scoring`) fuses it with the zero-shot
outputs by one rule for every recipe:

.. math::

    \\text{map} = \\tfrac12\\,(\\text{map}_{zs} + \\text{render}(E)), \\qquad
    \\text{score}_h = \\tfrac12\\,(\\text{score}_{h,zs} + \\max_j E_j)

for every image head ``h``, where ``render`` is the pixel head's own upsampling (and smoothing) of a grid map.

The generic memory (``patch_memory``, the default of every recipe) stores the backbone's patch features and uses
the cosine nearest neighbour over every stored patch of the class (all positions of all references):

.. math::

    E_j = \\min_{m} \\frac{1 - \\cos(z_j, r_m)}{2}

computed on the detector's device in chunks of the bank (:func:`nearest_distance`), so a bank of 100k reference
patches needs no more than ``max_elements`` similarities at a time. WinCLIP's own rule (``winclip_memory``) is in
:mod:`zsad.heads.winclip`.

Example:
    >>> import torch
    >>> from zsad.backbones.base import ImageFeatures
    >>> f = lambda x: ImageFeatures({}, torch.nn.functional.normalize(x, dim=-1), (1, 2))
    >>> mem = PatchMemory()
    >>> bank = mem.add("nut", mem.entries(f(torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))), images=1)
    >>> mem.evidence(f(torch.tensor([[[1.0, 0.0], [-1.0, 0.0]]])), mem.bank("nut")).tolist()
    [[0.0, 0.5]]
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from zsad.backbones.base import FeatureRequest, ImageFeatures
from zsad.errors import CheckpointError, ConfigError

__all__ = ["ReferenceBank", "ReferenceMemory", "PatchMemory", "nearest_distance", "DEFAULT_MAX_ELEMENTS"]

#: similarities computed at once by :func:`nearest_distance` (2**25 float32 = 128 MiB)
DEFAULT_MAX_ELEMENTS = 2**25
_FORMAT = "zsad-references"


def nearest_distance(queries: torch.Tensor, bank: torch.Tensor, max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """``min_m (1 - cos(q, r_m)) / 2`` of L2-normalised queries ``(B, Q, D)`` against a bank ``(M, D)``: ``(B, Q)``.

    The bank is processed in chunks so that at most ``max_elements`` similarities exist at once, on the device
    of the tensors.

    Example:
        >>> q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        >>> nearest_distance(q, torch.tensor([[1.0, 0.0], [0.6, 0.8]]), max_elements=2)
        tensor([[0.0000, 0.1000]])
    """
    if bank.ndim != 2 or bank.shape[0] == 0:
        raise ConfigError(f"A reference bank must be a non-empty (M, D) tensor, got shape {tuple(bank.shape)}.")
    b, q, _ = queries.shape
    flat = queries.float().reshape(b * q, -1)
    chunk = max(1, int(max_elements) // max(1, b * q))
    best = None
    for start in range(0, bank.shape[0], chunk):
        sims = (flat @ bank[start : start + chunk].float().t()).max(dim=-1).values
        best = sims if best is None else torch.maximum(best, sims)
    return ((1 - best) / 2).reshape(b, q)


@dataclass
class ReferenceBank:
    """The stored entries of one class: name -> ``(rows, dim)`` tensors, and how many images made them."""

    tensors: dict[str, torch.Tensor]
    images: int

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __contains__(self, name: object) -> bool:
        return name in self.tensors


class ReferenceMemory(nn.Module, abc.ABC):
    """Head-side memory of normal references per class (see the module docstring).

    Subclasses implement :meth:`entries` and :meth:`evidence` and may set ``feature_request`` (features the
    memory needs from reference and test images). The per-class banks live here; :meth:`save` / :meth:`load`
    persist them as safetensors.

    Args:
        max_elements: similarities computed at once in the nearest-neighbour search.
    """

    feature_request: FeatureRequest = FeatureRequest()

    def __init__(self, max_elements: int = DEFAULT_MAX_ELEMENTS) -> None:
        super().__init__()
        if int(max_elements) < 1:
            raise ConfigError(f"max_elements must be >= 1, got {max_elements}.")
        self.max_elements = int(max_elements)
        self._banks: dict[str, ReferenceBank] = {}

    # -- what subclasses implement ----------------------------------------------------------------------------
    @abc.abstractmethod
    def entries(self, features: ImageFeatures) -> dict[str, torch.Tensor]:
        """Rows to store for a batch of reference images: name -> ``(rows, dim)``."""

    @abc.abstractmethod
    def evidence(self, features: ImageFeatures, bank: ReferenceBank) -> torch.Tensor:
        """``(B, N)`` reference evidence on the patch grid of ``features`` (higher = farther from every reference)."""

    # -- per-class state --------------------------------------------------------------------------------------
    def add(self, class_name: str, entries: dict[str, torch.Tensor], images: int) -> ReferenceBank:
        """Append entries (from :meth:`entries`) of ``images`` reference images to the bank of ``class_name``."""
        old = self._banks.get(class_name)
        if old is not None and set(old.tensors) != set(entries):
            raise ConfigError(
                f"The references of class {class_name!r} hold {sorted(old.tensors)} but the new ones "
                f"{sorted(entries)}; clear_references({class_name!r}) first."
            )
        tensors = {k: v.detach().float() if old is None else torch.cat([old.tensors[k], v.detach().float()])
                   for k, v in entries.items()}
        bank = ReferenceBank(tensors, images + (old.images if old is not None else 0))
        self._banks[class_name] = bank
        return bank

    def clear(self, class_name: str | None = None) -> None:
        """Forget the references of one class, or of every class (``None``)."""
        if class_name is None:
            self._banks.clear()
        else:
            self._banks.pop(class_name, None)

    def bank(self, class_name: str) -> ReferenceBank | None:
        """The bank of ``class_name``, or ``None`` (that class is scored zero-shot)."""
        return self._banks.get(class_name)

    def counts(self) -> dict[str, int]:
        """Reference images per class."""
        return {c: b.images for c, b in self._banks.items()}

    # -- persistence ------------------------------------------------------------------------------------------
    def save(self, path: str | Path, kind: str) -> Path:
        """Write every bank to a ``.safetensors`` file (atomically); ``kind`` names this memory in the metadata."""
        from safetensors.torch import save_file

        from zsad._files import atomic_path

        classes = list(self._banks)
        tensors = {f"{i}/{name}": t.detach().float().cpu().contiguous()
                   for i, c in enumerate(classes) for name, t in self._banks[c].tensors.items()}
        meta = {"format": _FORMAT, "memory": kind,
                "classes": json.dumps([[c, self._banks[c].images] for c in classes])}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return Path(path)

    def load(self, path: str | Path, kind: str, device: torch.device | str = "cpu") -> None:
        """Replace the banks by those of a file written by :meth:`save` for the same ``kind`` of memory."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (OSError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"Cannot read the references file {path}: {type(exc).__name__}: {exc}.") from exc
        if meta.get("format") != _FORMAT:
            raise CheckpointError(f"{path} is not a zsad references file (format {meta.get('format')!r}).")
        if meta.get("memory") != kind:
            raise CheckpointError(
                f"{path} holds references of the {meta.get('memory')!r} memory but this detector uses {kind!r}; "
                "add the references again with Detector.add_references."
            )
        banks: dict[str, ReferenceBank] = {}
        for i, (name, images) in enumerate(json.loads(meta["classes"])):
            prefix = f"{i}/"
            banks[name] = ReferenceBank(
                {k[len(prefix):]: v.to(device) for k, v in tensors.items() if k.startswith(prefix)}, int(images)
            )
        self._banks = banks


class PatchMemory(ReferenceMemory):
    """The generic memory: the backbone's patch features, cosine nearest neighbour (see the module docstring)."""

    def entries(self, features: ImageFeatures) -> dict[str, torch.Tensor]:
        return {"patches": features.patches.reshape(-1, features.patches.shape[-1])}

    def evidence(self, features: ImageFeatures, bank: ReferenceBank) -> torch.Tensor:
        return nearest_distance(features.patches, bank["patches"], self.max_elements)


def patch_memory(max_elements: int = DEFAULT_MAX_ELEMENTS) -> PatchMemory:
    """Registry factory of the generic ``patch_memory``."""
    return PatchMemory(max_elements)
