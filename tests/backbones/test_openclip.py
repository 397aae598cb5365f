"""The open_clip backbone on a tiny random CLIP (offline): parity with open_clip's own code paths."""

from __future__ import annotations

import copy
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("open_clip")

from http_server import point_hub_at, unused_url

from zsad.backbones.openclip import OpenClipBackbone, create_open_clip, split_checkpoint
from zsad.errors import ConfigError, MissingDependencyError, WeightsError

TEXTS = ["a photo of a flawless metal nut.",
         "a photo of a damaged object with a long scratch across the middle of its shiny surface"]


@pytest.fixture(scope="module")
def bb() -> OpenClipBackbone:
    return create_open_clip(None, model_config="tiny")


def test_global_and_patch_features_match_open_clip(bb):
    x = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f = bb.encode_image(x)
        ref = bb.model.encode_image(x, normalize=True)
        visual = bb.model.visual
        visual.output_tokens = True
        try:
            _, tokens = visual(x)
        finally:
            visual.output_tokens = False
    torch.testing.assert_close(f.globals["object"], ref, atol=1e-6, rtol=0)
    assert f.globals["spatial"] is f.globals["object"]
    torch.testing.assert_close(f.patches, F.normalize(tokens @ visual.proj, dim=-1), atol=1e-6, rtol=0)
    assert f.grid == (4, 4) and f.patches.dtype == torch.float32


@pytest.mark.parametrize("vision", [
    {},  # the tiny tower: class-token pooling, 2 blocks (the first and the last block)
    {"layers": 1},  # one block, both first and last
    {"layers": 3, "final_ln_after_pool": True},  # a middle block; ln_post after pooling
    {"pool_type": "avg"},  # average pooling: the last block computes every token
    {"block_type": "custom"},  # blocks without packed attention run their own forward
])
def test_window_embeddings_equal_each_window_through_open_clip(vision):
    """Every window, run alone as a (class token + s² patch tokens) sequence through open_clip's own tower and
    pooling, gives the window embedding (the shared first-block projections, SDPA and the class-token-only last
    block change nothing beyond rounding)."""
    from zsad.backbones.base import FeatureRequest, sliding_windows
    from zsad.backbones.openclip import TINY_CLIP_CONFIG

    config = {**TINY_CLIP_CONFIG, "vision_cfg": {**TINY_CLIP_CONFIG["vision_cfg"], **vision}}
    bb = create_open_clip(None, random_config=config)
    x = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(3))
    visual = bb.model.visual
    with torch.no_grad():
        got = bb.image_features(x, FeatureRequest(window_scales=(2, 3))).windows
        tokens = visual._embeds(x)  # class token + patches + positions, after ln_pre
        for scale in (2, 3):
            index = sliding_windows((4, 4), scale)
            seqs = torch.cat([torch.zeros(len(index), 1, dtype=torch.long), index + 1], dim=1)
            for w, seq in enumerate(seqs):
                pooled, _ = visual._pool(visual.transformer(tokens[:, seq]))
                torch.testing.assert_close(got[scale][:, w], pooled @ visual.proj, atol=2e-6, rtol=0)
            assert got[scale].shape == (2, len(index), 32)


def test_other_sizes_resize_positions_like_open_clip_loading(bb):
    """Encoding 84 px with the 56 px model equals a model built for 84 px from the same weights."""
    from open_clip.model import resize_pos_embed

    big = create_open_clip(None, model_config="tiny", image_size=84)
    state = copy.deepcopy(bb.model.state_dict())
    resize_pos_embed(state, big.model)
    big.model.load_state_dict(state)
    x = torch.rand(1, 3, 84, 84, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = bb.encode_image(x), big.encode_image(x)
    assert a.grid == (6, 6)
    torch.testing.assert_close(a.patches, b.patches, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.globals["object"], b.globals["object"], atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="multiple of the patch size 14"):
        bb.encode_image(torch.rand(1, 3, 57, 57))


def test_text_without_prefix_equals_open_clip_encode_text(bb):
    ids = bb.tokenize(TEXTS)
    assert int(ids[1, -1]) == bb.tokenizer.eot_token_id  # the long text is truncated, keeping its end token
    with torch.no_grad():
        torch.testing.assert_close(bb.encode_text(TEXTS), bb.model.encode_text(ids, normalize=True), atol=1e-6, rtol=0)


@pytest.mark.parametrize("n_tokens", [1, 4, 7])
def test_prefix_goes_after_the_start_token_and_pooling_follows_the_end_token(bb, n_tokens):
    """Reference: open_clip's own encode_text with the prompt vectors written into unused vocabulary rows."""
    prefix = torch.randn(n_tokens, bb.prompt_width, generator=torch.Generator().manual_seed(2))
    ids = bb.tokenize(TEXTS)
    length = ids.shape[1]
    unused = [i for i in range(1, 1000) if i not in set(ids.flatten().tolist())][:n_tokens]
    model = copy.deepcopy(bb.model)
    with torch.no_grad():
        model.token_embedding.weight[unused] = prefix
    eot = bb.tokenizer.eot_token_id
    rows = []
    for row in ids.tolist():
        new = [row[0], *unused, *row[1:]][:length]
        if eot not in new:  # the cut dropped the end token: keep it last, as open_clip's tokenizer truncates
            new[-1] = eot
        rows.append(new)
    with torch.no_grad():
        ref = model.encode_text(torch.tensor(rows), normalize=True)
        out = bb.encode_text(TEXTS, prefix=prefix)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_prefix_gets_gradients_and_is_validated(bb):
    prefix = (0.02 * torch.randn(3, bb.prompt_width)).requires_grad_(True)
    out = bb.encode_text(TEXTS, prefix=prefix)
    (out * torch.randn_like(out)).sum().backward()
    assert prefix.grad is not None and prefix.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="takes \\(n_tokens, 32\\)"):
        bb.encode_text(TEXTS, prefix=torch.zeros(3, 7))
    with pytest.raises(ConfigError, match="do not fit the text context"):
        bb.encode_text(TEXTS, prefix=torch.zeros(15, bb.prompt_width))


def test_softmax_similarity_uses_the_logit_scale(bb):
    feats = F.normalize(torch.randn(2, 5, bb.embed_dim), dim=-1)
    protos = F.normalize(torch.randn(1, 2, bb.embed_dim), dim=-1)
    expected = torch.softmax(bb.model.logit_scale.exp().detach() * feats @ protos.transpose(-1, -2), dim=-1)
    torch.testing.assert_close(bb.probabilities(feats, protos), expected)
    assert bb.similarity == "softmax" and bb.preprocessing.resample == "bicubic"
    assert bb.preprocessing.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_model_config_with_a_weights_file(bb, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(bb.model.state_dict(), path)
    again = create_open_clip(str(path), model_config="tiny")
    x = torch.rand(1, 3, 56, 56)
    with torch.no_grad():
        torch.testing.assert_close(again.encode_image(x).patches, bb.encode_image(x).patches)
    assert create_open_clip(None, model_config="tiny", image_size=70).default_image_size == 70


def test_checkpoint_names_and_errors(monkeypatch):
    assert split_checkpoint("ViT-L-14-336:openai") == ("ViT-L-14-336", "openai")
    assert split_checkpoint("local-dir:/x") == ("local-dir:/x", None)
    with pytest.raises(ConfigError, match="Did you mean: ViT-L-14-336"):
        create_open_clip("ViT-L-14-33:openai")
    with pytest.raises(ConfigError, match="no pretrained tag 'laion' for ViT-L-14-336; known tags: openai"):
        create_open_clip("ViT-L-14-336:laion")
    with pytest.raises(ConfigError, match="names a pretrained tag"):
        create_open_clip("ViT-B-32:openai", model_config="tiny")
    with pytest.raises(ConfigError, match="checkpoint is required"):
        create_open_clip(None)


def test_openai_tags_build_with_quick_gelu(monkeypatch, http_server, tmp_path):
    """OpenAI weights need QuickGELU; open_clip only warns when the architecture name lacks -quickgelu."""
    import open_clip

    point_hub_at(monkeypatch, http_server.url)  # reachable (it answers 404): the fail-fast check lets it pass
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    seen = {}

    class Stop(Exception):
        pass

    def fake_create_model(name, pretrained=None, **kwargs):
        seen.update(name=name, pretrained=pretrained, **kwargs)
        raise Stop

    monkeypatch.setattr(open_clip, "create_model", fake_create_model)
    with pytest.raises(Stop):
        create_open_clip("ViT-L-14-336:openai", image_size=518)
    assert seen == {"name": "ViT-L-14-336", "pretrained": "openai", "precision": "fp32", "force_image_size": 518,
                    "force_quick_gelu": True}


def test_unreachable_hub_fails_fast_in_one_line(monkeypatch, tmp_path):
    point_hub_at(monkeypatch, unused_url())
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    started = time.monotonic()
    with pytest.raises(WeightsError) as info:
        create_open_clip("ViT-L-14-336:openai", image_size=518)  # open_clip would retry for about a minute
    assert time.monotonic() - started < 15
    assert "\n" not in str(info.value) and "hf download timm/vit_large_patch14_clip_336.openai" in str(info.value)


def test_missing_open_clip_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'zsad\[clip\]'"):
        create_open_clip(None, model_config="tiny")


def test_detector_end_to_end_with_the_clip_recipe():
    from zsad import Detector

    det = Detector.from_recipe("tipsomaly_clip", backbone_checkpoint=None, image_size=56, device="cpu",
                               backbone_options={"model_config": "tiny", "image_size": 56})
    r = det.predict(np.zeros((40, 60, 3), np.uint8), class_name="metal_nut")
    assert r.anomaly_map.shape == (40, 60) and sorted(r.scores) == ["S1", "S2", "S3", "S4", "S5"]
    assert r.scores["S1"] == r.scores["S2"]  # one global token serves both roles


def test_prompt_trainer_step_updates_the_tokens_on_clip():
    pytest.importorskip("zsad.training")
    from zsad.testing import check_prompt_training

    losses = check_prompt_training(lambda: create_open_clip(None, model_config="tiny"))
    assert losses["total"] > 0
