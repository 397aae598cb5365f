"""The exported graph reproduces the official Tipsomaly outputs of the parity fixture, through ONNX Runtime and
OpenVINO: the stored ``input_u8 / 255`` as ``pixels``, the class ids as ``class_index``."""

from __future__ import annotations

import numpy as np
import pytest
from parity import FIXTURE, assert_close, image_paths, reference, samples

from zsad import Detector

CLASSES = ["metal_nut", "pipe_fryum"]  # class ids of the fixture: order of the classes in meta.json


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    det = Detector.from_recipe(
        "tipsomaly", backbone_checkpoint=str(FIXTURE), prompt_checkpoint=str(FIXTURE / "learnable_params.pth"),
        image_size=518, sigma=4, fixed_prompts="industrial", image_score="S5", device="cpu",
    )
    folder = tmp_path_factory.mktemp("parity-export")
    reports = {fmt: det.export(folder / f"tipsomaly{suffix}", CLASSES) for fmt, suffix in (("onnx", ".onnx"), ("ir", ".xml"))}
    return reports


@pytest.mark.parametrize("fmt, runtime", [("onnx", "onnxruntime"), ("onnx", "openvino"), ("ir", "openvino")])
def test_official_scores_and_maps(exported, fmt, runtime):
    model = Detector.from_export(exported[fmt].path, runtime=runtime)
    ref = reference()
    pixels = np.ascontiguousarray(ref["input_u8"].transpose(0, 3, 1, 2)).astype(np.float32) / 255
    out = model.run(pixels, ref["cls_id"])
    assert_close(out["pred_score"], "score_S2_plus_max")
    assert_close(out["anomaly_map"], "anomaly_map")
    assert_close(out["scores"][:, 0], "score_S1")
    assert_close(out["scores"][:, 1], "score_S2")
    assert model.metadata.score_names == ("S1", "S2", "S3", "S4", "S5")


def test_predict_from_files_matches_the_reference(exported):
    model = Detector.from_export(exported["onnx"].path, runtime="onnxruntime")
    batch = model.preprocess([str(p) for p in image_paths()])
    u8 = np.round(batch.pixels.transpose(0, 2, 3, 1) * 255).astype(np.uint8)
    np.testing.assert_array_equal(u8, reference()["input_u8"])  # the same preprocessing, without torch
    results = model.predict([str(p) for p in image_paths()], class_name=[s["cls_name"] for s in samples()],
                            map_size="input", batch_size=4)
    assert_close(np.stack([r.anomaly_map for r in results]), "anomaly_map")
    assert_close(np.array([r.pred_score for r in results]), "score_S2_plus_max")
    first = model.predict(str(image_paths()[0]), class_name="metal nut")
    assert first.anomaly_map.shape == (200, 300) and first.image_path == str(image_paths()[0])


def test_the_check_after_writing_measured_a_small_deviation(exported):
    for report in exported.values():
        assert report.checked_with in ("onnxruntime", "openvino")
        assert report.max_deviation < 1e-4, report.summary()
    assert [f.suffix for f in exported["ir"].files] == [".bin", ".xml"]
