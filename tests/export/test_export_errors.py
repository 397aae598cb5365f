"""Export refuses what it cannot do, with the reason: untraceable components, bad arguments, missing extras."""

from __future__ import annotations

import sys

import pytest
import torch

from export.conftest import CLASSES, tiny_detector
from zsad import Detector
from zsad.backbones.base import ImageFeatures
from zsad.backbones.tips import TipsArchitecture, TipsBackbone
from zsad.cli import main
from zsad.errors import ConfigError, ExportError, MissingDependencyError


class DataDependentBackbone(TipsBackbone):
    """A plugin-style backbone that branches on tensor values: it runs, but cannot become a graph."""

    def image_features(self, pixels, request):
        features = super().image_features(pixels, request)
        if float(pixels.mean()) > 2.0:  # a Python branch on data
            return features
        return ImageFeatures(features.globals, features.patches, features.grid)


class FixedBatchBackbone(TipsBackbone):
    """Builds a tensor from a Python list of batch length: the traced graph would fix the batch size."""

    def image_features(self, pixels, request):
        features = super().image_features(pixels, request)
        scale = torch.tensor([1.0] * pixels.shape[0], device=pixels.device)[:, None, None]
        return ImageFeatures(features.globals, features.patches * scale, features.grid)


def _with_backbone(cls) -> Detector:
    det = tiny_detector()
    return Detector(det.config, device="cpu", backbone=cls.random(TipsArchitecture.tiny()))


def test_an_untraceable_component_is_named(tmp_path):
    det = _with_backbone(DataDependentBackbone)
    with pytest.raises(ExportError, match=r"its backbone 'tips' \(.*DataDependentBackbone\) cannot be traced") as exc:
        det.export(tmp_path / "x.onnx", CLASSES)
    assert "no Python branches on tensor values" in str(exc.value)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_fixed_batch_size_is_refused(tmp_path):
    with pytest.raises(ExportError, match="fixed batch size"):
        _with_backbone(FixedBatchBackbone).export(tmp_path / "x.onnx", CLASSES)


def test_bad_arguments(tmp_path, tiny):
    with pytest.raises(ConfigError, match=r"\*.onnx \(ONNX\) or \*.xml"):
        tiny.export(tmp_path / "model.bin", CLASSES)
    with pytest.raises(ConfigError, match=r"openvino format is written to a \*.xml file.*model.xml"):
        tiny.export(tmp_path / "model.onnx", CLASSES, format="openvino")
    with pytest.raises(ConfigError, match="at least one class"):
        tiny.export(tmp_path / "model.onnx", [])
    with pytest.raises(ConfigError, match="'metal_nut' and 'metal nut' are the same class"):
        tiny.export(tmp_path / "model.onnx", ["metal_nut", "metal nut"])
    with pytest.raises(ConfigError, match="is a folder"):
        tiny.export(tmp_path, CLASSES, format="onnx")
    with pytest.raises(ConfigError, match="bfloat16.*float32 or float16"):
        tiny_detector(dtype="bfloat16").export(tmp_path / "model.onnx", CLASSES)
    assert not list(tmp_path.iterdir())


def test_missing_export_extra_is_one_line(monkeypatch, tmp_path, tiny):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'zsad\[export\]'") as exc:
        tiny.export(tmp_path / "model.onnx", CLASSES)
    assert "\n" not in str(exc.value)


def test_cli_export_writes_ir_and_reports(tmp_path, capsys):
    out = tmp_path / "m.xml"
    assert main(["export", "--set", "backbone_checkpoint=null", "--set", "prompt_strategy=fixed", "--set",
                 "prompt_checkpoint=null", "--set", "image_size=56", "--set", "backbone.options.random_config={}",
                 "--class-name", "screw", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "checked with openvino" in captured.out and "zsad export: tracing tipsomaly" in captured.err
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert Detector.from_export(out).class_names == ("screw",)
    assert main(["export", "--class-name", "screw", "--out", str(tmp_path / "m.txt")]) == 2
    assert "zsad: error:" in capsys.readouterr().err
