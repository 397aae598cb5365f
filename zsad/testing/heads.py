"""Contract checks of scoring heads and reference memories."""

from __future__ import annotations

from typing import Any

import torch

from zsad.testing._common import _ATOL, _diff, _expect, _fail


# ------------------------------------------------------------------------------------------------------------
# heads
# ------------------------------------------------------------------------------------------------------------
def _probs(p_abnormal, shape: tuple[int, ...], gen) -> torch.Tensor:
    pa = torch.full((*shape, 1), p_abnormal) if isinstance(p_abnormal, float) else torch.rand(*shape, 1, generator=gen)
    return torch.cat([1 - pa, pa], dim=-1)


def _score_inputs(p_abnormal: torch.Tensor | float, request=None, batch: int = 3, grid: tuple[int, int] = (4, 5), gen=None):
    """ScoreInputs of ``batch`` images: random probabilities, or uniformly ``p_abnormal``, with what ``request`` asks."""
    from zsad.backbones.base import sliding_windows
    from zsad.heads.base import ScoreInputs

    n = grid[0] * grid[1]
    g = _probs(p_abnormal, (batch,), gen)
    windows = {s: _probs(p_abnormal, (batch, sliding_windows(grid, s).shape[0]), gen)
               for s in getattr(request, "window_scales", ())}
    layers = {i: _probs(p_abnormal, (batch, n), gen) for i in getattr(request, "layers", ())}
    return ScoreInputs({"object": g, "spatial": g.flip(0).contiguous()}, _probs(p_abnormal, (batch, n), gen), grid,
                       windows, layers)


def _one_image(x, index: int):
    from zsad.heads.base import ScoreInputs

    pick = lambda d: {k: v[index : index + 1] for k, v in d.items()}  # noqa: E731
    return ScoreInputs(pick(x.global_probs), x.patch_probs[index : index + 1], x.grid, pick(x.window_probs),
                       pick(x.layer_probs))


def _build_head(head: Any):
    if isinstance(head, str):
        from zsad.components import create_head

        return create_head(head)
    if not isinstance(head, torch.nn.Module) and callable(head):
        return head()
    return head


def check_head(head: Any) -> None:
    """Check an image head, a pixel head or a reference memory against its contract (:mod:`zsad.heads`).

    ``head`` is a head, a zero-argument factory, or a registered name. Image heads (``ScoreInputs -> (B,)``) and
    pixel heads (``ScoreInputs, size -> (B, H, W)``, and ``render``) get inputs holding what their
    ``feature_request`` asks for; checked are shapes, finite floating outputs, determinism, batch independence and
    that uniformly more abnormal inputs never score lower. Memories are checked by :func:`check_memory`.

    Example:
        >>> check_head("pixel_map")
        >>> check_head("winclip_memory")
    """
    from zsad.backbones.base import FeatureRequest
    from zsad.heads.base import ImageHead, PixelHead
    from zsad.heads.memory import ReferenceMemory

    head = _build_head(head)
    name = type(head).__name__
    if isinstance(head, ReferenceMemory):
        return check_memory(head)
    if not isinstance(head, (ImageHead, PixelHead)):
        _fail(f"{name} is neither a zsad.heads.base.ImageHead, a PixelHead nor a ReferenceMemory; subclass one of them.")
    request = head.feature_request
    _expect(isinstance(request, FeatureRequest),
            f"{name}.feature_request is a {type(request).__name__}, not a zsad.backbones.base.FeatureRequest.")
    gen = torch.Generator().manual_seed(3)
    x = _score_inputs(torch.empty(0), request, gen=gen)
    low, high = _score_inputs(0.1, request), _score_inputs(0.9, request)
    if isinstance(head, ImageHead):
        out = head(x)
        _expect(isinstance(out, torch.Tensor) and tuple(out.shape) == (3,),
                f"{name}(ScoreInputs of 3 images) returned {getattr(out, 'shape', type(out).__name__)}, expected (3,).")
        _expect(out.is_floating_point() and bool(torch.isfinite(out).all()),
                f"{name} returned non-float or non-finite scores: {out}.")
        _expect(_diff(head(x), out) <= _ATOL, f"{name} is not deterministic.")
        _expect(_diff(head(_one_image(x, 1))[0], out[1]) <= 1e-5, f"{name}: an image's score depends on the other images.")
        low, high = head(low), head(high)
        _expect(bool((high >= low).all()), f"{name} scores uniformly abnormal inputs (p_a=0.9) below uniformly normal "
                f"ones (p_a=0.1): {high.tolist()} < {low.tolist()}; higher must mean more anomalous.")
        return
    size = (30, 44)
    out = head(x, size)
    _expect(isinstance(out, torch.Tensor) and tuple(out.shape) == (3, *size),
            f"{name}(ScoreInputs of 3 images on grid {x.grid}, size {size}) returned "
            f"{getattr(out, 'shape', type(out).__name__)}, expected (3, {size[0]}, {size[1]}).")
    _expect(out.is_floating_point() and bool(torch.isfinite(out).all()), f"{name} returned non-finite maps.")
    _expect(_diff(head(x, size), out) <= _ATOL, f"{name} is not deterministic.")
    _expect(_diff(head(_one_image(x, 1), size)[0], out[1]) <= 1e-5,
            f"{name}: an image's map depends on the other images in the batch.")
    _expect(bool((head(high, size) >= head(low, size) - 1e-6).all()),
            f"{name} maps uniformly abnormal patches below uniformly normal ones.")
    grid_map = torch.rand(3, x.grid[0] * x.grid[1], generator=gen)
    rendered = head.render(grid_map, x.grid, size)
    _expect(isinstance(rendered, torch.Tensor) and tuple(rendered.shape) == (3, *size),
            f"{name}.render(grid map (3, {grid_map.shape[1]}), grid {x.grid}, size {size}) returned "
            f"{getattr(rendered, 'shape', type(rendered).__name__)}, expected (3, {size[0]}, {size[1]}).")
    _expect(bool((head.render(grid_map + 0.5, x.grid, size) >= rendered).all()),
            f"{name}.render maps a larger grid map below a smaller one; higher must stay more anomalous.")


def _random_features(request, batch: int, grid: tuple[int, int], dim: int, gen, like=None):
    """Random L2-normalised ImageFeatures holding what ``request`` asks for (or the rows of ``like`` perturbed)."""
    from zsad.backbones.base import ImageFeatures, l2_normalize, sliding_windows

    n = grid[0] * grid[1]
    rand = lambda *shape: l2_normalize(torch.randn(*shape, generator=gen))  # noqa: E731
    g = rand(batch, dim)
    return ImageFeatures(
        {"object": g, "spatial": g}, rand(batch, n, dim), grid,
        windows={s: rand(batch, sliding_windows(grid, s).shape[0], dim) for s in request.window_scales},
        layers={i: rand(batch, n, dim) for i in request.layers},
        unprojected_patches=rand(batch, n, dim + 3) if request.unprojected_patches else None,
    )


def check_memory(memory: Any) -> None:
    """Check a reference memory (:class:`~zsad.heads.memory.ReferenceMemory`).

    On random features holding what the memory requests (plus windows of scales 2 and 3): entries are 2-D,
    evidence is ``(B, N)``, finite, in ``[0, 1]``, zero for the references themselves, batch independent and the
    same whatever the chunk size; banks of several classes stay apart, ``clear`` forgets, and ``save`` / ``load``
    restore them exactly.

    Example:
        >>> check_memory("patch_memory")
    """
    import tempfile
    from pathlib import Path

    from zsad.backbones.base import FeatureRequest
    from zsad.heads.memory import ReferenceMemory

    memory = _build_head(memory)
    name = type(memory).__name__
    _expect(isinstance(memory, ReferenceMemory), f"{name} is not a zsad.heads.memory.ReferenceMemory.")
    gen = torch.Generator().manual_seed(6)
    request = memory.feature_request | FeatureRequest(window_scales=(2, 3))
    grid = (4, 5)
    refs = _random_features(request, 2, grid, 8, gen)
    entries = memory.entries(refs)
    _expect(isinstance(entries, dict) and entries and all(isinstance(v, torch.Tensor) and v.ndim == 2
                                                         for v in entries.values()),
            f"{name}.entries(features) must be a non-empty dict of (rows, dim) tensors, got "
            f"{ {k: tuple(getattr(v, 'shape', ())) for k, v in dict(entries).items()} }.")
    memory.clear()
    bank = memory.add("a", entries, images=2)
    test = _random_features(request, 3, grid, 8, gen)
    ev = memory.evidence(test, bank)
    _expect(isinstance(ev, torch.Tensor) and tuple(ev.shape) == (3, grid[0] * grid[1]),
            f"{name}.evidence(3 images on grid {grid}) returned {getattr(ev, 'shape', type(ev).__name__)}, "
            f"expected (3, {grid[0] * grid[1]}).")
    _expect(bool(torch.isfinite(ev).all()) and bool(((ev >= -1e-6) & (ev <= 1 + 1e-6)).all()),
            f"{name}.evidence must be finite and in [0, 1]; got range [{float(ev.min()):.3g}, {float(ev.max()):.3g}].")
    _expect(float(memory.evidence(refs, bank).abs().max()) <= 1e-5,
            f"{name}.evidence of the reference images themselves is not 0: an image like a reference must not look "
            "anomalous.")
    _expect(_diff(memory.evidence(test.rows(slice(1, 2)), bank)[0], ev[1]) <= 1e-5,
            f"{name}.evidence of an image depends on the other images in the batch.")
    saved_chunk = memory.max_elements
    try:
        memory.max_elements = 7
        _expect(_diff(memory.evidence(test, bank), ev) <= 1e-6,
                f"{name}.evidence changes with max_elements (the chunk size of the nearest-neighbour search).")
    finally:
        memory.max_elements = saved_chunk
    memory.add("b", memory.entries(test), images=3)
    _expect(memory.counts() == {"a": 2, "b": 3}, f"{name}.counts() is {memory.counts()}, expected {{'a': 2, 'b': 3}}.")
    with tempfile.TemporaryDirectory() as folder:
        path = memory.save(Path(folder) / "references.safetensors", "check")
        memory.clear("b")
        _expect(memory.counts() == {"a": 2}, f"{name}.clear('b') left {memory.counts()}.")
        memory.load(path, "check")
    _expect(memory.counts() == {"a": 2, "b": 3}, f"{name}.load did not restore the banks: {memory.counts()}.")
    _expect(_diff(memory.evidence(test, memory.bank("a")), ev) <= 1e-6, f"{name}: evidence changes after save/load.")
    memory.clear()
    _expect(memory.counts() == {}, f"{name}.clear() left {memory.counts()}.")
