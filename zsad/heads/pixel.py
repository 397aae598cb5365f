"""The pixel anomaly map: patch probabilities -> bilinear upsampling -> Gaussian smoothing, batched in torch.

Reference evidence (few-shot) is rendered the same way: bilinear upsampling, then the same Gaussian.

Steps (the official Tipsomaly ``regrid_upsample_smooth``):

1. reshape the ``(B, N, 2)`` patch probabilities to ``(B, 2, rows, cols)``;
2. bilinear upsampling to the model input size (``align_corners=False``, no antialias);
3. ``(1 - up_normal + up_abnormal) / 2`` (for softmax probabilities this is ``up_abnormal`` up to rounding;
   for sigmoid similarities it blends both channels);
4. Gaussian smoothing with ``sigma`` (default 4) and scipy's semantics: ``reflect`` border (``d c b a | a b c d``),
   ``truncate=4`` (radius ``int(truncate * sigma + 0.5)``), axis 0 then axis 1 — computed on the model's device.

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

import torch
import torch.nn.functional as F

from zsad.errors import ConfigError
from zsad.heads.base import PixelHead, ScoreInputs, upsample_grid_map

__all__ = ["PixelMapHead", "gaussian_blur", "upsample_patch_probs"]


def upsample_patch_probs(patch_probs: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """``(B, N, 2)`` patch probabilities -> ``(B, 2, H, W)`` bilinear (align_corners=False) maps."""
    b, n, k = patch_probs.shape
    if grid[0] * grid[1] != n:
        raise ValueError(f"patch grid {grid} does not hold {n} patches")
    maps = patch_probs.float().permute(0, 2, 1).reshape(b, k, grid[0], grid[1])
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


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
    """

    def __init__(self, sigma: float = 4.0, truncate: float = 4.0) -> None:
        super().__init__()
        if sigma < 0 or not math.isfinite(sigma):
            raise ConfigError(f"heads.sigma must be a finite number >= 0, got {sigma}.")
        self.sigma, self.truncate = float(sigma), float(truncate)

    def rough(self, patch_probs: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """The unsmoothed map ``(1 - up_normal + up_abnormal) / 2`` at ``size``."""
        up = upsample_patch_probs(patch_probs, grid, size)
        return (1 - up[:, 0] + up[:, 1]) / 2

    def forward(self, inputs: ScoreInputs, size: tuple[int, int]) -> torch.Tensor:
        return gaussian_blur(self.rough(inputs.patch_probs, inputs.grid, size), self.sigma, self.truncate)

    def render(self, grid_map: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """A ``(B, N)`` grid map upsampled bilinearly and smoothed with this head's Gaussian."""
        return gaussian_blur(upsample_grid_map(grid_map, grid, size), self.sigma, self.truncate)
