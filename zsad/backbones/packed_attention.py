"""Attention of open_clip's pre-norm blocks computed from their packed weights with SDPA.

open_clip's ``ResidualAttentionBlock`` holds a ``torch.nn.MultiheadAttention`` with one packed ``in_proj``
(queries, keys and values side by side) and an ``out_proj``. Towers that need more than the block's own forward
(DPAM's second path, :mod:`zsad.backbones.dpam`; window sequences, :mod:`zsad.backbones.clip_windows`) project
with those weights themselves and attend with :func:`torch.nn.functional.scaled_dot_product_attention` on
batch-first heads: the arithmetic of ``nn.MultiheadAttention`` without materialising the attention matrix (and
faster than its fast path for short sequences on the CPU).

Example (the block's own attention, recomputed):
    >>> import torch
    >>> from open_clip.transformer import ResidualAttentionBlock
    >>> block = ResidualAttentionBlock(16, 2).eval()
    >>> y = torch.randn(3, 5, 16)
    >>> q, k, v = split_heads(torch.nn.functional.linear(y, block.attn.in_proj_weight, block.attn.in_proj_bias), 2, 3)
    >>> with torch.no_grad():
    ...     same = torch.allclose(attend(block.attn, q, k, v), block.attn(y, y, y, need_weights=False)[0], atol=1e-6)
    >>> is_packed_block(block), q.shape, same
    (True, torch.Size([3, 2, 5, 8]), True)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["attend", "is_packed_block", "split_heads"]


def is_packed_block(block: nn.Module) -> bool:
    """Whether ``block`` is open_clip's pre-norm self-attention block with a packed ``nn.MultiheadAttention``."""
    from open_clip.transformer import ResidualAttentionBlock

    return (
        isinstance(block, ResidualAttentionBlock)
        and isinstance(block.attn, nn.MultiheadAttention)
        and block.attn.in_proj_weight is not None
        and not hasattr(block, "ln_1_kv")
    )


def split_heads(packed: torch.Tensor, heads: int, parts: int) -> tuple[torch.Tensor, ...]:
    """Split ``parts`` projections packed side by side, ``(B, L, parts * C)``, into ``(B, heads, L, C // heads)``
    each (views)."""
    return packed.unflatten(-1, (parts, heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)


def attend(attn: nn.MultiheadAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``out_proj(softmax(q k^T / sqrt(d_head)) v)`` of heads from :func:`split_heads`, batch-first ``(B, Lq, C)``."""
    return attn.out_proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))
