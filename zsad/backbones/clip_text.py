"""The text tower of open_clip CLIP models, run from its modules so learnable tokens can be placed in it.

Learnable prompts (``encode_text(texts, prefix=P)``, ``P`` of shape ``(n, width)``): the ``n`` vectors are inserted
right after the start-of-text token (before the first word; at position 0 for tokenizers without one), the
sequence is cut back to the context length, and the text is pooled where the model pools, which for CLIP is the
end-of-text token: its index (``argmax`` of the token ids) moves ``n`` places to the right. A text long enough to
lose its end-of-text token to the cut keeps it at the last position (as open_clip's tokenizer does on truncation).
The text tower is run from its modules (token embedding, position embedding, transformer with its causal mask,
``ln_final``, ``text_projection``); without a prefix this equals open_clip's ``model.encode_text``.

Deep prompts (``encode_text(texts, prefix=P, deep=[D_1, ..., D_k])``, each ``(m, width)``): at the input of text
block ``j`` (0-based, ``j = 1..k``) the ``m`` tokens right after the start-of-text token are *replaced* by ``D_j``
(cast to the tower's dtype); block 0 sees the embedded sequence as is (MaPLe / AnomalyCLIP). Gradients reach every
``D_j``.

Example (a tiny random CLIP):
    >>> from zsad.backbones.openclip import create_open_clip
    >>> bb = create_open_clip(None, random_config="tiny")
    >>> tower = TextTower.of(bb.model)
    >>> ids = bb.tokenize(["a photo of a nut"])
    >>> bool(torch.allclose(tower(ids, None, sot_id=None), bb.model.encode_text(ids), atol=1e-6))
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from zsad.errors import ConfigError

__all__ = ["TextTower"]


class TextTower:
    """The modules of a CLIP-style text transformer, run by hand so prompt tokens can be inserted."""

    def __init__(self, owner: torch.nn.Module, pool_type: str, eos_id: int | None) -> None:
        self.owner, self.pool_type, self.eos_id = owner, pool_type, eos_id
        self.width = int(owner.token_embedding.weight.shape[1])
        self.cls_emb = getattr(owner, "cls_emb", None)
        self.use_pad_mask = bool(getattr(owner, "use_pad_mask", False))
        self.supports_prefix = self.cls_emb is None and pool_type in ("argmax", "eos", "last", "first")

    @classmethod
    def of(cls, model: torch.nn.Module) -> TextTower | None:
        if hasattr(model, "token_embedding") and hasattr(model, "ln_final"):  # open_clip.CLIP
            return cls(model, model.text_pool_type, getattr(model, "text_eos_id", None))
        text = getattr(model, "text", None)  # CustomTextCLIP with an open_clip TextTransformer
        if text is not None and hasattr(text, "token_embedding") and hasattr(text, "ln_final"):
            if getattr(text, "cls_emb", None) is not None:
                return None
            return cls(text, text.pool_type, getattr(text, "eos_id", None))
        return None  # e.g. a Hugging Face text encoder: encoded by the model itself, no prompt tokens

    def _pool_index(self, ids: torch.Tensor) -> torch.Tensor | None:
        if self.pool_type == "argmax":
            return ids.argmax(dim=-1)
        if self.pool_type == "eos":
            return (ids == self.eos_id).int().argmax(dim=-1)
        return None

    def __call__(
        self,
        ids: torch.Tensor,
        prefix: torch.Tensor | None,
        sot_id: int | None,
        deep: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        m = self.owner
        cast = m.transformer.get_cast_dtype()
        length = ids.shape[1]
        x = m.token_embedding(ids).to(cast)
        valid = ids != getattr(m, "pad_id", 0)
        index = self._pool_index(ids)
        at = 1 if sot_id is not None and bool((ids[:, 0] == sot_id).all()) else 0
        if prefix is not None:
            n = prefix.shape[0]
            if n >= length - 1:
                raise ConfigError(
                    f"{n} learnable prompt tokens do not fit the text context of {length} tokens; use fewer tokens."
                )
            keep = length - n
            x, valid = x[:, :keep].clone(), valid[:, :keep].clone()
            if index is not None:  # keep the pooled (end-of-text) token when the cut would drop it
                cut = index >= keep
                if bool(cut.any()):
                    rows = cut.nonzero().squeeze(1)
                    x[rows, keep - 1] = m.token_embedding(ids[rows, index[rows]]).to(cast)
                    valid[rows, keep - 1] = True
                    index = torch.where(cut, torch.full_like(index, keep - 1), index)
            tokens = prefix.to(device=x.device, dtype=x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :at], tokens, x[:, at:]], dim=1)
            valid = torch.cat([valid[:, :at], torch.ones_like(valid[:, :n]), valid[:, at:]], dim=1)
            if index is not None:
                index = torch.where(index >= at, index + n, index)
        x = x + m.positional_embedding[:length].to(cast)
        mask = m.attn_mask
        if mask is not None:
            mask = mask[:length, :length].to(device=x.device, dtype=x.dtype)
        if self.use_pad_mask:
            pad = torch.zeros(valid.shape, dtype=x.dtype, device=x.device).masked_fill(~valid, float("-inf"))
            pad = pad[:, None, :].expand(-1, length, -1).repeat_interleave(m.heads, 0)
            mask = pad if mask is None else mask.unsqueeze(0) + pad
        x = m.ln_final(self._transformer(x, mask, deep or (), at))
        if index is not None:
            pooled = x[torch.arange(x.shape[0], device=x.device), index]
        else:
            pooled = x[:, -1] if self.pool_type == "last" else x[:, 0]
        proj = m.text_projection
        if proj is None:
            return pooled
        return proj(pooled) if isinstance(proj, torch.nn.Module) else pooled @ proj


    def _transformer(self, x: torch.Tensor, mask: torch.Tensor | None, deep: Sequence[torch.Tensor], at: int):
        """The text transformer on batch-first ``x``; deep prompt ``j`` replaces tokens ``at..`` before block ``j``."""
        transformer = self.owner.transformer
        if not deep:
            return transformer(x, attn_mask=mask)
        batch_first = getattr(transformer, "batch_first", True)
        h = x  # kept batch-first; blocks of an older sequence-first transformer get it transposed
        for index, block in enumerate(transformer.resblocks):
            if 1 <= index <= len(deep):
                tokens = deep[index - 1].to(device=h.device, dtype=h.dtype)
                if at + tokens.shape[0] > h.shape[1]:
                    raise ConfigError(f"Deep prompt {index - 1} has {tokens.shape[0]} tokens; the text has {h.shape[1]}.")
                tokens = tokens.unsqueeze(0).expand(h.shape[0], -1, -1)
                h = torch.cat([h[:, :at], tokens, h[:, at + tokens.shape[1]:]], dim=1)
            h = block(h if batch_first else h.transpose(0, 1), attn_mask=mask)
            h = h if batch_first else h.transpose(0, 1)
        return h
