"""Streaming prediction: Detector.predict_iter and the file workflow zsad.prediction.predict_files (in-process)."""

from __future__ import annotations

import csv
import json
import math
import warnings

import numpy as np
import pytest
import torch
from parity import FIXTURE
from PIL import Image

from zsad import Detector
from zsad.errors import ConfigError, DatasetError, ImageError
from zsad.prediction import list_inputs, predict_files
from zsad.runs import OutputLock

SMALL = {"backbone_checkpoint": str(FIXTURE), "prompt_checkpoint": str(FIXTURE / "learnable_params.pth"),
         "image_size": 56}


@pytest.fixture(scope="module")
def det():
    return Detector.from_recipe("tipsomaly", device="cpu", **SMALL)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray(rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    return folder


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run(inputs, out, det, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 2)
    return predict_files(inputs, out, class_name="metal_nut", detector=det, **kw)


# ------------------------------------------------------------------------------------------------ predict_iter


def test_predict_iter_streams_in_input_order(det, images):
    paths = sorted(str(p) for p in images.iterdir())
    consumed = []

    def lazily():
        for p in paths:
            consumed.append(p)
            yield p

    it = det.predict_iter(lazily(), "metal_nut", batch_size=2)
    first = next(it)
    assert len(consumed) <= 4  # the first batch and the one loading ahead, not the whole input
    rest = list(it)
    together = det.predict(paths, class_name="metal_nut", batch_size=3)
    got = [first, *rest]
    assert [r.image_path for r in got] == paths
    for a, b in zip(got, together):
        assert a.pred_score == pytest.approx(b.pred_score, abs=1e-6)
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, atol=1e-6)


def test_predict_iter_class_names_and_errors(det, images, tmp_path):
    paths = sorted(str(p) for p in images.iterdir())[:4]
    names = ["metal_nut", "pipe_fryum"] * 2
    got = list(det.predict_iter(iter(paths), iter(names), batch_size=3))
    assert [r.class_name for r in got] == names
    with pytest.raises(ConfigError, match="fewer entries"):
        list(det.predict_iter(paths, ["metal_nut"], batch_size=2))
    (tmp_path / "bad.png").write_bytes(b"nope")
    seen = []
    with pytest.raises(ImageError, match="bad.png"):
        for r in det.predict_iter([*paths[:2], str(tmp_path / "bad.png")], "screw", batch_size=2):
            seen.append(r)
    assert len(seen) == 2  # the batch before the unreadable image was yielded


# ------------------------------------------------------------------------------------------------- inputs


def test_list_inputs_from_text_files_folders_and_globs(images, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# a comment\n\nimgs/03.png\n{images / '01.png'}\nimgs/03.png\nimgs/none.png\n")
    got = list_inputs([listing, str(images / "0[01].png")])
    assert [p.name for p in got] == ["03.png", "01.png", "none.png", "00.png"]
    assert all(p.is_absolute() for p in got)
    with pytest.raises(DatasetError, match="does not exist"):
        list_inputs([tmp_path / "nothing"])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9.png\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="UTF-8"):
        list_inputs(tmp_path / "latin1.txt")


# ----------------------------------------------------------------------------------------------- workflow


def test_outputs_errors_and_manifest(det, images, tmp_path):
    (images / "zz_broken.png").write_bytes(b"\x89PNG\r\n broken")
    out = tmp_path / "out"
    res = run(images, out, det, shard_size=3, save_maps=True)
    assert (res.images, res.scored, res.failed, res.shards, res.resumed_shards) == (8, 7, 1, 3, 0)
    scores = rows(out / "scores.csv")
    assert list(scores[0]) == ["path", "class", "score", "S1", "S2", "S3", "S4", "S5", "output_name"]
    assert [r["output_name"] for r in scores] == [f"{i:02d}" for i in range(7)]
    direct = det.predict(str(images / "03.png"), class_name="metal_nut")
    assert float(scores[3]["score"]) == pytest.approx(direct.pred_score, abs=1e-6)  # batch-size float noise only
    np.testing.assert_allclose(np.load(out / "maps" / "03.npy"), direct.anomaly_map, atol=1e-6)
    assert len(list((out / "overlays").glob("*.png"))) == 7
    errors = rows(out / "errors.csv")
    assert len(errors) == 1 and errors[0]["output_name"] == "zz_broken" and "ImageError" in errors[0]["error"]
    doc = json.loads((out / "scores.json").read_text())
    assert len(doc["results"]) == 7 and doc["results"][3]["original_size"] == [33, 40]
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "complete" and man["kind"] == "prediction" and man["shards"] == 3
    assert man["images_scored"] == 7 and man["images_failed"] == 1 and len(man["overlay_scale"]) == 2
    assert man["engine"]["name"] == "local" and man["device"] == "cpu"
    assert not list(out.rglob("*.tmp")) and not (out / ".zsad-run.lock").exists()


def test_resume_skips_finished_shards_and_refuses_other_settings(det, images, tmp_path):
    out = tmp_path / "out"
    run(images, out, det, shard_size=2, overlays=False)
    before = (out / "scores.csv").read_text()
    (out / "parts" / "part-00001.csv").unlink()
    stamp = (out / "parts" / "part-00002.csv").stat().st_mtime_ns
    again = run(images, out, det, shard_size=2, overlays=False)
    assert again.resumed_shards == 3 and (out / "parts" / "part-00002.csv").stat().st_mtime_ns == stamp
    assert (out / "scores.csv").read_text() == before

    with pytest.raises(ConfigError, match="different prediction run.*class_name"):
        predict_files(images, out, class_name="screw", detector=det, progress=False, overlays=False, shard_size=2)
    replaced = predict_files(images, out, class_name="screw", detector=det, progress=False, overlays=False,
                             shard_size=2, resume=False)
    assert replaced.resumed_shards == 0 and {r["class"] for r in rows(out / "scores.csv")} == {"screw"}


def test_replacing_a_run_removes_its_maps(det, images, tmp_path):
    out = tmp_path / "out"
    run(images, out, det, save_maps=True, overlays=False)
    assert len(list((out / "maps").iterdir())) == 7
    run(images / "00.png", out, det, overlays=False, resume=False)
    assert not (out / "maps").exists() or not list((out / "maps").iterdir())
    assert len(rows(out / "scores.csv")) == 1


def test_one_run_at_a_time_per_folder(det, images, tmp_path, lock_held_elsewhere):
    out = tmp_path / "out"
    holder = lock_held_elsewhere(out, "evaluation")
    with pytest.raises(ConfigError, match=f"Another zsad evaluation is writing into {out} \\(process {holder.pid}"):
        run(images, out, det)
    holder.kill()
    holder.wait()
    # its lock is left behind by a process that is gone: the next run takes it over
    assert (out / ".zsad-run.lock").exists()
    assert run(images, out, det, overlays=False).scored == 7 and not (out / ".zsad-run.lock").exists()
    with OutputLock(out, "prediction"), pytest.raises(ConfigError, match="nested"):
        run(images, out, det)


def test_bad_arguments(det, images, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        run(images, tmp_path / "file", det)
    with pytest.raises(ConfigError, match="shard_size"):
        run(images, tmp_path / "o", det, shard_size=0)
    with pytest.raises(ConfigError, match="--engine ray"):
        run(images, tmp_path / "o", det, workers=2)
    with pytest.raises(ConfigError, match="Unknown engine"):
        run(images, tmp_path / "o", det, engine="dask")


def test_non_finite_results_are_recorded_not_written(det, images, tmp_path, monkeypatch):
    forward = det.pixel_head.forward  # the first map of every batch becomes NaN
    monkeypatch.setattr(det.pixel_head, "forward",
                        lambda *a, **k: forward(*a, **k).index_fill_(0, torch.tensor([0]), math.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = run(images, tmp_path / "out", det, batch_size=7, save_maps=True, overlays=False)
    assert res.failed >= 1 and "NaN" in rows(tmp_path / "out" / "errors.csv")[0]["error"]
    text = (tmp_path / "out" / "scores.json").read_text()
    assert "NaN" not in text and json.loads(text)
