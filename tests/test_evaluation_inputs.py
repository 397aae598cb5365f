"""Evaluation inputs that used to give silently wrong or mixed results: EXIF-rotated images with masks, two runs
into one folder, folders without labels."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from parity import FIXTURE
from PIL import Image

from zsad import Detector
from zsad import evaluation as ev
from zsad.cli import main
from zsad.data import open_dataset
from zsad.errors import ConfigError, DatasetError

SMALL = {"backbone_checkpoint": str(FIXTURE), "prompt_checkpoint": str(FIXTURE / "learnable_params.pth"),
         "image_size": 56}
ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def det():
    return Detector.from_recipe("tipsomaly", device="cpu", exif_transpose=True, **SMALL)


def _save(array, path, orientation=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(array)
    if orientation is None:
        im.save(path)
    else:
        exif = im.getexif()
        exif[ORIENTATION] = orientation
        im.save(path, exif=exif)


def exif_dataset(root, *, mask_as_displayed=False, rotated_on_disk=False):
    """One normal and one anomalous image stored 48x32 with EXIF orientation 6 (turn 90 degrees clockwise); the
    mask marks a box in the stored top-left corner. ``rotated_on_disk``: the same pixels already turned, no EXIF."""
    rng = np.random.default_rng(5)
    records = []
    for name, anomaly in (("n0", 0), ("a0", 1)):
        pixels = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
        mask = np.zeros((32, 48), np.uint8)
        mask[2:12, 3:20] = 255
        if rotated_on_disk:
            pixels, mask = np.rot90(pixels, -1).copy(), np.rot90(mask, -1).copy()
        _save(pixels, root / f"c/test/{name}.png", None if rotated_on_disk else 6)
        rec = {"img_path": f"c/test/{name}.png", "mask_path": "", "cls_name": "c", "specie_name": "x",
               "anomaly": anomaly}
        if anomaly:
            _save(np.rot90(mask, -1).copy() if mask_as_displayed else mask, root / f"c/gt/{name}.png")
            rec["mask_path"] = f"c/gt/{name}.png"
        records.append(rec)
    (root / "meta.json").write_text(json.dumps({"test": {"c": records}}))
    return root


def evaluate(det, data, out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ev.evaluate(data=data, out=out, detector=det, progress=False, **kw)


@pytest.mark.parametrize("protocol", ["tipsomaly", "original"])
def test_masks_turn_with_their_exif_rotated_images(det, tmp_path, protocol):
    exif = evaluate(det, exif_dataset(tmp_path / "exif"), tmp_path / "o1", protocol=protocol, save_overlays=True)
    turned = evaluate(det, exif_dataset(tmp_path / "disk", rotated_on_disk=True), tmp_path / "o2", protocol=protocol,
                      save_overlays=True)
    assert exif.classes["c"] == turned.classes["c"]  # the same pixels, masks and maps: the same numbers
    for name in ("a0.png", "n0.png"):  # the images' own stems (distinct here); names.json maps them
        a = np.asarray(Image.open(tmp_path / "o1" / "overlays" / "c" / name))
        b = np.asarray(Image.open(tmp_path / "o2" / "overlays" / "c" / name))
        np.testing.assert_array_equal(a, b)  # overlays drawn on the turned image, with the turned contours
    if protocol == "original":
        assert a.shape[:2] == (48, 32)


def test_masks_stay_stored_when_exif_is_off(tmp_path):
    ds = open_dataset(exif_dataset(tmp_path / "exif"))
    sample = next(s for s in ds.samples() if s.anomaly)
    stored = ds.load_mask(sample)
    turned = ds.load_mask(sample, exif_transpose=True)  # what training uses with exif_transpose=true
    assert stored.shape == (32, 48) and turned.shape == (48, 32)
    np.testing.assert_array_equal(turned, np.rot90(stored, -1))
    normal = next(s for s in ds.samples() if not s.anomaly)
    assert ds.load_mask(normal, exif_transpose=True).shape == (48, 32)


def test_a_mask_that_fits_only_the_turned_image_is_an_error(det, tmp_path):
    data = exif_dataset(tmp_path / "exif", mask_as_displayed=True)
    with pytest.raises(DatasetError, match=r"a0.png is 32x48, the size of its image .* only after the image's EXIF"):
        evaluate(det, data, tmp_path / "o")
    plain = Detector(det.config.with_overrides(exif_transpose=False), device="cpu", backbone=det.backbone)
    with pytest.warns(UserWarning, match="differ in size"):  # without EXIF: the official resize, with a note
        ev.evaluate(data=data, out=tmp_path / "o2", detector=plain, progress=False)


def test_a_second_run_into_a_busy_folder_is_refused(det, tmp_path, lock_held_elsewhere):
    data = FIXTURE / "dataset"
    out = tmp_path / "run"
    holder = lock_held_elsewhere(out, "evaluation")
    with pytest.raises(ConfigError, match=rf"Another zsad evaluation is writing into {out} \(process {holder.pid}"):
        evaluate(det, data, out)
    assert not (out / "manifest.json").exists()  # nothing was written next to the other run's files
    holder.kill()
    holder.wait()
    evaluate(det, data, out, classes=["metal_nut"])
    with pytest.raises(ConfigError, match="different evaluation"):  # settings differ from the finished run
        evaluate(det, data, out, aupro="legacy")


def test_a_folder_without_labels_is_refused_with_the_reason(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (20, 20)).save(folder / "a.png")
    rc = main(["evaluate", "--data", str(folder), "--out", str(tmp_path / "o"), "--set",
               f"backbone_checkpoint={FIXTURE}", "--set", "image_size=56", "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "has no labels" in err and "zsad predict" in err and len(err.strip().splitlines()) == 1
