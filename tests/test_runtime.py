"""Runtime options of the Detector (compile, TF32, attention kernel, device preprocessing) against the official
reference outputs of the parity fixture, and their way through engines to the detectors they build."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from parity import FIXTURE, assert_close, image_paths, reference, samples

from zsad import Detector
from zsad.errors import ConfigError
from zsad.pipeline import PipelineOptions
from zsad.runtime import (
    RuntimeOptions,
    ScoringRuntime,
    attention_kernels,
    matmul_precision,
    use_tf32,
)


def build(image_size: int = 518, **runtime) -> Detector:
    return Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE),
                                prompt_checkpoint=str(FIXTURE / "learnable_params.pth"), image_size=image_size,
                                device="cpu", **runtime)


@pytest.mark.slow
def test_compiled_detector_keeps_parity():
    """About 20 s on two cores with a cold compiler cache: the first batch runs eagerly, the second compiles."""
    from torch._dynamo.utils import counters

    det = build(compile=True)
    batch = det.preprocess([str(p) for p in image_paths()])
    names = [s["cls_name"] for s in samples()]
    graphs = counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        det.score_pixels(batch.pixels, names)  # eager: builds the heads' constants
        out = det.score_pixels(batch.pixels, names)
    assert counters["stats"]["unique_graphs"] >= graphs + 2  # the encoder and the scoring step, each one graph
    assert_close(out.maps.numpy(), "anomaly_map")
    assert_close(out.scores["S5"].numpy(), "score_S2_plus_max")
    assert_close(out.scores["S1"].numpy(), "score_S1")
    assert_close(out.inputs.patch_probs.numpy(), "patch_probs")


def test_split_scoring_path_equals_the_scorer_with_and_without_references():
    """The path TF32 and compile take (backbone and scoring run apart) computes what the scorer computes."""
    det = build(image_size=56)
    det.add_references([np.full((40, 60, 3), 90, np.uint8)], class_name="metal_nut")
    split = ScoringRuntime(det.scorer, det.device, tf32=True)  # TF32 is never used on a CPU: only the path changes
    pixels = det.preprocess([str(p) for p in image_paths()[:3]]).pixels
    names = ["metal_nut", "screw", "metal_nut"]
    g_f, g_l = det.prototypes(names, "global"), det.prototypes(names, "local")
    banks = [det.memory.bank(c) for c in names]
    with torch.inference_mode():
        for refs in (None, banks):
            a, b = det.scorer(pixels, g_f, g_l, refs), split(pixels, g_f, g_l, refs)
            assert torch.equal(a.maps, b.maps) and all(torch.equal(a.scores[k], b.scores[k]) for k in a.scores)
            assert (a.reference is None) == (refs is None)


def test_attention_runs_through_a_fused_sdpa_kernel():
    det = build(image_size=56)
    pixels = torch.rand(1, 3, 56, 56)
    with torch.inference_mode():
        kernels = attention_kernels(lambda: det.backbone.encode_image(pixels))
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in kernels, kernels


def test_tf32_only_on_cuda_float32_unless_asked():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert use_tf32(None, cuda, torch.float32) and not use_tf32(None, cuda, torch.bfloat16)
    assert not use_tf32(False, cuda, torch.float32) and use_tf32(True, cuda, torch.bfloat16)
    assert not use_tf32(True, cpu, torch.float32)
    with pytest.raises(ConfigError, match="tf32"):
        use_tf32("yes", cuda, torch.float32)
    assert build(image_size=56, tf32=True).tf32 is False  # a CPU detector never switches TF32 on


def test_precision_scope_is_restored():
    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    with matmul_precision(True):
        assert matmul.fp32_precision == "tf32"
        with matmul_precision(False):
            assert matmul.fp32_precision == "ieee"
        assert matmul.fp32_precision == "tf32"
    assert matmul.fp32_precision == before


def test_options_are_checked_before_any_weights_load():
    with pytest.raises(ConfigError, match="compile"):
        build(compile="fastest")
    with pytest.raises(ConfigError, match="tf32"):
        build(tf32="no")
    with pytest.raises(ConfigError, match="workers"):
        build(pipeline={"workers": -1})
    with pytest.raises(ConfigError, match="Unknown runtime option"):
        RuntimeOptions.coerce({"compiled": True})
    options = RuntimeOptions.coerce({"compile": "max-autotune", "pipeline": {"preprocess": "device"}})
    assert options.pipeline == PipelineOptions(preprocess="device") and options.compile == "max-autotune"


def test_device_preprocessing_deviation_stays_small():
    """Resizing with torch instead of Pillow is not bit-exact; measured on this fixture: maps 2.6e-3, S5 5e-4."""
    paths = [str(p) for p in image_paths()]
    names = [s["cls_name"] for s in samples()]
    with build(pipeline={"preprocess": "device"}) as det:
        res = det.predict(paths, class_name=names, map_size="input", batch_size=8)
    ref = reference()
    map_dev = np.abs(np.stack([r.anomaly_map for r in res]) - ref["anomaly_map"]).max()
    s5_dev = np.abs(np.array([r.scores["S5"] for r in res]) - ref["score_S2_plus_max"]).max()
    assert 0 < map_dev < 1e-2 and s5_dev < 2e-3, (map_dev, s5_dev)


def test_engines_build_their_detectors_with_the_runtime_options():
    from zsad.engines import get_engine

    det = build(image_size=56, pipeline={"workers": 0})
    runtime = RuntimeOptions(pipeline=PipelineOptions(workers=1, prefetch=0))
    with get_engine("local", device="cpu", runtime={"pipeline": {"workers": 1, "prefetch": 0}}) as engine:
        runner = engine.runner(det.config)
        assert runner.detector.runtime_options == runtime and runner.runtime_options == runtime.describe()
    with get_engine("local", detector=det) as engine:  # a given detector keeps its own options
        assert engine.runner(det.config).detector is det
    with get_engine("local", detector=det, runtime=runtime) as engine:  # other options: a detector of its own
        other = engine.runner(det.config).detector
        assert other is not det and other.backbone is det.backbone and other.runtime_options == runtime
    with get_engine("local") as built, pytest.raises(ConfigError, match="already built"):
        get_engine(built, runtime=runtime)


def test_a_compiled_detector_exports_its_plain_scoring_with_a_dynamic_batch():
    from torch._dynamo.utils import counters

    from zsad.export.graph import ScoringGraph

    det = build(image_size=56, compile=True)
    graph = ScoringGraph(det, ["metal_nut", "screw"]).eval()
    batch = torch.export.Dim("batch", min=1)
    graphs = counters["stats"]["unique_graphs"]
    with torch.no_grad():
        program = torch.export.export(graph, (torch.rand(2, 3, 56, 56), torch.tensor([0, 1])), strict=False,
                                      dynamic_shapes={"pixels": {0: batch}, "class_index": {0: batch}})
    assert counters["stats"]["unique_graphs"] == graphs  # nothing was compiled while exporting
    pixels, index = torch.rand(3, 3, 56, 56), torch.tensor([0, 1, 1])
    with torch.no_grad():
        got, want = program.module()(pixels, index), graph(pixels, index)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
