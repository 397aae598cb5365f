"""CLIP (and other open_clip ViT models) as a zsad backbone.

Any open_clip architecture with a ViT image tower works; a checkpoint is named ``"ARCH:TAG"`` (architecture and
pretrained tag, e.g. ``"ViT-L-14-336:openai"``), ``"ARCH:/path/to/weights.pt"``, ``"ARCH"`` alone (random
initialisation), or an open_clip schema id (``"hf-hub:org/repo"``, ``"local-dir:/path"``). Needs the ``clip``
extra (``pip install 'zsad[clip]'``).

Outputs:

* **global** (both roles ``object`` and ``spatial``): the projected image embedding (``encode_image``);
* **patches**: the patch tokens after ``ln_post`` projected into the joint space, ``tokens @ visual.proj``
  (the same map the class token goes through, so patches and texts are compared in one space);
* **similarity**: ``softmax(logit_scale.exp() * cos)`` over [normal, abnormal]; models trained with a sigmoid
  loss (a ``logit_bias``, e.g. open_clip's SigLIP ports) use ``sigmoid(scale * cos + bias)`` per class;
* **windows** (``FeatureRequest.window_scales``): the tokens entering the tower (class token, patch tokens and
  position embeddings, before ``ln_pre``) are gathered per ``s x s`` window; every window is one short
  ``(1 + s²)``-token sequence through ``ln_pre``, the transformer (attention only inside the window), ``ln_post``
  and the pooling and projection of the whole image. All windows of a batch run together, batch-first (on CLIP
  ViT towers with less arithmetic than separate forwards, :mod:`zsad.backbones.clip_windows`);
* **unprojected patches**: the patch tokens after ``ln_post``, before ``@ proj`` (the tower's width);
* **layers** (``FeatureRequest.layers``, 1-based blocks): ``ln_post(h_l) @ proj`` of the patch tokens.

Method options (``backbone.options``; without them the model is open_clip's, unchanged):

* ``dpam_start``: V-V attention (DPAM, :mod:`zsad.backbones.dpam`) on blocks ``dpam_start..L`` as a second path;
  the layers of those blocks are read from the V-V path, the global and patch tokens from the original one
  (AnomalyCLIP: 6 of 24);
* ``global_ln_post=False``: the global embedding is the class token after the last block ``@ proj``, without
  ``ln_post`` (AnomalyCLIP);
* ``pos_interpolation="bilinear"``: position embeddings resized for other input sizes from the stored table by
  ``F.interpolate(mode="bilinear", align_corners=False)`` without antialias, in float32 (AnomalyCLIP), instead of
  open_clip's bicubic, antialiased ``resize_pos_embed``.

Windows always run through the plain tower.

OpenAI weights were trained with QuickGELU: a tag that says so builds its architecture with QuickGELU even when
the architecture's name lacks ``-quickgelu`` (open_clip itself only warns).

Image size: the position embeddings are resized to ``image_size`` once when the model is built (open_clip's
``force_image_size``, bicubic with antialias, applied to pretrained tables at load time); an input of another
size (a multiple of the patch size) is resized on the fly with the same interpolation (a negligible cost).

Texts (learnable prompts ``prefix``, deep prompts ``deep``): :mod:`zsad.backbones.clip_text`.

Example (a tiny random model, offline):
    >>> bb = create_open_clip(None, random_config="tiny")
    >>> import torch
    >>> f = bb.encode_image(torch.rand(1, 3, 56, 56))
    >>> f.patches.shape, f.grid, bb.encode_text(["a photo of a nut"]).shape
    (torch.Size([1, 16, 32]), (4, 4), torch.Size([1, 32]))
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from zsad.backbones.base import (
    Backbone,
    FeatureRequest,
    ImageFeatures,
    Preprocessing,
    sliding_windows,
)
from zsad.backbones.clip_text import TextTower
from zsad.backbones.clip_windows import window_blocks
from zsad.backbones.dpam import check_dpam_blocks, dual_path_blocks
from zsad.backbones.packed_attention import is_packed_block
from zsad.errors import CheckpointError, ConfigError, WeightsError, require

__all__ = ["TINY_CLIP_CONFIG", "OpenClipBackbone", "create_open_clip", "split_checkpoint"]

#: a tiny CLIP architecture for tests and docs (56 px, patch 14, 1.7M parameters, the bundled BPE vocabulary)
TINY_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 56, "layers": 2, "width": 48, "head_width": 16, "patch_size": 14, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_SCHEMAS = ("hf-hub:", "local-dir:")
#: window sequences per forward pass of the tower (bounds the memory of window embeddings)
_WINDOW_CHUNK = 4096
#: window tokens per pass of the tower on the CPU (cache-sized activations: the tiny parity model computes its
#: windows about 25 % faster in passes of 128-256 windows than all at once; a ViT-B is indifferent)
_CPU_WINDOW_TOKENS = 2048
#: tokens per pass of the image tower on the CPU: larger batches run in sub-batches (their activations then stay
#: cache-sized; a ViT-L at 518 px runs about 15 % faster per image one or two at a time than four at a time)
_CPU_TOKENS_PER_PASS = 4096
_POS_INTERPOLATIONS = ("bicubic", "bilinear")


def split_checkpoint(checkpoint: str) -> tuple[str, str | None]:
    """Split ``"ARCH:TAG"`` into ``(arch, tag)``; schema ids and bare names have no tag.

    Example:
        >>> split_checkpoint("ViT-L-14-336:openai"), split_checkpoint("ViT-B-32"), split_checkpoint("hf-hub:a/b")
        (('ViT-L-14-336', 'openai'), ('ViT-B-32', None), ('hf-hub:a/b', None))
    """
    if checkpoint.startswith(_SCHEMAS):
        return checkpoint, None
    arch, sep, tag = checkpoint.partition(":")
    return arch, (tag if sep and tag else None)


class OpenClipBackbone(Backbone):
    """An open_clip model with a ViT image tower as a zsad backbone (see the module docstring).

    Args:
        model: an ``open_clip`` ``CLIP`` or ``CustomTextCLIP`` model.
        tokenizer: the model's open_clip tokenizer (``texts -> (B, context_length)`` ids).
        source: where the weights came from (for messages).
        dpam_start: first block (1-based) with DPAM V-V attention, or ``None`` (the plain tower).
        global_ln_post: pool the global embedding through ``ln_post`` (open_clip) or not (AnomalyCLIP).
        pos_interpolation: ``"bicubic"`` (open_clip's) or ``"bilinear"`` (AnomalyCLIP's) resizing of position
            embeddings for other input sizes.
    """

    similarity = "softmax"

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        source: str = "",
        dpam_start: int | None = None,
        global_ln_post: bool = True,
        pos_interpolation: str = "bicubic",
    ) -> None:
        super().__init__()
        visual = getattr(model, "visual", None)
        if visual is None or not all(hasattr(visual, a) for a in ("conv1", "class_embedding", "positional_embedding")):
            raise ConfigError(
                f"The open_clip model {source or type(model).__name__} has a {type(visual).__name__} image tower; zsad "
                "needs patch tokens, which only open_clip's ViT towers (VisionTransformer) provide. Pick a ViT "
                "architecture, e.g. 'ViT-L-14-336:openai' or 'ViT-B-16:openai'."
            )
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type", "tok") not in ("tok", "avg"):
            raise ConfigError(
                f"The open_clip model {source} pools its image tokens with an attention pooler; its tokens are not "
                "patch tokens, so it cannot give pixel maps. Pick a CLIP-style ViT architecture."
            )
        self.model, self.tokenizer, self.source = model, tokenizer, source
        if dpam_start is not None:
            check_dpam_blocks(visual.transformer.resblocks, dpam_start, f"the open_clip model {source or 'given'}")
        if pos_interpolation not in _POS_INTERPOLATIONS:
            raise ConfigError(
                f"backbone.options.pos_interpolation must be one of {list(_POS_INTERPOLATIONS)}, got {pos_interpolation!r}."
            )
        if not isinstance(global_ln_post, bool):
            raise ConfigError(f"backbone.options.global_ln_post must be true or false, got {global_ln_post!r}.")
        self.dpam_start, self.global_ln_post, self.pos_interpolation = dpam_start, global_ln_post, pos_interpolation
        self.embed_dim = int(visual.proj.shape[1]) if visual.proj is not None else int(visual.class_embedding.shape[0])
        self.patch_size = int(_pair(visual.patch_size)[0])
        self.default_image_size = int(_pair(visual.image_size)[0])
        self._grid = tuple(int(g) for g in _pair(visual.grid_size))
        scale = float(model.logit_scale.detach().float().exp())
        self.logit_scale = scale
        self.temperature = 1.0 / scale
        bias = getattr(model, "logit_bias", None)
        self.logit_bias = None if bias is None else float(bias.detach().float())
        if self.logit_bias is not None:
            self.similarity = "sigmoid"
        cfg = getattr(visual, "preprocess_cfg", None) or {}
        resample = cfg.get("interpolation", "bicubic")
        self.preprocessing = Preprocessing(
            tuple(cfg.get("mean", _CLIP_MEAN)),
            tuple(cfg.get("std", _CLIP_STD)),
            resample if resample in ("bilinear", "bicubic", "nearest") else "bicubic",
        )
        self._text = TextTower.of(model)
        self.supports_learnable_prompts = self._text is not None and self._text.supports_prefix
        self.supports_deep_prompts = self.supports_learnable_prompts
        self.text_layers = len(self._text.owner.transformer.resblocks) if self.supports_deep_prompts else 0
        self.prompt_width = int(self._text.width) if self._text is not None else 0
        self.supports_windows = True
        self.supports_unprojected_patches = True
        self.vision_layers = len(visual.transformer.resblocks)
        self._packed_blocks = all(is_packed_block(block) for block in visual.transformer.resblocks)
        self.eval()

    # -- images ------------------------------------------------------------------------------------------------
    def _positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position embeddings for a patch grid (resized like open_clip's ``resize_pos_embed`` when needed, or
        bilinearly without antialias with ``pos_interpolation="bilinear"``); the class row is kept."""
        pos = self.model.visual.positional_embedding
        if grid == self._grid:
            return pos
        img = pos[1:].float().reshape(1, *self._grid, -1).permute(0, 3, 1, 2)
        if self.pos_interpolation == "bilinear":
            img = F.interpolate(img, size=grid, mode="bilinear", align_corners=False)
        else:
            img = F.interpolate(img, size=grid, mode="bicubic", antialias=True, align_corners=False)
        return torch.cat([pos[:1], img.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(pos.dtype)])

    def _embed(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Tokens entering the tower (class token + patches + position embeddings, before ``ln_pre``)."""
        v = self.model.visual
        grid = (pixels.shape[-2] // self.patch_size, pixels.shape[-1] // self.patch_size)
        x = v.conv1(pixels.to(v.conv1.weight.dtype))  # (B, width, rows, cols)
        x = x.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self._positions(grid).to(x.dtype)
        return v.patch_dropout(x), grid

    def _blocks(
        self, x: torch.Tensor, collect: Sequence[int] = (), *, dpam: bool = False
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Run the tower's blocks on batch-first tokens; also return the outputs of the ``collect`` blocks (1-based).

        With ``dpam`` (and a ``dpam_start``), blocks from ``dpam_start`` on run both paths
        (:func:`~zsad.backbones.dpam.dual_path_blocks`): the original path is returned, the V-V path is collected.
        """
        transformer = self.model.visual.transformer
        dual = dpam and self.dpam_start is not None
        if not collect and not dual:
            return transformer(x), {}
        batch_first = getattr(transformer, "batch_first", True)
        h = x if batch_first else x.transpose(0, 1)
        if dual:
            if not batch_first:
                raise ConfigError("DPAM needs a batch-first open_clip transformer (open_clip >= 2.23).")
            return dual_path_blocks(transformer.resblocks, h, self.dpam_start, collect)
        out = {}
        for index, block in enumerate(transformer.resblocks, 1):
            h = block(h)
            if index in collect:
                out[index] = h if batch_first else h.transpose(0, 1)
        return (h if batch_first else h.transpose(0, 1)), out

    def _pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pooled, patch tokens)`` after ``ln_post`` as the model pools (class token or average)."""
        v = self.model.visual
        if getattr(v, "final_ln_after_pool", False):
            pooled = v.ln_post(x[:, 0] if v.pool_type == "tok" else x[:, 1:].mean(dim=1))
            return pooled, v.ln_post(x[:, 1:])
        x = v.ln_post(x)
        return (x[:, 0] if v.pool_type == "tok" else x[:, 1:].mean(dim=1)), x[:, 1:]

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        proj = self.model.visual.proj
        return x @ proj if proj is not None else x

    def image_features(self, pixels: torch.Tensor, request: FeatureRequest) -> ImageFeatures:
        tokens = (pixels.shape[-2] // self.patch_size) * (pixels.shape[-1] // self.patch_size) + 1
        per_pass = max(1, _CPU_TOKENS_PER_PASS // tokens) if pixels.device.type == "cpu" else pixels.shape[0]
        if pixels.shape[0] > per_pass:
            return ImageFeatures.concat([self._image_features(c, request) for c in pixels.split(per_pass)])
        return self._image_features(pixels, request)

    def _image_features(self, pixels: torch.Tensor, request: FeatureRequest) -> ImageFeatures:
        v = self.model.visual
        tokens_in, grid = self._embed(pixels)
        x, collected = self._blocks(v.ln_pre(tokens_in), request.layers, dpam=True)
        _, tokens = self._pool(x)
        g = self._global(x)
        return ImageFeatures(
            globals={"object": g, "spatial": g},
            patches=self._project(tokens),
            grid=grid,
            windows={s: self._windows(tokens_in, grid, s) for s in request.window_scales},
            layers={i: self._project(self._pool(h)[1]) for i, h in collected.items()},
            unprojected_patches=tokens if request.unprojected_patches else None,
        )

    def _global(self, x: torch.Tensor) -> torch.Tensor:
        """The projected global embedding of the tower's output tokens (pooled like the model, or the class token
        without ``ln_post`` when ``global_ln_post`` is off)."""
        return self._project(self._pool(x)[0] if self.global_ln_post else x[:, 0])

    def _windows(self, tokens_in: torch.Tensor, grid: tuple[int, int], scale: int) -> torch.Tensor:
        """``(B, W, D)`` embeddings of every ``scale x scale`` window, each window its own short sequence.

        All windows of the batch run through the plain tower together (when run eagerly in chunks of
        ``_WINDOW_CHUNK`` sequences, or ``_CPU_WINDOW_TOKENS`` tokens on the CPU) and are pooled like the whole
        image. Towers of packed pre-norm blocks (CLIP ViTs) run them through
        :func:`~zsad.backbones.clip_windows.window_blocks` (shared first-block projections, SDPA, only the class
        token through the last block when the tower pools it), other towers through their own blocks.
        """
        v = self.model.visual
        index = sliding_windows(grid, scale, tokens_in.device)  # (W, s²)
        b, w = tokens_in.shape[0], index.shape[0]
        # chunks bound eager memory; a traced graph (export) takes every window at once, so that the number of
        # chunks does not fix the batch size
        chunk = _WINDOW_CHUNK if tokens_in.device.type != "cpu" else max(1, _CPU_WINDOW_TOKENS // (1 + scale * scale))
        chunk = None if torch.compiler.is_compiling() else chunk
        if self._packed_blocks:
            seqs = torch.cat([index.new_zeros(w, 1), index + 1], dim=1)  # (W, 1 + s²): class token, window patches
            class_only = getattr(v, "pool_type", "tok") == "tok"  # the pooled class token is all a window needs
            x = window_blocks(v.transformer.resblocks, v.ln_pre(tokens_in), seqs, class_only=class_only, chunk=chunk)
            return self._global(x).reshape(b, w, -1)
        patches = tokens_in[:, 1:][:, index]  # (B, W, s², width)
        cls = tokens_in[:, :1].unsqueeze(1).expand(b, w, 1, -1)
        seqs = torch.cat([cls, patches], dim=2).flatten(0, 1)  # (B*W, 1 + s², width)
        chunks = (seqs,) if chunk is None else seqs.split(chunk)
        pooled = [self._global(self._blocks(v.ln_pre(c))[0]) for c in chunks]
        return torch.cat(pooled).reshape(b, w, -1)

    # -- texts -------------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``(B, context_length)`` as the model's open_clip tokenizer makes them."""
        return self.tokenizer(list(texts)).long()

    def text_features(
        self, texts: Sequence[str], prefix: torch.Tensor | None = None, deep: Sequence[torch.Tensor] | None = None
    ) -> torch.Tensor:
        ids = self.tokenize(texts).to(self.device)
        if self._text is None:
            return self.model.encode_text(ids)
        return self._text(ids, prefix, sot_id=getattr(self.tokenizer, "sot_token_id", None), deep=deep)

    # -- similarity --------------------------------------------------------------------------------------------
    def scale_similarities(self, cosine: torch.Tensor) -> torch.Tensor:
        logits = cosine * self.logit_scale
        return logits + self.logit_bias if self.logit_bias is not None else logits


def _pair(v: Any) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


@contextlib.contextmanager
def _quiet_random_init():
    """Silence open_clip's root-logger warnings about random initialisation (asked for on purpose)."""

    class _Drop(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            msg = record.getMessage()
            return not ("initialized randomly" in msg or "no CLIP weights found" in msg)

    root = logging.getLogger()
    filt = _Drop()
    root.addFilter(filt)
    try:
        yield
    finally:
        root.removeFilter(filt)


def create_open_clip(
    checkpoint: str | None = "ViT-L-14-336:openai",
    *,
    image_size: int | None = None,
    model_config: dict | str | None = None,
    random_config: dict | str | None = None,
    precision: str = "fp32",
    cache_dir: str | None = None,
    dpam_start: int | None = None,
    global_ln_post: bool = True,
    pos_interpolation: str = "bicubic",
) -> OpenClipBackbone:
    """Build an open_clip backbone (registered as ``"open_clip"``).

    Args:
        checkpoint: ``"ARCH:TAG"`` (pretrained tag or weights file), ``"ARCH"`` (random weights), or an open_clip
            schema id (``"hf-hub:..."``, ``"local-dir:..."``). With ``model_config``: ``None`` or a name (random
            weights) or a path to a weights file.
        image_size: input size the position embeddings are resized to at load time (e.g. 518 for the
            ``tipsomaly_clip`` recipe); default: the architecture's.
        model_config: an open_clip model config dict (``{"embed_dim", "vision_cfg", "text_cfg", ...}``) to build
            instead of a registered architecture (its weights from ``checkpoint``), or ``"tiny"`` for
            :data:`TINY_CLIP_CONFIG`.
        random_config: random weights for tests and benchmarks (the option every backbone names alike):
            ``"tiny"`` (:data:`TINY_CLIP_CONFIG`) or an open_clip model config dict; ``checkpoint`` must be None.
        precision: open_clip precision (``"fp32"``; the detector casts with its ``dtype``).
        cache_dir: open_clip's download cache (default: its own).
        dpam_start: first block (1-based) with DPAM V-V attention (AnomalyCLIP: 6); ``None`` = plain tower.
        global_ln_post: ``False`` takes the global embedding without ``ln_post`` (AnomalyCLIP).
        pos_interpolation: ``"bicubic"`` (open_clip, antialiased) or ``"bilinear"`` (AnomalyCLIP, no antialias)
            resizing of the position embeddings for other input sizes.

    Example:
        >>> bb = create_open_clip(None, random_config="tiny", image_size=70)
        >>> bb.default_image_size, bb.patch_size, bb.similarity
        (70, 14, 'softmax')
    """
    open_clip = require("open_clip", "clip", "The 'open_clip' backbone (CLIP models)")
    if random_config is not None:
        if checkpoint is not None or model_config is not None:
            raise ConfigError(
                "backbone.options.random_config builds random weights: set backbone.checkpoint to null and drop "
                "model_config (use model_config with a weights file instead)."
            )
        model_config = random_config
    options: dict[str, Any] = {"precision": precision}
    if image_size is not None:
        if int(image_size) <= 0:
            raise ConfigError(f"backbone.options.image_size must be a positive integer, got {image_size!r}.")
        options["force_image_size"] = int(image_size)
    if cache_dir is not None:
        options["cache_dir"] = cache_dir
    variant = {"dpam_start": dpam_start, "global_ln_post": global_ln_post, "pos_interpolation": pos_interpolation}
    if model_config is not None:
        return _from_config(open_clip, checkpoint, model_config, options, variant)
    if not checkpoint:
        raise ConfigError(
            "backbone.checkpoint is required for the 'open_clip' backbone: 'ARCH:TAG' such as 'ViT-L-14-336:openai' "
            "(see open_clip.list_pretrained()), 'ARCH' for random weights, or pass backbone.options.model_config."
        )
    arch, tag = split_checkpoint(str(checkpoint))
    if not arch.startswith(_SCHEMAS) and arch not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(f"Unknown open_clip architecture {arch!r} in backbone.checkpoint={checkpoint!r}.{hint}")
    if tag is not None and not os.path.isfile(tag) and tag not in open_clip.list_pretrained_tags_by_model(arch):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "(none)"
        raise ConfigError(f"open_clip has no pretrained tag {tag!r} for {arch}; known tags: {tags}.")
    if tag is not None and not arch.startswith(_SCHEMAS):
        # open_clip only warns when a tag was trained with QuickGELU (all OpenAI weights) but the architecture
        # config says GELU; the features would then be wrong, so follow the tag
        tag_cfg = open_clip.get_pretrained_cfg(arch, tag) or {}
        if tag_cfg.get("quick_gelu", False) and not (open_clip.get_model_config(arch) or {}).get("quick_gelu", False):
            options["force_quick_gelu"] = True
    _check_hub(open_clip, arch, tag)
    try:
        if tag is None and not arch.startswith(_SCHEMAS):
            with _quiet_random_init():
                model = open_clip.create_model(arch, pretrained=None, **options)
        else:
            model = open_clip.create_model(arch, pretrained=tag, **options)
    except RuntimeError as exc:
        raise WeightsError(
            f"Cannot load the open_clip model {checkpoint!r}: {exc}. Check your network, or download the weights "
            "once and pass 'ARCH:/path/to/weights' as backbone.checkpoint."
        ) from exc
    return OpenClipBackbone(model.eval(), open_clip.get_tokenizer(arch), source=str(checkpoint), **variant)


def _check_hub(open_clip: Any, arch: str, tag: str | None) -> None:
    """Fail fast in one line when pretrained weights must come from an unreachable Hugging Face hub."""
    from zsad.weights import check_hub_reachable

    if arch.startswith("hf-hub:"):
        check_hub_reachable(arch[len("hf-hub:"):], ("open_clip_config.json",))
    elif tag is not None and not os.path.isfile(tag):
        parts = (open_clip.get_pretrained_cfg(arch, tag) or {}).get("hf_hub", "").strip("/").split("/", 2)
        if len(parts) >= 2:  # "org/repo/" or "org/repo/filename"
            names = parts[2:] or ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            check_hub_reachable("/".join(parts[:2]), tuple(names))


def _from_config(
    open_clip: Any, checkpoint: str | None, model_config: dict | str, options: dict, variant: dict
) -> OpenClipBackbone:
    if model_config == "tiny":
        model_config = TINY_CLIP_CONFIG
    if not isinstance(model_config, dict):
        raise ConfigError(
            f"backbone.options.model_config must be an open_clip model config dict or 'tiny', got {model_config!r}."
        )
    weights = None
    if checkpoint:
        arch, tag = split_checkpoint(str(checkpoint))
        path = tag or arch
        if os.path.isfile(path):
            weights = path
        elif tag is not None:
            raise ConfigError(
                f"backbone.checkpoint={checkpoint!r} names a pretrained tag, but backbone.options.model_config builds "
                "its own architecture: pass a weights file path, a bare name (random weights), or drop model_config."
            )
    with tempfile.TemporaryDirectory(prefix="zsad-open-clip-") as folder:
        (Path(folder) / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_config}))
        try:
            with _quiet_random_init():
                model = open_clip.create_model(f"local-dir:{folder}", **options)
            tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        except (TypeError, KeyError, ValueError) as exc:
            raise ConfigError(f"backbone.options.model_config is not a valid open_clip model config: {exc}") from exc
    if weights is not None:
        try:
            open_clip.load_checkpoint(model, weights, strict=True)
        except (RuntimeError, KeyError) as exc:
            raise CheckpointError(f"The weights in {weights} do not fit backbone.options.model_config: {exc}") from exc
    return OpenClipBackbone(model.eval(), tokenizer, source=str(checkpoint or "model_config"), **variant)
