"""WinCLIP's scores (Jeong et al., CVPR 2023) as anomalib 2.7.0 computes them, as head-side components.

* ``winclip`` (image head): ``softmax(cos(image, [normal, anomalous]) / T)[anomalous]`` of the image embedding
  (the scorer applies the recipe's fixed temperature, 0.07).
* ``winclip_map`` (pixel head): every window of scale ``s`` gets its class score; every patch the harmonic mean of
  the scores of the windows covering it (:func:`harmonic_aggregation`); the grid map is the harmonic mean over
  ``[image score, scale-2 map, scale-3 map]``, upsampled bilinearly to the input size (no smoothing by default).
* ``winclip_memory`` (WinCLIP+ references): stores the references' unprojected patch tokens and their window
  embeddings of every scale; the evidence is the arithmetic mean of the full-scale term
  ``min_m (1 - cos(z_j, r_m)) / 2`` over all reference patches and, per scale, the same association of each
  window with all reference windows, harmonically aggregated to patches. The scorer's fusion
  (:mod:`zsad.heads.memory`) is then exactly anomalib's: ``map = (zero-shot + few-shot) / 2`` and
  ``score = (zero-shot score + max few-shot) / 2``.

Example:
    >>> import torch
    >>> harmonic_aggregation(torch.tensor([[0.5, 1.0, 0.25, 0.5]]), (3, 3), 2).reshape(3, 3)
    tensor([[0.5000, 0.6667, 1.0000],
            [0.3333, 0.4444, 0.6667],
            [0.2500, 0.3333, 0.5000]])
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch

from zsad.backbones.base import FeatureRequest, ImageFeatures, sliding_windows
from zsad.errors import ConfigError
from zsad.heads.base import PixelHead, ScoreInputs
from zsad.heads.image import GlobalHead
from zsad.heads.memory import (
    DEFAULT_MAX_ELEMENTS,
    ReferenceBank,
    ReferenceMemory,
    nearest_distance,
)
from zsad.heads.pixel import smooth_grid_map

__all__ = ["WinClipMapHead", "WinClipMemory", "harmonic_aggregation", "winclip_image", "winclip_map", "winclip_memory"]


@lru_cache(maxsize=64)
def _covering_windows(grid: tuple[int, int], scale: int) -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Per patch, the indices of the windows covering it (ascending, padded with W) and their count.

    Windows are numbered as :func:`~zsad.backbones.base.sliding_windows` orders them (row-major by their top-left
    patch). Computed from the grid's integers alone and cached as plain integers (never tensors: a tensor made
    while the scoring is traced must not outlive the trace), so it is a constant of a traced graph.
    """
    rows, cols = grid
    if scale < 1 or scale > min(rows, cols):
        sliding_windows(grid, scale)  # raises the error that names the grid
    win_cols = cols - scale + 1
    n_windows = (rows - scale + 1) * win_cols
    cover = [
        [top * win_cols + left
         for top in range(max(0, r - scale + 1), min(r, rows - scale) + 1)
         for left in range(max(0, c - scale + 1), min(c, cols - scale) + 1)]
        for r in range(rows) for c in range(cols)
    ]
    width = max(len(c) for c in cover)
    return tuple(tuple(c + [n_windows] * (width - len(c))) for c in cover), tuple(len(c) for c in cover)


def harmonic_aggregation(window_scores: torch.Tensor, grid: tuple[int, int], scale: int) -> torch.Tensor:
    """Per patch, the harmonic mean of the ``(B, W)`` scores of the ``scale`` windows covering it: ``(B, N)``.

    A zero score makes the mean zero (as anomalib's ``nan_to_num(posinf=0)``).
    """
    cover, counts = _covering_windows((int(grid[0]), int(grid[1])), int(scale))
    inverse = 1 / window_scores.float()
    padded = torch.cat([inverse, inverse.new_zeros(inverse.shape[0], 1)], dim=1)
    sums = padded[:, torch.tensor(cover, dtype=torch.long, device=padded.device)].sum(dim=-1)
    return (torch.tensor(counts, dtype=torch.float32, device=sums.device) / sums).nan_to_num(posinf=0.0)


def _scales(scales: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(s) for s in scales)
    if not out or any(s < 1 for s in out) or len(set(out)) != len(out):
        raise ConfigError(f"WinCLIP window scales must be distinct positive integers, got {list(scales)}.")
    return out


class WinClipMapHead(PixelHead):
    """WinCLIP's zero-shot pixel map (see the module docstring).

    Args:
        scales: window sizes in patches (WinCLIP: 2 and 3).
        sigma, truncate: optional Gaussian smoothing of the map (WinCLIP: none).
    """

    def __init__(self, scales: Sequence[int] = (2, 3), sigma: float = 0.0, truncate: float = 4.0) -> None:
        super().__init__()
        self.scales = _scales(scales)
        self.sigma, self.truncate = float(sigma), float(truncate)
        self.feature_request = FeatureRequest(window_scales=self.scales)

    def grid_map(self, inputs: ScoreInputs) -> torch.Tensor:
        """``(B, N)`` zero-shot grid map: harmonic mean over the image score and each scale's patch scores."""
        image = inputs.abnormal("object")
        terms = [image[:, None].expand(-1, inputs.grid[0] * inputs.grid[1])]
        for s in self.scales:
            terms.append(harmonic_aggregation(inputs.window_probs[s][..., 1], inputs.grid, s))
        return len(terms) / (1 / torch.stack(terms)).sum(dim=0)

    def forward(self, inputs: ScoreInputs, size: tuple[int, int]) -> torch.Tensor:
        return self.render(self.grid_map(inputs), inputs.grid, size)

    def render(self, grid_map: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        return smooth_grid_map(grid_map, grid, size, self.sigma, self.truncate)


class WinClipMemory(ReferenceMemory):
    """WinCLIP+ reference memory (see the module docstring); it uses every window scale the scorer computes."""

    feature_request = FeatureRequest(unprojected_patches=True)

    def entries(self, features: ImageFeatures) -> dict[str, torch.Tensor]:
        if features.unprojected_patches is None:
            raise ConfigError("winclip_memory needs the unprojected patch tokens; the backbone did not return them.")
        out = {"patches": features.unprojected_patches.flatten(0, 1)}
        out.update({f"windows_{s}": w.flatten(0, 1) for s, w in sorted(features.windows.items())})
        return out

    def evidence(self, features: ImageFeatures, bank: ReferenceBank) -> torch.Tensor:
        if features.unprojected_patches is None:
            raise ConfigError("winclip_memory needs the unprojected patch tokens; the backbone did not return them.")
        terms = [nearest_distance(features.unprojected_patches, bank["patches"], self.max_elements)]
        for name in sorted((k for k in bank.tensors if k.startswith("windows_")), key=lambda k: int(k.split("_")[1])):
            scale = int(name.split("_")[1])
            if scale not in features.windows:
                raise ConfigError(
                    f"The references hold windows of scale {scale} but the test features have scales "
                    f"{sorted(features.windows)}; add the references again with this recipe."
                )
            scores = nearest_distance(features.windows[scale], bank[name], self.max_elements)
            terms.append(harmonic_aggregation(scores, features.grid, scale))
        return torch.stack(terms).mean(dim=0)


def winclip_image() -> GlobalHead:
    """WinCLIP's zero-shot image score: p_a of the image embedding."""
    return GlobalHead("object")


def winclip_map(scales: Sequence[int] = (2, 3), sigma: float = 0.0, truncate: float = 4.0) -> WinClipMapHead:
    """WinCLIP's zero-shot pixel map (harmonic aggregation of window scores, scales 2 and 3)."""
    return WinClipMapHead(scales, sigma, truncate)


def winclip_memory(max_elements: int = DEFAULT_MAX_ELEMENTS) -> WinClipMemory:
    """WinCLIP+'s reference memory (patch tokens and window embeddings of the references)."""
    return WinClipMemory(max_elements)
