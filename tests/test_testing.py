"""zsad.testing: every built-in component passes the public contract checks, and each check catches its defect."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zsad.backbones.base import Backbone, ImageFeatures
from zsad.components import HEADS, PROMPTS
from zsad.errors import ConfigError
from zsad.heads.base import ImageHead
from zsad.prompts.base import PromptStrategy
from zsad.testing import (
    TINY_VARIANTS,
    check_all_builtins,
    check_backbone,
    check_head,
    check_prompt_strategy,
    check_prompt_training,
    parametrize_backbones,
    tiny_backbone,
    tiny_options,
    tiny_prompts,
)

_BUILTIN_PROMPTS = [i.name for i in PROMPTS.status() if i.source == "builtin"]
_BUILTIN_HEADS = [i.name for i in HEADS.status() if i.source == "builtin"]


# ------------------------------------------------------------------------------------------------------------
# every built-in passes
# ------------------------------------------------------------------------------------------------------------
def test_every_builtin_backbone_has_a_tiny_variant():
    from zsad.components import BACKBONES

    builtins = {i.name for i in BACKBONES.status() if i.source == "builtin"}
    assert builtins <= {name for name, _ in TINY_VARIANTS.values()}


@parametrize_backbones()
def test_builtin_backbones_meet_the_contract(backbone):
    check_backbone(backbone)


@pytest.fixture(scope="module")
def tiny_backbones():
    cache: dict[str, Backbone] = {}

    def get(name: str) -> Backbone:
        if name not in cache:
            cache[name] = tiny_backbone(name)
        return cache[name]

    return get


@pytest.mark.parametrize("backbone_name", ["tips", "open_clip", "siglip2"])
@pytest.mark.parametrize("strategy", _BUILTIN_PROMPTS)
def test_builtin_prompt_strategies_meet_the_contract(strategy, backbone_name, tiny_backbones):
    made = tiny_prompts(strategy)
    bb = tiny_backbones(backbone_name)
    try:
        made.bind(bb)
    except ConfigError as exc:  # refused only where the text tower lacks a capability the strategy needs
        assert not bb.supports_deep_prompts and made.deep_prompt_tokens() and "deep prompts" in str(exc), exc
        return
    check_prompt_strategy(made, bb)


@pytest.mark.parametrize("head", _BUILTIN_HEADS)
def test_builtin_heads_meet_the_contract(head):
    check_head(head)


def test_check_all_builtins_lists_what_it_checked():
    done = check_all_builtins(backbones=False, prompts=False)
    assert done == [f"heads:{h}" for h in _BUILTIN_HEADS]


def test_tiny_options():
    assert tiny_options("tips") == {"checkpoint": None, "random_config": "tiny"}
    from zsad.components import BACKBONES

    BACKBONES.add("zsad_test_without_options", lambda checkpoint=None: None)
    try:
        with pytest.raises(AssertionError, match="declares no tiny test configuration"):
            tiny_options("zsad_test_without_options")
    finally:
        BACKBONES.unregister("zsad_test_without_options")


# ------------------------------------------------------------------------------------------------------------
# each check catches its defect
# ------------------------------------------------------------------------------------------------------------
class Toy(Backbone):
    """A small correct backbone; ``defect`` breaks one promise of the contract."""

    embed_dim, patch_size, default_image_size = 8, 14, 28
    supports_learnable_prompts, prompt_width = True, 8
    temperature = 0.07

    def __init__(self, defect: str | None = None) -> None:
        super().__init__()
        self.defect = defect
        gen = torch.Generator().manual_seed(0)
        self.color = torch.nn.Parameter(torch.randn(3, 8, generator=gen))
        self.bytes = torch.nn.Parameter(torch.randn(256, 8, generator=gen))

    def check_image_size(self, size: int) -> None:
        if self.defect != "any size":
            super().check_image_size(size)

    def image_features(self, pixels, request):
        colors = F.avg_pool2d(pixels.to(self.color.dtype), 14).flatten(2).transpose(1, 2)
        patches = colors @ self.color + 0.1
        if self.defect == "batch dependent":
            patches = patches - patches.mean(dim=0, keepdim=True)
        if self.defect == "nondeterministic":
            patches = patches + torch.randn_like(patches)
        g = patches.mean(dim=1)
        roles = {"object": g} if self.defect == "missing role" else {"object": g, "spatial": g}
        grid = (3, 3) if self.defect == "wrong grid" else (pixels.shape[-2] // 14, pixels.shape[-1] // 14)
        return ImageFeatures(roles, patches, grid)

    def encode_image(self, pixels, request=None):
        f = super().encode_image(pixels, request)
        # defects that only a backbone overriding the base class's encode_image can have
        if self.defect == "unnormalised":
            f.patches = f.patches * 2
        if self.defect == "float64":
            f.globals = {k: v.double() for k, v in f.globals.items()}
        if self.defect == "weight dtype":
            raw = self.image_features(pixels, request)
            f.globals = {k: F.normalize(v, dim=-1) for k, v in raw.globals.items()}
        return f

    def encode_text(self, texts, prefix=None, **kwargs):
        if self.defect == "any prefix" and prefix is not None:
            prefix = prefix[:, :8]  # skips the base class's width check
        return super().encode_text(texts, prefix, **kwargs)

    def text_features(self, texts, prefix=None):
        out = torch.stack([self.bytes[torch.tensor(list(t.encode()))].mean(0) for t in texts])
        if prefix is not None:
            p = prefix.detach() if self.defect == "detached prefix" else prefix
            out = out + p.to(out.dtype).mean(0)
        return out


def test_a_correct_backbone_passes():
    assert isinstance(check_backbone(Toy), Toy)
    check_backbone(Toy(), image_size=42)


@pytest.mark.parametrize(
    "defect, message",
    [
        ("unnormalised", r"patches is not L2-normalised"),
        ("float64", r"globals\['object'\] has dtype torch.float64; the contract requires float32"),
        ("missing role", r"globals lacks the role 'spatial'"),
        ("wrong grid", r"grid=\(3, 3\) does not hold the 4 patches"),
        ("nondeterministic", r"encode_image is not deterministic"),
        ("batch dependent", r"depends on the other images in its batch"),
        ("detached prefix", r"no gradient reaches p"),
        ("any size", r"check_image_size\(0\) did not raise"),
        ("any prefix", r"accepted prefix tokens of width 9"),
        ("weight dtype", r"with bfloat16 weights returns globals\['object'\] in torch.bfloat16"),
    ],
)
def test_check_backbone_names_the_defect(defect, message):
    with pytest.raises(AssertionError, match=message):
        check_backbone(Toy(defect))


def test_check_backbone_restores_weights_and_grad_flags():
    toy = Toy()
    before = toy.color.detach().clone()
    check_backbone(toy)
    assert toy.color.dtype == torch.float32 and torch.equal(toy.color, before)
    assert toy.color.requires_grad and toy.color.grad is None


def test_check_prompt_training():
    assert check_prompt_training(Toy)["total"] > 0

    class NoPrompts(Toy):
        supports_learnable_prompts = False

    with pytest.raises(AssertionError, match="does not take learnable prompts"):
        check_prompt_training(NoPrompts)


def test_check_backbone_refuses_non_backbones():
    with pytest.raises(AssertionError, match="must subclass zsad.backbones.base.Backbone"):
        check_backbone(lambda: object())


class StalePrompts(PromptStrategy):
    """Learnable tokens, but a cache token that never changes (or unnormalised prototypes)."""

    def __init__(self, defect: str) -> None:
        super().__init__()
        self.defect = defect
        self.tokens = torch.nn.Parameter(torch.zeros(2, 8))

    def global_prototypes(self, backbone, class_names):
        pair = torch.stack([backbone.encode_text(["good"], prefix=self.tokens[:1])[0],
                            backbone.encode_text(["bad"], prefix=self.tokens[1:])[0]])
        return (pair * (3 if self.defect == "unnormalised" else 1)).expand(len(class_names), -1, -1)

    def local_prototypes(self, backbone, class_names):
        return self.global_prototypes(backbone, class_names)

    def cache_token(self, kind):
        return "always the same"


@pytest.mark.parametrize("defect, message", [("stale", "stale prototypes"), ("unnormalised", "not L2-normalised")])
def test_check_prompt_strategy_names_the_defect(defect, message):
    with pytest.raises(AssertionError, match=message):
        check_prompt_strategy(StalePrompts(defect), Toy())


class BadHead(ImageHead):
    def __init__(self, defect: str) -> None:
        super().__init__()
        self.defect = defect

    def forward(self, inputs):
        score = inputs.abnormal("spatial")
        return 1 - score if self.defect == "inverted" else score.unsqueeze(1)


@pytest.mark.parametrize(
    "head, message",
    [
        (BadHead("inverted"), "higher must mean more anomalous"),
        (BadHead("shape"), r"returned torch.Size\(\[3, 1\]\), expected \(3,\)"),
        (torch.nn.Identity(), "neither a zsad.heads.base.ImageHead, a PixelHead nor a ReferenceMemory"),
    ],
)
def test_check_head_names_the_defect(head, message):
    with pytest.raises(AssertionError, match=message):
        check_head(head)
