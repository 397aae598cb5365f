"""Running exported models: no torch, the same results and CLI outputs as PyTorch, clear errors for bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from PIL import Image

from export.conftest import CLASSES
from zsad import Detector
from zsad.cli import main
from zsad.errors import CheckpointError, ConfigError, ImageError, MissingDependencyError
from zsad.export import FORMAT_VERSION, ExportedDetector


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for name, shape in (("a.png", (40, 50, 3)), ("b.jpg", (70, 60, 3)), ("c.png", (56, 56, 3))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / name)
    return folder


@pytest.fixture(scope="module")
def tiny_xml(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("export-ir") / "tiny.xml"
    tiny.export(path, CLASSES)
    return path


def test_metadata_in_the_file(tiny_onnx):
    props = {p.key: p.value for p in onnx.load(str(tiny_onnx), load_external_data=False).metadata_props}
    meta = json.loads(props["zsad"])
    assert meta["format"] == "zsad.export" and meta["format_version"] == FORMAT_VERSION
    assert meta["zsad_version"] and meta["recipe"]["name"] == "tipsomaly"
    assert meta["class_names"] == CLASSES and meta["score_names"] == ["S1", "S2", "S3", "S4", "S5"]
    assert meta["preprocessing"] == {"image_size": 56, "resample": "bilinear", "resize_backend": "pil", "exif_transpose": False,
                                     "high_bit_depth": "error", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    assert list(meta["inputs"]) == ["pixels", "class_index"]
    assert list(meta["outputs"]) == ["pred_score", "scores", "anomaly_map"]
    graph = onnx.load(str(tiny_onnx), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["pixels", "class_index"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch


_NO_TORCH = textwrap.dedent("""
    import json, sys
    from zsad import Detector
    from zsad.cli import main
    model, runtime, images, out = sys.argv[1:5]
    exported = Detector.from_export(model, runtime=runtime)
    results = exported.predict([f"{images}/a.png", f"{images}/b.jpg", f"{images}/c.png"], class_name="screw")
    assert main(["predict", images, "--model", model, "--runtime", runtime, "--class-name", "screw", "--out", out,
                 "--save-maps", "-q"]) == 0
    print(json.dumps({"torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
                      "scores": [r.pred_score for r in results], "shapes": [r.anomaly_map.shape for r in results]}))
""")


@pytest.mark.parametrize("model, runtime", [("tiny_onnx", "onnxruntime"), ("tiny_xml", "openvino")])
def test_predict_and_cli_without_torch_match_pytorch(request, tiny, images, tmp_path, model, runtime):
    path = request.getfixturevalue(model)
    run = subprocess.run([sys.executable, "-c", _NO_TORCH, str(path), runtime, str(images), str(tmp_path / "exported")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["torch"] == []  # neither loading, predicting nor the CLI imported torch
    expected = tiny.predict([str(images / n) for n in ("a.png", "b.jpg", "c.png")], class_name="screw")
    np.testing.assert_allclose(got["scores"], [r.pred_score for r in expected], atol=1e-4)
    assert [tuple(s) for s in got["shapes"]] == [(40, 50), (70, 60), (56, 56)]
    # the same CLI outputs as the PyTorch detector
    assert main(["predict", str(images), "--class-name", "screw", "--out", str(tmp_path / "torch"), "--save-maps", "-q",
                 "--set", "backbone_checkpoint=null", "--set", "prompt_strategy=fixed", "--set", "prompt_checkpoint=null",
                 "--set", "image_size=56", "--set", "backbone.options.random_config={}", "--device", "cpu"]) == 0
    rows = {name: list(csv.DictReader((tmp_path / name / "scores.csv").open())) for name in ("torch", "exported")}
    assert [list(r) for r in rows["torch"]] == [list(r) for r in rows["exported"]]
    for a, b in zip(rows["torch"], rows["exported"]):
        assert (a["path"], a["class"], a["output_name"]) == (b["path"], b["class"], b["output_name"])
        for key in ("score", "S1", "S2", "S3", "S4", "S5"):
            assert abs(float(a[key]) - float(b[key])) < 1e-4
        np.testing.assert_allclose(np.load(tmp_path / "exported" / "maps" / f"{a['output_name']}.npy"),
                                   np.load(tmp_path / "torch" / "maps" / f"{a['output_name']}.npy"), atol=1e-4)
    docs = {name: json.loads((tmp_path / name / "scores.json").read_text()) for name in ("torch", "exported")}
    assert docs["torch"]["recipe"] == docs["exported"]["recipe"] == "tipsomaly"
    assert sorted((tmp_path / "exported" / "overlays").iterdir()) != []


def test_arrays_pil_images_and_tensors(tiny, tiny_onnx):
    import torch

    model = Detector.from_export(tiny_onnx)
    arr = np.random.default_rng(3).integers(0, 256, (45, 35, 3), dtype=np.uint8)
    tensor = torch.rand(2, 3, 60, 60)
    for inputs in (arr, Image.fromarray(arr), tensor):
        expected, got = tiny.predict(inputs, class_name="screw"), model.predict(inputs, class_name="screw")
        for a, b in zip(np.atleast_1d(expected), np.atleast_1d(got)):
            assert abs(a.pred_score - b.pred_score) < 1e-4 and np.abs(a.anomaly_map - b.anomaly_map).max() < 1e-4
    assert isinstance(model.predict(arr, class_name="screw"), type(tiny.predict(arr, class_name="screw")))
    assert len(model.predict(tensor, class_name=["screw", "metal nut"])) == 2


def test_not_an_exported_zsad_model(tmp_path, tiny_onnx):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a model")
    with pytest.raises(CheckpointError, match="junk.onnx.*not an ONNX model"):
        Detector.from_export(junk, runtime="onnxruntime")
    with pytest.raises(CheckpointError, match="OpenVINO cannot read .*junk.onnx"):
        Detector.from_export(junk, runtime="openvino")
    plain = onnx.load(str(tiny_onnx))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    for runtime in ("onnxruntime", "openvino"):
        with pytest.raises(CheckpointError, match="plain.onnx is a model file but not one exported by zsad.*zsad export"):
            Detector.from_export(tmp_path / "plain.onnx", runtime=runtime)
    with pytest.raises(CheckpointError, match="does not exist"):
        Detector.from_export(tmp_path / "missing.onnx")


def _with_metadata(source, target, **changes):
    model = onnx.load(str(source))
    for prop in model.metadata_props:
        if prop.key == "zsad":
            prop.value = json.dumps({**json.loads(prop.value), **changes})
    onnx.save(model, str(target))
    return target


def test_newer_format_version_and_damaged_metadata(tmp_path, tiny_onnx):
    newer = _with_metadata(tiny_onnx, tmp_path / "newer.onnx", format_version=FORMAT_VERSION + 1, zsad_version="9.0")
    with pytest.raises(CheckpointError, match=rf"zsad 9.0 in format version {FORMAT_VERSION + 1}.*up to {FORMAT_VERSION}"
                                              r".*pip install -U zsad"):
        Detector.from_export(newer)
    broken = _with_metadata(tiny_onnx, tmp_path / "broken.onnx", class_names="screw", format="other")
    with pytest.raises(CheckpointError, match="does not describe a zsad export"):
        Detector.from_export(broken)
    broken = _with_metadata(tiny_onnx, tmp_path / "broken2.onnx", image_score=None)
    with pytest.raises(CheckpointError, match="image_score"):
        Detector.from_export(broken)


def test_bad_pixels_and_class_indices(tiny_onnx):
    model = Detector.from_export(tiny_onnx)
    good = np.random.default_rng(0).random((2, 3, 56, 56), dtype=np.float32)
    assert model.run(good, [0, 1])["anomaly_map"].shape == (2, 56, 56)
    with pytest.raises(ImageError, match=r"float32 pixels of shape \(B, 3, 56, 56\).*got dtype float64"):
        model.run(good.astype(np.float64), [0, 1])
    with pytest.raises(ImageError, match=r"shape \(B, 3, 56, 56\).*got shape \(2, 3, 64, 64\)"):
        model.run(np.zeros((2, 3, 64, 64), np.float32), [0, 1])
    with pytest.raises(ImageError, match=r"got shape \(3, 56, 56\)"):
        model.run(good[0], [0])
    with pytest.raises(ImageError, match=r"in \[0, 1\] \(normalisation is inside the graph\); got values in \[0.0\d+, 255\]"):
        model.run(good * 255, [0, 1])
    with pytest.raises(ImageError, match="got NaN or infinity"):
        model.run(np.full_like(good, np.nan), [0, 1])
    with pytest.raises(ConfigError, match=r"class_index values must be in \[0, 1\].*0=metal_nut, 1=screw.*\[0, 2\]"):
        model.run(good, [0, 2])
    with pytest.raises(ConfigError, match=r"one integer per image, shape \(2,\)"):
        model.run(good, [0.0, 1.0])
    with pytest.raises(ConfigError, match="'bottle' was not exported.*metal_nut, screw.*--class-name 'bottle'"):
        model.predict(np.zeros((20, 20, 3), np.uint8), class_name="bottle")
    with pytest.raises(ConfigError, match="scores 2 classes.*pass class_name"):
        model.predict(np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(ConfigError, match="batch_size"):
        model.predict(np.zeros((20, 20, 3), np.uint8), class_name="screw", batch_size=0)
    with pytest.raises(ImageError, match="Unsupported input"):
        model.predict(123, class_name="screw")


def test_runtime_choice_and_missing_extras(monkeypatch, tiny_onnx, tiny_xml):
    assert ExportedDetector.load(tiny_xml).runtime == "openvino"
    assert ExportedDetector.load(tiny_onnx).runtime == "onnxruntime"
    with pytest.raises(ConfigError, match="OpenVINO IR file.*runtime='openvino'"):
        ExportedDetector.load(tiny_xml, "onnxruntime")
    with pytest.raises(ConfigError, match="runtime must be one of"):
        ExportedDetector.load(tiny_onnx, "tensorrt")
    with pytest.raises(ConfigError, match="OpenVINO cannot compile.*'NOSUCHDEVICE'"):
        ExportedDetector.load(tiny_onnx, "openvino", device="nosuchdevice")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert ExportedDetector.load(tiny_onnx).runtime == "openvino"  # the other installed runtime
    with pytest.raises(MissingDependencyError, match=r"pip install 'zsad\[onnxruntime\]'") as exc:
        ExportedDetector.load(tiny_onnx, "onnxruntime")
    assert "\n" not in str(exc.value)
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'zsad\[onnxruntime\]'.*zsad\[openvino\]"):
        ExportedDetector.load(tiny_onnx)


def test_cli_predict_model_refuses_recipe_options(tiny_onnx, images, capsys):
    assert main(["predict", str(images), "--model", str(tiny_onnx), "--set", "sigma=2", "--class-name", "screw"]) == 2
    assert "--set cannot change an exported model" in capsys.readouterr().err
    assert main(["predict", str(images), "--runtime", "openvino"]) == 2
    assert "--runtime applies to exported models only" in capsys.readouterr().err


def test_large_models_keep_their_weights_in_a_side_file(monkeypatch, tiny, tmp_path):
    from zsad.export import graph

    monkeypatch.setattr(graph, "_ONNX_SIZE_LIMIT", 0)  # as for a model over the 2 GiB protobuf limit
    report = tiny.export(tmp_path / "big.onnx", CLASSES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert [p.name for p in report.files] == ["big.onnx.data", "big.onnx"]
    image = np.zeros((30, 30, 3), np.uint8)
    expected = tiny.predict(image, class_name="screw").pred_score
    for runtime in ("onnxruntime", "openvino"):
        assert abs(Detector.from_export(tmp_path / "big.onnx", runtime).predict(image, class_name="screw").pred_score
                   - expected) < 1e-4


def test_opset_20_for_older_runtimes(tiny, tmp_path):
    report = tiny.export(tmp_path / "old.onnx", CLASSES, opset=20)
    model = onnx.load(str(report.path))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [20]
    assert "Attention" not in {n.op_type for n in model.graph.node}
    assert report.max_deviation < 1e-4
