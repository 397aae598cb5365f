"""The Ray engine on a real local Ray runtime (2 CPUs, no mocks): same files as in-process, resume, worker faults,
bad addresses and the missing extra."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sys
import threading
import time
import warnings

import numpy as np
import pytest
from parity import FIXTURE
from PIL import Image

from zsad import evaluation as ev
from zsad.cli import main
from zsad.prediction import predict_files

ray = pytest.importorskip("ray", reason="the Ray engine needs the ray extra (pip install 'zsad[ray]')")

DATASET = FIXTURE / "dataset"
SMALL = {"backbone_checkpoint": str(FIXTURE), "prompt_checkpoint": str(FIXTURE / "learnable_params.pth"),
         "image_size": 56}


@pytest.fixture(scope="module")
def engine():
    """Two Ray workers on a local runtime with 2 CPUs, shared by the tests of this module."""
    from zsad.engines.ray_engine import RayEngine

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    # each worker decodes with one process of its own: the runtime options reach the workers' detectors
    eng = RayEngine(workers=2, device="cpu", runtime={"pipeline": {"workers": 1}})
    yield eng
    eng.close()
    if started:
        ray.shutdown()


def evaluate(out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ev.evaluate("tipsomaly", DATASET, out, overrides=SMALL, device="cpu", progress=False, batch_size=1, **kw)


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_same_scores(a, b, tol=1e-6):
    ra, rb = rows(a), rows(b)
    assert len(ra) == len(rb) and list(ra[0]) == list(rb[0])
    for x, y in zip(ra, rb):
        for k in x:
            try:
                assert abs(float(x[k]) - float(y[k])) <= tol, (k, x, y)
            except ValueError:
                assert x[k] == y[k]


def assert_same_metrics(a, b, tol=1e-6):
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    for section in ("classes", "image_scores"):
        assert da[section].keys() == db[section].keys()
    flat = lambda d: {f"{c}.{k}": v for c, m in d["classes"].items() for k, v in m.items()} | d["mean"]
    fa, fb = flat(da), flat(db)
    assert fa.keys() == fb.keys()
    for k in fa:
        assert (fa[k] is None) == (fb[k] is None) and (fa[k] is None or abs(fa[k] - fb[k]) <= tol), k
    rest = lambda d: {k: v for k, v in d.items() if k not in ("classes", "mean", "image_scores", "image_scores_mean")}
    assert rest(da) == rest(db)


@pytest.mark.parametrize(("aupro", "protocol"), [("exact", "tipsomaly"), ("legacy", "original")])
def test_evaluate_on_ray_writes_the_same_files(engine, tmp_path, aupro, protocol):
    local = evaluate(tmp_path / "local", aupro=aupro, protocol=protocol)
    distributed = evaluate(tmp_path / "ray", aupro=aupro, protocol=protocol, engine=engine)
    assert_same_metrics(tmp_path / "local" / "metrics.json", tmp_path / "ray" / "metrics.json")
    assert_same_scores(tmp_path / "local" / "scores.csv", tmp_path / "ray" / "scores.csv")
    for cls, metrics in local.classes.items():
        assert distributed.classes[cls] == pytest.approx(metrics, abs=1e-6, nan_ok=True)
    man = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert man["engine"]["name"] == "ray" and man["engine"]["workers"] == 2 and "2 Ray worker" in man["device"]
    assert man["fingerprint"] == json.loads((tmp_path / "local" / "manifest.json").read_text())["fingerprint"]


def test_evaluate_on_ray_resumes_per_class(engine, tmp_path):
    out = tmp_path / "run"
    evaluate(out, classes=["metal_nut"])  # an earlier (in-process) run finished one class
    report = evaluate(out, engine=engine)
    assert report.datasets["dataset"].classes["metal_nut"].resumed
    assert not report.datasets["dataset"].classes["pipe_fryum"].resumed
    assert json.loads((out / "manifest.json").read_text())["resumed_classes"] == ["metal_nut"]
    evaluate(tmp_path / "whole")
    assert_same_metrics(tmp_path / "whole" / "metrics.json", out / "metrics.json")
    assert_same_scores(tmp_path / "whole" / "scores.csv", out / "scores.csv")


def test_evaluate_on_ray_reports_bad_data_as_in_process(engine, tmp_path):
    (tmp_path / "d").mkdir()
    shutil.copytree(DATASET, tmp_path / "d" / "dataset")
    (tmp_path / "d" / "dataset" / "metal_nut" / "test" / "good" / "000.png").write_bytes(b"not a png")
    messages = []
    for kw in ({}, {"engine": engine}):
        with pytest.raises(Exception) as info, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ev.evaluate("tipsomaly", tmp_path / "d" / "dataset", tmp_path / f"o{len(messages)}", overrides=SMALL,
                        device="cpu", progress=False, **kw)
        messages.append((type(info.value), str(info.value)))
    assert messages[0] == messages[1] and "000.png" in messages[0][1]


def make_images(folder, n, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (30 + i % 7, 40, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def predict(inputs, out, **kw):
    kw.setdefault("overlays", False)
    return predict_files(inputs, out, class_name="metal_nut", overrides=SMALL, device="cpu", progress=False,
                         batch_size=2, **kw)


def test_predict_on_ray_from_a_path_list_resumes_and_matches(engine, tmp_path):
    images = make_images(tmp_path / "imgs", 12)
    (images / "broken.png").write_bytes(b"\x89PNG broken")
    listing = tmp_path / "paths.txt"
    listing.write_text("".join(f"imgs/{p.name}\n" for p in sorted(images.iterdir())) + "imgs/missing.png\n")
    local = predict(listing, tmp_path / "local", shard_size=4, save_maps=True, overlays=True)
    assert (local.images, local.scored, local.failed, local.shards) == (14, 12, 2, 4)

    out = tmp_path / "ray"
    predict(listing, out, shard_size=4, save_maps=True, overlays=True, engine=engine)
    for name in ("scores.csv", "errors.csv", "scores.json"):
        assert (out / name).read_text() == (tmp_path / "local" / name).read_text(), name
    for sub in ("maps", "overlays"):
        names = sorted(p.name for p in (tmp_path / "local" / sub).iterdir())
        assert names == sorted(p.name for p in (out / sub).iterdir()) and len(names) == 12
        for n in names:
            assert (out / sub / n).read_bytes() == (tmp_path / "local" / sub / n).read_bytes()
    errors = rows(out / "errors.csv")
    assert [e["output_name"] for e in errors] == ["broken", "missing"]
    assert json.loads((out / "manifest.json").read_text())["runtime"]["decode_workers"] == 1
    assert "does not exist" in errors[1]["error"]

    # an interrupted run: one shard's part file is missing; a rerun computes that shard only
    (out / "parts" / "part-00002.csv").unlink()
    (out / "scores.csv").unlink()
    stamp = (out / "parts" / "part-00001.csv").stat().st_mtime_ns
    again = predict(listing, out, shard_size=4, save_maps=True, overlays=True, engine=engine)
    assert again.resumed_shards == 3 and (out / "parts" / "part-00001.csv").stat().st_mtime_ns == stamp
    assert (out / "scores.csv").read_text() == (tmp_path / "local" / "scores.csv").read_text()
    assert json.loads((out / "manifest.json").read_text())["resumed_shards"] == [0, 1, 3]


def test_a_killed_worker_is_restarted_and_the_results_are_complete(engine, tmp_path):
    images = make_images(tmp_path / "imgs", 48, seed=1)
    predict(images, tmp_path / "local", shard_size=2, save_maps=True)
    victim = engine.worker_pids()[0]  # asked before the run: a busy worker answers only after its queued work
    out = tmp_path / "ray"
    failure: list[BaseException] = []

    def run():
        try:
            predict(images, out, shard_size=2, save_maps=True, engine=engine)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not list((out / "parts").glob("part-*.csv")) and time.monotonic() < deadline:
        time.sleep(0.05)
    parts_at_kill = len(list((out / "parts").glob("part-*.csv")))
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive() and not failure, failure
    assert 0 < parts_at_kill < 24, "the worker must die mid-run"
    assert victim not in engine.worker_pids()  # Ray restarted it
    assert (out / "scores.csv").read_text() == (tmp_path / "local" / "scores.csv").read_text()
    assert len(list((out / "parts").glob("*.csv"))) == 24 and not (out / "errors.csv").exists()
    for p in (tmp_path / "local" / "maps").iterdir():
        assert (out / "maps" / p.name).read_bytes() == p.read_bytes()


def test_unreachable_address_is_one_clear_line(tmp_path, capsys):
    rc = main(["evaluate", "--data", str(DATASET), "--out", str(tmp_path / "o"), "--engine", "ray",
               "--ray-address", "127.0.0.1:1", "--set", f"backbone_checkpoint={FIXTURE}", "--device", "cpu", "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("zsad: error: Cannot reach the Ray cluster at 127.0.0.1:1") and "--ray-address" in err
    assert not (tmp_path / "o").exists()  # checked before anything is written


def test_missing_ray_extra_names_the_pip_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` sees when the extra is not installed
    rc = main(["predict", str(make_images(tmp_path / "i", 1)), "--out", str(tmp_path / "o"), "--engine", "ray"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "pip install 'zsad[ray]'" in err
    rc = main(["evaluate", "--data", str(DATASET), "--out", str(tmp_path / "e"), "--workers", "2"])
    assert rc == 2 and "--engine ray" in capsys.readouterr().err


def test_few_shot_on_ray_equals_in_process_and_workers_let_go_of_the_references(engine, tmp_path):
    from fewshot_data import write_fewshot_dataset

    data = write_fewshot_dataset(tmp_path / "parts", test=3)  # 6 test images a class: 2 shards (batch size 1)
    runs = {}
    for name, kw in (("local", {}), ("ray", {"engine": engine})):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs[name] = ev.evaluate("tipsomaly", data, tmp_path / name, overrides=SMALL, device="cpu", progress=False,
                                     batch_size=1, shots=2, seeds=[0, 1], **kw)
    local, ray_ = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("local", "ray"))
    assert local["references"] == ray_["references"] and local["seeds"] == ray_["seeds"] == [0, 1]
    for doc_l, doc_r in [(local, ray_)] + [(local["per_seed"][s], ray_["per_seed"][s]) for s in ("0", "1")]:
        for cls in ("cap", "nut"):
            for k, v in doc_l["classes"][cls].items():
                assert (v is None) == (doc_r["classes"][cls][k] is None)
                assert v is None or abs(v - doc_r["classes"][cls][k]) <= 1e-6, (cls, k)
        assert doc_r["mean"] == pytest.approx(doc_l["mean"], abs=1e-6)
    for s in ("seed_0", "seed_1"):
        assert_same_scores(tmp_path / "local" / s / "scores.csv", tmp_path / "ray" / s / "scores.csv")
    man = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert man["engine"]["name"] == "ray" and man["few_shot"]["references"] == local["references"]
    assert man["fingerprint"] == json.loads((tmp_path / "local" / "manifest.json").read_text())["fingerprint"]
    # the references differ per seed, and so do the scores: they were used
    assert rows(tmp_path / "ray" / "seed_0" / "scores.csv") != rows(tmp_path / "ray" / "seed_1" / "scores.csv")

    # the workers hold no references after the run: predicting the last class evaluated is zero-shot there too
    images = sorted((data / "nut" / "test" / "crack").glob("*.png"))
    for name, kw in (("p-local", {}), ("p-ray", {"engine": engine})):
        predict_files(images, tmp_path / name, class_name="nut", overrides=SMALL, device="cpu", progress=False,
                      batch_size=1, overlays=False, **kw)
    assert_same_scores(tmp_path / "p-local" / "scores.csv", tmp_path / "p-ray" / "scores.csv")
