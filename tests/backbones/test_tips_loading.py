"""Loading TIPS checkpoints: official npz folders, model.json, inferred architectures, HF folders, bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tips_factory import copy_fixture_checkpoint, official_arrays, write_checkpoint
from zsad.backbones.tips import TipsArchitecture, TipsBackbone, create_tips
from zsad.errors import CheckpointError, ConfigError


def test_official_file_names_and_inferred_architecture(tmp_path):
    vision, text = official_arrays(width=384, depth=1, text_layers=1)
    folder = write_checkpoint(tmp_path / "ckpt", vision, text, stem="tips_oss_s14_highres_distilled")
    bb = create_tips(str(folder))
    assert bb.embed_dim == 384 and bb.vision.config.num_attention_heads == 6
    assert bb.default_image_size == 56 and bb.temperature == pytest.approx(0.005)
    feats = bb.encode_image(torch.rand(2, 3, 70, 98))  # non-square, interpolated positions
    assert feats.grid == (5, 7) and feats.patches.shape == (2, 35, 384)
    torch.testing.assert_close(feats.patches.norm(dim=-1), torch.ones(2, 35))
    # the weights really are the file's: the first CLS before the final norm equals cls_token + pos[0] path
    sd = bb.vision.state_dict()
    np.testing.assert_array_equal(sd["embeddings.cls_token"].numpy(), vision["cls_token"])
    q, k, v = np.split(vision["blocks.0.attn.qkv.weight"], 3)
    np.testing.assert_array_equal(sd["encoder.layer.0.attention.v_proj.weight"].numpy(), v)


def test_swiglu_variant_loads(tmp_path):
    vision, text = official_arrays(width=1536, depth=1, text_layers=1, grid=2, swiglu=True)
    bb = create_tips(str(write_checkpoint(tmp_path / "g", vision, text)))
    assert bb.vision.config.use_swiglu_ffn
    assert bb.encode_image(torch.rand(1, 3, 28, 28)).patches.shape == (1, 4, 1536)


def test_model_json_describes_non_standard_width(tmp_path):
    folder = copy_fixture_checkpoint(tmp_path / "ok")
    assert create_tips(str(folder)).embed_dim == 64
    bare = copy_fixture_checkpoint(tmp_path / "bare", model_json=False)
    with pytest.raises(CheckpointError, match="model.json"):
        create_tips(str(bare))


def test_missing_and_mismatched_keys_are_named(tmp_path):
    vision, text = official_arrays()
    del vision["blocks.0.ls1.gamma"]
    vision["surprise"] = np.zeros(3, np.float32)
    folder = write_checkpoint(tmp_path / "bad", vision, text)
    with pytest.raises(CheckpointError) as err:
        create_tips(str(folder))
    msg = str(err.value)
    assert "missing: encoder.layer.0.layer_scale1.lambda1" in msg and "unexpected: surprise" in msg
    assert "vision.npz" in msg

    vision, text = official_arrays()
    text["ln_final.weight"] = np.ones(7, np.float32)
    with pytest.raises(CheckpointError, match=r"mismatched: final_layer_norm.weight: file \(7,\)"):
        create_tips(str(write_checkpoint(tmp_path / "mm", vision, text)))


def test_vision_and_text_from_different_checkpoints(tmp_path):
    vision, _ = official_arrays(width=384)
    _, text = official_arrays(width=768)
    with pytest.raises(CheckpointError, match="different checkpoints"):
        create_tips(str(write_checkpoint(tmp_path / "mix", vision, text)))


def test_corrupt_truncated_and_missing_files(tmp_path):
    folder = copy_fixture_checkpoint(tmp_path / "t")
    data = (folder / "vision.npz").read_bytes()
    (folder / "vision.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        create_tips(str(folder))
    folder = copy_fixture_checkpoint(tmp_path / "notok")
    (folder / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.model"):
        create_tips(str(folder))
    folder = copy_fixture_checkpoint(tmp_path / "badtok")
    (folder / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(CheckpointError, match="SentencePiece"):
        create_tips(str(folder))
    folder = copy_fixture_checkpoint(tmp_path / "notext")
    (folder / "text.npz").unlink()
    with pytest.raises(CheckpointError, match="No text weights"):
        create_tips(str(folder))
    vision, text = official_arrays()
    del text["temperature"]
    with pytest.raises(CheckpointError, match="temperature"):
        create_tips(str(write_checkpoint(tmp_path / "notemp", vision, text)))


def test_checkpoint_spec_errors(tmp_path):
    with pytest.raises(ConfigError, match="is a file"):
        create_tips(str(copy_fixture_checkpoint(tmp_path / "f") / "vision.npz"))
    with pytest.raises(ConfigError, match="required"):
        create_tips(None)


def test_hf_folder_round_trip(tmp_path):
    """A TIPSv2 model saved with transformers' save_pretrained loads from its local folder."""
    from transformers import Tipsv2Config, Tipsv2Model

    arch = TipsArchitecture.tiny()
    vcfg, tcfg = arch.hf_configs()
    model = Tipsv2Model(Tipsv2Config(text_config=tcfg.to_dict(), vision_config=vcfg.to_dict(), temperature_init_value=0.0049))
    model.save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.model").write_bytes(copy_fixture_checkpoint(tmp_path / "tok").joinpath("tokenizer.model").read_bytes())
    bb = create_tips(str(tmp_path / "hf"))
    assert bb.temperature == pytest.approx(0.0049)
    x = torch.rand(1, 3, 56, 56)
    with torch.no_grad():
        ref = model.vision_model(pixel_values=x).last_hidden_state[:, 1]
    torch.testing.assert_close(bb.encode_image(x).globals["spatial"], torch.nn.functional.normalize(ref, dim=-1))


def test_image_size_must_be_multiple_of_patch():
    bb = TipsBackbone.random(TipsArchitecture.tiny())
    with pytest.raises(ConfigError, match="multiple of the patch size 14"):
        bb.check_image_size(500)
    with pytest.raises(ConfigError, match="multiple"):
        bb.encode_image(torch.rand(1, 3, 50, 56))


def test_prefix_width_is_checked():
    bb = TipsBackbone.random(TipsArchitecture.tiny())
    with pytest.raises(ConfigError, match="takes \\(n_tokens, 32\\)"):
        bb.encode_text(["a"], prefix=torch.zeros(8, 16))


def test_model_json_errors(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"vision": {"embed_dim": 8}}))
    with pytest.raises(CheckpointError, match="Cannot read the architecture file"):
        TipsArchitecture.from_model_json(path)
