"""The pixel anomaly map: patch probabilities -> bilinear upsampling -> Gaussian smoothing, batched in torch.

Reference evidence (few-shot) is rendered the same way: bilinear upsampling, then the same Gaussian.

Steps (the official Tipsomaly ``regrid_upsample_smooth``):

1. reshape the ``(B, N, 2)`` patch probabilities to ``(B, 2, rows, cols)``;
2. bilinear upsampling to the model input size (``align_corners=False``, no antialias);
3. ``(1 - up_normal + up_abnormal) / 2`` (for softmax probabilities this is ``up_abnormal`` up to rounding;
   for sigmoid similarities it blends both channels);
4. Gaussian smoothing with ``sigma`` (default 4) and scipy's semantics: ``reflect`` border (``d c b a | a b c d``),
   ``truncate=4`` (radius ``int(truncate * sigma + 0.5)``), axis 0 then axis 1 — computed on the model's device.

With ``layers`` (AnomalyCLIP's feature layers) steps 1-3 run on each layer's probability map and the maps are
summed before step 4, as the official AnomalyCLIP ``test.py`` does (with ``L`` layers the fused form below is
``0.5 L + 0.5 * A_rows @ sum_l (p_abnormal - p_normal)_l @ A_cols.T``: the blur keeps constants).

Every step is linear in the patch map (step 3 is ``0.5 + 0.5 * (up_abnormal - up_normal)``), so the head applies
them as one operator per axis: ``map = 0.5 + 0.5 * A_rows @ (p_abnormal - p_normal) @ A_cols.T`` with
``A = blur @ upsample`` (``H x rows``, built in float64 once per grid, size and sigma:
:func:`smoothing_operator`). For a 37x37 grid at 518 px that is two small matrix products per map instead of an
upsampled two-channel map and two 33-tap convolutions; the result equals the step-by-step computation
(:meth:`PixelMapHead.rough` and :func:`gaussian_blur`, kept for inspection and tests) to float32 rounding. Grid maps
rendered for the reference evidence (:meth:`PixelMapHead.render`, :func:`smooth_grid_map`) take the same operator.

Example:
    >>> import torch
    >>> head = PixelMapHead(sigma=4)
    >>> from zsad.heads.base import ScoreInputs
    >>> probs = torch.softmax(torch.randn(2, 16, 2), dim=-1)
    >>> head(ScoreInputs({}, probs, (4, 4)), (56, 56)).shape
    torch.Size([2, 56, 56])
"""

from __future__ import annotations

import math
import threading
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from zsad.backbones.base import FeatureRequest
from zsad.errors import ConfigError
from zsad.heads.base import PixelHead, ScoreInputs, upsample_grid_map, upsample_patch_probs
from zsad.heads.losses import SegmentationLoss

__all__ = ["PixelMapHead", "gaussian_blur", "smooth_grid_map", "smoothing_operator", "upsample_patch_probs"]


def _reflect_indices(length: int, radius: int, device: torch.device) -> torch.Tensor:
    """Source indices of a scipy-``reflect`` padded axis (half-sample symmetric, any radius)."""
    idx = torch.arange(-radius, length + radius, device=device)
    period = 2 * length
    idx = torch.remainder(idx, period)
    return torch.where(idx >= length, period - 1 - idx, idx)


def _gaussian_kernel(sigma: float, truncate: float, device: torch.device) -> torch.Tensor:
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64, device=device)
    phi = torch.exp(-0.5 / (float(sigma) ** 2) * x**2)
    return (phi / phi.sum()).float()


def _operator_array(n_in: int, n_out: int, sigma: float, truncate: float) -> np.ndarray:
    """``(n_out, n_in)`` float32: bilinear upsampling (torch's source coordinates) then the scipy Gaussian."""
    from zsad.results import bilinear_axis

    lo, hi, frac = bilinear_axis(n_in, n_out)
    rows = np.arange(n_out)
    up = np.zeros((n_out, n_in), np.float64)
    np.add.at(up, (rows, lo), 1.0 - frac.astype(np.float64))
    np.add.at(up, (rows, hi), frac.astype(np.float64))
    if sigma > 0:
        radius = int(truncate * sigma + 0.5)
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        kernel = np.exp(-0.5 / sigma**2 * x**2)
        kernel /= kernel.sum()
        source = np.arange(-radius, n_out + radius) % (2 * n_out)  # scipy "reflect": d c b a | a b c d
        source = np.where(source >= n_out, 2 * n_out - 1 - source, source)
        blur = np.zeros((n_out, n_out), np.float64)
        for k in range(kernel.size):
            np.add.at(blur, (rows, source[rows + k]), kernel[k])
        up = blur @ up
    return up.astype(np.float32)


_OPERATORS: dict[tuple, torch.Tensor] = {}  # (n_in, n_out, sigma, truncate, device) -> operator, never changed
_LOCK = threading.Lock()


@torch.compiler.disable  # numpy work, outside compiled graphs (which read the stored operator afterwards)
def _build(key: tuple) -> None:
    array = _operator_array(*key[:4])
    with _LOCK, torch.inference_mode(False):  # a plain tensor, usable in and outside inference mode
        _OPERATORS.setdefault(key, torch.tensor(array, device=key[4]))


def smoothing_operator(n_in: int, n_out: int, sigma: float, truncate: float = 4.0, device="cpu") -> torch.Tensor:
    """``(n_out, n_in)`` float32 matrix of bilinear upsampling ``n_in -> n_out`` (``align_corners=False``) followed
    by the scipy-``reflect`` Gaussian of ``sigma`` (none for 0) along one axis.

    Built in float64 with numpy once per arguments and device, and kept (``torch.compile`` reads the kept tensor
    without a graph break). Under ``torch.export`` an operator not yet kept is made as a constant of the graph and
    not kept (nothing made while tracing outlives the trace). Read only.

    Example:
        >>> op = smoothing_operator(4, 56, sigma=4)
        >>> op.shape, round(float(op.sum(dim=1).mean()), 6)  # rows sum to one: constants stay constant
        (torch.Size([56, 4]), 1.0)
    """
    key = (int(n_in), int(n_out), float(sigma), float(truncate), str(torch.device(device)))
    op = _OPERATORS.get(key)
    if op is None:
        if torch.compiler.is_exporting():
            return torch.tensor(_operator_array(*key[:4]), device=device)
        _build(key)
        op = _OPERATORS[key]
    return op


def smooth_grid_map(grid_map: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], sigma: float,
                    truncate: float = 4.0) -> torch.Tensor:
    """A ``(B, N)`` row-major grid map upsampled bilinearly to ``size`` and smoothed with the Gaussian of ``sigma``:
    ``(B, H, W)``. With ``sigma > 0`` this is :func:`smoothing_operator` along each axis (two matrix products);
    with ``sigma == 0`` plain bilinear upsampling (:func:`~zsad.heads.base.upsample_grid_map`).

    Example:
        >>> smooth_grid_map(torch.full((2, 16), 0.25), (4, 4), (56, 56), sigma=4).shape
        torch.Size([2, 56, 56])
    """
    if sigma <= 0:
        return upsample_grid_map(grid_map, grid, size)
    (rows, cols), (h, w) = (int(grid[0]), int(grid[1])), (int(size[0]), int(size[1]))
    if rows * cols != grid_map.shape[-1]:
        raise ValueError(f"patch grid {tuple(grid)} does not hold {grid_map.shape[-1]} patches")
    a_rows = smoothing_operator(rows, h, sigma, truncate, grid_map.device)
    a_cols = smoothing_operator(cols, w, sigma, truncate, grid_map.device)
    x = grid_map.float().reshape(-1, rows, cols)
    # a_rows @ x @ a_cols.T as two plain matrix products (a broadcast batched product is several times slower)
    tall = (a_rows @ x.permute(1, 0, 2).reshape(rows, -1)).reshape(h, -1, cols)
    return (tall.permute(1, 0, 2).reshape(-1, cols) @ a_cols.T).reshape(-1, h, w)


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Separable Gaussian filter of ``(B, H, W)`` maps with scipy.ndimage semantics (reflect, axis 0 first)."""
    if sigma <= 0:
        return maps
    kernel = _gaussian_kernel(sigma, truncate, maps.device)
    radius = (kernel.numel() - 1) // 2
    x = maps.float().unsqueeze(1)  # (B, 1, H, W)
    h, w = x.shape[-2:]
    x = x.index_select(2, _reflect_indices(h, radius, x.device))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    x = x.index_select(3, _reflect_indices(w, radius, x.device))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return x.squeeze(1)


class PixelMapHead(PixelHead):
    """Upsampled, smoothed abnormal-probability map (see the module docstring).

    Args:
        sigma: Gaussian sigma in pixels of the model input (0 disables smoothing).
        truncate: kernel radius in sigmas (scipy's default 4.0).
        layers: score the patch tokens of these blocks of the image tower (1-based) instead of the final patch
            tokens: each layer's map is upsampled and turned into ``(1 - up_normal + up_abnormal) / 2``, the maps
            are **summed** over the layers, then smoothed (AnomalyCLIP's feature layers; ``heads.options.pixel_map.
            layers``, or ``feature_layers=[...]``). Empty (default): the final patch map.
        loss_weight: factor of the localisation loss in prompt learning (AnomalyCLIP: 4, Tipsomaly: 1).

    Example (two layers: the map sums both):
        >>> import torch
        >>> from zsad.heads.base import ScoreInputs
        >>> p = torch.softmax(torch.randn(1, 4, 2), dim=-1)
        >>> x = ScoreInputs({}, p, (2, 2), layer_probs={3: p, 4: p})
        >>> one, two = PixelMapHead(sigma=0), PixelMapHead(sigma=0, layers=[3, 4])
        >>> bool(torch.allclose(two(x, (8, 8)), 2 * one(x, (8, 8)))), two.feature_request.layers
        (True, (3, 4))
    """

    def __init__(
        self, sigma: float = 4.0, truncate: float = 4.0, layers: Sequence[int] = (), loss_weight: float = 1.0
    ) -> None:
        super().__init__()
        if sigma < 0 or not math.isfinite(sigma):
            raise ConfigError(f"heads.sigma must be a finite number >= 0, got {sigma}.")
        if not (isinstance(loss_weight, (int, float)) and loss_weight > 0 and math.isfinite(loss_weight)):
            raise ConfigError(f"heads.options.pixel_map.loss_weight must be a finite number > 0, got {loss_weight!r}.")
        self.sigma, self.truncate = float(sigma), float(truncate)
        self.layers = _layer_list(layers)
        self.loss_weight = float(loss_weight)
        self.feature_request = FeatureRequest(layers=self.layers)

    def rough(self, patch_probs: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """The unsmoothed map ``(1 - up_normal + up_abnormal) / 2`` at ``size``."""
        up = upsample_patch_probs(patch_probs, grid, size)
        return (1 - up[:, 0] + up[:, 1]) / 2

    def _sources(self, inputs: ScoreInputs) -> list[torch.Tensor]:
        """The ``(B, N, 2)`` probability maps this head draws: the final patches, or each requested layer."""
        if not self.layers:
            return [inputs.patch_probs]
        missing = [i for i in self.layers if i not in inputs.layer_probs]
        if missing:
            raise ConfigError(f"pixel_map scores layers {list(self.layers)} but got no probabilities for {missing}.")
        return [inputs.layer_probs[i] for i in self.layers]

    def forward(self, inputs: ScoreInputs, size: tuple[int, int]) -> torch.Tensor:
        sources = [p.float() for p in self._sources(inputs)]
        n = inputs.grid[0] * inputs.grid[1]
        if any(p.shape[1] != n for p in sources):
            raise ValueError(f"patch grid {inputs.grid} does not hold {sources[0].shape[1]} patches")
        if self.sigma <= 0:  # plain bilinear upsampling, as the official code
            maps = [self.rough(p, inputs.grid, size) for p in sources]
            return maps[0] if len(maps) == 1 else torch.stack(maps).sum(dim=0)
        # linear steps (module docstring): the sum over the layers of 0.5 + 0.5 * smoothed(upsampled(p_a - p_n))
        diff = sum(p[..., 1] - p[..., 0] for p in sources)
        return 0.5 * len(sources) + 0.5 * smooth_grid_map(diff, inputs.grid, size, self.sigma, self.truncate)

    def render(self, grid_map: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """A ``(B, N)`` grid map upsampled bilinearly and smoothed with this head's Gaussian.

        With several layers the map is a sum of one map per layer, so the grid map counts once per layer.
        """
        rendered = smooth_grid_map(grid_map, grid, size, self.sigma, self.truncate)
        return rendered * max(1, len(self.layers))

    def loss(self, inputs: ScoreInputs, masks: torch.Tensor, criterion: SegmentationLoss) -> dict[str, torch.Tensor]:
        """``loss_weight x`` the localisation loss summed over the scored maps (each unsmoothed, upsampled).

        The components (``focal``, ``dice_pos``, ``dice_neg``) are the unweighted sums over the layers.
        """
        size = tuple(masks.shape[-2:])
        parts = [criterion(upsample_patch_probs(p, inputs.grid, size), masks) for p in self._sources(inputs)]
        out = {name: sum(part[name] for part in parts) for name in parts[0] if name != "total"}
        out["total"] = self.loss_weight * sum(part["total"] for part in parts)
        return out


def _layer_list(layers: Sequence[int]) -> tuple[int, ...]:
    """Validate feature layers: distinct block numbers >= 1."""
    items = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    if any(isinstance(i, bool) or not isinstance(i, int) or i < 1 for i in items) or len(set(items)) != len(items):
        raise ConfigError(
            f"Feature layers must be distinct whole block numbers >= 1 (1-based), got {layers!r}; e.g. "
            "feature_layers=[24] for the last block of a ViT-L."
        )
    return tuple(items)
