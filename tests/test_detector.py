"""The Detector API on a tiny random model: inputs, batching, caching, devices, save/load, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from tips_factory import FIXTURE
from zsad import AnomalyResult, Detector
from zsad.errors import CheckpointError, ConfigError, ImageError, UnknownComponentError


@pytest.fixture(scope="module")
def det():
    return Detector.from_recipe(
        "tipsomaly", backbone_checkpoint=str(FIXTURE), prompt_checkpoint=str(FIXTURE / "learnable_params.pth"),
        image_size=56, device="cpu",
    )


def test_one_input_one_result_list_gives_list(det, tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    r = det.predict(str(tmp_path / "a.png"), class_name="bottle")
    assert isinstance(r, AnomalyResult) and r.anomaly_map.shape == (30, 40) and r.anomaly_map.dtype == np.float32
    assert r.pred_score == r.scores["S5"] and set(r.scores) == {"S1", "S2", "S3", "S4", "S5"}
    assert 0 <= r.pred_score <= 2 and r.class_name == "bottle"
    many = det.predict([arr, Image.fromarray(arr), torch.from_numpy(arr).permute(2, 0, 1) / 255.0], class_name="bottle")
    assert isinstance(many, list) and len(many) == 3
    for other in many[:2]:  # arrays and PIL images go through the same PIL resize: identical
        np.testing.assert_allclose(other.anomaly_map, r.anomaly_map, atol=1e-5)
        assert other.pred_score == pytest.approx(r.pred_score, abs=1e-5)
    # float tensors are resized with torch (bilinear, antialias): close to, not equal to, PIL's resize
    np.testing.assert_allclose(many[2].anomaly_map, r.anomaly_map, atol=0.02)
    batch = det.predict(torch.rand(3, 3, 56, 56), map_size="input")
    assert isinstance(batch, list) and len(batch) == 3 and batch[0].anomaly_map.shape == (56, 56)


def test_batched_equals_one_at_a_time(det):
    imgs = [np.random.default_rng(i).integers(0, 256, (28 + i, 56, 3), dtype=np.uint8) for i in range(5)]
    together = det.predict(imgs, class_name="metal_nut", batch_size=4)
    alone = [det.predict(x, class_name="metal_nut") for x in imgs]
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, atol=1e-5)
        assert a.pred_score == pytest.approx(b.pred_score, abs=1e-5)


def test_prototypes_are_cached_per_class(det, monkeypatch):
    det.clear_cache()
    calls = []
    original = det.backbone.encode_text
    monkeypatch.setattr(det.backbone, "encode_text", lambda *a, **k: calls.append(1) or original(*a, **k))
    x = np.zeros((20, 20, 3), np.uint8)
    det.predict([x, x], class_name="metal_nut")
    first = len(calls)
    assert first == 4  # normal + abnormal for the fixed class prompts and for the learned prompts
    det.predict(x, class_name="metal_nut")
    assert len(calls) == first
    det.predict(x, class_name="screw")
    assert len(calls) == first + 2  # only the new class's fixed prompts
    with torch.no_grad():
        det.prompts.learned.T_a.add_(0.01)  # an optimiser step invalidates learned prototypes
    det.predict(x, class_name="screw")
    assert len(calls) == first + 4


def test_per_image_class_names(det):
    x = np.zeros((20, 20, 3), np.uint8)
    rs = det.predict([x, x], class_name=["metal_nut", "pipe_fryum"])
    assert [r.class_name for r in rs] == ["metal_nut", "pipe_fryum"]
    assert rs[0].scores["S1"] != rs[1].scores["S1"]
    with pytest.raises(ConfigError, match="one per image"):
        det.predict([x, x], class_name=["a"])
    with pytest.raises(ConfigError, match="map_size"):
        det.predict(x, map_size="big")
    with pytest.raises(ImageError, match="empty list"):
        det.predict([])


def test_bf16_backbone_keeps_fp32_scores():
    det = Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), prompt_checkpoint=str(FIXTURE / "learnable_params.pth"),
                               image_size=56, device="cpu", dtype="bfloat16")
    ref = Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), prompt_checkpoint=str(FIXTURE / "learnable_params.pth"),
                               image_size=56, device="cpu")
    x = np.random.default_rng(0).integers(0, 256, (56, 56, 3), dtype=np.uint8)
    a, b = det.predict(x, class_name="screw"), ref.predict(x, class_name="screw")
    assert a.anomaly_map.dtype == np.float32
    assert abs(a.pred_score - b.pred_score) < 0.5  # bf16 features, fp32 scoring: close but not equal


def test_save_and_load_round_trip(det, tmp_path):
    det.save(tmp_path / "saved")
    loaded = Detector.load(tmp_path / "saved", device="cpu")
    x = np.random.default_rng(0).integers(0, 256, (56, 56, 3), dtype=np.uint8)
    np.testing.assert_allclose(loaded.predict(x).anomaly_map, det.predict(x).anomaly_map, atol=1e-6)
    assert (tmp_path / "saved" / "prompts.safetensors").is_file()


def test_untrained_learnable_prompts_warn():
    det = Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), prompt_checkpoint=None, image_size=56, device="cpu")
    with pytest.warns(UserWarning, match="untrained"):
        det.predict(np.zeros((20, 20, 3), np.uint8))
    fixed = Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), prompt_strategy="fixed", prompt_checkpoint=None,
                                 image_size=56, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed.predict(np.zeros((20, 20, 3), np.uint8))


def test_build_errors(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), image_size=56, device="cuda")
    with pytest.raises(ConfigError, match="dtype must be one of"):
        Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), image_size=56, device="cpu", dtype="float8")
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), image_size=500, device="cpu")
    with pytest.raises(ConfigError, match="1024 wide but the text tower of TipsBackbone takes 64"):
        Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), image_size=56, device="cpu")  # built-in 1024-wide
    with pytest.raises(UnknownComponentError, match="Did you mean: 'tipsomaly'"):
        Detector.from_recipe("tipsomally")
    with pytest.raises(UnknownComponentError, match="Unknown backbones 'tipz'"):
        Detector.from_recipe("tipsomaly", backbone="tipz")
    with pytest.raises(CheckpointError, match="neither a file nor a built-in"):
        Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), prompt_checkpoint=str(tmp_path / "x.pth"), image_size=56)
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="bad.pth"):
        Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), prompt_checkpoint=str(tmp_path / "bad.pth"), image_size=56)


def test_repr_names_the_parts(det):
    assert "tipsomaly" in repr(det) and "S5" in repr(det)


def test_parallel_loading_keeps_input_order(det):
    imgs = [np.full((20 + i, 30 + i, 3), 10 * i, np.uint8) for i in range(11)]
    chunks = list(det.iter_batches(imgs, batch_size=4))
    assert [len(c) for c, _ in chunks] == [4, 4, 3]
    sizes = [hw for _, b in chunks for hw in b.original_sizes]
    assert sizes == [(20 + i, 30 + i) for i in range(11)]
    results = det.predict(imgs, batch_size=4)
    assert [r.original_size for r in results] == sizes


def test_same_lazy_pil_image_twice_in_a_batch(det, tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (600, 600, 3), dtype=np.uint8)).save(path)
    im = Image.open(path)  # lazily opened: decoded once, before the parallel resize
    results = det.predict([im] * 8, class_name="x", batch_size=8)
    assert len(results) == 8 and all(r.original_size == (600, 600) for r in results)
    data = path.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="corrupt, truncated"):
        det.predict(Image.open(tmp_path / "trunc.png"))


def test_batch_size_must_be_positive(det):
    with pytest.raises(ConfigError, match="batch_size"):
        det.predict(np.zeros((20, 20, 3), np.uint8), batch_size=-1)
    with pytest.raises(ConfigError, match="batch_size"):
        list(det.iter_batches([np.zeros((20, 20, 3), np.uint8)], batch_size=0))


def test_prompts_built_or_replaced_under_inference_mode():
    with torch.inference_mode():
        d = Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE),
                                 prompt_checkpoint=str(FIXTURE / "learnable_params.pth"), image_size=56, device="cpu")
        before = d.prototypes(["x"], "local").clone()
        d.prompts.learned.load(FIXTURE / "learnable_params.npz")
    x = np.zeros((20, 20, 3), np.uint8)
    d.predict(x)
    torch.testing.assert_close(d.prototypes(["x"], "local"), before)
    t_n, t_a = d.prompts.learned.tokens()
    d.prompts.learned._set(t_n * 2, t_a)  # replacing the tensors invalidates the cache, even at reused addresses
    assert not torch.equal(d.prototypes(["x"], "local"), before)


def test_save_keeps_untrained_prompts_marked_untrained(tmp_path):
    d = Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), prompt_checkpoint=None, image_size=56, device="cpu")
    d.save(tmp_path / "s")
    assert not (tmp_path / "s" / "prompts.safetensors").exists()
    loaded = Detector.load(tmp_path / "s", device="cpu")
    assert loaded.prompts.learned.trained is False
