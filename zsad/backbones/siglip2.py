"""SigLIP / SigLIP2 (transformers) as a zsad backbone.

Both checkpoint families load from a Hugging Face hub id or a local folder, told apart by the config's
``model_type``:

* **fixed resolution** (``"siglip"``: ``google/siglip2-{base,large,so400m,giant-opt}-patch16-{224..512}`` and the
  SigLIP v1 models): ``SiglipModel``; other input sizes interpolate the position embeddings (bicubic);
* **NaFlex** (``"siglip2"``: ``google/siglip2-*-naflex``): ``Siglip2Model``; the square input is cut into
  ``(rows * cols, 3 * p * p)`` patches in the processor's ``(row, col, channel)`` order with ``spatial_shapes``
  ``(rows, cols)``, and the model resizes its position grid per image.

Outputs:

* **global** (both roles): the pooled image embedding of the attention-pooling (MAP) head, ``pooler_output``;
* **patches** (``dense_readout="head"``, the default): every patch token is brought into the joint space
  through the MAP head's *value path*: ``h_j = out_proj(v_proj(x_j))`` followed by the head's residual MLP,
  ``h_j + mlp(layernorm(h_j))``. This is exactly what the head returns when its probe attends to patch ``j``
  alone: the image embedding of a one-patch image, in the space the texts are compared in. (The pooled
  embedding is the same map applied to the attention-weighted mixture of the value vectors, so before the MLP it
  is a convex combination of these per-patch values; a MaskCLIP-style readout applied to the pooling head.) It
  costs two linear layers and an MLP per patch. ``dense_readout="raw"`` returns the post-LayerNorm encoder
  states (``last_hidden_state``) as the published Tipsomaly code does; they never pass through the head, live in
  the encoder's residual space rather than the image-text space, and give chance-level pixel scores, so "raw" is
  kept for reproducing that code only.
* **texts**: pooled as the model does (the last position after the final LayerNorm, then the ``head`` linear),
  tokenised lower-case with ``padding="max_length"`` to the model's text length (64);
* **similarity**: ``sigmoid(cos * exp(logit_scale) + logit_bias)``, each of [normal, abnormal] independently.

Learnable prompts (``prefix``, ``(n, width)``), as in Tipsomaly's SigLIP path: the prompt vectors are prepended
to the token embeddings, the sequence is cut back to the text length, then the position embeddings are added;
no attention mask (SigLIP is trained without one) and pooling stays at the last position.

Needs the ``siglip2`` extra (``protobuf`` for the Gemma tokenizer of the hub checkpoints).

Example (a tiny random model, offline):
    >>> bb = create_siglip2(None, random_config="tiny")
    >>> import torch
    >>> f = bb.encode_image(torch.rand(1, 3, 64, 64))
    >>> f.patches.shape, f.grid, bb.similarity
    (torch.Size([1, 16, 32]), (4, 4), 'sigmoid')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from zsad._env import offline
from zsad.backbones.base import Backbone, FeatureRequest, ImageFeatures, Preprocessing
from zsad.backbones.tokenizers import ByteTokenizer, HFTokenizer
from zsad.errors import ConfigError, MissingDependencyError, WeightsError, require

__all__ = ["SiglipBackbone", "create_siglip2", "tiny_siglip_config"]


def tiny_siglip_config(naflex: bool = False) -> Any:
    """A tiny ``SiglipConfig`` (64 px, patch 16) or ``Siglip2Config`` (NaFlex, 16 patches) for tests and docs.

    Example:
        >>> tiny_siglip_config().model_type, tiny_siglip_config(naflex=True).model_type
        ('siglip', 'siglip2')
    """
    from transformers import Siglip2Config, SiglipConfig

    text = {"vocab_size": 256, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 16, "bos_token_id": None, "eos_token_id": None,
            "pad_token_id": 0}
    vision = {"patch_size": 16, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4}
    if naflex:
        return Siglip2Config(text_config=text, vision_config={**vision, "num_patches": 16})
    return SiglipConfig(text_config=text, vision_config={**vision, "image_size": 64})


class SiglipBackbone(Backbone):
    """A ``SiglipModel`` (fixed resolution) or ``Siglip2Model`` (NaFlex) as a zsad backbone (see module docs).

    Args:
        model: the transformers model.
        tokenizer: callable ``texts -> (B, L)`` ids, padded to the model's text length.
        dense_readout: ``"head"`` (patch tokens through the MAP head's value path; default) or ``"raw"``
            (``last_hidden_state``, as the published Tipsomaly code).
        source: where the weights came from (for messages).
    """

    similarity = "sigmoid"
    supports_learnable_prompts = True

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        dense_readout: Literal["head", "raw"] = "head",
        source: str = "",
    ) -> None:
        super().__init__()
        if dense_readout not in ("head", "raw"):
            raise ConfigError(f"backbone.options.dense_readout must be 'head' or 'raw', got {dense_readout!r}.")
        vcfg, tcfg = model.config.vision_config, model.config.text_config
        if not getattr(vcfg, "vision_use_head", True):
            raise ConfigError(
                f"The SigLIP model {source} has no attention-pooling head (vision_use_head=False), so it has no "
                "image embedding in the joint space."
            )
        self.model, self.tokenizer, self.source = model, tokenizer, source
        self.dense_readout = dense_readout
        self.naflex = model.config.model_type == "siglip2"
        self.embed_dim = int(vcfg.hidden_size)
        self.prompt_width = int(tcfg.hidden_size)
        self.patch_size = int(vcfg.patch_size)
        if self.naflex:
            self.default_image_size = math.isqrt(int(vcfg.num_patches)) * self.patch_size
        else:
            self.default_image_size = int(vcfg.image_size)
        self.max_text_len = int(tcfg.max_position_embeddings)
        self.logit_scale = float(model.logit_scale.detach().float().exp().reshape(-1)[0])
        self.logit_bias = float(model.logit_bias.detach().float().reshape(-1)[0])
        # SiglipImageProcessor resizes bicubic, Siglip2ImageProcessor (NaFlex) bilinear; both map to [-1, 1]
        self.preprocessing = Preprocessing((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear" if self.naflex else "bicubic")
        self.eval()

    # -- images ------------------------------------------------------------------------------------------------
    def image_features(self, pixels: torch.Tensor, request: FeatureRequest) -> ImageFeatures:
        vision = self.model.vision_model
        b, c, height, width = pixels.shape
        p = self.patch_size
        rows, cols = height // p, width // p
        dtype = vision.embeddings.patch_embedding.weight.dtype
        if self.naflex:
            patches = pixels.to(dtype).reshape(b, c, rows, p, cols, p).permute(0, 2, 4, 3, 5, 1)
            out = vision(
                pixel_values=patches.reshape(b, rows * cols, p * p * c),
                pixel_attention_mask=torch.ones(b, rows * cols, dtype=torch.long, device=pixels.device),
                spatial_shapes=torch.tensor([rows, cols], dtype=torch.long, device=pixels.device).expand(b, 2),
            )
        else:
            native = (height, width) == (self.default_image_size,) * 2
            out = vision(pixel_values=pixels.to(dtype), interpolate_pos_encoding=not native)
        tokens = out.last_hidden_state
        if self.dense_readout == "head":
            tokens = self._head_readout(tokens)
        g = out.pooler_output
        return ImageFeatures(globals={"object": g, "spatial": g}, patches=tokens, grid=(rows, cols))

    def _head_readout(self, x: torch.Tensor) -> torch.Tensor:
        """Each token through the MAP head as if the probe attended to it alone (value path + residual MLP)."""
        head = self.model.vision_model.head
        attn = head.attention
        d = attn.embed_dim
        bias = attn.in_proj_bias[2 * d :] if attn.in_proj_bias is not None else None
        h = attn.out_proj(F.linear(x, attn.in_proj_weight[2 * d :], bias))
        return h + head.mlp(head.layernorm(h))

    # -- texts -------------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``(B, L)``, lower-cased and padded to the model's text length (64 for the real models)."""
        return self.tokenizer(list(texts))

    def text_features(self, texts: Sequence[str], prefix: torch.Tensor | None = None) -> torch.Tensor:
        text = self.model.text_model
        ids = self.tokenize(texts).to(self.device)
        x = text.embeddings.token_embedding(ids)
        if prefix is not None:
            tokens = prefix.to(device=x.device, dtype=x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
            x = torch.cat([tokens, x], dim=1)[:, : ids.shape[1]]
        x = text.embeddings(inputs_embeds=x)  # adds the position embeddings 0..L-1
        x = text.final_layer_norm(text.encoder(inputs_embeds=x, attention_mask=None).last_hidden_state)
        return text.head(x[:, -1])

    # -- similarity --------------------------------------------------------------------------------------------
    def scale_similarities(self, cosine: torch.Tensor) -> torch.Tensor:
        return cosine * self.logit_scale + self.logit_bias


def _model_class(model_type: str, source: str):
    import transformers

    if model_type == "siglip":
        return transformers.SiglipModel
    if model_type == "siglip2":
        return transformers.Siglip2Model
    raise ConfigError(
        f"{source} is a {model_type!r} model, not SigLIP: the 'siglip2' backbone takes SigLIP / SigLIP2 checkpoints "
        "(model_type 'siglip' for fixed resolution, 'siglip2' for NaFlex), e.g. 'google/siglip2-base-patch16-224'."
    )


def create_siglip2(
    checkpoint: str | Path | None = "google/siglip2-base-patch16-224",
    *,
    dense_readout: Literal["head", "raw"] = "head",
    random_config: dict | str | None = None,
    local_files_only: bool | None = None,
    seed: int = 0,
) -> SiglipBackbone:
    """Build a SigLIP / SigLIP2 backbone (registered as ``"siglip2"``).

    Args:
        checkpoint: a Hugging Face hub id or a local folder saved with ``save_pretrained``.
        dense_readout: ``"head"`` (default) or ``"raw"``; see the module docstring.
        random_config: build random weights instead (tests, benchmarks): ``"tiny"`` / ``"tiny-naflex"``
            (:func:`tiny_siglip_config`) or a config dict ``{"model_type": "siglip"|"siglip2", "text_config":
            {...}, "vision_config": {...}}``; texts then go through a byte-level stand-in tokenizer.
        local_files_only: use the local Hugging Face cache only (default: when ``ZSAD_OFFLINE`` is set).
        seed: seed of the random weights.

    Example:
        >>> bb = create_siglip2(None, random_config="tiny-naflex")
        >>> bb.naflex, bb.default_image_size, bb.encode_text(["a photo"]).shape
        (True, 64, torch.Size([1, 32]))
    """
    transformers = require("transformers", "siglip2", "The 'siglip2' backbone")
    if random_config is not None:
        if random_config in ("tiny", "tiny-naflex"):
            config = tiny_siglip_config(naflex=random_config == "tiny-naflex")
        elif isinstance(random_config, dict):
            spec = dict(random_config)
            kind = spec.pop("model_type", "siglip")
            cls = transformers.Siglip2Config if kind == "siglip2" else transformers.SiglipConfig
            if kind not in ("siglip", "siglip2"):
                raise ConfigError(f"random_config.model_type must be 'siglip' or 'siglip2', got {kind!r}.")
            config = cls(**spec)
        else:
            raise ConfigError(
                f"backbone.options.random_config must be 'tiny', 'tiny-naflex' or a config dict, got {random_config!r}."
            )
        torch.manual_seed(seed)
        model = _model_class(config.model_type, "random_config")(config)
        tokenizer = ByteTokenizer(config.text_config.vocab_size, config.text_config.max_position_embeddings)
        return SiglipBackbone(model.eval(), tokenizer, dense_readout=dense_readout, source="random_config")
    if not checkpoint:
        raise ConfigError(
            "backbone.checkpoint is required for the 'siglip2' backbone: a Hugging Face id such as "
            "'google/siglip2-base-patch16-224' (fixed resolution) or 'google/siglip2-base-patch16-naflex', or a "
            "local folder; pass backbone.options.random_config='tiny' for random test weights."
        )
    source = str(checkpoint)
    if local_files_only is None:
        local_files_only = offline()
    if not Path(source).is_dir():
        from zsad.weights import check_hub_reachable

        check_hub_reachable(source, ("config.json",), offline=local_files_only)
    try:
        config = transformers.AutoConfig.from_pretrained(source, local_files_only=local_files_only)
        model = _model_class(config.model_type, source).from_pretrained(source, local_files_only=local_files_only)
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    except OSError as exc:
        raise WeightsError(
            f"Cannot load the SigLIP model {source!r} from the Hugging Face hub or a local folder: {exc}. Check the id "
            f"(e.g. 'google/siglip2-base-patch16-224'), your network, or download it once with `hf download "
            f"{source}` and retry (ZSAD_OFFLINE=1 uses the cache only)."
        ) from exc
    except ImportError as exc:
        raise MissingDependencyError(
            f"The SigLIP tokenizer of {source} needs a package that is not installed ({exc}). "
            "Install it with: pip install 'zsad[siglip2]'"
        ) from exc
    tokenizer = HFTokenizer(hf_tokenizer, int(config.text_config.max_position_embeddings))
    return SiglipBackbone(model.eval(), tokenizer, dense_readout=dense_readout, source=source)
