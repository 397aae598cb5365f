"""Hostile inputs and faults, through the API and the `zsad` command: each gives a correct result or one clear
error (exit code 2 on the command line) naming the file and the fix; never a traceback, never a silently wrong
or lost result."""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tips_factory import FIXTURE, copy_fixture_checkpoint

from zsad import Detector, io
from zsad.cli import main
from zsad.data import list_images, load_mask, open_dataset, read_mask
from zsad.errors import CheckpointError, ConfigError, DatasetError, ImageError, NumericalError
from zsad.prompts.checkpoint import load_prompt_checkpoint

TINY = ["--set", f"backbone_checkpoint={FIXTURE}", "--set", f"prompt_checkpoint={FIXTURE / 'learnable_params.pth'}",
        "--set", "image_size=56", "--device", "cpu"]


def tiny_detector(**overrides) -> Detector:
    return Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), image_size=56, device="cpu",
                                prompt_checkpoint=str(FIXTURE / "learnable_params.pth"), **overrides)


def bomb_png(path: Path, width: int = 30_000, height: int = 30_000) -> Path:
    """A valid-looking PNG whose header claims width x height pixels (a decompression bomb for Pillow)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("zsad: error:") and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------------- images and masks
def test_decompression_bombs_are_errors_not_tracebacks(tmp_path, capsys):
    bomb = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(ImageError, match="decompression bomb") as info:
        io.load_image(bomb)
    assert str(bomb) in str(info.value) and "MAX_IMAGE_PIXELS" in str(info.value)
    with pytest.raises(DatasetError, match="decompression bomb"):
        read_mask(bomb)
    assert main(["predict", str(bomb), "--out", str(tmp_path / "out"), "-q", *TINY]) == 2
    assert "bomb.png" in one_line_error(capsys)


def _dataset_with_mask(root: Path, mask_bytes: bytes | None = None) -> Path:
    for sub in ("c/test/good", "c/test/bad", "c/ground_truth/bad"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16)).save(root / "c/test/good/0.png")
    Image.new("RGB", (16, 16)).save(root / "c/test/bad/1.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[4:9, 4:9] = 255
    Image.fromarray(mask).save(root / "c/ground_truth/bad/1_mask.png")
    if mask_bytes is not None:
        (root / "c/ground_truth/bad/1_mask.png").write_bytes(mask_bytes)
    return root


def test_truncated_masks_are_reported_by_loaders_and_data_check(tmp_path, capsys):
    root = _dataset_with_mask(tmp_path / "d")
    assert main(["data", "check", str(root)]) == 0
    capsys.readouterr()
    good = (root / "c/ground_truth/bad/1_mask.png").read_bytes()
    _dataset_with_mask(root, good[: len(good) // 2])
    with pytest.raises(DatasetError, match="1_mask.png"):
        load_mask(root / "c/ground_truth/bad/1_mask.png")
    ds = open_dataset(root)
    with pytest.raises(DatasetError, match="Cannot read mask"):
        ds.load_mask(next(s for s in ds.samples() if s.has_mask))
    assert main(["data", "check", str(root)]) == 2  # decoded, not only its header
    assert "1_mask.png" in one_line_error(capsys)


def test_mask_bomb_is_reported_by_data_check(tmp_path, capsys):
    root = _dataset_with_mask(tmp_path / "d")
    bomb_png(root / "c/ground_truth/bad/1_mask.png")
    assert main(["data", "check", str(root)]) == 2
    assert "decompression bomb" in one_line_error(capsys)


@pytest.mark.parametrize("array", [np.zeros((0, 0, 3), np.uint8), np.zeros((5, 0), np.uint8)])
def test_empty_arrays_are_errors(array):
    with pytest.raises(ImageError, match="no pixels"):
        io.load_image(array)


def test_empty_and_meta_tensors_are_errors():
    det = tiny_detector()
    with pytest.raises(ImageError, match="no pixels"):
        det.predict(torch.zeros(3, 0, 20))
    with pytest.raises(ImageError, match="meta"):
        det.predict(torch.empty(3, 20, 20, device="meta"))
    with pytest.raises(ImageError, match="empty"):
        det.predict(Image.new("RGB", (0, 0)))


# ------------------------------------------------------------------------------------------- prompt files
def _prompt_files(tmp_path: Path) -> dict[str, Path]:
    from safetensors.torch import save_file

    files = {}
    files["truncated"] = tmp_path / "truncated.safetensors"
    save_file({"T_n": torch.randn(8, 32), "T_a": torch.randn(8, 32)}, str(files["truncated"]))
    files["truncated"].write_bytes(files["truncated"].read_bytes()[:100])
    files["huge header"] = tmp_path / "huge.safetensors"
    files["huge header"].write_bytes(struct.pack("<Q", 10**15) + b"{}")
    files["no tensors"] = tmp_path / "none.safetensors"
    save_file({}, str(files["no tensors"]))
    files["strings"] = tmp_path / "strings.npz"
    np.savez(files["strings"], T_n=np.array(["a", "b"]), T_a=np.array(["c", "d"]))
    files["nan"] = tmp_path / "nan.npz"
    t_n = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)
    t_n[2, 3] = np.nan
    np.savez(files["nan"], T_n=t_n, T_a=np.ones((8, 32), np.float32))
    files["meta"] = tmp_path / "meta.pth"
    torch.save(torch.nn.ParameterList([torch.nn.Parameter(torch.empty(8, 32, device="meta"))] * 2), files["meta"])
    return files


@pytest.mark.parametrize("kind, message", [
    ("truncated", "Cannot read prompt checkpoint"), ("huge header", "header too large"), ("no tensors", "no tensor"),
    ("strings", "not numbers"), ("nan", "'T_n' (1 of 256 values)"), ("meta", "meta-device"),
])
def test_bad_prompt_checkpoints_are_one_clear_error(tmp_path, capsys, kind, message):
    path = _prompt_files(tmp_path)[kind]
    with pytest.raises(CheckpointError, match=re.escape(message)) as info:
        load_prompt_checkpoint(path)
    assert str(path) in str(info.value)
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    args = [a if not a.startswith("prompt_checkpoint=") else f"prompt_checkpoint={path}" for a in TINY]
    assert main(["predict", str(image), "--out", str(tmp_path / "out"), "-q", *args]) == 2
    assert path.name in one_line_error(capsys)


# ------------------------------------------------------------------------------------------- non-finite numbers
def test_non_finite_backbone_weights_are_refused_at_load_naming_file_and_tensor(tmp_path, capsys):
    folder = copy_fixture_checkpoint(tmp_path / "ckpt")
    with np.load(folder / "vision.npz") as data:
        arrays = dict(data)
    arrays["blocks.0.attn.qkv.weight"][0, :3] = [np.nan, np.inf, -np.inf]
    np.savez(folder / "vision.npz", **arrays)
    with pytest.raises(CheckpointError) as info:
        Detector.from_recipe("tipsomaly", backbone_checkpoint=str(folder), image_size=56, device="cpu",
                             prompt_strategy="fixed", prompt_checkpoint=None)
    msg = str(info.value)
    assert str(folder / "vision.npz") in msg and "'blocks.0.attn.qkv.weight' (3 of" in msg
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    args = [a if not a.startswith("backbone_checkpoint=") else f"backbone_checkpoint={folder}" for a in TINY]
    out = tmp_path / "out"
    assert main(["predict", str(image), "--out", str(out), "-q", *args]) == 2
    assert "non-finite" in one_line_error(capsys) and not (out / "scores.json").exists()


def test_non_finite_results_are_never_returned_or_written(tmp_path):
    det = tiny_detector()
    with torch.no_grad():
        det.backbone.vision.layernorm.weight[0] = float("nan")  # e.g. an overflow inside the model
    with pytest.raises(NumericalError, match="non-finite") as info:
        det.predict(np.zeros((20, 20, 3), np.uint8), class_name="screw")
    assert "input 0" in str(info.value)
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    with pytest.raises(NumericalError, match="x.png"):
        det.predict(str(image))


# ------------------------------------------------------------------------------------------- class names, sizes
@pytest.mark.parametrize("bad, message", [
    (3, "got 3 (int)"), (None, "got None (NoneType)"), (b"x", "decode it"), ("", "names nothing"),
    ("  _ ", "names nothing"), (["ok", 7], "got 7 (int)"),
])
def test_bad_class_names_are_clear_errors(bad, message):
    det = tiny_detector()
    images = [np.zeros((20, 20, 3), np.uint8)] * (2 if isinstance(bad, list) else 1)
    with pytest.raises(ConfigError, match=re.escape(message)):
        det.predict(images, class_name=bad)


def test_image_size_is_checked_before_any_weights_load(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ZSAD_OFFLINE", "1")  # the default weights are not cached: loading them would fail
    with pytest.raises(ConfigError, match="image_size=500 is not a multiple of the patch size 14"):
        Detector.from_recipe("tipsomaly", image_size=500)
    image = tmp_path / "x.png"
    Image.new("RGB", (20, 20)).save(image)
    assert main(["predict", str(image), "--set", "image_size=500", "--out", str(tmp_path / "o")]) == 2
    assert "--set image_size=504" in one_line_error(capsys)


# ------------------------------------------------------------------------------------------- --out
def _unwritable(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):  # root writes anywhere; sysfs refuses new files even to root
        return Path("/sys/zsad-test-output")
    return folder / "out"


@pytest.mark.parametrize("command", ["predict", "evaluate", "train"])
@pytest.mark.parametrize("where", ["file", "under a file", "unwritable"])
def test_out_is_checked_before_any_work(tmp_path, monkeypatch, capsys, command, where):
    monkeypatch.setenv("ZSAD_OFFLINE", "1")  # any model loading would fail with a weights error instead
    (tmp_path / "a-file").write_text("x")
    out = {"file": tmp_path / "a-file", "under a file": tmp_path / "a-file" / "sub",
           "unwritable": _unwritable(tmp_path)}[where]
    data = str(FIXTURE / "dataset")
    args = {"predict": ["predict", data, "--out", str(out)], "evaluate": ["evaluate", "--data", data, "--out", str(out)],
            "train": ["train", "--data", data, "--out", str(out)]}[command]
    assert main(args) == 2
    err = one_line_error(capsys)
    assert "--out" in err and ("is a file" in err or "under the file" in err or "cannot be written" in err)


# ------------------------------------------------------------------------------------------- output names
def test_images_sharing_a_stem_in_one_folder_keep_their_own_outputs(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(folder / "000.png")
    Image.fromarray(rng.integers(0, 256, (50, 20, 3), dtype=np.uint8)).save(folder / "000.jpg")
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--out", str(out), "--save-maps", "-q", *TINY]) == 0
    names = json.loads((out / "names.json").read_text())
    assert names == {"000_jpg": str(folder / "000.jpg"), "000_png": str(folder / "000.png")}
    assert np.load(out / "maps" / "000_png.npy").shape == (30, 40)
    assert np.load(out / "maps" / "000_jpg.npy").shape == (50, 20)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["000_jpg.png", "000_png.png"]
    rows = json.loads((out / "scores.json").read_text())["results"]
    assert {Path(r["image_path"]).name: r["output_name"] for r in rows} == {"000.png": "000_png", "000.jpg": "000_jpg"}


def test_overlays_given_names_that_collide_get_one_file_each(tmp_path):
    from zsad.viz import save_overlays

    maps = [np.zeros((4, 4), np.float32)] * 3
    images = [np.zeros((4, 4, 3), np.uint8)] * 3
    written = save_overlays(maps, images, tmp_path, names=["a b", "a_b", "A B"], scale=(0.0, 1.0))
    assert len({p.name.casefold() for p in written}) == 3


# ------------------------------------------------------------------------------------------- symlink loops
def test_symlink_loops_list_each_real_file_once(tmp_path, capsys):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.png", "b.png", "sub/c.png"):
        Image.new("RGB", (8, 8)).save(folder / name)
    os.symlink("..", folder / "sub" / "up")  # a loop
    os.symlink(".", folder / "self")  # another loop
    os.symlink("a.png", folder / "alias.png")  # a second name for one file
    expected = {folder / "a.png", folder / "b.png", folder / "sub" / "c.png"}
    assert set(list_images(folder)) == expected and len(list_images(folder)) == 3
    assert len(list_images(str(folder / "**" / "*.png"))) == 3
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--out", str(out), "--no-overlays", "-q", *TINY]) == 0
    assert len(json.loads((out / "scores.json").read_text())["results"]) == 3


# ------------------------------------------------------------------------------------------- overlays
def _rotated_photo(path: Path) -> Path:
    """A 60 x 40 (w x h) photo, red on its left half, stored with EXIF orientation 6 (turn 90 degrees to view)."""
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30, 0] = 255
    pixels[:, 30:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(path, exif=exif)
    return path


def test_predict_overlay_follows_exif_orientation(tmp_path):
    from zsad import viz

    (tmp_path / "imgs").mkdir()
    photo = _rotated_photo(tmp_path / "imgs" / "photo.png")
    out = tmp_path / "out"
    assert main(["predict", str(photo), "--out", str(out), "--set", "exif_transpose=true", "--save-maps", "-q",
                 *TINY]) == 0
    shown = np.asarray(Image.open(out / "overlays" / "photo.png"))
    amap = np.load(out / "maps" / "photo.npy")
    assert shown.shape == (60, 40, 3) and amap.shape == (60, 40)  # turned like the map, not squashed
    turned = io.load_image(photo, exif_transpose=True)
    assert turned.size == (40, 60) and np.asarray(turned)[0, 0].tolist() == [255, 0, 0]  # red on top
    vmin, vmax = viz.class_scale([amap])
    assert np.array_equal(shown, np.asarray(viz.overlay(turned, amap, vmin, vmax)))


def test_overlay_refuses_a_map_turned_against_its_image(tmp_path):
    from zsad.viz import overlay

    photo = _rotated_photo(tmp_path / "photo.png")
    with pytest.raises(ConfigError, match="exif_transpose"):
        overlay(photo, np.zeros((60, 40), np.float32), 0.0, 1.0)
    assert overlay(photo, np.zeros((60, 40), np.float32), 0.0, 1.0, exif_transpose=True).size == (40, 60)


def test_overlay_of_16_bit_images_is_not_clipped_to_white(tmp_path):
    from zsad.viz import overlay

    path = tmp_path / "depth.png"
    Image.fromarray(np.full((20, 30), 4000, np.uint16)).save(path)  # 4000 / 65535: a dark grey
    det = tiny_detector(high_bit_depth="scale")
    result = det.predict(str(path))
    background = np.asarray(overlay(path, result.anomaly_map, 0.0, 1.0, alpha=0.0, high_bit_depth="scale"))
    assert background.max() <= 16  # round(4000 / 65535 * 255) = 16, not 255
    out = tmp_path / "out"
    assert main(["predict", str(path), "--out", str(out), "--set", "high_bit_depth=scale", "-q", *TINY]) == 0
    assert np.asarray(Image.open(out / "overlays" / "depth.png")).mean() < 200

