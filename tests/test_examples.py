"""The scripts in examples/ run, on the tiny parity-fixture model (the options every example takes for that)."""

from __future__ import annotations

import csv
import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
from test_docs import restore_registries  # noqa: F401 - the fixture undoing runtime registrations
from tips_factory import FIXTURE

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
DATASET = FIXTURE / "dataset"
IMAGES = EXAMPLES / "images"
TINY = ["--backbone-checkpoint", str(FIXTURE), "--prompt-checkpoint", str(FIXTURE / "learnable_params.pth"),
        "--image-size", "56", "--device", "cpu"]
SCRIPTS = ["predict_folder.py", "evaluate_dataset.py", "train_prompts.py", "custom_plugin.py"]


def run_example(name: str, argv: list[str], monkeypatch):
    """Call the script's main(argv) in this process (examples/ on sys.path, as when run as a script)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return runpy.run_path(str(EXAMPLES / name))["main"](argv)


def test_predict_folder_writes_csv_and_overlays(tmp_path, monkeypatch, capsys):
    out = tmp_path / "pred"
    csv_path = run_example("predict_folder.py", [str(IMAGES), "--class-name", "metal plate", "--out", str(out), *TINY],
                           monkeypatch)
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for p in IMAGES.glob("*.png"))
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(float(r["S5"]) == float(r["score"]) for r in rows)
    assert len(list((out / "overlays").glob("*.png"))) == len(rows)
    assert "wrote" in capsys.readouterr().out


def test_evaluate_dataset_writes_the_tables(tmp_path, monkeypatch, capsys):
    out = tmp_path / "eval"
    report = run_example("evaluate_dataset.py", [str(DATASET), "--out", str(out), "--aupro", "legacy", *TINY],
                         monkeypatch)
    assert set(report.classes) == {"metal_nut", "pipe_fryum"}
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["aupro"] == "legacy" and set(doc["mean"]) >= {"image_auroc", "pixel_aupro"}
    assert "Mean" in capsys.readouterr().out


def test_train_prompts_trains_and_reloads(tmp_path, monkeypatch, capsys):
    out = tmp_path / "train"
    argv = [str(DATASET), "--out", str(out), "--epochs", "1", "--batch-size", "3",
            "--check", str(IMAGES / "metal_plate_scratch.png"), "--class-name", "metal plate", *TINY]
    argv.remove("--prompt-checkpoint")
    argv.remove(str(FIXTURE / "learnable_params.pth"))  # start from random tokens, as a fresh training run does
    run = run_example("train_prompts.py", argv, monkeypatch)
    assert run.epochs_completed == 1 and run.prompt_checkpoint.is_file() and (out / "config.json").is_file()
    printed = capsys.readouterr().out
    assert "epoch 1: loss" in printed and "metal_plate_scratch.png" in printed


@pytest.mark.usefixtures("restore_registries")
def test_custom_plugin_registers_and_uses_its_components(monkeypatch, capsys):
    results = run_example("custom_plugin.py", [str(IMAGES), "--class-name", "metal plate", "--check", *TINY],
                          monkeypatch)
    assert len(results) == 3
    for r in results:
        assert set(r.scores) == {"S2", "S5", "S2_topk"} and r.pred_score == r.scores["S2_topk"]
        assert r.scores["S2"] <= r.scores["S2_topk"] <= r.scores["S5"] + 1e-6  # top-k mean <= max
    assert "meet the contract" in capsys.readouterr().out


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_run_as_scripts(name):
    run = subprocess.run([sys.executable, str(EXAMPLES / name), "--help"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "--backbone-checkpoint" in run.stdout and "--device" in run.stdout
