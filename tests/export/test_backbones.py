"""Every built-in backbone family exports, and ONNX Runtime and OpenVINO reproduce PyTorch within 1e-4."""

from __future__ import annotations

import numpy as np
import pytest

from export.conftest import CLASSES, tiny_detector
from zsad import Detector
from zsad.errors import ExportError
from zsad.testing import check_export, parametrize_backbones


@parametrize_backbones()  # TIPS (final and value readouts: the v1 and v2 recipes), CLIP, SigLIP2, SigLIP2 NaFlex
def test_exported_scores_and_maps_match_pytorch(backbone):
    deviation = check_export(backbone, runtimes=["onnxruntime", "openvino"], atol=1e-4)
    assert set(deviation) == {"onnxruntime", "openvino"}


def test_float16_export(tmp_path):
    det = tiny_detector(dtype="float16")
    report = det.export(tmp_path / "half.onnx", CLASSES)
    assert report.metadata.dtype == "float16" and report.max_deviation < 1e-2
    images = [np.random.default_rng(i).integers(0, 256, (50, 70, 3), dtype=np.uint8) for i in range(2)]
    expected = det.predict(images, class_name="screw")
    got = Detector.from_export(tmp_path / "half.onnx").predict(images, class_name="screw")
    for a, b in zip(expected, got):
        assert abs(a.pred_score - b.pred_score) < 1e-2
        assert np.abs(a.anomaly_map - b.anomaly_map).max() < 1e-2


def test_one_image_batches_and_every_class(tiny, tiny_onnx):
    model = Detector.from_export(tiny_onnx)
    images = [np.random.default_rng(i).integers(0, 256, (30 + i, 40, 3), dtype=np.uint8) for i in range(3)]
    for name in CLASSES:
        expected = tiny.predict(images, class_name=name, batch_size=1)
        got = model.predict(images, class_name=name, batch_size=1)
        assert max(abs(a.pred_score - b.pred_score) for a, b in zip(expected, got)) < 1e-4
        assert [r.class_name for r in got] == [name] * 3


def test_winclip_recipe_exports_with_its_window_heads(tmp_path):
    """A recipe whose heads score window embeddings (WinCLIP) exports too; references are refused, not dropped."""
    det = Detector.from_recipe("winclip", backbone_checkpoint=None, backbone_options={"random_config": "tiny"},
                               image_size=56, device="cpu")
    report = det.export(tmp_path / "winclip.onnx", CLASSES)
    assert report.max_deviation < 1e-4
    images = [np.random.default_rng(i).integers(0, 256, (40 + 9 * i, 60, 3), dtype=np.uint8) for i in range(3)]
    expected = det.predict(images, class_name=["screw", "metal_nut", "screw"])
    got = Detector.from_export(tmp_path / "winclip.onnx").predict(images, class_name=["screw", "metal_nut", "screw"])
    for a, b in zip(expected, got):
        assert a.scores.keys() == b.scores.keys() == {"winclip"}
        assert abs(a.pred_score - b.pred_score) < 1e-4
        assert np.abs(a.anomaly_map - b.anomaly_map).max() < 1e-4
    det.add_references(images[:1], class_name="screw")
    with pytest.raises(ExportError, match="normal references"):
        det.export(tmp_path / "refs.onnx", CLASSES)
