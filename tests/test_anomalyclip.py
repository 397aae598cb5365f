"""The anomalyclip recipe beyond parity: its backbone options, prompt files, bad input, few-shot, save/load, training
runs through ``zsad train``, and the released checkpoints in the weights table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zsad import Detector
from zsad.backbones.base import FeatureRequest
from zsad.backbones.openclip import create_open_clip
from zsad.cli import main
from zsad.errors import CheckpointError, ConfigError
from zsad.prompts.checkpoint import (
    convert_official_checkpoint,
    load_anomalyclip_checkpoint,
    load_prompt_checkpoint,
    read_prompt_file,
)
from zsad.training import PromptTrainer

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "anomalyclip-parity"
TIPSOMALY = Path(__file__).resolve().parent / "fixtures" / "tipsomaly-parity"
DATASET = FIXTURE / "dataset"
CONFIG = json.loads((FIXTURE / "model_config.json").read_text())
PTH = FIXTURE / "prompt_learner.pth"
TINY = {"image_size": 280, "feature_layers": [1, 2, 3, 4], "dpam_start": 2}


def reference() -> dict[str, np.ndarray]:
    from parity import load_reference

    return load_reference(FIXTURE)


def build(prompt_checkpoint=PTH, **kw) -> Detector:
    return Detector.from_recipe(
        "anomalyclip", backbone_checkpoint=str(FIXTURE / "clip.pt"), backbone_options={"model_config": CONFIG},
        prompt_checkpoint=None if prompt_checkpoint is None else str(prompt_checkpoint), device="cpu",
        **{**TINY, **kw},
    )


def backbone(**options):
    return create_open_clip(str(FIXTURE / "clip.pt"), model_config=CONFIG, **options)


def pixels() -> torch.Tensor:
    ref = reference()
    lut = torch.from_numpy(ref["input_norm_lut"])
    u8 = torch.from_numpy(ref["input_u8"]).long()
    return torch.stack([lut[c][u8[..., c]] for c in range(3)], dim=1)  # the official normalised inputs


# ------------------------------------------------------------------------------------------------- backbone
def test_backbone_options_reproduce_the_official_intermediates():
    ref = reference()
    bb = backbone(dpam_start=2, global_ln_post=False, pos_interpolation="bilinear")
    np.testing.assert_allclose(bb._positions((20, 20)).detach().numpy(), ref["pos_embed_interpolated"], atol=5e-5)
    with torch.no_grad():
        raw = bb.image_features(pixels(), FeatureRequest(layers=(1, 2, 3, 4)))
    np.testing.assert_allclose(raw.globals["object"].numpy(), ref["image_features_raw"], atol=2e-5)
    for i, layer in enumerate((1, 2, 3, 4)):
        np.testing.assert_allclose(raw.layers[layer].norm(dim=-1).numpy(), ref["patch_token_norms"][:, i, 1:], atol=5e-5)
        np.testing.assert_allclose(F.normalize(raw.layers[layer][0], dim=-1).numpy(), ref["patch_tokens_img0"][i, 1:],
                                   atol=5e-6)


def test_without_the_options_the_model_is_open_clips():
    from open_clip.model import resize_pos_embed

    plain, variant = backbone(), backbone(dpam_start=2)
    x = pixels()[:2]
    resized = create_open_clip(None, model_config=CONFIG, image_size=280)
    state = {k: v.clone() for k, v in plain.model.state_dict().items()}
    resize_pos_embed(state, resized.model)  # open_clip's resize of the position table at load time
    resized.model.load_state_dict(state)
    with torch.no_grad():
        a = plain.image_features(x, FeatureRequest(layers=(1, 2, 3)))
        b = variant.image_features(x, FeatureRequest(layers=(1, 2, 3)))
        visual = resized.model.visual
        visual.output_tokens = True
        try:
            pooled, tokens = visual(x)  # open_clip's own forward
        finally:
            visual.output_tokens = False
    torch.testing.assert_close(a.globals["object"], pooled, atol=1e-4, rtol=0)
    torch.testing.assert_close(a.patches, tokens @ visual.proj, atol=1e-4, rtol=0)
    torch.testing.assert_close(a.layers[1], b.layers[1], atol=1e-4, rtol=0)  # before DPAM: the plain blocks
    assert (a.layers[2] - b.layers[2]).abs().max() > 1e-2  # DPAM blocks: the V-V path
    assert plain.dpam_start is None and plain.global_ln_post and plain.pos_interpolation == "bicubic"


def test_dpam_original_path_is_the_plain_tower():
    plain, dpam = backbone(), backbone(dpam_start=1)
    x = pixels()[:1]
    with torch.no_grad():
        a, b = plain.image_features(x, FeatureRequest()), dpam.image_features(x, FeatureRequest())
    torch.testing.assert_close(a.patches, b.patches, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.globals["object"], b.globals["object"], atol=1e-5, rtol=0)


def test_global_without_ln_post_is_the_projected_class_token():
    bb = backbone(global_ln_post=False)
    x = pixels()[:1, :, :224, :224]
    with torch.no_grad():
        g = bb.image_features(x, FeatureRequest()).globals["object"]
        v = bb.model.visual
        tokens = v.transformer(v.ln_pre(bb._embed(x)[0]))
    torch.testing.assert_close(g, tokens[:, 0] @ v.proj, atol=1e-6, rtol=0)


def test_deep_prompts_replace_tokens_before_each_block():
    """Against a hand-written loop over open_clip's text blocks."""
    bb = backbone()
    tokens = load_anomalyclip_checkpoint(PTH)
    m = bb.model
    ids = bb.tokenize(["damaged object."])
    with torch.no_grad():
        got = bb.encode_text(["damaged object."], prefix=tokens.ctx_neg, deep=list(tokens.deep), normalize=False)
        emb = m.token_embedding(ids)
        x = torch.cat([emb[:, :1], tokens.ctx_neg[None], emb[:, 1:77 - 12]], dim=1) + m.positional_embedding
        for i, block in enumerate(m.transformer.resblocks):
            if 1 <= i <= len(tokens.deep):
                x = torch.cat([x[:, :1], tokens.deep[i - 1][None], x[:, 5:]], dim=1)
            x = block(x, attn_mask=m.attn_mask)
        x = m.ln_final(x)
        expected = x[0, ids.argmax(-1) + 12] @ m.text_projection
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="10 blocks"):
        bb.encode_text(["x"], deep=list(tokens.deep) * 2)


# ------------------------------------------------------------------------------------------------- bad input
def test_config_errors_name_the_depth():
    with pytest.raises(ConfigError, match=r"blocks 1\.\.4"):
        build(feature_layers=[5])
    with pytest.raises(ConfigError, match="4 blocks"):
        build(dpam_start=5)
    with pytest.raises(ConfigError, match="4 blocks"):
        build(dpam_start=0)
    with pytest.raises(ConfigError, match="distinct whole block numbers"):
        build(feature_layers=[2, 2])
    with pytest.raises(ConfigError, match="not among the heads"):  # feature_layers belongs to the pixel_map head
        Detector.from_recipe("winclip", backbone_checkpoint=None, backbone_options={"model_config": "tiny"},
                             feature_layers=[1], device="cpu")


def test_prompt_width_mismatch_names_both_widths():
    with pytest.raises(ConfigError, match=r"64 wide.*32-wide"):
        Detector.from_recipe("anomalyclip", backbone_checkpoint=None, backbone_options={"model_config": "tiny"},
                             prompt_checkpoint=str(PTH), image_size=56, feature_layers=[2], dpam_start=2, device="cpu")


def test_too_deep_prompts_are_refused_naming_the_text_depth():
    with pytest.raises(ConfigError, match=r"depth 9 .*2 blocks"):
        Detector.from_recipe("anomalyclip", backbone_checkpoint=None, prompt_checkpoint=None, image_size=56,
                             backbone_options={"model_config": {**CONFIG, "text_cfg": {**CONFIG["text_cfg"], "layers": 2}}},
                             feature_layers=[2], dpam_start=2, device="cpu")


def test_checkpoints_of_other_methods_are_recognised_and_refused(tmp_path):
    with pytest.raises(CheckpointError, match=r"Tipsomaly prompt tokens \(T_n, T_a\)"):
        build(prompt_checkpoint=TIPSOMALY / "learnable_params.pth")
    with pytest.raises(CheckpointError, match="Tipsomaly prompt tokens"):
        load_anomalyclip_checkpoint("tipsomaly-mvtec")
    with pytest.raises(CheckpointError, match="AnomalyCLIP prompt learner"):
        load_prompt_checkpoint(PTH)
    with pytest.raises(CheckpointError, match="AnomalyCLIP prompt learner"):
        Detector.from_recipe("tipsomaly", backbone_checkpoint=str(TIPSOMALY), prompt_checkpoint=str(PTH),
                             image_size=56, device="cpu")
    with pytest.raises(CheckpointError, match=r"no prompt tokens of a known kind \(tensors \['ln_final.bias'"):
        load_anomalyclip_checkpoint(FIXTURE / "clip.pt")  # a CLIP state dict, not prompts
    torch.save({"prompt_learner": {"ctx_pos": torch.zeros(1, 1, 4, 8), "ctx_neg": torch.zeros(1, 1, 4, 8),
                                   "compound_prompts_text.1": torch.zeros(2, 8)}}, tmp_path / "gap.pth")
    with pytest.raises(CheckpointError, match="without gaps"):
        load_anomalyclip_checkpoint(tmp_path / "gap.pth")


# ------------------------------------------------------------------------------------------------- prompt files
def test_official_file_npz_and_converted_safetensors_agree(tmp_path):
    official = load_anomalyclip_checkpoint(PTH)
    assert official.design == {"n_ctx": 12, "depth": 9, "t_n_ctx": 4}
    npz = load_anomalyclip_checkpoint(FIXTURE / "prompt_learner.npz")
    assert main(["prompts", str(PTH), str(tmp_path / "p.safetensors")]) == 0
    converted = load_anomalyclip_checkpoint(tmp_path / "p.safetensors")
    for other in (npz, converted):
        for name, t in official.tensors().items():
            assert torch.equal(t, other.tensors()[name]), name
    meta = read_prompt_file(tmp_path / "p.safetensors").meta
    assert meta["method"] == "anomalyclip" and meta["converted_from"] == "prompt_learner.pth"
    assert "compound_prompt_projections.*.weight" in meta["dropped"] and meta["depth"] == "9"
    a = build().predict(DATASET / "bottle/test/good/000.png", map_size="input")
    b = build(prompt_checkpoint=tmp_path / "p.safetensors").predict(DATASET / "bottle/test/good/000.png",
                                                                    map_size="input")
    assert a.pred_score == b.pred_score and np.array_equal(a.anomaly_map, b.anomaly_map)


def test_a_checkpoint_saved_on_a_gpu_loads_on_the_cpu(tmp_path, monkeypatch):
    """train.py saves the prompt learner of a CUDA model: every storage is tagged 'cuda:0' in the file."""
    state = torch.load(PTH, map_location="cpu", weights_only=True)
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
    torch.save(state, tmp_path / "epoch_15.pth")
    monkeypatch.undo()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "epoch_15.pth", weights_only=True)  # what a plain load on this machine does
    tokens = load_anomalyclip_checkpoint(tmp_path / "epoch_15.pth")
    assert tokens.ctx_pos.device.type == "cpu" and torch.equal(tokens.ctx_pos, load_anomalyclip_checkpoint(PTH).ctx_pos)
    out = convert_official_checkpoint(tmp_path / "epoch_15.pth", tmp_path / "p.safetensors")
    assert read_prompt_file(out).kind == "anomalyclip"


def test_pickled_code_is_never_executed(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"prompt_learner": {"ctx_pos": Evil()}}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_anomalyclip_checkpoint(tmp_path / "evil.pth")
    assert "pwned" not in capsys.readouterr().out


def test_released_checkpoints_are_in_the_weights_table_and_download(http_server, monkeypatch, tmp_path):
    import dataclasses

    import zsad.weights as w
    from zsad.weights import table

    for name, folder in (("anomalyclip-visa", "9_12_4_multiscale"), ("anomalyclip-mvtec", "9_12_4_multiscale_visa")):
        ckpt = w.get_checkpoint(name)
        assert ckpt.kind == "prompts" and ckpt.licence == "MIT" and "Qihang Zhou" in ckpt.attribution
        assert ckpt.files[0].url == ("https://raw.githubusercontent.com/zqhang/AnomalyCLIP/"
                                     f"45ed4dd35c05797d854294b5e8d585c545920089/checkpoints/{folder}/epoch_15.pth")
    assert Detector.from_recipe  # the recipe's default is the VisA-trained release, as test.sh uses for MVTec-AD
    from zsad.components import get_recipe

    assert get_recipe("anomalyclip").prompts.checkpoint == "anomalyclip-visa"
    # a real download from a local server, through the same code path as the GitHub URL
    http_server.put("epoch_15.pth", PTH.read_bytes())
    ckpt = w.get_checkpoint("anomalyclip-visa")
    local = dataclasses.replace(ckpt, files=(dataclasses.replace(ckpt.files[0], url=http_server.url_for("epoch_15.pth")),))
    monkeypatch.setitem(table._BY_NAME, "anomalyclip-visa", local)
    monkeypatch.setenv("ZSAD_CACHE", str(tmp_path / "cache"))
    tokens = load_anomalyclip_checkpoint("anomalyclip-visa")
    assert (tmp_path / "cache" / "anomalyclip-visa" / "epoch_15.pth").is_file()
    assert torch.equal(tokens.ctx_neg, load_anomalyclip_checkpoint(PTH).ctx_neg)
    assert w.verify_checkpoint("anomalyclip-visa") == {"epoch_15.pth": "unverified"}
    monkeypatch.setenv("ZSAD_CACHE", str(tmp_path / "other"))
    assert main(["weights", "import", "anomalyclip-mvtec", str(PTH)]) == 0
    assert torch.equal(load_anomalyclip_checkpoint("anomalyclip-mvtec").deep[3], tokens.deep[3])


# ------------------------------------------------------------------------------------------------- detector use
def test_references_and_save_load(tmp_path):
    det = build()
    good = [DATASET / "bottle/test/good/000.png"]
    test_image = DATASET / "bottle/test/broken_large/000.jpg"
    zero = det.predict(test_image, class_name="bottle", map_size="input")
    det.add_references(good, class_name="bottle")
    few = det.predict(test_image, class_name="bottle", map_size="input")
    other = det.predict(test_image, class_name="screw", map_size="input")
    assert det.references == {"bottle": 1} and few.pred_score != zero.pred_score
    assert other.pred_score == zero.pred_score  # classes without references stay zero-shot
    det.save(tmp_path / "det")
    again = Detector.load(tmp_path / "det", device="cpu")
    assert again.references == {"bottle": 1}
    r = again.predict(test_image, class_name="bottle", map_size="input")
    assert abs(r.pred_score - few.pred_score) < 1e-6 and np.abs(r.anomaly_map - few.anomaly_map).max() < 1e-5
    assert read_prompt_file(tmp_path / "det" / "prompts.safetensors").kind == "anomalyclip"


def test_references_count_once_per_scored_layer():
    """The map sums one map per feature layer: reference evidence is rendered on the same scale."""
    det = build(feature_layers=[3, 4])
    head = det.pixel_head
    grid_map = torch.rand(1, 400)
    one = build(feature_layers=[4]).pixel_head
    torch.testing.assert_close(head.render(grid_map, (20, 20), (280, 280)), 2 * one.render(grid_map, (20, 20), (280, 280)))


def test_only_the_contexts_and_deep_prompts_change():
    det = build()
    before = {k: v.clone() for k, v in det.backbone.state_dict().items()}
    trainer = PromptTrainer(det)
    assert len(trainer.params) == 2 + 8
    masks = [np.zeros((300, 410), np.uint8), (np.arange(280 * 280).reshape(280, 280) % 7 == 0).astype(np.uint8)]
    losses = trainer.step([DATASET / "bottle/test/good/000.png", DATASET / "bottle/test/broken_large/000.jpg"], masks)
    assert set(losses) == {"focal", "dice_pos", "dice_neg", "image", "total"}
    assert losses["total"] == pytest.approx(4 * (losses["focal"] + losses["dice_pos"] + losses["dice_neg"])
                                            + losses["image"], rel=1e-6)
    assert all(torch.equal(before[k], v) for k, v in det.backbone.state_dict().items())
    assert all(float(g.abs().max()) > 0 for g in trainer.last_gradients())


# ------------------------------------------------------------------------------------------------- zsad train
def test_zsad_train_anomalyclip_writes_prompts_that_predict_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    sets = ["--set", f"backbone_checkpoint={FIXTURE / 'clip.pt'}", "--set",
            "backbone.options=" + json.dumps({"model_config": CONFIG, "dpam_start": 2, "global_ln_post": False,
                                              "pos_interpolation": "bilinear"}),
            "--set", "image_size=56", "--set", "feature_layers=[3,4]", "--set", "prompts.options="
            + json.dumps({"depth": 3, "deep_tokens": 2})]
    args = ["train", "--recipe", "anomalyclip", "--data", str(DATASET), "--out", str(out), "--device", "cpu",
            "--batch-size", "3", "-q", *sets]
    assert main([*args, "--epochs", "1"]) == 0
    record = json.loads((out / "training.json").read_text())
    assert record["training"]["shuffle"] is True  # the recipe's default (AnomalyCLIP's shuffling loader)
    assert set(record["history"][0]) >= {"focal", "dice_pos", "dice_neg", "image", "total"}
    first = load_anomalyclip_checkpoint(out / "checkpoints" / "epoch_001.safetensors")  # also a prompt checkpoint
    assert first.design == {"n_ctx": 12, "depth": 3, "t_n_ctx": 2}
    assert main([*args, "--epochs", "2", "--resume", str(out)]) == 0
    resumed = load_anomalyclip_checkpoint(out / "prompts.safetensors")
    assert not torch.equal(resumed.ctx_pos, first.ctx_pos)
    fresh = tmp_path / "fresh"
    assert main([*args[:6], str(fresh), *args[7:], "--epochs", "2"]) == 0
    straight = load_anomalyclip_checkpoint(fresh / "prompts.safetensors")
    for name, t in straight.tensors().items():
        assert torch.equal(t, resumed.tensors()[name]), name  # a resumed run equals an uninterrupted one
    det = Detector.load(out, device="cpu")
    assert det.prompts.trained and det.predict(DATASET / "screw/test/good/000.png").anomaly_map.shape == (260, 200)


def test_large_cpu_batches_run_in_sub_batches_with_the_same_result(monkeypatch):
    import zsad.backbones.openclip as oc

    bb = backbone(dpam_start=2, global_ln_post=False, pos_interpolation="bilinear")
    x = pixels()[:3]
    request = FeatureRequest(layers=(1, 4))
    with torch.no_grad():
        whole = bb.image_features(x, request)
        monkeypatch.setattr(oc, "_CPU_TOKENS_PER_PASS", 401)  # one 280 px image (20 x 20 + 1 tokens) per pass
        parts = bb.image_features(x, request)
    for a, b in ((whole.patches, parts.patches), (whole.layers[4], parts.layers[4]),
                 (whole.globals["object"], parts.globals["object"])):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
