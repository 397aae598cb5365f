"""TIPS v1 and TIPSv2 backbones on top of transformers' ``Tipsv2VisionModel`` / ``Tipsv2TextModel``.

Checkpoints load from

* a folder in the official PyTorch format: ``vision.npz`` (or ``*_vision.npz``), ``text.npz`` (or ``*_text.npz``,
  with its ``temperature``) and ``tokenizer.model``, plus an optional ``model.json`` describing a non-standard
  architecture (tiny test models load through the same path as real ones);
* a known checkpoint name from :mod:`zsad.weights` (``"tips-v1-l14-hr"``, ``"tips-v2-l14"``, ...), fetched into
  the cache on first use;
* a Hugging Face hub id or local HF folder of TIPSv2 (``"google/tipsv2-l14"``).

The architecture of an npz checkpoint comes from ``model.json`` when present, else from the tensor shapes (the
head count from the width, as in every published TIPS variant). Loading is strict: a missing, unexpected or
mis-shaped tensor raises :class:`~zsad.errors.CheckpointError` naming the file and keys.

Outputs follow the official implementation: the two CLS tokens after the final LayerNorm (``object`` = 1st CLS,
``spatial`` = 2nd CLS, the register slot) and the patch tokens, cast to fp32 and L2-normalised (norm clamped at
1e-3). Position embeddings are interpolated for any multiple of 14 (bilinear, antialias, size-based, fp32).

Example (a tiny random model):
    >>> from zsad.backbones.tips import TipsArchitecture, TipsBackbone
    >>> arch = TipsArchitecture.tiny()
    >>> bb = TipsBackbone.random(arch)
    >>> import torch
    >>> f = bb.encode_image(torch.rand(1, 3, 56, 56))
    >>> f.patches.shape, f.grid, sorted(f.globals)
    (torch.Size([1, 16, 32]), (4, 4), ['object', 'spatial'])
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch

from zsad._boundary import check_finite, reading
from zsad.backbones.base import Backbone, FeatureRequest, ImageFeatures, Preprocessing
from zsad.backbones.tokenizers import (
    MAX_TEXT_LEN,
    ByteTokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
)
from zsad.errors import CheckpointError, ConfigError, WeightsError

__all__ = ["TipsArchitecture", "TipsBackbone", "SentencePieceTokenizer", "create_tips", "HEADS_BY_WIDTH"]

#: attention heads of every published TIPS width (vision and text towers alike)
HEADS_BY_WIDTH = {384: 6, 768: 12, 1024: 16, 1152: 16, 1536: 24}


# ------------------------------------------------------------------------------------------------------------
# architecture
# ------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TipsArchitecture:
    """Shapes of the two TIPS towers (everything needed to build the transformers configs)."""

    vision_width: int
    vision_depth: int
    vision_heads: int
    mlp_ratio: float
    swiglu: bool
    native_image_size: int
    text_width: int
    text_layers: int
    text_heads: int
    text_mlp: int
    vocab_size: int = 32000
    patch_size: int = 14
    num_register_tokens: int = 1
    vision_ln_eps: float = 1e-6
    text_ln_eps: float = 1e-5
    max_text_len: int = MAX_TEXT_LEN

    @classmethod
    def tiny(cls, width: int = 32, vocab_size: int = 448) -> "TipsArchitecture":
        """A tiny random-weight architecture for tests and docs (native 56 px)."""
        return cls(width, 2, 4, 2.0, False, 56, width, 2, 4, 2 * width, vocab_size)

    @classmethod
    def from_model_json(cls, path: Path) -> "TipsArchitecture":
        """Read a ``model.json`` in the format of the zsad/Tipsomaly parity fixtures."""
        try:
            doc = json.loads(Path(path).read_text())
            v, t = doc["vision"], doc["text"]
            ffn = v.get("ffn", "mlp")
            if ffn not in ("mlp", "swiglu"):
                raise ValueError(f"vision.ffn must be 'mlp' or 'swiglu', got {ffn!r}")
            return cls(
                vision_width=int(v["embed_dim"]),
                vision_depth=int(v["depth"]),
                vision_heads=int(v["num_heads"]),
                mlp_ratio=float(v.get("mlp_ratio", 4.0)),
                swiglu=ffn == "swiglu",
                native_image_size=int(v.get("native_image_size", 448)),
                patch_size=int(v.get("patch_size", 14)),
                num_register_tokens=int(v.get("num_register_tokens", 1)),
                vision_ln_eps=float(v.get("layer_norm_eps", 1e-6)),
                text_width=int(t["hidden_size"]),
                text_layers=int(t["num_layers"]),
                text_heads=int(t["num_heads"]),
                text_mlp=int(t["mlp_dim"]),
                vocab_size=int(t.get("vocab_size", 32000)),
                text_ln_eps=float(t.get("layer_norm_eps", 1e-5)),
                max_text_len=int(t.get("max_len", MAX_TEXT_LEN)),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"Cannot read the architecture file {path}: {type(exc).__name__}: {exc}. It must hold "
                '{"vision": {"embed_dim", "depth", "num_heads", "mlp_ratio", "ffn", ...}, '
                '"text": {"hidden_size", "mlp_dim", "num_heads", "num_layers", "vocab_size"}}; '
                "delete it to infer the architecture from the checkpoint shapes."
            ) from exc

    @classmethod
    def infer(cls, vision: Mapping[str, np.ndarray], text: Mapping[str, np.ndarray], source: str) -> "TipsArchitecture":
        """Infer the architecture of official npz weights from their tensor shapes."""
        try:
            width = int(vision["cls_token"].shape[-1])
            depth = 1 + max(int(m.group(1)) for k in vision if (m := re.match(r"blocks\.(\d+)\.", k)))
            swiglu = "blocks.0.mlp.w12.weight" in vision
            if swiglu:
                hidden = int(vision["blocks.0.mlp.w3.weight"].shape[1])
                ratio = 4.0
                if (int(width * ratio * 2 / 3) + 7) // 8 * 8 != hidden:
                    raise ValueError(f"unsupported SwiGLU hidden size {hidden} for width {width}")
            else:
                hidden = int(vision["blocks.0.mlp.fc1.weight"].shape[0])
                ratio = hidden / width
                if int(width * ratio) != hidden:
                    ratio = float(np.nextafter(ratio, np.inf))
            grid = math.isqrt(int(vision["pos_embed"].shape[1]) - 1)
            t_width = int(text["token_embedding.weight"].shape[1])
            t_layers = 1 + max(
                int(m.group(1)) for k in text if (m := re.match(r"transformer\.resblocks\.(\d+)\.", k))
            )
            return cls(
                vision_width=width,
                vision_depth=depth,
                vision_heads=HEADS_BY_WIDTH[width],
                mlp_ratio=ratio,
                swiglu=swiglu,
                native_image_size=grid * int(vision["patch_embed.proj.weight"].shape[-1]),
                patch_size=int(vision["patch_embed.proj.weight"].shape[-1]),
                num_register_tokens=int(vision["register_tokens"].shape[1]),
                text_width=t_width,
                text_layers=t_layers,
                text_heads=HEADS_BY_WIDTH[t_width],
                text_mlp=int(text["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]),
                vocab_size=int(text["token_embedding.weight"].shape[0]),
            )
        except (KeyError, ValueError, IndexError) as exc:
            raise CheckpointError(
                f"Cannot infer the TIPS architecture of {source} from its tensors ({type(exc).__name__}: {exc}). "
                "Published TIPS widths are 384/768/1024/1152/1536; for another architecture put a model.json "
                "next to the weights (see docs: 'Backbones > TIPS > model.json')."
            ) from exc

    def hf_configs(self) -> tuple[Any, Any]:
        """The ``(Tipsv2VisionConfig, Tipsv2TextConfig)`` of this architecture."""
        from transformers import Tipsv2TextConfig, Tipsv2VisionConfig

        vision = Tipsv2VisionConfig(
            hidden_size=self.vision_width,
            num_hidden_layers=self.vision_depth,
            num_attention_heads=self.vision_heads,
            mlp_ratio=self.mlp_ratio,
            use_swiglu_ffn=self.swiglu,
            image_size=self.native_image_size,
            patch_size=self.patch_size,
            num_register_tokens=self.num_register_tokens,
            layer_norm_eps=self.vision_ln_eps,
        )
        text = Tipsv2TextConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.text_width,
            intermediate_size=self.text_mlp,
            num_hidden_layers=self.text_layers,
            num_attention_heads=self.text_heads,
            max_position_embeddings=self.max_text_len,
            layer_norm_eps=self.text_ln_eps,
        )
        return vision, text


# ------------------------------------------------------------------------------------------------------------
# official npz -> transformers state dicts
# ------------------------------------------------------------------------------------------------------------
_VISION_RENAMES = [
    (r"^cls_token$", "embeddings.cls_token"),
    (r"^mask_token$", "embeddings.mask_token"),
    (r"^register_tokens$", "embeddings.register_tokens"),
    (r"^pos_embed$", "embeddings.position_embeddings"),
    (r"^patch_embed\.proj\.", "embeddings.patch_embeddings.projection."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layer.\1.attention.o_proj."),
    (r"^blocks\.(\d+)\.ls1\.gamma$", r"encoder.layer.\1.layer_scale1.lambda1"),
    (r"^blocks\.(\d+)\.ls2\.gamma$", r"encoder.layer.\1.layer_scale2.lambda1"),
    (r"^blocks\.(\d+)\.mlp\.w3\.", r"encoder.layer.\1.mlp.down_proj."),
    (r"^blocks\.(\d+)\.", r"encoder.layer.\1."),
    (r"^norm\.", "layernorm."),
]
_VISION_SPLITS = {  # fused official tensors -> chunks along dim 0
    r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$": [r"encoder.layer.\1.attention.{}_proj.\2", ("q", "k", "v")],
    r"^blocks\.(\d+)\.mlp\.w12\.(weight|bias)$": [r"encoder.layer.\1.mlp.{}_proj.\2", ("gate", "up")],
}
_TEXT_RENAMES = [
    (r"^token_embedding\.", "embeddings.token_embedding."),
    (r"^transformer\.resblocks\.(\d+)\.ln_1\.", r"encoder.layers.\1.layer_norm1."),
    (r"^transformer\.resblocks\.(\d+)\.ln_2\.", r"encoder.layers.\1.layer_norm2."),
    (r"^transformer\.resblocks\.(\d+)\.attn\.out_proj\.", r"encoder.layers.\1.self_attn.out_proj."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_fc\.", r"encoder.layers.\1.mlp.fc1."),
    (r"^transformer\.resblocks\.(\d+)\.mlp\.c_proj\.", r"encoder.layers.\1.mlp.fc2."),
    (r"^ln_final\.", "final_layer_norm."),
]
_TEXT_SPLITS = {
    r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$": [
        r"encoder.layers.\1.self_attn.{}_proj.\2",
        ("q", "k", "v"),
    ],
}


def _convert(arrays: Mapping[str, np.ndarray], renames, splits) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in arrays.items():
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        for pattern, (template, names) in splits.items():
            if re.match(pattern, key):
                for name, chunk in zip(names, tensor.chunk(len(names), dim=0)):
                    out[re.sub(pattern, template.replace("{}", name), key)] = chunk.contiguous()
                break
        else:
            for pattern, repl in renames:
                if re.match(pattern, key):
                    out[re.sub(pattern, repl, key)] = tensor
                    break
            else:
                out[f"<unmapped>{key}"] = tensor
    return out


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    from zsad.weights import replace_hint

    fix = f"It is not an official TIPS PyTorch .npz, or it is corrupt or truncated. {replace_hint(path)}"
    with reading(path, CheckpointError, what="the weight file", fix=fix):
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    check_finite(arrays, path, fix=f"the file is corrupt or was saved from a diverged model. {replace_hint(path)}")
    return arrays


def _strict_load(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, tower: str) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(k.replace("<unmapped>", "") for k in set(state) - set(expected))
    mismatched = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mismatched", mismatched)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(
            f"The {tower} weights in {path} do not match the TIPS architecture ({'; '.join(parts)}). Check that "
            f"the file is the {tower} tower of the same checkpoint as its sibling, and that model.json (if any) "
            "describes it."
        )
    module.load_state_dict(state, strict=True)


# ------------------------------------------------------------------------------------------------------------
# the backbone
# ------------------------------------------------------------------------------------------------------------
class TipsBackbone(Backbone):
    """TIPS (v1 or v2) as a zsad backbone: two global roles, patch tokens, softmax(cos / temperature).

    Args:
        vision: a ``transformers.Tipsv2VisionModel``.
        text: a ``transformers.Tipsv2TextModel``.
        tokenizer: callable ``texts -> (B, 64)`` token ids (pad 0).
        temperature: the contrastive temperature; logits are ``cos / temperature``.
        dense_readout: ``"final"`` (plain final patch tokens, as Tipsomaly) or ``"value"`` (the last block's
            value path, as the upstream zero-shot segmentation).
    """

    supports_learnable_prompts = True
    similarity = "softmax"
    preprocessing = Preprocessing()

    def __init__(
        self,
        vision: torch.nn.Module,
        text: torch.nn.Module,
        tokenizer: Any,
        temperature: float,
        *,
        dense_readout: Literal["final", "value"] = "final",
        source: str = "",
    ) -> None:
        super().__init__()
        if dense_readout not in ("final", "value"):
            raise ConfigError(f"backbone.dense_readout must be 'final' or 'value', got {dense_readout!r}.")
        self.vision, self.text, self.tokenizer = vision, text, tokenizer
        self.temperature = float(temperature)
        self.dense_readout = dense_readout
        self.source = source
        self.embed_dim = int(vision.config.hidden_size)
        self.prompt_width = int(text.config.hidden_size)
        if self.prompt_width != self.embed_dim:
            raise CheckpointError(
                f"The TIPS text width {self.prompt_width} differs from the vision width {self.embed_dim} in {source}:"
                " the two files come from different checkpoints."
            )
        self.patch_size = int(vision.config.patch_size)
        self.default_image_size = int(vision.config.image_size)
        self.num_register_tokens = int(vision.config.num_register_tokens)
        self.max_text_len = int(text.config.max_position_embeddings)
        self.eval()

    # -- construction ------------------------------------------------------------------------------------------
    @classmethod
    def random(cls, arch: TipsArchitecture, temperature: float = 0.0047, seed: int = 0, **kwargs: Any) -> "TipsBackbone":
        """Random weights of the given architecture, with a byte-level stand-in tokenizer (tests, benchmarks)."""
        from transformers import Tipsv2TextModel, Tipsv2VisionModel

        torch.manual_seed(seed)
        vcfg, tcfg = arch.hf_configs()
        return cls(Tipsv2VisionModel(vcfg), Tipsv2TextModel(tcfg), ByteTokenizer(arch.vocab_size), temperature, **kwargs)

    @classmethod
    def from_npz(cls, folder: str | Path, **kwargs: Any) -> "TipsBackbone":
        """Load an official PyTorch-format checkpoint folder (see the module docstring)."""
        from transformers import Tipsv2TextModel, Tipsv2VisionModel
        from transformers.initialization import no_init_weights

        folder = Path(folder)
        vision_path = _find_one(folder, ("vision.npz", "*_vision.npz"), "vision weights")
        text_path = _find_one(folder, ("text.npz", "*_text.npz"), "text weights")
        tokenizer = SentencePieceTokenizer(folder / "tokenizer.model")
        vision_np, text_np = _read_npz(vision_path), _read_npz(text_path)
        temperature = None
        for key in ("temperature", "temperature_contrastive"):
            if key in text_np:
                temperature = float(np.asarray(text_np.pop(key), dtype=np.float32))
        model_json = folder / "model.json"
        if model_json.is_file():
            arch = TipsArchitecture.from_model_json(model_json)
            if temperature is None:
                temperature = json.loads(model_json.read_text()).get("temperature")
        else:
            arch = TipsArchitecture.infer(vision_np, text_np, str(folder))
        if temperature is None:
            raise CheckpointError(
                f"{text_path} has no 'temperature' entry: it is not an official TIPS PyTorch text checkpoint "
                "(or it is a Scenic one). Use the PyTorch '*_text.npz' file, or add \"temperature\" to model.json."
            )
        if tokenizer.vocab_size > arch.vocab_size:
            raise CheckpointError(
                f"The tokenizer {tokenizer.path} has {tokenizer.vocab_size} pieces but the text weights in "
                f"{text_path} embed only {arch.vocab_size}: the tokenizer belongs to another model."
            )
        vcfg, tcfg = arch.hf_configs()
        with no_init_weights():
            vision, text = Tipsv2VisionModel(vcfg), Tipsv2TextModel(tcfg)
        _strict_load(vision, _convert(vision_np, _VISION_RENAMES, _VISION_SPLITS), vision_path, "vision")
        _strict_load(text, _convert(text_np, _TEXT_RENAMES, _TEXT_SPLITS), text_path, "text")
        return cls(vision, text, tokenizer, temperature, source=str(folder), **kwargs)

    @classmethod
    def from_hf(cls, repo_or_folder: str, *, local_files_only: bool | None = None, **kwargs: Any) -> "TipsBackbone":
        """Load TIPSv2 from a Hugging Face hub id or a local folder saved with ``save_pretrained``."""
        from transformers import AutoTokenizer, Tipsv2Model

        from zsad._env import offline

        if local_files_only is None:
            local_files_only = offline()
        if not Path(repo_or_folder).is_dir():
            from zsad.weights import check_hub_reachable

            check_hub_reachable(repo_or_folder, ("config.json",), offline=local_files_only)
        try:
            model = Tipsv2Model.from_pretrained(repo_or_folder, local_files_only=local_files_only)
        except OSError as exc:
            raise WeightsError(
                f"Cannot load the TIPSv2 model {repo_or_folder!r} from the Hugging Face hub or a local folder: {exc}. "
                "Check the id (e.g. 'google/tipsv2-l14'), your network, or download it once with "
                f"`hf download {repo_or_folder}` and retry (ZSAD_OFFLINE=1 uses the cache only)."
            ) from exc
        local = Path(repo_or_folder)
        if (local / "tokenizer.model").is_file() and not (local / "tokenizer.json").is_file():
            tokenizer: Any = SentencePieceTokenizer(local / "tokenizer.model")
        else:
            tokenizer = HFTokenizer(AutoTokenizer.from_pretrained(repo_or_folder, local_files_only=local_files_only))
        temperature = float(model.temperature.detach().float())
        return cls(model.vision_model, model.text_model, tokenizer, temperature, source=repo_or_folder, **kwargs)

    # -- contract ----------------------------------------------------------------------------------------------
    def image_features(self, pixels: torch.Tensor, request: FeatureRequest) -> ImageFeatures:
        dtype = self.vision.embeddings.patch_embeddings.projection.weight.dtype
        _, _, height, width = pixels.shape
        out = self.vision(pixel_values=pixels.to(dtype), output_hidden_states=self.dense_readout == "value")
        tokens = out.last_hidden_state
        r = self.num_register_tokens
        grid = (height // self.patch_size, width // self.patch_size)
        patches = tokens[:, 1 + r :]
        if self.dense_readout == "value":
            patches = self._value_readout(out.hidden_states[-2])[:, 1 + r :]
        return ImageFeatures(globals={"object": tokens[:, 0], "spatial": tokens[:, 1]}, patches=patches, grid=grid)

    def _value_readout(self, x: torch.Tensor) -> torch.Tensor:
        """Last block with attention replaced by its value path (MaskCLIP-style dense readout)."""
        layer = self.vision.encoder.layer[-1]
        attn = layer.attention
        x = x + layer.layer_scale1(attn.o_proj(attn.v_proj(layer.norm1(x))))
        x = x + layer.layer_scale2(layer.mlp(layer.norm2(x)))
        return self.vision.layernorm(x)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids ``(B, 64)`` of texts, as the TIPS tokenizer produces them."""
        return self.tokenizer(list(texts))

    def text_features(self, texts: Sequence[str], prefix: torch.Tensor | None = None) -> torch.Tensor:
        ids = self.tokenize(texts).to(self.device)
        valid = (ids != 0).to(torch.long)
        embeddings = self.text.embeddings
        if prefix is None:
            out = self.text(input_ids=ids, attention_mask=valid)
        else:
            tokens = embeddings.token_embedding(ids)
            # The official 'concat' method prepends the prompts AFTER the sqrt(D) scaling; transformers scales
            # inputs_embeds inside, so the prefix is pre-divided (exact for power-of-two sqrt(D), 1 ulp otherwise).
            scaled_prefix = (prefix.to(tokens.dtype) / embeddings.embed_scale).unsqueeze(0).expand(len(texts), -1, -1)
            inputs = torch.cat([scaled_prefix, tokens], dim=1)[:, : self.max_text_len]
            mask = torch.cat([torch.ones_like(valid[:, : prefix.shape[0]]), valid], dim=1)[:, : self.max_text_len]
            out = self.text(inputs_embeds=inputs, attention_mask=mask)
        return out.pooler_output


def _find_one(folder: Path, patterns: tuple[str, ...], what: str) -> Path:
    for pattern in patterns:
        found = sorted(folder.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise CheckpointError(
                f"{folder} holds several {what} files ({', '.join(p.name for p in found)}); keep one per folder."
            )
    raise CheckpointError(
        f"No {what} in {folder} (looked for {' or '.join(patterns)}). A TIPS checkpoint folder holds vision.npz, "
        "text.npz and tokenizer.model (official names like tips_oss_l14_highres_distilled_vision.npz work too); "
        "get them with: zsad weights download tips-v1-l14-hr"
    )


def _looks_like_hub_id(spec: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", spec)) and not Path(spec).exists()


def create_tips(
    checkpoint: str | Path | None = None,
    *,
    dense_readout: str = "final",
    random_config: dict | str | None = None,
    random_arch: dict | None = None,
) -> TipsBackbone:
    """Build a TIPS backbone from a folder, a known checkpoint name, or a Hugging Face id (see module docs).

    ``random_config`` builds random weights instead, for tests and benchmarks (the option every backbone names
    alike): ``"tiny"`` (or ``{}``) for :meth:`TipsArchitecture.tiny`, or a dict of :class:`TipsArchitecture`
    fields. ``random_arch`` is its former name (deprecated).

    Example:
        >>> create_tips(random_config="tiny").embed_dim
        32
    """
    if random_arch is not None:
        import warnings

        warnings.warn("backbone.options.random_arch is deprecated; use random_config (same values).",
                      DeprecationWarning, stacklevel=2)
        random_config = random_arch if random_config is None else random_config
    if random_config is not None:
        if random_config in ("tiny", {}):
            arch = TipsArchitecture.tiny()
        elif isinstance(random_config, dict):
            try:
                arch = TipsArchitecture(**random_config)
            except TypeError as exc:
                raise ConfigError(f"backbone.options.random_config is not a set of TipsArchitecture fields: {exc}.") from exc
        else:
            raise ConfigError(f"backbone.options.random_config must be 'tiny' or a dict, got {random_config!r}.")
        return TipsBackbone.random(arch, dense_readout=dense_readout)
    if checkpoint is None:
        raise ConfigError(
            "backbone.checkpoint is required for the 'tips' backbone: a folder with vision.npz/text.npz/"
            "tokenizer.model, a known name such as 'tips-v1-l14-hr' (see `zsad weights list`), or a Hugging "
            "Face id such as 'google/tipsv2-l14'."
        )
    spec = str(checkpoint)
    path = Path(spec).expanduser()
    if path.is_dir():
        folder = path
    elif path.exists():
        raise ConfigError(
            f"backbone.checkpoint={spec!r} is a file; it must be the folder holding vision.npz, text.npz and "
            f"tokenizer.model (here: {path.parent})."
        )
    else:
        from zsad import weights

        if spec not in weights.known_checkpoint_names() and _looks_like_hub_id(spec):
            return TipsBackbone.from_hf(spec, dense_readout=dense_readout)
        folder = Path(weights.resolve_backbone_checkpoint(spec))
    if (folder / "config.json").is_file() and not list(folder.glob("*vision.npz")):
        return TipsBackbone.from_hf(str(folder), dense_readout=dense_readout)
    return TipsBackbone.from_npz(folder, dense_readout=dense_readout)
