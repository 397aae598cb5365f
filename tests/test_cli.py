"""The `zsad` command line: every subcommand, exit codes and messages."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tips_factory import FIXTURE
from zsad.cli import main, parse_set

TINY = [
    "--set", f"backbone_checkpoint={FIXTURE}",
    "--set", f"prompt_checkpoint={FIXTURE / 'learnable_params.pth'}",
    "--set", "image_size=56", "--device", "cpu",
]


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg", "sub/c.png"):
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / name)
    return folder


def test_predict_folder_writes_scores_overlays_maps(images, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(images), "--class-name", "screw", "--out", str(out), "--save-maps", *TINY]) == 0
    doc = json.loads((out / "scores.json").read_text())
    assert len(doc["results"]) == 3 and doc["image_score"] == "S5"
    assert (out / "scores.csv").read_text().splitlines()[0] == "path,class,score,S1,S2,S3,S4,S5,output_name"
    assert len(list((out / "overlays").glob("*.png"))) == 3
    assert np.load(out / "maps" / "a.npy").shape == (40, 50)
    assert "a.png" in capsys.readouterr().out


def test_predict_speed_options_reach_the_detector(images, tmp_path, capsys):
    base = tmp_path / "base"
    assert main(["predict", str(images), "--out", str(base), "--no-overlays", "-q", *TINY]) == 0
    fast = tmp_path / "fast"
    assert main(["predict", str(images), "--out", str(fast), "--no-overlays", "-q", "--decode-workers", "2",
                 "--no-tf32", "--batch-size", "1", *TINY]) == 0
    scores = [[r["pred_score"] for r in json.loads((d / "scores.json").read_text())["results"]] for d in (base, fast)]
    assert scores[0] == scores[1]  # worker processes and the exact preprocessing change nothing
    runtime = json.loads((fast / "manifest.json").read_text())["runtime"]
    assert runtime == {"compile": False, "tf32": False, "preprocess": "exact", "decode_workers": 2, "prefetch": None}
    device = tmp_path / "device"
    assert main(["predict", str(images), "--out", str(device), "--no-overlays", "-q", "--preprocess", "device",
                 "--decode-workers", "0", *TINY]) == 0
    got = [r["pred_score"] for r in json.loads((device / "scores.json").read_text())["results"]]
    assert np.allclose(got, scores[0], atol=1e-2)
    capsys.readouterr()
    # other pixels, other results: a device-preprocessed run does not resume an exact one
    assert main(["predict", str(images), "--out", str(base), "--no-overlays", "-q", "--preprocess", "device",
                 *TINY]) == 2
    assert "preprocess" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", str(images), "--decode-workers", "-1", *TINY])
    assert main(["predict", str(images), "--model", str(tmp_path / "m.onnx"), "--compile"]) == 2
    assert "--compile cannot change an exported model" in capsys.readouterr().err


def test_evaluate_speed_options_reach_the_detector_and_the_fingerprint(tmp_path, capsys):
    data = str(FIXTURE / "dataset")
    base = tmp_path / "base"
    assert main(["evaluate", "--data", data, "--out", str(base), "-q", "--classes", "metal_nut", *TINY]) == 0
    fast = tmp_path / "fast"
    assert main(["evaluate", "--data", data, "--out", str(fast), "-q", "--classes", "metal_nut", "--no-tf32",
                 "--decode-workers", "2", *TINY]) == 0
    means = [json.loads((d / "metrics.json").read_text())["mean"] for d in (base, fast)]
    assert means[0] == means[1]  # decoding processes and the TF32 flag on a CPU change no number
    manifest = json.loads((fast / "manifest.json").read_text())
    assert manifest["runtime"] == {"compile": False, "tf32": False, "preprocess": "exact", "decode_workers": 2,
                                   "prefetch": None}
    assert json.loads((base / "manifest.json").read_text())["fingerprint"] == manifest["fingerprint"]
    capsys.readouterr()
    # the device preprocessing gives other pixels: its fingerprint differs, so it does not resume the exact run
    assert main(["evaluate", "--data", data, "--out", str(base), "-q", "--classes", "metal_nut", "--preprocess",
                 "device", *TINY]) == 2
    assert "preprocess" in capsys.readouterr().err


def test_serve_speed_flags_reach_the_detector():
    from zsad.cli import build_parser
    from zsad.cli.options import runtime_options
    from zsad.serve import ModelSpec

    args = build_parser().parse_args(["serve", "--compile", "--no-tf32", "--preprocess", "device", *TINY])
    options = runtime_options(args)
    assert options == {"compile": True, "tf32": False, "pipeline": {"preprocess": "device", "workers": None}}
    assert runtime_options(build_parser().parse_args(["serve", *TINY])) is None
    with pytest.raises(SystemExit):  # uploads are decoded in the server's process: no decoding workers
        build_parser().parse_args(["serve", "--decode-workers", "2"])
    det = ModelSpec(overrides=parse_set(TINY[1:6:2]), device="cpu", runtime_options={"tf32": False,
                    "pipeline": {"preprocess": "device"}}).load()
    assert det.runtime_options.tf32 is False and det.runtime_options.pipeline.preprocess == "device"


def test_predict_glob_and_missing_paths(images, tmp_path, capsys):
    assert main(["predict", str(images / "*.png"), "--out", str(tmp_path / "o"), "--no-overlays", "-q", *TINY]) == 0
    assert len(json.loads((tmp_path / "o" / "scores.json").read_text())["results"]) == 1
    assert main(["predict", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "o2"), *TINY]) == 2
    assert "zsad: error:" in capsys.readouterr().err


def test_bad_overrides_and_options(images, tmp_path, capsys):
    assert main(["predict", str(images), "--set", "image_sise=3", *TINY]) == 2
    assert "Did you mean: image_size" in capsys.readouterr().err
    assert main(["predict", str(images), "--set", "novalue", *TINY]) == 2
    assert "key=value" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(images), "--bogus"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["frobnicate"])
    assert parse_set(["a=[1, 2]", "b=x=y"]) == {"a": [1, 2], "b": "x=y"}


def test_recipes_plugins_info(capsys):
    assert main(["recipes"]) == 0
    assert "tipsomaly" in capsys.readouterr().out
    assert main(["recipes", "tipsomaly"]) == 0
    assert json.loads(capsys.readouterr().out)["heads"]["image_score"] == "S5"
    assert main(["plugins", "--all", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"name": "tips", "kind": "backbone", "source": "builtin"}.items() <= next(r for r in rows if r["name"] == "tips").items()
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["zsad"] and "cache" in info


def test_weights_commands(tmp_path, capsys, monkeypatch):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert "tips-v1-l14-hr" in out and "CC-BY" in out
    assert main(["weights", "path"]) == 0
    assert capsys.readouterr().out.strip().endswith("zsad-cache")
    src = tmp_path / "dl"
    src.mkdir()
    shutil.copy(FIXTURE / "vision.npz", src / "tips_oss_s14_highres_distilled_vision.npz")
    shutil.copy(FIXTURE / "text.npz", src / "tips_oss_s14_highres_distilled_text.npz")
    shutil.copy(FIXTURE / "tokenizer.model", src / "tokenizer.model")
    assert main(["weights", "import", "tips-v1-s14-hr", *map(str, sorted(src.iterdir()))]) == 0
    capsys.readouterr()
    assert main(["weights", "verify", "tips-v1-s14-hr"]) == 0
    assert "vision.npz: unverified" in capsys.readouterr().out
    monkeypatch.setenv("ZSAD_OFFLINE", "1")
    assert main(["weights", "download", "tips-v1-b14-hr"]) == 2
    assert "zsad weights download" in capsys.readouterr().err
    assert main(["weights", "download"]) == 2


def test_data_commands(tmp_path, capsys):
    assert main(["data", "check", str(FIXTURE / "dataset")]) == 0
    assert "metal_nut" in capsys.readouterr().out
    assert main(["data", "prepare", "mvtec", str(tmp_path / "missing")]) == 2
    assert "zsad: error:" in capsys.readouterr().err


def test_prompt_conversion(tmp_path):
    dest = tmp_path / "p.safetensors"
    assert main(["prompts", str(FIXTURE / "learnable_params.pth"), str(dest)]) == 0
    assert dest.is_file()


def test_module_entry_point_help():
    run = subprocess.run([sys.executable, "-m", "zsad", "predict", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "examples:" in run.stdout and "--class-name" in run.stdout


def test_evaluate_and_train_commands(tmp_path, capsys):
    data = str(FIXTURE / "dataset")
    out = tmp_path / "eval"
    assert main(["evaluate", "--data", data, "--out", str(out), "-q", *TINY]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert set(doc["classes"]) == {"metal_nut", "pipe_fryum"}
    assert {"image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_aupro", "pixel_f1_max"} <= set(doc["mean"])
    assert (out / "scores.csv").is_file() and (out / "manifest.json").is_file()
    run = tmp_path / "train"
    tiny_train = [a if a != f"prompt_checkpoint={FIXTURE / 'learnable_params.pth'}" else "prompt_checkpoint=null" for a in TINY]
    assert main(["train", "--data", data, "--out", str(run), "--epochs", "1", "--batch-size", "4", *tiny_train]) == 0
    printed = capsys.readouterr().out
    assert "prompts.safetensors" in printed
    ckpt = run / "prompts.safetensors"
    assert ckpt.is_file()
    # the trained prompts are usable by predict
    assert main(["predict", str(FIXTURE / "dataset" / "metal_nut" / "test" / "good"), "--out", str(tmp_path / "p"),
                 "--no-overlays", "-q", *[a if not a.startswith("prompt_checkpoint=") else f"prompt_checkpoint={ckpt}" for a in TINY]]) == 0
    assert main(["train", "--data", data, "--out", str(run), "--epochs", "1", *tiny_train]) == 2  # refuses to overwrite
    assert "overwrite" in capsys.readouterr().err


def test_download_failures_exit_non_zero_with_a_message(http_server, tmp_path, monkeypatch, capsys):
    from http_server import unused_url

    monkeypatch.setenv("ZSAD_WEIGHTS_URL", unused_url())
    assert main(["weights", "download", "tips-v1-s14-hr", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zsad: error:") and "ZSAD_WEIGHTS_URL" in err
    # a checksum mismatch: the mirror's index promises other bytes than it serves
    for f in ("v1_0/checkpoints/pytorch/tips_oss_s14_highres_distilled_vision.npz",
              "v1_0/checkpoints/pytorch/tips_oss_s14_highres_distilled_text.npz", "v1_0/checkpoints/tokenizer.model"):
        http_server.put(f, b"real bytes")
    http_server.write_index()
    http_server.put("v1_0/checkpoints/pytorch/tips_oss_s14_highres_distilled_vision.npz", b"tampered!!")
    monkeypatch.setenv("ZSAD_WEIGHTS_URL", http_server.url)
    assert main(["weights", "download", "tips-v1-s14-hr", "-q"]) == 2
    assert "sha256" in capsys.readouterr().err.lower()
    from zsad.weights import cache_dir

    folder = cache_dir() / "tips-v1-s14-hr"
    assert not (folder / "vision.npz").exists() and not list(folder.glob("*.part"))


def test_outputs_of_images_sharing_a_name_do_not_collide(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for sub, shape in (("good", (40, 60)), ("crack", (30, 50))):
        (tmp_path / "imgs" / sub).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(tmp_path / "imgs" / sub / "000.png")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "imgs"), "--out", str(out), "--save-maps", "-q", *TINY]) == 0
    assert np.load(out / "maps" / "good__000.npy").shape == (40, 60)
    assert np.load(out / "maps" / "crack__000.npy").shape == (30, 50)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["crack__000.png", "good__000.png"]
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path / "imgs"), "--batch-size", "-1", *TINY])
    assert "must be at least 1" in capsys.readouterr().err


def test_tiny_recipe_needs_no_weights(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZSAD_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "try"
    assert main(["predict", str(images), "--recipe", "tiny", "--out", str(out), "--save-maps", "-q"]) == 0
    assert len(json.loads((out / "scores.json").read_text())["results"]) == 3
    assert len(list((out / "maps").glob("*.npy"))) == 3 and len(list((out / "overlays").glob("*.png"))) == 3
    assert not any((tmp_path / "zsad-cache").rglob("*"))  # nothing was downloaded or cached
    assert main(["recipes"]) == 0 and "tiny " in capsys.readouterr().out
