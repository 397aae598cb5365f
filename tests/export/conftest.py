"""Shared exported models for the export tests (built once per session: tracing takes seconds)."""

from __future__ import annotations

import pytest

from zsad import Detector

CLASSES = ["metal_nut", "screw"]


def tiny_detector(**overrides) -> Detector:
    """A tiny random TIPS detector (fixed prompts) at 56 px."""
    options = {"backbone_checkpoint": None, "prompt_strategy": "fixed", "prompt_checkpoint": None, "image_size": 56,
               "backbone_options": {"random_config": {}}, "device": "cpu", **overrides}
    return Detector.from_recipe("tipsomaly", **options)


@pytest.fixture(scope="session")
def tiny():
    return tiny_detector()


@pytest.fixture(scope="session")
def tiny_onnx(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    tiny.export(path, CLASSES)
    return path
