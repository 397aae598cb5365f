"""TIPS dense readouts: ``dense_readout="value"`` equals a direct transcription of TIPS_BACKBONE.md §1.7.

The transcription works on the upstream tensor layout (a fused ``qkv`` weight whose last third is the value
projection) with plain ``torch.nn.functional`` calls, independent of the backbone's own module calls.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zsad.backbones.tips import TipsArchitecture, TipsBackbone, create_tips
from zsad.errors import ConfigError


def _upstream_value_trick(bb: TipsBackbone, pixels: torch.Tensor) -> torch.Tensor:
    """§1.7: blocks 0..L-2 as usual; last block with attention replaced by its value path; final norm; patches."""
    vision = bb.vision
    eps = vision.config.layer_norm_eps
    sd = {k: v.detach() for k, v in vision.state_dict().items()}
    last = vision.config.num_hidden_layers - 1
    p = f"encoder.layer.{last}."
    d = vision.config.hidden_size
    # the upstream fused layout: qkv = [q; k; v]
    qkv_w = torch.cat([sd[p + f"attention.{n}_proj.weight"] for n in "qkv"])
    qkv_b = torch.cat([sd[p + f"attention.{n}_proj.bias"] for n in "qkv"])
    with torch.no_grad():
        x = vision(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]  # input of the last block
        h = F.layer_norm(x, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        v = F.linear(h, qkv_w[2 * d :], qkv_b[2 * d :])  # v = qkv(norm1(x))[v-part]
        x = x + sd[p + "layer_scale1.lambda1"] * F.linear(v, sd[p + "attention.o_proj.weight"], sd[p + "attention.o_proj.bias"])
        h = F.layer_norm(x, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        mlp = F.linear(F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])),
                       sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
        x = x + sd[p + "layer_scale2.lambda1"] * mlp
        x = F.layer_norm(x, (d,), sd["layernorm.weight"], sd["layernorm.bias"], eps)
    patches = x[:, 1 + vision.config.num_register_tokens :]
    return patches / patches.norm(dim=-1, keepdim=True).clamp(min=1e-3)  # upstream x / max(||x||, 1e-3)


@pytest.mark.parametrize("size", [56, 70])
def test_value_readout_equals_the_upstream_transcription(size):
    bb = TipsBackbone.random(TipsArchitecture.tiny(), dense_readout="value")
    final = TipsBackbone.random(TipsArchitecture.tiny(), dense_readout="final")
    assert torch.equal(bb.vision.encoder.layer[0].attention.q_proj.weight, final.vision.encoder.layer[0].attention.q_proj.weight)
    pixels = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = bb.encode_image(pixels)
        plain = final.encode_image(pixels)
    expected = _upstream_value_trick(bb, pixels)
    torch.testing.assert_close(out.patches, expected, atol=1e-5, rtol=0)
    assert out.grid == (size // 14, size // 14)
    assert (out.patches - plain.patches).abs().max() > 1e-3  # a different readout
    for role in ("object", "spatial"):  # the global tokens do not change
        torch.testing.assert_close(out.globals[role], plain.globals[role])


def test_dense_readout_is_selectable_in_a_recipe():
    from zsad import Detector, get_recipe

    assert get_recipe("tipsomaly_v2").backbone.options == {"dense_readout": "value"}
    assert "dense_readout" not in get_recipe("tipsomaly").backbone.options  # Tipsomaly: plain final tokens
    det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_strategy="fixed", prompt_checkpoint=None,
                               image_size=56, device="cpu", backbone_options={"random_config": "tiny", "dense_readout": "value"})
    assert det.backbone.dense_readout == "value"
    det = Detector.from_recipe("tipsomaly_v2", backbone_checkpoint=None, image_size=56, device="cpu",
                               backbone_options={"random_config": "tiny"})
    assert det.backbone.dense_readout == "value" and det.config.prompts.strategy == "fixed"
    r = det.predict(np.zeros((30, 40, 3), np.uint8), class_name="pipe_fryum")
    assert r.anomaly_map.shape == (30, 40)
    with pytest.raises(ConfigError, match="dense_readout must be 'final' or 'value'"):
        create_tips(random_config="tiny", dense_readout="values")
