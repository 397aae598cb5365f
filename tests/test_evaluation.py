"""zsad.evaluation: outputs and formats, resume, n/a handling, prompt defaults, bad inputs, official-table parity."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import warnings

import numpy as np
import pytest
from parity import FIXTURE, manifest, reference
from PIL import Image

from zsad import Detector
from zsad import evaluation as ev
from zsad.errors import ConfigError, DatasetError, MetricError

DATASET = FIXTURE / "dataset"
PROMPTS = FIXTURE / "learnable_params.pth"
SMALL = {"backbone_checkpoint": str(FIXTURE), "prompt_checkpoint": str(PROMPTS), "image_size": "56"}


@pytest.fixture(scope="module")
def det():
    return Detector.from_recipe(
        "tipsomaly", backbone_checkpoint=str(FIXTURE), prompt_checkpoint=str(PROMPTS), image_size=56, device="cpu"
    )


def run(det, data, out, **kw):
    kw.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ev.evaluate(data=data, out=out, detector=det, **kw)


class DatasetBuilder:
    """A tiny meta.json dataset written with PIL."""

    def __init__(self, root):
        self.root = root
        self.records: dict[str, list[dict]] = {}
        self.rng = np.random.default_rng(0)

    def add(self, cls, name, anomaly, size=(40, 32), mask=None, mask_size=None):
        img_rel = f"{cls}/test/{'bad' if anomaly else 'good'}/{name}.png"
        (self.root / img_rel).parent.mkdir(parents=True, exist_ok=True)
        w, h = size
        Image.fromarray(self.rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(self.root / img_rel)
        mask_rel = ""
        if mask is not None:
            mask_rel = f"{cls}/ground_truth/bad/{name}_mask.png"
            (self.root / mask_rel).parent.mkdir(parents=True, exist_ok=True)
            mw, mh = mask_size or size
            if isinstance(mask, str) and mask == "box":
                arr = np.zeros((mh, mw), np.uint8)
                arr[mh // 4 : mh // 2, mw // 4 : mw // 2] = 255
            else:
                arr = np.asarray(mask, np.uint8)
            Image.fromarray(arr).save(self.root / mask_rel)
        self.records.setdefault(cls, []).append(
            {"img_path": img_rel, "mask_path": mask_rel, "cls_name": cls, "specie_name": "bad" if anomaly else "good",
             "anomaly": int(anomaly)}
        )
        return self

    def write(self):
        (self.root / "meta.json").write_text(json.dumps({"train": {}, "test": self.records}))
        return self.root


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------------------------- outputs


def test_outputs_and_formats(det, tmp_path):
    out = tmp_path / "run"
    report = run(det, DATASET, out, save_maps=True, save_overlays=True)
    doc = json.loads((out / "metrics.json").read_text())
    assert list(doc["classes"]) == ["metal_nut", "pipe_fryum"]
    keys = ["image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "pixel_aupro", "pixel_f1_max"]
    for cls in doc["classes"].values():
        assert list(cls) == keys and all(0.0 <= v <= 1.0 for v in cls.values())
    assert list(doc["mean"]) == keys and doc["counts"] == dict.fromkeys(keys, 2)
    assert doc["mean"]["pixel_auroc"] == pytest.approx(
        (doc["classes"]["metal_nut"]["pixel_auroc"] + doc["classes"]["pipe_fryum"]["pixel_auroc"]) / 2
    )
    assert doc["protocol"] == "tipsomaly" and doc["aupro"] == "exact" and doc["image_score"] == "S5"
    assert set(doc["image_scores"]["metal_nut"]) == {"S1", "S2", "S3", "S4", "S5"}
    assert doc["image_scores"]["metal_nut"]["S5"]["image_auroc"] == doc["classes"]["metal_nut"]["image_auroc"]
    assert doc["images"]["metal_nut"] == {"total": 3, "normal": 1, "anomalous": 2, "with_mask": 2}
    assert report.mean == pytest.approx(doc["mean"]) and report.counts == doc["counts"]

    md = (out / "metrics.md").read_text()
    assert "| metal_nut |" in md and "| Mean |" in md
    mn = doc["classes"]["metal_nut"]["pixel_auroc"]
    assert f"{100 * mn:.2f}" in md  # x100, 2 decimals
    assert "Mean" in report.table() and "P-AUPRO" in report.table()

    metrics_rows = read_csv(out / "metrics.csv")
    assert [r["class"] for r in metrics_rows] == ["metal_nut", "pipe_fryum", "Mean"]
    assert float(metrics_rows[0]["pixel_auroc"]) == pytest.approx(mn)

    scores = read_csv(out / "scores.csv")
    assert list(scores[0])[:9] == ["path", "class", "label", "score", "S1", "S2", "S3", "S4", "S5"]
    assert len(scores) == 6 and scores[0]["path"] == "metal_nut/test/good/000.png" and scores[0]["label"] == "0"
    assert all(float(r["score"]) == float(r["S5"]) for r in scores)

    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "complete" and man["started_at"] and man["finished_at"]
    assert {"zsad", "torch", "transformers", "numpy"} <= set(man["versions"])
    assert man["config"] == det.config.model_dump(mode="json")
    fixture_files = manifest()["files"]
    assert man["checkpoints"]["prompts"]["sha256"] == fixture_files["learnable_params.pth"]["sha256"]
    assert man["checkpoints"]["backbone"]["files_sha256"]["vision.npz"] == fixture_files["vision.npz"]["sha256"]
    assert man["protocol"] == "tipsomaly" and man["aupro"] == "exact" and man["evaluation_resolution"].startswith("56x56")
    assert man["dataset"]["description_sha256"] == fixture_files["dataset/meta.json"]["sha256"]
    assert man["dataset"]["path"].endswith("meta.json") and man["fixed_prompts"]["list"] == "industrial"

    with np.load(out / "maps" / "metal_nut.npz") as z:
        assert z["maps"].shape == (3, 56, 56) and z["maps"].dtype == np.float32
        assert z["labels"].tolist() == [0, 1, 1]
    assert len(list((out / "overlays" / "metal_nut").glob("*.png"))) == 3
    assert (out / "figures" / "pipe_fryum.png").is_file()
    assert not list(out.rglob("*.tmp"))  # atomic writes leave no temporary files


def test_maps_match_score_pixels(det, tmp_path):
    out = tmp_path / "run"
    run(det, DATASET, out, save_maps=True, classes=["metal_nut"])
    import torch

    batch = det.preprocess([str(DATASET / "metal_nut/test/good/000.png")])
    with torch.inference_mode():
        expected = det.score_pixels(batch.pixels, ["metal_nut"]).maps[0].numpy()
    with np.load(out / "maps" / "metal_nut.npz") as z:
        np.testing.assert_allclose(z["maps"][0], expected, atol=1e-6)
    assert list(json.loads((out / "metrics.json").read_text())["classes"]) == ["metal_nut"]


def test_string_overrides_from_the_command_line(tmp_path):
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = ev.evaluate("tipsomaly", str(DATASET), str(out), overrides=dict(SMALL, sigma="2"), device="cpu",
                             classes="pipe_fryum", progress=False, batch_size=2)
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["preprocess"]["image_size"] == 56 and man["config"]["heads"]["sigma"] == 2.0
    assert list(report.classes) == ["pipe_fryum"]
    with pytest.raises(ConfigError, match="image_sise"):
        ev.evaluate("tipsomaly", DATASET, tmp_path / "x", overrides={"image_sise": "56"}, progress=False)


def test_protocol_original_maps_at_image_size(det, tmp_path):
    out = tmp_path / "orig"
    report = run(det, DATASET, out, protocol="original", save_maps=True)
    with np.load(out / "maps" / "metal_nut.npz") as z:
        assert z["map_00000"].shape == (200, 300)  # the 300x200 image
        assert z["map_00001"].shape == (518, 518)
    m = report.classes["metal_nut"]
    assert all(0.0 <= m[k] <= 1.0 for k in ev.METRIC_KEYS)
    man = json.loads((out / "manifest.json").read_text())
    assert man["protocol"] == "original" and man["evaluation_resolution"] == "original image size"
    # image metrics do not depend on the protocol
    base = run(det, DATASET, tmp_path / "tips")
    assert base.classes["metal_nut"]["image_auroc"] == m["image_auroc"]


def test_ragged_pixel_metrics_equal_stacked():
    from zsad.metrics import pixel_metrics

    rng = np.random.default_rng(3)
    masks = np.zeros((2, 6, 10), bool)
    masks[0, 1:4, 2:5] = True
    masks[1, 3:6, 6:9] = True
    maps = (rng.random((2, 6, 10)) * 0.7 + 0.3 * masks).astype(np.float32)
    for mode in ("exact", "legacy"):
        stacked = pixel_metrics(maps, masks, aupro=mode)
        # transposing one image changes its shape but not its pixels or (8-connected) regions
        ragged = ev._ragged_pixel_metrics([maps[0], maps[1].T.copy()], [masks[0], masks[1].T.copy()], mode, "nan")
        assert ragged == pytest.approx(stacked, abs=1e-12)


# ---------------------------------------------------------------------------------------------- resume


def test_resume_after_interruption_and_config_check(det, tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = ev._evaluate_class
    calls = []

    def crash_on_second(det_, ds, cls, *a, **k):
        if cls == "pipe_fryum":
            raise KeyboardInterrupt("killed")
        calls.append(cls)
        return original(det_, ds, cls, *a, **k)

    monkeypatch.setattr(ev, "_evaluate_class", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run(det, DATASET, out)
    assert (out / "classes" / "metal_nut.json").is_file() and not (out / "classes" / "pipe_fryum.json").exists()
    assert not (out / "metrics.json").exists()
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    first = json.loads((out / "classes" / "metal_nut.json").read_text())

    def counting(det_, ds, cls, *a, **k):
        calls.append(cls)
        return original(det_, ds, cls, *a, **k)

    monkeypatch.setattr(ev, "_evaluate_class", counting)
    calls.clear()
    report = run(det, DATASET, out)
    assert calls == ["pipe_fryum"]  # metal_nut was loaded, not recomputed
    assert report.datasets["dataset"].classes["metal_nut"].resumed
    assert report.classes["metal_nut"] == pytest.approx({k: v for k, v in first["metrics"].items()})
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "complete" and man["resumed_classes"] == ["metal_nut"]
    assert len(read_csv(out / "scores.csv")) == 6

    calls.clear()
    run(det, DATASET, out)  # everything finished: nothing is recomputed
    assert calls == []

    with pytest.raises(ConfigError, match="resume=False") as info:
        run(det, DATASET, out, overrides={"sigma": "2"})
    assert "heads.sigma" in str(info.value)
    with pytest.raises(ConfigError, match="different evaluation"):
        run(det, DATASET, out, aupro="legacy")
    run(det, DATASET, out, overrides={"sigma": "2"}, resume=False)
    assert calls == ["metal_nut", "pipe_fryum"]
    assert json.loads((out / "manifest.json").read_text())["config"]["heads"]["sigma"] == 2.0


def test_resume_recomputes_when_new_outputs_are_asked(det, tmp_path):
    out = tmp_path / "run"
    run(det, DATASET, out, classes=["metal_nut"])
    report = run(det, DATASET, out, save_maps=True)
    assert not report.datasets["dataset"].classes["metal_nut"].resumed
    assert (out / "maps" / "metal_nut.npz").is_file() and (out / "maps" / "pipe_fryum.npz").is_file()


# ----------------------------------------------------------------------------------- n/a handling, prompts


def image_only(root):
    b = DatasetBuilder(root)
    for i in range(3):
        b.add("brain_mri", f"n{i}", 0)
        b.add("brain_mri", f"a{i}", 1)
    return b.write()


def test_image_only_dataset_reports_pixel_na_and_medical_prompts(det, tmp_path):
    data = image_only(tmp_path / "brainmri")
    out = tmp_path / "run"
    report = run(det, data, out)
    doc = json.loads((out / "metrics.json").read_text())
    cls = doc["classes"]["brain_mri"]
    assert all(cls[k] is None for k in ev.PIXEL_METRICS)
    assert all(isinstance(cls[k], float) for k in ev.IMAGE_METRICS)
    assert doc["mean"]["pixel_aupro"] is None and doc["counts"]["pixel_aupro"] == 0 and doc["counts"]["image_auroc"] == 1
    assert math.isnan(report.mean["pixel_auroc"])
    assert "n/a" in (out / "metrics.md").read_text()
    assert any("no ground-truth masks" in n for n in doc["notes"]["brain_mri"])
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["prompts"]["fixed"] == "medical" and doc["fixed_prompts"] == "medical"
    assert man["dataset"]["canonical_name"] == "brainmri" and man["dataset"]["task"] == "image"

    # the official zero-filling, for published-number parity (a detector with medical prompts is used as is)
    medical = Detector(det.config.with_overrides(fixed_prompts="medical"), device="cpu", backbone=det.backbone)
    zero = run(medical, data, tmp_path / "zero", undefined="zero")
    assert zero.classes["brain_mri"]["pixel_auroc"] == 0.0 and zero.mean["pixel_auroc"] == 0.0

    # an explicit prompt list wins over the dataset default
    run(det, data, tmp_path / "ind", overrides={"fixed_prompts": "industrial"})
    assert json.loads((tmp_path / "ind" / "manifest.json").read_text())["config"]["prompts"]["fixed"] == "industrial"

    # the name can also be given explicitly
    b = DatasetBuilder(tmp_path / "scans").add("x", "n", 0).add("x", "a", 1).write()
    run(det, b, tmp_path / "named", dataset_name="HeadCT")
    assert json.loads((tmp_path / "named" / "manifest.json").read_text())["fixed_prompts"]["list"] == "medical"


def test_pixel_only_dataset_reports_image_na(det, tmp_path):
    b = DatasetBuilder(tmp_path / "lesions")
    for i in range(3):
        b.add("skin", f"a{i}", 1, mask="box")
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="undefined image"):
        ev.evaluate(data=b.write(), out=out, detector=det, progress=False)
    doc = json.loads((out / "metrics.json").read_text())
    cls = doc["classes"]["skin"]
    assert all(cls[k] is None for k in ev.IMAGE_METRICS)
    assert all(0.0 <= cls[k] <= 1.0 for k in ev.PIXEL_METRICS)
    assert doc["counts"]["image_auroc"] == 0 and doc["counts"]["pixel_auroc"] == 1
    assert doc["mean"]["image_auroc"] is None and doc["mean"]["pixel_auroc"] == cls["pixel_auroc"]
    assert any("undefined image" in n for n in doc["notes"]["skin"])


def test_single_label_class_is_na_not_zero_in_the_mean(det, tmp_path):
    b = DatasetBuilder(tmp_path / "parts")
    b.add("ok_only", "n0", 0).add("ok_only", "n1", 0)
    b.add("mixed", "n0", 0).add("mixed", "a0", 1, mask="box").add("mixed", "a1", 1, mask="box")
    report = run(det, b.write(), tmp_path / "run")
    assert math.isnan(report.classes["ok_only"]["image_auroc"]) and math.isnan(report.classes["ok_only"]["pixel_auroc"])
    assert report.mean["image_auroc"] == report.classes["mixed"]["image_auroc"]
    assert report.counts["image_auroc"] == 1
    text = report.table()
    assert "classes in mean" in text and "n/a" in text


# ----------------------------------------------------------------------------------------------- bad inputs


def test_missing_file_raises(det, tmp_path):
    b = DatasetBuilder(tmp_path / "d").add("c", "n0", 0).add("c", "a0", 1, mask="box")
    data = b.write()
    (data / "c/test/bad/a0.png").unlink()
    with pytest.raises(DatasetError, match="a0.png"):
        run(det, data, tmp_path / "run")


def test_mask_size_mismatch(det, tmp_path):
    b = DatasetBuilder(tmp_path / "d").add("c", "n0", 0).add("c", "a0", 1, mask="box", mask_size=(20, 16))
    data = b.write()
    with pytest.raises(DatasetError, match="a0_mask.png"):
        run(det, data, tmp_path / "orig", protocol="original")
    out = tmp_path / "tips"
    with pytest.warns(UserWarning, match="differ in size"):
        ev.evaluate(data=data, out=out, detector=det, progress=False)
    man = json.loads((out / "manifest.json").read_text())
    assert any("differ in size" in w and "a0_mask.png" in w for w in man["warnings"])


def test_grey_masks_are_binarised_with_a_warning(det, tmp_path):
    grey = np.zeros((32, 40), np.uint8)
    grey[8:16, 10:20] = 128
    grey[8:16, 20:22] = 255
    b = DatasetBuilder(tmp_path / "d").add("c", "n0", 0).add("c", "a0", 1, mask=grey)
    data = b.write()
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="binarised"):
        report = ev.evaluate(data=data, out=out, detector=det, progress=False)
    man = json.loads((out / "manifest.json").read_text())
    assert any("binarised" in w for w in man["warnings"])
    # identical to the same mask saved clean (0/255)
    b2 = DatasetBuilder(tmp_path / "d2").add("c", "n0", 0).add("c", "a0", 1, mask=np.where(grey > 0, 255, 0))
    clean = run(det, b2.write(), tmp_path / "run2")
    assert report.classes["c"]["pixel_auroc"] == clean.classes["c"]["pixel_auroc"]


def test_non_finite_scores_name_the_images(det, tmp_path, monkeypatch):
    original = det.score_pixels

    def broken(pixels, names):
        out = original(pixels, names)
        out.maps[1] = float("nan")
        return out

    monkeypatch.setattr(det, "score_pixels", broken)
    with pytest.raises(MetricError, match="scratch/000.png"):
        run(det, DATASET, tmp_path / "run")


def test_bad_arguments(det, tmp_path):
    with pytest.raises(ConfigError, match="protocol"):
        run(det, DATASET, tmp_path / "a", protocol="paper")
    with pytest.raises(ConfigError, match="aupro"):
        run(det, DATASET, tmp_path / "a", aupro="fast")
    with pytest.raises(ConfigError, match="undefined"):
        run(det, DATASET, tmp_path / "a", undefined="skip")
    with pytest.raises(DatasetError, match="no class 'screw'"):
        run(det, DATASET, tmp_path / "a", classes=["screw"])


# ------------------------------------------------------------------------------------------ several datasets


def test_several_datasets_get_subfolders_and_a_summary(det, tmp_path):
    second = image_only(tmp_path / "headct")
    out = tmp_path / "run"
    report = run(det, [DATASET, second], out)
    assert set(report.datasets) == {"dataset", "headct"}
    for name in ("dataset", "headct"):
        assert (out / name / "metrics.json").is_file() and (out / name / "manifest.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["datasets"]["headct"]["mean"]["pixel_auroc"] is None
    assert summary["datasets"]["dataset"]["counts"]["pixel_auroc"] == 2
    assert "| headct |" in (out / "summary.md").read_text()
    assert [r["dataset"] for r in read_csv(out / "summary.csv")] == ["dataset", "headct"]
    with pytest.raises(ConfigError, match="2 datasets"):
        report.mean  # noqa: B018


# -------------------------------------------------------------------------------------------------- parity


@pytest.mark.slow
def test_official_table_parity(tmp_path):
    """The fixture model at 518 with the legacy AUPRO and zero-filling reproduces the official table."""
    from zsad.metrics import image_metrics

    out = tmp_path / "parity"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = ev.evaluate(
            "tipsomaly", DATASET, out, overrides=dict(SMALL, image_size=518), aupro="legacy", undefined="zero",
            device="cpu", progress=False,
        )
    scores = read_csv(out / "scores.csv")
    got = []
    for cls in ("metal_nut", "pipe_fryum"):
        m = report.classes[cls]
        rows = [r for r in scores if r["class"] == cls]
        labels = [int(r["label"]) for r in rows]
        col0 = image_metrics([float(r["S1"]) + float(r["S5"]) - float(r["S2"]) for r in rows], labels)  # S1 + max
        got.append([m["pixel_auroc"], m["pixel_aupro"], m["pixel_f1_max"], col0["auroc"], m["image_auroc"],
                    col0["ap"], m["image_ap"], col0["f1_max"], m["image_f1_max"]])
    got = np.array(got) * 100
    table = np.vstack([got, got.mean(axis=0)])
    expected = reference()["metrics_table_industrial"]
    atol = np.array(manifest()["arrays"]["metrics_table_industrial"]["tolerance"]["atol"])
    err = np.abs(table - expected).max(axis=0)
    assert np.all(err <= atol), f"max |diff| per column {err} > atol {atol}"
    mean = report.mean
    assert 100 * mean["pixel_aupro"] == pytest.approx(expected[2, 1], abs=atol[1])
    assert json.loads((out / "manifest.json").read_text())["evaluation_resolution"].startswith("518x518")


def test_fixture_manifest_hash_is_the_meta_json():
    digest = hashlib.sha256((DATASET / "meta.json").read_bytes()).hexdigest()
    assert digest == manifest()["files"]["dataset/meta.json"]["sha256"]
