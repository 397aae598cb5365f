"""Normal references (few-shot) for every recipe: the generic patch memory, its fusion rule, state and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zsad import Detector
from zsad.errors import CheckpointError, ImageError
from zsad.heads.memory import nearest_distance


def tiny(**overrides) -> Detector:
    return Detector.from_recipe(
        "tipsomaly", backbone_checkpoint=None, prompt_strategy="fixed", prompt_checkpoint=None, image_size=56,
        backbone_options={"random_config": "tiny"}, device="cpu", **overrides,
    )


def image(seed: int, size=(40, 60)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def det() -> Detector:
    return tiny()


def test_an_image_equal_to_its_reference_is_scored_by_the_documented_fusion(det):
    x = image(0)
    zero = det.predict(x, class_name="nut", map_size="input")
    det.add_references([x], class_name="nut")
    try:
        few = det.predict(x, class_name="nut", map_size="input")
    finally:
        det.clear_references()
    # evidence 0 everywhere: map = (zero-shot map + 0) / 2, every score = (zero-shot score + max 0) / 2
    np.testing.assert_allclose(few.anomaly_map, zero.anomaly_map / 2, atol=1e-6)
    for name, value in zero.scores.items():
        assert few.scores[name] == pytest.approx(value / 2, abs=1e-6)


def test_fusion_with_evidence(det):
    x, ref = image(1), image(2)
    pixels = det.preprocess([x]).pixels
    with torch.inference_mode():
        zero = det.score_pixels(pixels, ["nut"])
        det.add_references([ref], class_name="nut")
        few = det.score_pixels(pixels, ["nut"])
        det.clear_references("nut")
        feats = det.backbone.encode_image(det.preprocess([ref]).pixels)
        query = det.backbone.encode_image(pixels)
    evidence = nearest_distance(query.patches, feats.patches.reshape(-1, feats.patches.shape[-1]))
    torch.testing.assert_close(few.reference, evidence)
    rendered = det.pixel_head.render(evidence, query.grid, (56, 56))
    torch.testing.assert_close(few.maps, (zero.maps + rendered) / 2)
    for name in zero.scores:
        torch.testing.assert_close(few.scores[name], (zero.scores[name] + evidence.max(dim=1).values) / 2)
    assert float(evidence.min()) >= 0 and float(evidence.max()) <= 1


def test_other_classes_stay_zero_shot_and_clear_restores(det):
    x = image(3)
    before = {c: det.predict(x, class_name=c) for c in ("nut", "screw")}
    det.add_references([image(4), image(5, (80, 30))], class_name="nut")
    det.add_references(image(6), class_name="nut")  # a second call adds
    assert det.references == {"nut": 3}
    assert det.predict(x, class_name="screw").pred_score == before["screw"].pred_score
    assert det.predict(x, class_name="nut").pred_score != before["nut"].pred_score
    det.clear_references("nut")
    assert det.references == {}
    np.testing.assert_array_equal(det.predict(x, class_name="nut").anomaly_map, before["nut"].anomaly_map)
    det.clear_references("never added")  # harmless


def test_mixed_batches_equal_single_predictions(det):
    det.add_references([image(7)], class_name="nut")
    try:
        xs = [image(8), image(9), image(10)]
        names = ["nut", "screw", "nut"]
        batch = det.predict(xs, class_name=names, batch_size=3)
        for x, n, r in zip(xs, names, batch):
            alone = det.predict(x, class_name=n)
            assert r.pred_score == pytest.approx(alone.pred_score, abs=1e-6)
            np.testing.assert_allclose(r.anomaly_map, alone.anomaly_map, atol=1e-6)
    finally:
        det.clear_references()


def test_references_of_other_sizes_modes_and_kinds(det, tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(image(11, (33, 47))[..., 0]).save(gray)
    rgba = Image.fromarray(np.dstack([image(12, (64, 64)), np.full((64, 64), 128, np.uint8)]), "RGBA")
    det.add_references([gray, rgba, torch.rand(3, 20, 30), image(13)], class_name="nut")
    assert det.references == {"nut": 4}
    det.add_references(torch.rand(2, 3, 56, 56), class_name="bolt")  # a batch tensor is several images
    assert det.references == {"nut": 4, "bolt": 2}
    det.clear_references()


def test_references_for_a_class_never_predicted_are_harmless(det):
    x = image(14)
    before = det.predict(x, class_name="nut")
    det.add_references([image(15)], class_name="unused class")
    assert det.predict(x, class_name="nut").pred_score == before.pred_score
    det.clear_references()


def test_bad_references_are_named(det, tmp_path):
    with pytest.raises(ImageError, match="no images for class 'nut'"):
        det.add_references([], class_name="nut")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    missing = tmp_path / "missing.png"
    with pytest.raises(ImageError) as info:
        det.add_references([image(16), broken, missing], class_name="nut")
    message = str(info.value)
    assert "2 of 3 reference image(s) for class 'nut'" in message
    assert str(broken) in message and str(missing) in message
    assert det.references == {}  # nothing half-added


def test_save_and_load_keep_references(tmp_path):
    det = tiny()
    x = image(17)
    det.add_references([image(18)], class_name="nut")
    expected = det.predict(x, class_name="nut")
    folder = det.save(tmp_path / "det")
    loaded = Detector.load(folder, device="cpu")
    assert loaded.references == {"nut": 1}
    got = loaded.predict(x, class_name="nut")
    assert got.pred_score == pytest.approx(expected.pred_score, abs=1e-6)
    np.testing.assert_allclose(got.anomaly_map, expected.anomaly_map, atol=1e-6)
    # a saved folder without references loses the old file; a file of another memory is refused
    det.clear_references().save(folder)
    assert not (folder / "references.safetensors").exists()
    det.add_references([image(19)], class_name="nut")
    det.save(folder)
    with pytest.raises(CheckpointError, match="references of the 'patch_memory' memory but this detector uses"):
        tiny().memory.load(folder / "references.safetensors", "winclip_memory")


def test_a_memory_needing_features_the_backbone_lacks_is_refused_when_built():
    from zsad.errors import ConfigError

    with pytest.raises(ConfigError, match="unprojected_patches"):
        tiny(memory="winclip_memory")


def test_nearest_distance_is_chunked_and_exact():
    gen = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(2, 50, 16, generator=gen), dim=-1)
    bank = torch.nn.functional.normalize(torch.randn(100_000, 16, generator=gen), dim=-1)  # 100k reference patches
    brute = ((1 - (queries.reshape(-1, 16) @ bank.t()).max(dim=1).values) / 2).reshape(2, 50)
    torch.testing.assert_close(nearest_distance(queries, bank, max_elements=1000), brute, rtol=0, atol=1e-6)
    torch.testing.assert_close(nearest_distance(queries, bank[:7], max_elements=1), nearest_distance(queries, bank[:7]))
