"""Window sequences through a CLIP image tower: every window its own short sequence, computed without waste.

WinCLIP embeds every ``s x s`` window of the patch grid by running the class token and the window's patch tokens
(embedded, with their position embeddings, after ``ln_pre``) through the tower as one short sequence, attention
only inside the window. :func:`window_blocks` computes exactly that on towers of open_clip's pre-norm blocks with
packed attention weights (:func:`~zsad.backbones.packed_attention.is_packed_block`), with less arithmetic than
running the windows through the blocks' own forward:

* **first block**: its ``ln_1`` and query/key/value projection act on each token alone, and every window token is
  a token of the image, so they are computed once per image and gathered per window;
* **attention** of the short sequences through :func:`~torch.nn.functional.scaled_dot_product_attention`;
* **last block** (``class_only``, for towers that pool the class token): a window's embedding is its class token
  after the tower, which needs the keys and values of every token of the last block but only the class token's
  query, attention output, ``out_proj`` and MLP.

Example (a 2-block tower; windows 0-1 and 1-2 of a 3-token image, after the class token):
    >>> import torch
    >>> from open_clip.transformer import ResidualAttentionBlock
    >>> blocks = torch.nn.ModuleList([ResidualAttentionBlock(16, 2) for _ in range(2)]).eval()
    >>> x = torch.randn(2, 4, 16)  # (images, class token + 3 tokens, width)
    >>> seqs = torch.tensor([[0, 1, 2], [0, 2, 3]])
    >>> with torch.no_grad():
    ...     got = window_blocks(blocks, x, seqs, class_only=True)
    ...     ref = blocks[1](blocks[0](x[:, seqs].flatten(0, 1)))[:, :1]
    >>> got.shape, bool(torch.allclose(got, ref, atol=1e-5))
    (torch.Size([4, 1, 16]), True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zsad.backbones.packed_attention import attend, split_heads

__all__ = ["window_blocks"]


def window_blocks(
    blocks: Sequence[nn.Module], x: torch.Tensor, seqs: torch.Tensor, *, class_only: bool, chunk: int | None = None
) -> torch.Tensor:
    """Run every window of batch-first image tokens through ``blocks`` (packed pre-norm blocks), each window alone.

    Args:
        blocks: the tower's blocks (open_clip ``ResidualAttentionBlock`` with packed attention).
        x: ``(B, N, C)`` the image tokens entering the first block (after ``ln_pre``).
        seqs: ``(W, L)`` the positions in ``x`` of each window's tokens, the class token (0) first.
        class_only: return the class token of each window only (the last block computes only what it needs).
        chunk: window sequences per pass (bounds memory); ``None`` runs all at once.

    Returns:
        ``(B * W, L, C)``, or ``(B * W, 1, C)`` with ``class_only``: windows of image 0 first, in ``seqs`` order.
    """
    b, n, _ = x.shape
    first = blocks[0]
    qkv = F.linear(first.ln_1(x), first.attn.in_proj_weight, first.attn.in_proj_bias)  # per image token, once
    flat = (torch.arange(b, device=x.device).view(b, 1, 1) * n + seqs).flatten(0, 1)  # (B*W, L) rows of x.flatten
    parts = (flat,) if chunk is None else flat.split(chunk)
    x, qkv = x.flatten(0, 1), qkv.flatten(0, 1)
    return torch.cat([_sequences(blocks, x[rows], qkv[rows], class_only) for rows in parts])


def _sequences(blocks: Sequence[nn.Module], h: torch.Tensor, qkv: torch.Tensor, class_only: bool) -> torch.Tensor:
    """``h`` ``(S, L, C)`` through the blocks; ``qkv``: the first block's projections of ``ln_1(h)``."""
    last = len(blocks)
    for index, block in enumerate(blocks, 1):
        attn, heads = block.attn, block.attn.num_heads
        queries = 1 if class_only and index == last else None  # None: every token
        if index == 1:
            q, k, v = split_heads(qkv, heads, 3)
        elif queries is None:
            q, k, v = split_heads(F.linear(block.ln_1(h), attn.in_proj_weight, attn.in_proj_bias), heads, 3)
        else:  # the class token's query, keys and values of every token
            y, width = block.ln_1(h), h.shape[-1]
            weight, bias = attn.in_proj_weight, attn.in_proj_bias
            (q,) = split_heads(F.linear(y[:, :queries], weight[:width], _part(bias, 0, width)), heads, 1)
            k, v = split_heads(F.linear(y, weight[width:], _part(bias, width, None)), heads, 2)
        h = h[:, :queries] + block.ls_1(attend(attn, q[:, :, :queries], k, v))
        h = h + block.ls_2(block.mlp(block.ln_2(h)))
    return h


def _part(bias: torch.Tensor | None, start: int, stop: int | None) -> torch.Tensor | None:
    return None if bias is None else bias[start:stop]
