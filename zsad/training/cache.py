"""Frozen image features, computed once per image and reused every epoch (in memory or on disk).

The backbone is frozen during prompt learning, so an image's features never change: training computes them once
under no-grad. An entry holds what the recipe's heads need (:func:`feature_entry`: the patch tokens, the global
tokens, the tokens of requested layers) and becomes :class:`~zsad.backbones.base.ImageFeatures` again with
:func:`stack_entries`. :class:`MemoryFeatureStore` keeps them in RAM (fp32 on the CPU: ``N x D x 4`` bytes per
image and patch tensor, 5.6 MB for TIPS L/14 at 518); :class:`DiskFeatureCache` writes one ``.safetensors`` file per
image instead, under a folder whose name carries a key of everything the features depend on:

* the dataset (name and description file),
* the backbone: its config (name, checkpoint, options), a digest of its weights, and a hash of the source code of
  its module, of the loaded :mod:`zsad.backbones` modules (the contract, DPAM, text towers) and of :mod:`zsad.io`
  (so a code change invalidates the cache),
* the preprocessing: image size, resize filter, mean/std, EXIF and bit-depth handling, the backbone dtype;
* the features the heads request (layers, windows).

Each entry also records the image's path, size and modification time and is recomputed when they change or when
the file is unreadable. Writes are atomic (temporary file + rename), so an interrupted run leaves no broken entry.

Example:
    >>> import tempfile, torch
    >>> cache = DiskFeatureCache(tempfile.mkdtemp(), {"backbone": "toy", "image_size": 28}, label="toy-28")
    >>> cache.get("a.png", {"size": 1}) is None
    True
    >>> cache.put("a.png", {"size": 1}, {"patches": torch.ones(4, 2)}, (2, 2))
    >>> cache.get("a.png", {"size": 1})[0]["patches"].shape, cache.get("a.png", {"size": 2}) is None
    (torch.Size([4, 2]), True)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from zsad._files import atomic_path, write_json
from zsad.backbones.base import ImageFeatures

__all__ = [
    "MemoryFeatureStore", "DiskFeatureCache", "feature_cache_key", "weights_digest", "file_stamp", "feature_entry",
    "stack_entries",
]

Entry = dict[str, torch.Tensor]


def feature_entry(features: ImageFeatures, index: int) -> Entry:
    """The features of image ``index`` of a batch as named CPU fp32 tensors (``patches``, ``global.<role>``,
    ``layer.<block>``, ``window.<scale>``, ``unprojected``).

    Example:
        >>> f = ImageFeatures({"object": torch.ones(2, 3)}, torch.zeros(2, 4, 3), (2, 2), layers={5: torch.ones(2, 4, 3)})
        >>> sorted(feature_entry(f, 1))
        ['global.object', 'layer.5', 'patches']
    """
    out = {"patches": features.patches[index]}
    out.update({f"global.{role}": g[index] for role, g in features.globals.items()})
    out.update({f"layer.{i}": t[index] for i, t in features.layers.items()})
    out.update({f"window.{s}": w[index] for s, w in features.windows.items()})
    if features.unprojected_patches is not None:
        out["unprojected"] = features.unprojected_patches[index]
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in out.items()}


def stack_entries(entries: list[Entry], grid: tuple[int, int]) -> ImageFeatures:
    """:class:`~zsad.backbones.base.ImageFeatures` of a batch from entries of :func:`feature_entry` (same names).

    Example:
        >>> e = {"patches": torch.zeros(4, 3), "global.object": torch.ones(3)}
        >>> f = stack_entries([e, e], (2, 2))
        >>> f.patches.shape, f.globals["object"].shape
        (torch.Size([2, 4, 3]), torch.Size([2, 3]))
    """
    stacked = {k: torch.stack([e[k] for e in entries]) for k in entries[0]}
    pick = lambda prefix: {k[len(prefix):]: v for k, v in stacked.items() if k.startswith(prefix)}  # noqa: E731
    return ImageFeatures(
        pick("global."),
        stacked["patches"],
        tuple(grid),
        windows={int(k): v for k, v in pick("window.").items()},
        layers={int(k): v for k, v in pick("layer.").items()},
        unprojected_patches=stacked.get("unprojected"),
    )


def _digest(data: bytes | str, size: int = 16) -> str:
    if isinstance(data, str):
        data = data.encode()
    return hashlib.blake2b(data, digest_size=size).hexdigest()


def weights_digest(module: torch.nn.Module) -> str:
    """A digest of every parameter and buffer of a module (names, dtypes, shapes and bytes).

    Example:
        >>> import torch
        >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        >>> weights_digest(a) == weights_digest(a), weights_digest(a) == weights_digest(b)
        (True, False)
    """
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _source_digest(*module_names: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in module_names:
        path = getattr(sys.modules.get(name), "__file__", None)
        h.update(name.encode())
        if path and Path(path).is_file():
            h.update(Path(path).read_bytes())
    return h.hexdigest()


def feature_cache_key(detector, dataset, request=None) -> dict[str, Any]:
    """Everything the cached image features of ``dataset`` depend on, as a JSON-ready dict (see module docs).

    Example:
        >>> from zsad import Detector
        >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_checkpoint=None, image_size=56,
        ...                            backbone_options={"random_config": "tiny"}, device="cpu")
        >>> key = feature_cache_key(det, None)
        >>> key["preprocess"]["image_size"], sorted(key["backbone"])[:3]
        (56, ['checkpoint', 'class', 'code'])
    """
    backbone = detector.backbone
    cfg = detector.config
    spec = backbone.preprocessing
    module = type(backbone).__module__
    key = {
        "dataset": None if dataset is None else {
            "name": dataset.name,
            "source": str(Path(dataset.source or dataset.root).resolve()),
            "split": dataset.split,
        },
        "backbone": {
            "name": cfg.backbone.name,
            "checkpoint": cfg.backbone.checkpoint,
            "options": cfg.backbone.options,
            "class": f"{module}.{type(backbone).__qualname__}",
            "weights": weights_digest(backbone),
            "code": _source_digest(*sorted(m for m in sys.modules if m.startswith("zsad.backbones.")), module,
                                   "zsad.io"),
        },
        "preprocess": {
            **cfg.preprocess.model_dump(mode="json"),
            "mean": list(spec.mean),
            "std": list(spec.std),
            "backbone_resample": spec.resample,
            "dtype": str(detector.dtype),
        },
        "format": 1,
    }
    if request:  # features beyond patches and globals (absent from the key otherwise, so older caches stay valid)
        key["request"] = {"layers": list(request.layers), "windows": list(request.window_scales),
                          "unprojected": request.unprojected_patches}
    return key


def file_stamp(path: str | os.PathLike) -> dict[str, Any]:
    """Identity of an image file for cache validation: absolute path, byte size and modification time (ns).

    Example:
        >>> import tempfile
        >>> p = tempfile.mktemp(); _ = open(p, "wb").write(b"abc")
        >>> file_stamp(p)["size"]
        3
    """
    p = Path(path).resolve()
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class MemoryFeatureStore:
    """Features kept in RAM (CPU tensors) for the duration of a run.

    Example:
        >>> import torch
        >>> store = MemoryFeatureStore()
        >>> store.put("a", {}, {"patches": torch.zeros(4, 2)}, (2, 2)); store.get("a", {})[1]
        (2, 2)
    """

    def __init__(self) -> None:
        self._items: dict[str, tuple[Entry, tuple[int, int]]] = {}

    def get(self, item: str, stamp: dict) -> tuple[Entry, tuple[int, int]] | None:
        return self._items.get(item)

    def grid_of(self, item: str, stamp: dict) -> tuple[int, int] | None:
        """The patch grid of a stored item, or ``None`` when it is not stored."""
        got = self._items.get(item)
        return None if got is None else got[1]

    def put(self, item: str, stamp: dict, entry: Entry, grid: tuple[int, int]) -> None:
        self._items[item] = ({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in entry.items()}, tuple(grid))

    def __len__(self) -> int:
        return len(self._items)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", text).strip("_")[:40] or "x"


class DiskFeatureCache:
    """One ``.safetensors`` file of an image's features (:func:`feature_entry`) under ``root/<label>-<key digest>/``.

    Args:
        root: the cache folder (created when missing).
        key: the JSON-ready dict the features depend on (:func:`feature_cache_key`); written to ``key.json``.
        label: a readable prefix of the sub-folder name (e.g. ``"mvtec-tips-518"``).
    """

    def __init__(self, root: str | os.PathLike, key: dict[str, Any], label: str = "features") -> None:
        text = json.dumps(key, sort_keys=True, default=str)
        self.folder = Path(root).expanduser() / f"{_slug(label)}-{_digest(text, 8)}"
        self.folder.mkdir(parents=True, exist_ok=True)
        key_file = self.folder / "key.json"
        if not key_file.is_file():
            write_json(key_file, key, sort_keys=True, default=str)
        self._warned = False
        self.hits = 0
        self.misses = 0

    def _path(self, item: str) -> Path:
        return self.folder / f"{_digest(item, 12)}.safetensors"

    def _read(self, item: str, stamp: dict, load: bool) -> tuple[Entry | None, tuple[int, int]] | None:
        path = self._path(item)
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                if meta.get("item") != item or json.loads(meta.get("stamp", "null")) != json.loads(json.dumps(stamp)):
                    return None
                grid = tuple(int(v) for v in json.loads(meta["grid"]))
                rows = f.get_slice("patches").get_shape()[0]
                entry = {k: f.get_tensor(k) for k in f.keys()} if load else None
            if len(grid) != 2 or grid[0] * grid[1] != rows:
                raise ValueError(f"grid {grid} does not match {rows} patches")
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is recomputed
            if not self._warned:
                self._warned = True
                warnings.warn(f"Feature cache entry {path} is unreadable ({exc}); it is recomputed.", stacklevel=3)
            return None
        return entry, grid  # type: ignore[return-value]

    def get(self, item: str, stamp: dict) -> tuple[Entry, tuple[int, int]] | None:
        """The cached ``(entry, grid)`` of ``item`` if present, readable and made from the same file, else ``None``."""
        got = self._read(item, stamp, load=True)
        if got is None:
            self.misses += 1
        else:
            self.hits += 1
        return got  # type: ignore[return-value]

    def grid_of(self, item: str, stamp: dict) -> tuple[int, int] | None:
        """The patch grid of a valid entry (reads only the file header), or ``None`` when it must be computed."""
        got = self._read(item, stamp, load=False)
        return None if got is None else got[1]

    def put(self, item: str, stamp: dict, entry: Entry, grid: tuple[int, int]) -> None:
        """Write the features of ``item`` (an entry of :func:`feature_entry`) atomically."""
        from safetensors.torch import save_file

        meta = {"item": item, "stamp": json.dumps(stamp), "grid": json.dumps(list(grid))}
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in entry.items()}
        with atomic_path(self._path(item)) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
