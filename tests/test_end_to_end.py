"""The README's main job, end to end: `zsad predict examples/images` with the default recipe, fetching the
default weights into an empty cache from a local HTTP mirror (127.0.0.1) on first use.

The mirror serves a stand-in for TIPS v1 L/14-HR under the official relative paths: the real width (1024, so the
bundled 1024-wide Tipsomaly prompts fit) but one block per tower and random weights, plus the `zsad-weights.json`
index that lets a mirror vouch for its own files.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tips_factory import FIXTURE, official_arrays

ROOT = Path(__file__).resolve().parents[1]
STEM = "v1_0/checkpoints/pytorch/tips_oss_l14_highres_distilled"


@pytest.fixture(scope="module")
def l14_stand_in(tmp_path_factory):
    vision, text = official_arrays(width=1024, depth=1, text_layers=1, grid=32, mlp_ratio=1, text_mlp_ratio=1)
    files = {}
    for suffix, arrays in (("vision", vision), ("text", text)):
        path = tmp_path_factory.mktemp("npz") / f"{suffix}.npz"
        np.savez(path, **arrays)
        files[f"{STEM}_{suffix}.npz"] = path.read_bytes()
    files["v1_0/checkpoints/tokenizer.model"] = (FIXTURE / "tokenizer.model").read_bytes()
    return files


def test_readme_main_job_downloads_default_weights_and_predicts(http_server, l14_stand_in, tmp_path):
    for rel, data in l14_stand_in.items():
        http_server.put(rel, data)
    http_server.write_index()
    cache = tmp_path / "cache"
    out = tmp_path / "predictions"
    env = {**os.environ, "ZSAD_CACHE": str(cache), "ZSAD_WEIGHTS_URL": http_server.url, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "zsad", "predict", str(ROOT / "examples" / "images"), "--class-name", "metal plate",
           "--out", str(out), "--device", "cpu"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    # the weights were fetched into the cache, in the standard layout
    folder = cache / "tips-v1-l14-hr"
    assert {p.name for p in folder.iterdir()} >= {"vision.npz", "text.npz", "tokenizer.model"}
    assert any("tips_oss_l14_highres_distilled_vision.npz" in p for p in http_server.paths_requested())
    # one score row and one overlay per example image
    rows = list(csv.DictReader(open(out / "scores.csv")))
    names = sorted(Path(r["path"]).name for r in rows)
    assert names == sorted(p.name for p in (ROOT / "examples" / "images").glob("*.png"))
    for r in rows:
        assert 0.0 <= float(r["score"]) <= 2.0 and float(r["score"]) == pytest.approx(float(r["S5"]))
    doc = json.loads((out / "scores.json").read_text())
    assert doc["recipe"] == "tipsomaly" and len(doc["results"]) == 3
    assert len(list((out / "overlays").glob("*.png"))) == 3
    assert "metal_plate_scratch.png" in run.stdout
    # second run: no download, nothing requested from the mirror
    before = len(http_server.requests)
    run2 = subprocess.run(cmd, env={**env, "ZSAD_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert run2.returncode == 0, run2.stderr[-3000:]
    assert len(http_server.requests) == before


def test_offline_without_weights_says_how_to_get_them(tmp_path):
    env = {**os.environ, "ZSAD_CACHE": str(tmp_path / "empty"), "ZSAD_OFFLINE": "1"}
    run = subprocess.run([sys.executable, "-m", "zsad", "predict", str(ROOT / "examples" / "images"), "--out",
                          str(tmp_path / "o"), "--device", "cpu"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "zsad: error:" in run.stderr and "zsad weights download tips-v1-l14-hr" in run.stderr
    assert "Traceback" not in run.stderr
