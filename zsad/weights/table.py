"""The table of known checkpoints, as data (see :mod:`zsad.weights`).

Example:
    >>> get_checkpoint("tips-v1-l14-hr").files[0].sha256[:8]
    '3421b4e0'
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from zsad.errors import WeightsError

GCS_PREFIX = "https://storage.googleapis.com/tips_data/"
"""The prefix of every TIPS file URL; ``ZSAD_WEIGHTS_URL`` replaces it."""
INDEX_NAME = "zsad-weights.json"
"""The optional checksum index at a mirror's root."""

TRY_WITHOUT_WEIGHTS = (
    "To try zsad without any weights or network, use the 'tiny' recipe (random weights, meaningless scores): "
    "zsad predict IMAGE --recipe tiny"
)
"""The hint every missing-weights message ends with."""

Kind = Literal["tips", "huggingface", "open_clip", "prompts"]


# ----------------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeightFile:
    """One downloadable file.

    Attributes:
        name: the upstream file name, e.g. ``tips_oss_l14_highres_distilled_vision.npz``.
        url: the canonical download URL.
        filename: the standard name in the local checkpoint folder (``vision.npz``, ``text.npz``, ...).
        size: exact size in bytes, or None where unknown.
        sha256: lowercase hex digest, or None where unknown.
        licence: SPDX-style licence id of the file.
        attribution: the attribution the licence asks for.
        approx_size: an estimate in bytes for display when *size* is unknown (values × 4 B for fp32 npz).
    """

    name: str
    url: str
    filename: str
    size: int | None
    sha256: str | None
    licence: str
    attribution: str
    approx_size: int | None = None

    @property
    def relpath(self) -> str | None:
        """The path below :data:`GCS_PREFIX` (what a mirror must reproduce), or None for other hosts."""
        return self.url[len(GCS_PREFIX) :] if self.url.startswith(GCS_PREFIX) else None


@dataclass(frozen=True)
class Checkpoint:
    """A named checkpoint: its kind, files (for ``"tips"``) or hub repository, and licence.

    Attributes:
        name: the name used by :func:`ensure_checkpoint` and ``zsad weights``.
        kind: ``"tips"``, ``"huggingface"``, ``"open_clip"`` or ``"prompts"`` (a learned-prompt file of a method,
            used as ``prompt_checkpoint``).
        files: the files of a ``"tips"`` or ``"prompts"`` checkpoint (stored by zsad); empty for hub kinds.
        description: one line for humans.
        licence: SPDX-style licence id.
        source: where it comes from (repository or model card).
        repo_id: the Hugging Face repository (hub kinds).
        arch, tag: the open_clip model name and pretrained tag (``"open_clip"`` only).
        attribution: the attribution the licence asks for.
        patch_size: the image tower's patch size (input sizes must be multiples of it), known without loading.
    """

    name: str
    kind: Kind
    files: tuple[WeightFile, ...]
    description: str
    licence: str
    source: str
    repo_id: str | None = None
    arch: str | None = None
    tag: str | None = None
    attribution: str = ""
    patch_size: int | None = None

    @property
    def stored_by_zsad(self) -> bool:
        """Whether zsad downloads and keeps the files itself (``cache_dir()/name``), not a hub client."""
        return self.kind in ("tips", "prompts")

    @property
    def size(self) -> int | None:
        """Total exact size in bytes, or None unless every file's size is known."""
        sizes = [f.size for f in self.files]
        return sum(sizes) if sizes and None not in sizes else None  # type: ignore[arg-type]

    @property
    def approx_size(self) -> int | None:
        """Total size for display: exact sizes where known, estimates elsewhere (None if nothing is known)."""
        sizes = [f.size if f.size is not None else f.approx_size for f in self.files]
        known = [s for s in sizes if s is not None]
        return sum(known) if known else None

    @property
    def model_json_relpath(self) -> str | None:
        """Where a mirror may serve the optional ``model.json``: ``<dir of vision.npz>/<stem>_model.json``."""
        vision = next((f for f in self.files if f.filename == "vision.npz"), None)
        if vision is None or vision.relpath is None or not vision.name.endswith("_vision.npz"):
            return None
        folder = vision.relpath.rsplit("/", 1)[0]
        return f"{folder}/{vision.name[: -len('_vision.npz')]}_model.json"


_TIPS_SRC = "https://github.com/google-deepmind/tips"
_CC_BY = "CC-BY-4.0"
_TIPS_V1_ATTR = (
    "TIPS model weights and tokenizer by Google DeepMind, licensed under CC BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/). Cite: K.-K. Maninis et al., \"TIPS: Text-Image Pretraining "
    f"with Spatial awareness\", ICLR 2025. Source: {_TIPS_SRC}"
)
_TIPS_V2_ATTR = (
    "TIPSv2 model weights by Google DeepMind, licensed under CC BY 4.0 "
    "(https://creativecommons.org/licenses/by/4.0/). Cite the TIPSv2 paper (CVPR 2026, arXiv:2604.12012) and "
    f"TIPS (Maninis et al., ICLR 2025). Source: {_TIPS_SRC}"
)
_TOKENIZER = WeightFile(
    name="tokenizer.model",
    url=GCS_PREFIX + "v1_0/checkpoints/tokenizer.model",
    filename="tokenizer.model",
    size=None,
    sha256=None,
    licence=_CC_BY,
    attribution=_TIPS_V1_ATTR,
)


def _tips(
    name: str, version: str, stem: str, vision_values: int, text_values: int, desc: str, vision_sha: str | None = None
) -> Checkpoint:
    v2 = version == "v2_0"
    attribution = _TIPS_V2_ATTR if v2 else _TIPS_V1_ATTR

    def npz(part: str, values: int, sha: str | None) -> WeightFile:
        return WeightFile(
            name=f"{stem}_{part}.npz",
            url=f"{GCS_PREFIX}{version}/checkpoints/pytorch/{stem}_{part}.npz",
            filename=f"{part}.npz",
            size=None,
            sha256=sha,
            licence=_CC_BY,
            attribution=attribution,
            approx_size=values * 4,
        )

    return Checkpoint(
        name=name,
        kind="tips",
        files=(npz("vision", vision_values, vision_sha), npz("text", text_values + 1, None), _TOKENIZER),
        description=desc,
        licence=_CC_BY,
        source=_TIPS_SRC,
        attribution=attribution,
        patch_size=14,
    )


# Value counts from TIPS_BACKBONE §1.1 / §2.2 (text + 1 for the stored temperature); v2 shares the architectures.
_S, _B, _L, _SO, _G = (
    (21_924_480, 33_582_336),
    (86_316_288, 109_632_000),
    (304_016_384, 183_924_736),
    (413_393_904, 448_332_912),
    (1_135_952_384, 389_133_312),
)
_G_LR_VISION = 1_134_772_736
_L14_HR_VISION_SHA = "3421b4e0d473cafe5e9cdbd2bf05b5c346270b6be05a27b0af7eca0734639c80"
_APACHE_SIGLIP2 = (
    "SigLIP 2 weights by Google DeepMind, Apache-2.0. Cite: M. Tschannen et al., \"SigLIP 2\", 2025. "
    "Source: https://github.com/google-research/big_vision"
)


def _hub(
    name: str, desc: str, licence: str, attribution: str, patch: int, *, repo: str | None = None,
    arch: str | None = None, tag: str | None = None,
) -> Checkpoint:
    repo = repo or name
    return Checkpoint(
        name=name, kind="open_clip" if arch else "huggingface", files=(), description=desc, licence=licence,
        source=f"https://huggingface.co/{repo}", repo_id=repo, arch=arch, tag=tag, attribution=attribution,
        patch_size=patch,
    )


_ANOMALYCLIP_SRC = "https://github.com/zqhang/AnomalyCLIP"
_ANOMALYCLIP_COMMIT = "45ed4dd35c05797d854294b5e8d585c545920089"
_ANOMALYCLIP_ATTR = (
    "AnomalyCLIP prompt learner, MIT licence, Copyright (c) 2024 Qihang Zhou. Cite: Q. Zhou, G. Pang, Y. Tian, S. He, "
    f"J. Chen, \"AnomalyCLIP: Object-agnostic Prompt Learning for Zero-shot Anomaly Detection\", ICLR 2024. Source: "
    f"{_ANOMALYCLIP_SRC}"
)


def _anomalyclip(name: str, folder: str, desc: str) -> Checkpoint:
    """A released AnomalyCLIP prompt learner (``train.py``'s ``{'prompt_learner': state_dict}``, epoch 15)."""
    url = f"https://raw.githubusercontent.com/zqhang/AnomalyCLIP/{_ANOMALYCLIP_COMMIT}/checkpoints/{folder}/epoch_15.pth"
    # ctx 2 x 12 x 768, deep 8 x 4 x 768, buffers and the unused projections 8 x (896 x 768 + 896), float32
    approx = 4 * (2 * 12 * 768 + 8 * 4 * 768 + 2 * 65 * 768 + 2 * 77 + 8 * (896 * 768 + 896))
    wf = WeightFile(name="epoch_15.pth", url=url, filename="epoch_15.pth", size=None, sha256=None, licence="MIT",
                    attribution=_ANOMALYCLIP_ATTR, approx_size=approx)
    return Checkpoint(name=name, kind="prompts", files=(wf,), description=desc, licence="MIT",
                      source=f"{_ANOMALYCLIP_SRC}/tree/{_ANOMALYCLIP_COMMIT}/checkpoints/{folder}",
                      attribution=_ANOMALYCLIP_ATTR)


def _open_clip(arch: str, tag: str, repo: str, licence: str, desc: str, patch: int) -> Checkpoint:
    attribution = f"open_clip checkpoint {arch}/{tag}, licence {licence}; see https://huggingface.co/{repo}"
    return _hub(f"{arch}.{tag}", desc, licence, attribution, patch, repo=repo, arch=arch, tag=tag)


CHECKPOINTS: tuple[Checkpoint, ...] = (
    _tips("tips-v1-s14-hr", "v1_0", "tips_oss_s14_highres_distilled", *_S, "TIPS v1 S/14, 448 px"),
    _tips("tips-v1-b14-hr", "v1_0", "tips_oss_b14_highres_distilled", *_B, "TIPS v1 B/14, 448 px"),
    _tips(
        "tips-v1-l14-hr", "v1_0", "tips_oss_l14_highres_distilled", *_L,
        "TIPS v1 L/14, 448 px (the Tipsomaly backbone)", vision_sha=_L14_HR_VISION_SHA,
    ),
    _tips("tips-v1-so400m14-hr", "v1_0", "tips_oss_so400m14_highres_largetext_distilled", *_SO,
          "TIPS v1 SO400m/14, 448 px"),
    _tips("tips-v1-g14-hr", "v1_0", "tips_oss_g14_highres", *_G, "TIPS v1 g/14 (SwiGLU), 448 px"),
    _tips("tips-v1-g14-lr", "v1_0", "tips_oss_g14_lowres", _G_LR_VISION, _G[1], "TIPS v1 g/14 (SwiGLU), 224 px"),
    _tips("tips-v2-b14", "v2_0", "tips_v2_oss_b14", *_B, "TIPSv2 B/14, 448 px"),
    _tips("tips-v2-l14", "v2_0", "tips_v2_oss_l14", *_L, "TIPSv2 L/14, 448 px (best dense zero-shot)"),
    _tips("tips-v2-so400m14", "v2_0", "tips_v2_oss_so14", *_SO, "TIPSv2 SO400m/14, 448 px"),
    _tips("tips-v2-g14", "v2_0", "tips_v2_oss_g14", *_G, "TIPSv2 g/14 (SwiGLU), 448 px"),
    *(
        _hub(f"google/tipsv2-{v}", f"TIPSv2 {v} (transformers Tipsv2Model; hub card says apache-2.0, "
             "treated as CC-BY-4.0 like the upstream release)", _CC_BY, _TIPS_V2_ATTR, 14)
        for v in ("b14", "l14", "so400m14", "g14")
    ),
    _hub("google/siglip2-base-patch16-224", "SigLIP2 B/16, 224 px (SiglipModel)", "Apache-2.0", _APACHE_SIGLIP2, 16),
    _hub("google/siglip2-large-patch16-512", "SigLIP2 L/16, 512 px (SiglipModel)", "Apache-2.0", _APACHE_SIGLIP2, 16),
    _hub("google/siglip2-so400m-patch14-384", "SigLIP2 SO400m/14, 384 px (SiglipModel)", "Apache-2.0",
         _APACHE_SIGLIP2, 14),
    _hub("google/siglip2-base-patch16-naflex", "SigLIP2 B/16 NaFlex (Siglip2Model)", "Apache-2.0", _APACHE_SIGLIP2, 16),
    _open_clip("ViT-B-16", "openai", "timm/vit_base_patch16_clip_224.openai", "MIT", "OpenAI CLIP B/16, 224 px", 16),
    _open_clip("ViT-L-14", "openai", "timm/vit_large_patch14_clip_224.openai", "MIT", "OpenAI CLIP L/14, 224 px", 14),
    _open_clip("ViT-L-14-336", "openai", "timm/vit_large_patch14_clip_336.openai", "MIT",
               "OpenAI CLIP L/14, 336 px (AnomalyCLIP/AdaCLIP backbone)", 14),
    _open_clip("ViT-B-16", "laion2b_s34b_b88k", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K", "MIT",
               "OpenCLIP B/16 trained on LAION-2B", 16),
    _open_clip("ViT-L-14", "laion2b_s32b_b82k", "laion/CLIP-ViT-L-14-laion2B-s32B-b82K", "MIT",
               "OpenCLIP L/14 trained on LAION-2B", 14),
    _open_clip("ViT-H-14", "laion2b_s32b_b79k", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "MIT",
               "OpenCLIP H/14 trained on LAION-2B", 14),
    _anomalyclip("anomalyclip-visa", "9_12_4_multiscale",
                 "AnomalyCLIP prompts trained on VisA (official release, used for MVTec-AD and other datasets; "
                 "ViT-L-14-336:openai)"),
    _anomalyclip("anomalyclip-mvtec", "9_12_4_multiscale_visa",
                 "AnomalyCLIP prompts trained on MVTec-AD (official release, used for VisA; ViT-L-14-336:openai)"),
)
"""Every checkpoint zsad knows, in display order."""

_BY_NAME = {c.name: c for c in CHECKPOINTS}


def get_checkpoint(name: str) -> Checkpoint:
    """The :class:`Checkpoint` called *name*; :class:`~zsad.errors.WeightsError` with close matches otherwise.

    Example:
        >>> get_checkpoint("tips-v2-l14").files[1].name
        'tips_v2_oss_l14_text.npz'
        >>> get_checkpoint("ViT-L-14-336.openai").arch
        'ViT-L-14-336'
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise WeightsError(_unknown_message(name, "not a known checkpoint")) from None


def known_checkpoint_names(kind: Kind | None = None) -> tuple[str, ...]:
    """The names of all known checkpoints (of one *kind* if given), in table order.

    Example:
        >>> known_checkpoint_names("tips")[:2]
        ('tips-v1-s14-hr', 'tips-v1-b14-hr')
        >>> "google/tipsv2-l14" in known_checkpoint_names()
        True
    """
    return tuple(c.name for c in CHECKPOINTS if kind is None or c.kind == kind)


def patch_size_of(spec: str | None) -> int | None:
    """The patch size of a known checkpoint named in a backbone's ``checkpoint`` setting, or None.

    ``ARCH:TAG`` (the open_clip backbone's spelling) is looked up as ``ARCH.TAG``.

    Example:
        >>> patch_size_of("tips-v1-l14-hr"), patch_size_of("ViT-B-16:openai"), patch_size_of("/my/folder")
        (14, 16, None)
    """
    if not spec:
        return None
    ckpt = _BY_NAME.get(str(spec)) or _BY_NAME.get(str(spec).replace(":", ".", 1))
    return ckpt.patch_size if ckpt is not None else None


def _unknown_message(name: str, what: str) -> str:
    close = difflib.get_close_matches(str(name), list(_BY_NAME), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"{str(name)!r} is {what}.{hint} Known checkpoints: {', '.join(_BY_NAME)}."
