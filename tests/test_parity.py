"""Parity with the official Tipsomaly implementation on the tiny random-weight fixture, through the public API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parity import FIXTURE, assert_close, image_paths, manifest, reference, samples
from zsad import Detector

CLASSES = ["metal_nut", "pipe_fryum"]


def build(prompt_list: str = "industrial", prompt_file: str = "learnable_params.pth") -> Detector:
    return Detector.from_recipe(
        "tipsomaly",
        backbone_checkpoint=str(FIXTURE),
        prompt_checkpoint=str(FIXTURE / prompt_file),
        image_size=518,
        sigma=4,
        fixed_prompts=prompt_list,
        image_score="S5",
        device="cpu",
    )


@pytest.fixture(scope="module")
def det() -> Detector:
    return build()


@pytest.fixture(scope="module")
def batch(det):
    return det.preprocess([str(p) for p in image_paths()])


@pytest.fixture(scope="module")
def scored(det, batch):
    with torch.inference_mode():
        return det.score_pixels(batch.pixels, [s["cls_name"] for s in samples()])


def test_preprocessing_is_bit_exact(batch):
    u8 = (batch.pixels.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(u8, reference()["input_u8"])
    assert batch.original_sizes[0] == (200, 300)  # 300x200 (W x H) image


def test_temperature_read_from_text_npz(det):
    assert np.float32(det.backbone.temperature) == np.float32(manifest()["model"]["temperature"])


def test_position_embedding_interpolation(det):
    emb = det.backbone.vision.embeddings
    dummy = torch.zeros(1, 1 + 37 * 37, det.backbone.embed_dim)
    with torch.no_grad():
        pos = emb.interpolate_pos_encoding(dummy, 518, 518)[0]
    assert_close(pos.numpy(), "pos_embed_interpolated")


def test_global_and_patch_features(det, batch):
    with torch.inference_mode():
        feats = det.backbone.encode_image(batch.pixels)
    assert feats.grid == (37, 37)
    assert_close(feats.globals["object"].numpy(), "cls0")
    assert_close(feats.globals["spatial"].numpy(), "cls1")
    assert_close(feats.patches.numpy(), "patch_tokens")


def test_raw_features_before_normalisation(det, batch):
    with torch.inference_mode():
        tokens = det.backbone.vision(pixel_values=batch.pixels).last_hidden_state
    assert_close(tokens[:, 0].numpy(), "raw_cls0")
    assert_close(tokens[:, 1].numpy(), "raw_cls1")
    assert_close(tokens[:, 2:].norm(dim=-1).numpy(), "raw_patch_norm")


def test_token_ids_are_exact(det):
    probe = manifest()["text_probe"]
    ref = reference()
    np.testing.assert_array_equal(det.backbone.tokenize(probe["sentences_fixed"]).numpy(), ref["probe_text_ids"])
    np.testing.assert_array_equal(
        det.backbone.tokenize(probe["sentences_fixed"]).numpy() == 0, ref["probe_text_paddings"].astype(bool)
    )
    np.testing.assert_array_equal(det.backbone.tokenize(probe["sentences_learned"]).numpy(), ref["probe_learned_ids"])


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_text_embeddings_with_and_without_learned_prefix(det):
    probe = manifest()["text_probe"]
    ref = reference()
    with torch.inference_mode():
        plain = det.backbone.encode_text(probe["sentences_fixed"]).numpy()
        t_n, t_a = det.prompts.learned.tokens()
        learned = det.backbone.encode_text(probe["sentences_learned"], prefix=t_a).numpy()
    assert_close(plain, "probe_text_emb", _normalised(ref["probe_text_emb"]))
    assert_close(learned, "probe_learned_emb", _normalised(ref["probe_learned_emb"]))


@pytest.mark.parametrize("prompt_list", ["industrial", "medical"])
def test_fixed_and_learned_prototypes(prompt_list):
    det = build(prompt_list)
    assert_close(det.prototypes(CLASSES, "global").numpy(), f"G_f_{prompt_list}")
    assert_close(det.prototypes(CLASSES, "local")[0].numpy(), f"G_l_{prompt_list}")


def test_patch_and_global_probabilities(scored):
    assert_close(scored.inputs.patch_probs.numpy(), "patch_probs")
    assert_close(scored.inputs.global_probs["object"].numpy(), "p_cls0")
    assert_close(scored.inputs.global_probs["spatial"].numpy(), "p_cls1")
    assert_close(scored.inputs.max_patch_abnormal().numpy(), "max_patch_p_abnormal")


def test_every_image_score_variant(scored):
    s = {k: v.numpy() for k, v in scored.scores.items()}
    ref = reference()
    assert_close(s["S1"], "score_S1")
    assert_close(s["S2"], "score_S2")
    assert_close(s["S5"], "score_S2_plus_max")
    # S1 + local evidence is the official column 0 with aggregation on
    assert_close(s["S1"] + (s["S5"] - s["S2"]), "score_S1_plus_max")
    np.testing.assert_allclose(s["S3"], np.maximum(ref["score_S1"], ref["score_S2"]), atol=2e-4)
    np.testing.assert_allclose(s["S4"], (ref["score_S1"] + ref["score_S2"]) / 2, atol=2e-4)


def test_rough_map_and_final_anomaly_maps(det, scored):
    rough = det.pixel_head.rough(scored.inputs.patch_probs, scored.inputs.grid, (518, 518))
    assert_close(rough[1, :96, :96].numpy(), "rough_map_crop")
    assert_close(scored.maps.numpy(), "anomaly_map")


def test_predict_returns_results_matching_the_reference(det):
    paths = [str(p) for p in image_paths()]
    results = det.predict(paths, class_name=[s["cls_name"] for s in samples()], map_size="input", batch_size=4)
    assert len(results) == 6
    assert_close(np.stack([r.anomaly_map for r in results]), "anomaly_map")
    assert_close(np.array([r.pred_score for r in results]), "score_S2_plus_max")
    assert_close(np.array([r.scores["S1"] for r in results]), "score_S1")
    assert all(r.anomaly_map.dtype == np.float32 for r in results)
    original = det.predict(paths[0], class_name="metal_nut")
    assert original.anomaly_map.shape == (200, 300)
    assert original.image_path == paths[0]


def test_medical_image_scores_and_patch_maps():
    det = build("medical")
    with torch.inference_mode():
        out = det.score_pixels(det.preprocess([str(p) for p in image_paths()]).pixels, [s["cls_name"] for s in samples()])
    assert_close(out.inputs.patch_probs.numpy(), "patch_probs_medical")
    s = {k: v.numpy() for k, v in out.scores.items()}
    got = np.stack([s["S1"] + s["S5"] - s["S2"], s["S5"]], axis=1)
    assert_close(got, "img_scores_medical")


def test_npz_prompt_file_gives_the_same_prototypes(det):
    other = build(prompt_file="learnable_params.npz")
    torch.testing.assert_close(other.prototypes(CLASSES, "local"), det.prototypes(CLASSES, "local"), rtol=0, atol=0)
