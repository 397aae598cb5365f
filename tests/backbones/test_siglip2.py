"""The SigLIP / SigLIP2 backbone on tiny random models (offline): parity with the transformers models."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zsad.backbones.siglip2 import SiglipBackbone, create_siglip2
from zsad.errors import ConfigError, MissingDependencyError, WeightsError

TEXTS = ["a photo of a flawless metal nut.", "a damaged object"]


@pytest.fixture(scope="module")
def fixres() -> SiglipBackbone:
    return create_siglip2(None, random_config="tiny")


@pytest.fixture(scope="module")
def naflex() -> SiglipBackbone:
    return create_siglip2(None, random_config="tiny-naflex")


def _pixels(size: int, seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("size", [64, 96])
def test_fixres_global_is_the_pooled_map_head_output(fixres, size):
    x = _pixels(size)
    with torch.no_grad():
        f = fixres.encode_image(x)
        ref = fixres.model.get_image_features(pixel_values=x, interpolate_pos_encoding=size != 64).pooler_output
    torch.testing.assert_close(f.globals["object"], F.normalize(ref, dim=-1), atol=1e-6, rtol=0)
    assert f.globals["spatial"] is f.globals["object"]
    assert f.grid == (size // 16, size // 16) and f.patches.shape == (2, (size // 16) ** 2, 32)


def test_naflex_patchifies_like_the_image_processor(naflex):
    from transformers.models.siglip2.image_processing_siglip2 import (
        convert_image_to_patches,
    )

    x = _pixels(80, batch=1)
    patches = convert_image_to_patches(x[0], 16).unsqueeze(0)  # (1, 25, 768)
    with torch.no_grad():
        ref = naflex.model.get_image_features(
            pixel_values=patches, pixel_attention_mask=torch.ones(1, 25, dtype=torch.long),
            spatial_shapes=torch.tensor([[5, 5]]),
        )
        f = naflex.encode_image(x)
    torch.testing.assert_close(f.globals["object"], F.normalize(ref.pooler_output, dim=-1), atol=1e-6, rtol=0)
    assert f.grid == (5, 5) and naflex.preprocessing.resample == "bilinear"


@pytest.mark.parametrize("kind", ["fixres", "naflex"])
def test_head_readout_is_the_map_head_applied_to_each_patch_alone(kind, request):
    """The dense readout equals the MAP head run on a one-token sequence (the probe attends to that patch only)."""
    bb = request.getfixturevalue(kind)
    x = _pixels(64)
    vision = bb.model.vision_model
    with torch.no_grad():
        f = bb.encode_image(x)
        if bb.naflex:
            p = x.reshape(2, 3, 4, 16, 4, 16).permute(0, 2, 4, 3, 5, 1).reshape(2, 16, 768)
            hidden = vision(pixel_values=p, pixel_attention_mask=torch.ones(2, 16, dtype=torch.long),
                            spatial_shapes=torch.tensor([[4, 4]] * 2)).last_hidden_state
        else:
            hidden = vision(pixel_values=x).last_hidden_state
        alone = torch.stack([vision.head(hidden[:, j : j + 1]) for j in range(hidden.shape[1])], dim=1)
    torch.testing.assert_close(f.patches, F.normalize(alone, dim=-1), atol=1e-5, rtol=0)


def test_raw_readout_is_the_last_hidden_state():
    raw = create_siglip2(None, random_config="tiny", dense_readout="raw")
    x = _pixels(64)
    with torch.no_grad():
        ref = raw.model.vision_model(pixel_values=x).last_hidden_state
        torch.testing.assert_close(raw.encode_image(x).patches, F.normalize(ref, dim=-1), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="'head' or 'raw'"):
        create_siglip2(None, random_config="tiny", dense_readout="final")


@pytest.mark.parametrize("kind", ["fixres", "naflex"])
def test_text_without_prefix_equals_get_text_features(kind, request):
    bb = request.getfixturevalue(kind)
    ids = bb.tokenize(TEXTS)
    assert ids.shape == (2, 16)  # padding="max_length" to the text length
    with torch.no_grad():
        ref = bb.model.get_text_features(input_ids=ids).pooler_output
        torch.testing.assert_close(bb.encode_text(TEXTS), F.normalize(ref, dim=-1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("n_tokens", [1, 5])
def test_prefix_is_prepended_then_truncated_then_positioned(fixres, n_tokens):
    """Reference: the HF text model with the prompt vectors written into unused vocabulary rows."""
    prefix = torch.randn(n_tokens, fixres.prompt_width, generator=torch.Generator().manual_seed(3))
    ids = fixres.tokenize(TEXTS)
    unused = [i for i in range(1, 256) if i not in set(ids.flatten().tolist())][:n_tokens]
    model = copy.deepcopy(fixres.model)
    with torch.no_grad():
        model.text_model.embeddings.token_embedding.weight[unused] = prefix
        shifted = torch.cat([torch.tensor([unused] * 2), ids], dim=1)[:, : ids.shape[1]]
        ref = model.get_text_features(input_ids=shifted).pooler_output
        torch.testing.assert_close(fixres.encode_text(TEXTS, prefix=prefix), F.normalize(ref, dim=-1), atol=1e-5, rtol=0)
    grad_prefix = prefix.clone().requires_grad_(True)
    out = fixres.encode_text(TEXTS, prefix=grad_prefix)
    (out * torch.randn_like(out)).sum().backward()
    assert grad_prefix.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="takes \\(n_tokens, 32\\)"):
        fixres.encode_text(TEXTS, prefix=torch.zeros(2, 5))


def test_sigmoid_probabilities_with_scale_and_bias(fixres):
    feats = F.normalize(torch.randn(2, 5, 32), dim=-1)
    protos = F.normalize(torch.randn(2, 2, 32), dim=-1)
    scale, bias = fixres.model.logit_scale.exp().detach(), fixres.model.logit_bias.detach()
    expected = torch.sigmoid(feats @ protos.transpose(-1, -2) * scale + bias)
    probs = fixres.probabilities(feats, protos)
    torch.testing.assert_close(probs, expected)
    assert fixres.similarity == "sigmoid" and not torch.allclose(probs.sum(-1), torch.ones(2, 5))
    assert fixres.preprocessing.mean == (0.5, 0.5, 0.5) and fixres.preprocessing.resample == "bicubic"


def test_sizes_configs_and_errors(fixres, monkeypatch):
    with pytest.raises(ConfigError, match="not a multiple of the patch size 16"):
        fixres.encode_image(torch.rand(1, 3, 70, 70))
    custom = create_siglip2(None, random_config={
        "model_type": "siglip2",
        "text_config": {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "max_position_embeddings": 8},
        "vision_config": {"patch_size": 8, "num_patches": 4, "hidden_size": 16, "intermediate_size": 32,
                          "num_hidden_layers": 1, "num_attention_heads": 2},
    })
    assert custom.naflex and custom.default_image_size == 16 and custom.embed_dim == 16
    with pytest.raises(ConfigError, match="random_config"):
        create_siglip2(None, random_config="huge")
    with pytest.raises(ConfigError, match="checkpoint is required"):
        create_siglip2(None)
    with pytest.raises(WeightsError, match="Cannot load the SigLIP model"):
        create_siglip2("google/zsad-no-such-siglip-model", local_files_only=True)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match=r"zsad\[siglip2\]"):
        create_siglip2(None, random_config="tiny")


@pytest.mark.parametrize("random_config", ["tiny", "tiny-naflex"])
def test_detector_end_to_end_with_the_siglip2_recipe(random_config):
    from zsad import Detector

    det = Detector.from_recipe("tipsomaly_siglip2", backbone_checkpoint=None, image_size=64, device="cpu",
                               backbone_options={"random_config": random_config})
    r = det.predict(np.zeros((40, 60, 3), np.uint8), class_name="metal_nut")
    assert r.anomaly_map.shape == (40, 60) and sorted(r.scores) == ["S1", "S2", "S3", "S4", "S5"]
    assert 0 <= r.scores["S2"] <= 1 and r.scores["S1"] == r.scores["S2"]


@pytest.mark.parametrize("random_config", ["tiny", "tiny-naflex"])
def test_prompt_trainer_step_updates_the_tokens_on_siglip2(random_config):
    pytest.importorskip("zsad.training")
    from zsad.testing import check_prompt_training

    losses = check_prompt_training(lambda: create_siglip2(None, random_config=random_config))
    assert losses["total"] > 0
