"""DPAM: V-V attention on the last blocks of a CLIP image tower, as a second path beside the original one.

AnomalyCLIP (Zhou et al., ICLR 2024) refines patch tokens with *diagonally prominent* attention: from block
``start`` (1-based) on, every block also computes ``softmax(v v^T / sqrt(d_head)) v`` -- queries and keys
replaced by the values (including their bias) -- with the block's own ``in_proj`` / ``out_proj`` weights. The
result runs on its own residual path:

* at the first DPAM block (input ``x``): ``vv = x + VV(ln_1(x))``;
* at every DPAM block both attentions are computed from ``ln_1`` of the **original** path, ``vv = vv + VV(...)``
  (no MLP on the V-V path), and the original path is an ordinary block (``h = h + attn(...)``,
  ``h = h + mlp(ln_2(h))``), so the original path is exactly the plain tower.

A block's output seen by a feature layer is the V-V path at DPAM blocks and the plain output elsewhere. Both
attentions share one ``in_proj`` and one ``out_proj`` per block and run through
:func:`torch.nn.functional.scaled_dot_product_attention` (:mod:`zsad.backbones.packed_attention`), as does the
attention of the blocks before ``start`` (the same arithmetic as open_clip's blocks, without materialising the
attention matrix).

Example (a 2-block tower of open_clip blocks; DPAM on block 2):
    >>> import torch
    >>> from open_clip.transformer import ResidualAttentionBlock
    >>> blocks = torch.nn.ModuleList([ResidualAttentionBlock(16, 2) for _ in range(2)]).eval()
    >>> x = torch.randn(1, 5, 16)
    >>> with torch.no_grad():
    ...     plain, seen = dual_path_blocks(blocks, x, start=2, collect=(1, 2))
    ...     ref = blocks[1](blocks[0](x))
    >>> bool(torch.allclose(plain, ref, atol=1e-5)), sorted(seen), bool(torch.allclose(seen[2], ref))
    (True, [1, 2], False)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zsad.backbones.packed_attention import attend, is_packed_block, split_heads
from zsad.errors import ConfigError

__all__ = ["dual_path_blocks", "check_dpam_blocks"]


def check_dpam_blocks(blocks: Sequence[nn.Module], start: int, owner: str) -> None:
    """Raise :class:`~zsad.errors.ConfigError` unless the tower can run V-V attention from block ``start`` (1-based).

    ``start`` must name a block of the tower, and every block must be a pre-norm block with a packed
    ``torch.nn.MultiheadAttention`` (open_clip's ``ResidualAttentionBlock``, as in CLIP ViTs).
    """
    depth = len(blocks)
    if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start <= depth:
        raise ConfigError(
            f"dpam_start={start!r} is not a block of the image tower of {owner}, which has {depth} blocks: DPAM (V-V attention) "
            f"starts at a block in 1..{depth} (1-based; AnomalyCLIP uses 6 of 24, i.e. the last 19 blocks). Set "
            "backbone.options.dpam_start (dpam_start=...) accordingly, or null for the plain tower."
        )
    for index in range(1, depth + 1):
        block = blocks[index - 1]
        if not is_packed_block(block):
            raise ConfigError(
                f"Block {index} of {owner} is a {type(block).__name__}; DPAM needs open_clip's pre-norm "
                "ResidualAttentionBlock with a packed nn.MultiheadAttention (CLIP ViT towers)."
            )


def _attentions(attn: nn.MultiheadAttention, y: torch.Tensor, vv: bool) -> list[torch.Tensor]:
    """The ordinary attention of batch-first ``y`` ``(B, L, C)`` and, with ``vv``, the V-V attention; each through
    ``out_proj``."""
    q, k, v = split_heads(F.linear(y, attn.in_proj_weight, attn.in_proj_bias), attn.num_heads, 3)
    return [attend(attn, q, k, v)] + ([attend(attn, v, v, v)] if vv else [])


def dual_path_blocks(
    blocks: Sequence[nn.Module], x: torch.Tensor, start: int, collect: Sequence[int] = ()
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Run batch-first tokens ``(B, L, C)`` through ``blocks`` with DPAM from block ``start`` (1-based) on.

    Returns the output of the original path after the last block and, for every block in ``collect``, what a
    feature layer sees there: the V-V path at DPAM blocks, the plain block output before them. The V-V path is
    computed only up to the last collected DPAM block (the original path does not depend on it).
    """
    h, vv = x, None
    seen: dict[int, torch.Tensor] = {}
    last = max((i for i in collect if i >= start), default=0)  # the V-V path is not needed after it
    for index, block in enumerate(blocks, 1):
        dual = start <= index <= last
        attentions = _attentions(block.attn, block.ln_1(h), vv=dual)
        if dual:
            vv = (h if vv is None else vv) + block.ls_1(attentions[1])
        h = h + block.ls_1(attentions[0])
        h = h + block.ls_2(block.mlp(block.ln_2(h)))
        if index in collect:
            seen[index] = vv if dual else h
    return h, seen
