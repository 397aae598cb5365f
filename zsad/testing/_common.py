"""Helpers shared by the contract checks (assertions with messages, tensor comparisons)."""

from __future__ import annotations

import torch

_TEXTS = ["a photo of a flawless metal nut.", "a photo of a damaged object with a scratch."]
_ATOL = 1e-5


def _fail(message: str) -> None:
    raise AssertionError(message)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def _check_normalised(t: torch.Tensor, what: str, dim: int | None = None) -> None:
    _expect(isinstance(t, torch.Tensor), f"{what} is a {type(t).__name__}, not a torch.Tensor.")
    _expect(
        t.dtype == torch.float32,
        f"{what} has dtype {t.dtype}; the contract requires float32 (cast with zsad.backbones.base.l2_normalize).",
    )
    if dim is not None:
        _expect(t.shape[-1] == dim, f"{what} has width {t.shape[-1]}, but the backbone declares embed_dim={dim}.")
    _expect(bool(torch.isfinite(t).all()), f"{what} holds non-finite values (nan or inf).")
    norms = t.detach().norm(dim=-1)
    worst = float((norms - 1).abs().max()) if norms.numel() else 0.0
    _expect(worst < 1e-4, f"{what} is not L2-normalised along the last axis (a norm is off from 1 by {worst:.3g}).")


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference of two tensors (0 for empty ones)."""
    return float((a.detach().float() - b.detach().float()).abs().max()) if a.numel() else 0.0

