"""The few-shot evaluation protocol: K normal train images per class and seed as references, per-seed and mean
results, reproducibility, resume per (seed, class), and the errors."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch
from fewshot_data import write_fewshot_dataset
from parity import FIXTURE

from zsad import Detector
from zsad import evaluation as ev
from zsad.cli import main
from zsad.data import draw_references, open_dataset
from zsad.errors import ConfigError, DatasetError

SMALL = {"backbone_checkpoint": str(FIXTURE), "prompt_checkpoint": str(FIXTURE / "learnable_params.pth"),
         "image_size": 56}
KEYS = list(ev.METRIC_KEYS)


@pytest.fixture(scope="module")
def det():
    return Detector.from_recipe("tipsomaly", device="cpu", **SMALL)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_fewshot_dataset(tmp_path_factory.mktemp("fewshot") / "parts")


def run(det, data, out, **kw):
    kw.setdefault("progress", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ev.evaluate(data=data, out=out, detector=det, **kw)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def scores_of(det, paths, cls):
    with torch.inference_mode():
        return det.score_pixels(det.preprocess([str(p) for p in paths]).pixels, [cls] * len(paths)).scores["S5"]


# ------------------------------------------------------------------------------------------------- outputs


def test_per_seed_and_mean_results_and_references_are_written(det, data, tmp_path):
    out = tmp_path / "run"
    report = run(det, data, out, shots=2, seeds=[0, 1], save_maps=True)
    assert det.references == {}  # the evaluation's references are removed again
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["shots"] == 2 and doc["seeds"] == [0, 1] and list(doc["per_seed"]) == ["0", "1"]
    for cls in ("cap", "nut"):
        for k in KEYS:  # per class: the mean over the seeds
            per_seed = [doc["per_seed"][s]["classes"][cls][k] for s in ("0", "1")]
            assert doc["classes"][cls][k] == pytest.approx(np.mean(per_seed), abs=1e-12)
    for k in KEYS:  # the mean over classes of those; std over the seeds' means
        assert doc["mean"][k] == pytest.approx(np.mean([doc["classes"][c][k] for c in ("cap", "nut")]), abs=1e-12)
        seed_means = [doc["per_seed"][s]["mean"][k] for s in ("0", "1")]
        assert doc["std"][k] == pytest.approx(np.std(seed_means, ddof=1), abs=1e-12)
    assert report.mean == pytest.approx(doc["mean"]) and report.classes["cap"] == pytest.approx(doc["classes"]["cap"])

    # the references: K normal train images per class and seed, recorded in metrics.json, manifest and class files
    refs = doc["references"]
    assert set(refs) == {"0", "1"} and all(len(refs[s][c]) == 2 for s in refs for c in ("cap", "nut"))
    assert all(p.startswith(f"{c}/train/good/") for s in refs for c in refs[s] for p in refs[s][c])
    assert refs["0"] != refs["1"]
    man = json.loads((out / "manifest.json").read_text())
    assert man["few_shot"]["references"] == refs and man["few_shot"]["shots"] == 2 and man["status"] == "complete"
    assert man["fingerprint"]["few_shot"]["seeds"] == [0, 1]
    assert json.loads((out / "seed_1" / "classes" / "nut.json").read_text())["references"] == refs["1"]["nut"]
    assert report.datasets["parts"].references[1]["nut"] == refs["1"]["nut"]

    # files: one folder per seed (scores, class results, maps); tables with the mean and every seed
    assert not (out / "scores.csv").exists() and not (out / "classes").exists()
    for s in ("0", "1"):
        scores = rows(out / f"seed_{s}" / "scores.csv")
        assert len(scores) == 8 and {r["class"] for r in scores} == {"cap", "nut"}
        assert (out / f"seed_{s}" / "maps" / "cap.npz").is_file()
    table = rows(out / "metrics.csv")
    assert [(r["seed"], r["class"]) for r in table] == [
        ("mean", "cap"), ("mean", "nut"), ("mean", "Mean"), ("std", "Mean"),
        ("0", "cap"), ("0", "nut"), ("0", "Mean"), ("1", "cap"), ("1", "nut"), ("1", "Mean")]
    assert float(table[5]["pixel_auroc"]) == pytest.approx(doc["per_seed"]["0"]["classes"]["nut"]["pixel_auroc"])
    md = (out / "metrics.md").read_text()
    assert "## Seed 0" in md and "## Seed 1" in md and "| Mean (seed 1) |" in md and "| Std over seeds |" in md
    text = report.table()
    assert "Mean (seed 0)" in text and "Std over seeds" in text


def test_scores_are_those_of_the_drawn_references(det, data, tmp_path):
    out = tmp_path / "run"
    run(det, data, out, shots=3, seeds=[5])
    ds = open_dataset(data)
    draw = draw_references(ds, 3, seed=5)["nut"]
    assert json.loads((out / "metrics.json").read_text())["references"]["5"]["nut"] == [
        f"nut/train/good/{s.img_path.name}" for s in draw]
    tests = [s.img_path for s in ds.samples("nut")]
    zero = scores_of(det, tests, "nut")
    det.add_references([s.img_path for s in draw], class_name="nut")
    try:
        expected = scores_of(det, tests, "nut")
    finally:
        det.clear_references()
    written = [r for r in rows(out / "seed_5" / "scores.csv") if r["class"] == "nut"]
    np.testing.assert_allclose([float(r["score"]) for r in written], expected.numpy(), atol=1e-6)
    assert not np.allclose(expected.numpy(), zero.numpy(), atol=1e-4)  # the references change the scores


def test_a_seed_gives_the_same_results_whatever_the_other_seeds(det, data, tmp_path):
    run(det, data, tmp_path / "a", shots=2, seeds=[0, 1])
    run(det, data, tmp_path / "b", shots=2, seeds=[1])
    assert (tmp_path / "a" / "seed_1" / "scores.csv").read_bytes() == (tmp_path / "b" / "seed_1" / "scores.csv").read_bytes()
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["per_seed"]["1"]["classes"] == b["per_seed"]["1"]["classes"] == b["classes"]
    assert a["references"]["1"] == b["references"]["1"]
    assert b["std"] == dict.fromkeys(KEYS)  # one seed: no standard deviation (null)
    assert "Std over seeds" not in (tmp_path / "b" / "metrics.md").read_text()


# -------------------------------------------------------------------------------------------------- resume


def test_resume_per_seed_and_class_and_the_fingerprint(det, data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    original = ev._evaluate_class
    calls = []
    crash = [True]

    def crash_at_seed1_nut(runner, ds, cls, run_, folder, *a, **k):
        if crash[0] and (folder.name, cls) == ("seed_1", "nut"):
            raise KeyboardInterrupt("killed")
        calls.append((folder.name, cls))
        return original(runner, ds, cls, run_, folder, *a, **k)

    monkeypatch.setattr(ev, "_evaluate_class", crash_at_seed1_nut)
    with pytest.raises(KeyboardInterrupt):
        run(det, data, out, shots=2, seeds=[0, 1])
    assert det.references == {}  # removed even when the run stops
    assert calls == [("seed_0", "cap"), ("seed_0", "nut"), ("seed_1", "cap")]
    assert not (out / "metrics.json").exists()
    calls.clear()
    crash[0] = False
    report = run(det, data, out, shots=2, seeds=[0, 1])
    assert calls == [("seed_1", "nut")]  # only the unfinished (seed, class) is computed
    man = json.loads((out / "manifest.json").read_text())
    assert man["resumed_classes"] == [{"seed": 0, "class": "cap"}, {"seed": 0, "class": "nut"},
                                      {"seed": 1, "class": "cap"}]
    assert report.datasets["parts"].seeds[0].classes["cap"].resumed
    assert not report.datasets["parts"].classes["nut"].resumed
    whole = tmp_path / "whole"
    run(det, data, whole, shots=2, seeds=[0, 1])
    for name in ("metrics.csv", "seed_0/scores.csv", "seed_1/scores.csv"):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name

    # shots and seeds are part of the fingerprint: other values are refused, and so is zero-shot
    for kw, key in (({"shots": 2, "seeds": [0]}, "few_shot.seeds"), ({"shots": 3, "seeds": [0, 1]}, "few_shot.shots"),
                    ({}, "few_shot")):
        with pytest.raises(ConfigError, match="different evaluation") as info:
            run(det, data, out, **kw)
        assert key in str(info.value)
    calls.clear()
    run(det, data, out, shots=2, seeds=[0], resume=False)  # recomputes; the other seed's results are removed
    assert calls == [("seed_0", "cap"), ("seed_0", "nut")] and not list((out / "seed_1" / "classes").glob("*.json"))


# -------------------------------------------------------------------------------------------------- errors


def test_a_dataset_without_a_train_split_is_named_with_the_fix(det, tmp_path):
    with pytest.raises(DatasetError, match=r"Dataset 'dataset' \(.*meta.json\) has no 'train' split") as info:
        run(det, FIXTURE / "dataset", tmp_path / "o", shots=1)
    assert "zsad data prepare" in str(info.value) and "without shots= / --shots" in str(info.value)


def test_too_few_normal_train_images_names_the_class_and_counts(det, data, tmp_path):
    with pytest.raises(DatasetError, match=r"class 'cap' has 4 normal image\(s\) in the 'train' split, fewer than "
                                           r"shots=5"):
        run(det, data, tmp_path / "o", shots=5)


def test_every_dataset_is_checked_before_anything_is_scored(det, data, tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "_evaluate_class", lambda *a, **k: pytest.fail("scored before the datasets were checked"))
    with pytest.raises(DatasetError, match="has no 'train' split"):
        run(det, [data, FIXTURE / "dataset"], tmp_path / "o", shots=1)
    assert not (tmp_path / "o" / "parts").exists()


def test_bad_few_shot_arguments(det, data, tmp_path):
    for kw, message in (({"seeds": [0]}, r"seeds= \(--seed\) needs shots="),
                        ({"shots": 2, "seeds": 3}, "seeds= is a list of seeds"),
                        ({"shots": 2, "seeds": []}, "at least one seed"),
                        ({"shots": 2, "seeds": [1, 1]}, "Seed 1 is given twice"),
                        ({"shots": 2, "seeds": [-1]}, "whole numbers >= 0"),
                        ({"shots": 0}, "shots must be a whole number >= 1"),
                        ({"shots": 1.5}, "shots must be a whole number >= 1"),
                        ({"shots": 1, "split": "train"}, "would score the references themselves")):
        with pytest.raises(ConfigError, match=message):
            run(det, data, tmp_path / "o", **kw)
    assert run(det, data, tmp_path / "np", shots=np.int64(1), seeds=np.arange(1), classes="cap").mean


def test_a_detector_holding_references_for_an_evaluated_class_is_refused(det, data, tmp_path):
    det.add_references([data / "cap" / "train" / "good" / "000.png"], class_name="cap")
    try:
        for kw in ({}, {"shots": 1}):
            with pytest.raises(ConfigError, match="holds normal references for 'cap'"):
                run(det, data, tmp_path / "o", **kw)
        run(det, data, tmp_path / "other", classes=["nut"], shots=1)  # references of another class are harmless
        assert det.references == {"cap": 1}
    finally:
        det.clear_references()


def test_command_line(data, tmp_path, capsys):
    tiny = ["--set", f"backbone_checkpoint={FIXTURE}", "--set", f"prompt_checkpoint={FIXTURE / 'learnable_params.pth'}",
            "--set", "image_size=56", "--device", "cpu", "-q"]
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--data", str(data), "--out", str(tmp_path / "a"), "--seed", "1", *tiny])
    assert info.value.code == 2 and "--seed needs --shots K" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert main(["evaluate", "--data", str(FIXTURE / "dataset"), "--out", str(tmp_path / "b"), "--shots", "1", *tiny]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zsad: error: Dataset 'dataset'") and "no 'train' split" in err and len(err.splitlines()) == 1
    out = tmp_path / "c"
    assert main(["evaluate", "--data", str(data), "--out", str(out), "--shots", "2", "--seed", "3", "4",
                 "--classes", "nut", *tiny]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["shots"] == 2 and doc["seeds"] == [3, 4] and list(doc["classes"]) == ["nut"]
    assert (out / "seed_4" / "scores.csv").is_file()


def test_reference_slot_encodes_once_per_class_and_scoring_checks_the_references(det, data):
    from zsad.evaluation.batch import ClassPlan, ReferenceSlot, iter_scored

    ds = open_dataset(data)
    refs = draw_references(ds, 2, seed=0)
    plan = ClassPlan.for_samples(ds.samples("cap"), det.config, protocol="tipsomaly", references=refs["cap"])
    with pytest.raises(ConfigError, match="to be scored with 2 normal reference image.* holds 0"):
        next(iter_scored(det, ds.samples("cap"), "cap", plan))
    slot = ReferenceSlot(det)
    try:
        slot.use("cap", plan.references)
        slot.use("cap", plan.references)  # the same references: kept, not added again
        assert det.references == {"cap": 2}
        assert len(list(iter_scored(det, ds.samples("cap"), "cap", plan))) == 1
        slot.use("nut", [str(s.img_path) for s in refs["nut"][:1]])  # another class: the previous ones go
        assert det.references == {"nut": 1}
        other = ReferenceSlot(det)
        with pytest.raises(ConfigError, match="already holds 1 normal reference image"):
            other.use("nut", plan.references)  # references it did not add are never mixed with its own
    finally:
        slot.release()
    assert det.references == {}
