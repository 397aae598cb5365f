"""Results back to the host: copies of scores and maps from the model's device that overlap the next batch.

:func:`to_host` starts the copies and returns a function that waits for them, so that on a GPU the model can run
the next batch while the results of this one travel; :func:`maps_to_host` also resizes maps to each input's size
on the device first, and :func:`scores_to_host` does both for a batch's scores and maps. :func:`one_behind` yields
the results of each batch once the next batch has been started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

__all__ = ["maps_to_host", "one_behind", "scores_to_host", "to_host"]

T = TypeVar("T")


def to_host(tensors: Sequence[Any]) -> Callable[[], list[np.ndarray]]:
    """Start copying tensors to host memory; the returned function waits for them and returns numpy arrays.

    From a GPU the copies go to pinned memory without blocking (so the model can already run the next batch) and
    are then copied out, so that results never hold page-locked memory. On the CPU the arrays share the tensors'
    memory.

    Example:
        >>> import torch
        >>> to_host([torch.ones(2)])()
        [array([1., 1.], dtype=float32)]
    """
    import torch

    if not any(t.device.type == "cuda" for t in tensors):
        arrays = [t.detach().cpu().numpy() for t in tensors]
        return lambda: arrays
    pinned = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True) for t in tensors]
    event = torch.cuda.Event()
    event.record()

    def wait() -> list[np.ndarray]:
        event.synchronize()
        return [p.numpy().copy() for p in pinned]

    return wait


def maps_to_host(maps: Any, sizes: Sequence[tuple[int, int]] | None) -> Callable[[], list[np.ndarray]]:
    """Start copying ``(B, H, W)`` maps to the host, each resized to its ``sizes[i]`` (bilinear) when given.

    Maps of equal target size are resized together. Returns a function that waits and gives one float32 array per
    map (see :func:`to_host`).

    Example:
        >>> import torch
        >>> [m.shape for m in maps_to_host(torch.zeros(2, 8, 8), [(4, 6), (8, 8)])()]
        [(4, 6), (8, 8)]
    """
    import torch.nn.functional as F

    maps = maps.float()
    groups: dict[tuple[int, int], list[int]] = {}
    for i in range(maps.shape[0]):
        groups.setdefault(tuple(maps.shape[-2:]) if sizes is None else tuple(sizes[i]), []).append(i)
    parts = []
    for hw, idx in groups.items():
        part = maps if len(idx) == maps.shape[0] else maps[idx]
        if hw != tuple(maps.shape[-2:]):
            part = F.interpolate(part.unsqueeze(1), size=hw, mode="bilinear", align_corners=False).squeeze(1)
        parts.append(part)
    wait_parts = to_host(parts)

    def wait() -> list[np.ndarray]:
        out: list[Any] = [None] * maps.shape[0]
        for idx, array in zip(groups.values(), wait_parts()):
            for j, i in enumerate(idx):
                out[i] = array[j]
        return out

    return wait


def scores_to_host(scores: Mapping[str, Any], maps: Any, sizes: Sequence[tuple[int, int]] | None
                   ) -> Callable[[], tuple[dict[str, np.ndarray], list[np.ndarray]]]:
    """Start copying a batch's ``(B,)`` scores and ``(B, H, W)`` maps (resized to ``sizes`` when given, see
    :func:`maps_to_host`) to the host; the returned function waits and gives ``({name: float32 (B,)}, [maps])``.

    Example:
        >>> import torch
        >>> scores, maps = scores_to_host({"S1": torch.tensor([0.5, 1.0])}, torch.zeros(2, 4, 4), [(2, 3), (4, 4)])()
        >>> scores["S1"].tolist(), [m.shape for m in maps]
        ([0.5, 1.0], [(2, 3), (4, 4)])
    """
    import torch

    names = list(scores)
    wait_scores = to_host([torch.stack([scores[k].float() for k in names], dim=1)])
    wait_maps = maps_to_host(maps, sizes)

    def wait() -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        (rows,) = wait_scores()
        return {k: rows[:, j] for j, k in enumerate(names)}, wait_maps()

    return wait


def one_behind(source: Iterator[Callable[[], Iterable[T]]], lag: bool) -> Iterator[T]:
    """Yield from each item of ``source`` (a function giving the results of one batch), one item late when ``lag``:
    an item's results are waited for only after the next item was taken (so its copies overlap the next batch's
    work). An error taking the next item is raised after the results of the items before it.

    Example:
        >>> list(one_behind(iter([lambda: [1, 2], lambda: [3]]), lag=True))
        [1, 2, 3]
    """
    pending: Callable[[], Iterable[T]] | None = None
    while True:
        try:
            item = next(source, None)
        except Exception:
            if pending is not None:  # the results before the failing batch come first
                yield from pending()
            raise
        if pending is not None:
            yield from pending()
            pending = None
        if item is None:
            return
        if lag:
            pending = item
        else:
            yield from item()
