"""Masks: official read/resize rule (parity fixture), zeros, grey-value warning, header validation."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from zsad.data import (
    check_mask_values,
    is_binary_mask,
    load_mask,
    open_dataset,
    read_mask,
    resize_mask,
    validate_masks,
)
from zsad.errors import DatasetError

from .conftest import FIXTURE


def official_mask(path, size):
    """The official Tipsomaly rule written out literally (PIL + numpy), for comparison."""
    m = (np.array(Image.open(path).convert("L")) > 0).astype(np.uint8) * 255
    r = np.asarray(Image.fromarray(m, "L").resize((size, size), Image.BILINEAR), np.float32) / 255.0
    return np.where(r > 0.5, 1, 0)


def test_resize_mask_matches_parity_reference_exactly(parity_dataset):
    ref = np.load(FIXTURE / "reference.npz")["mask_u8"]
    ds = open_dataset(parity_dataset)
    samples = ds.samples()
    assert len(samples) == ref.shape[0] == 6
    for i, s in enumerate(samples):
        expected = ref[i] > 0
        if s.mask_path is None:
            assert not expected.any()
            got = load_mask(None, 518)
        else:
            got = resize_mask(read_mask(s.mask_path), 518)
        assert got.dtype == np.uint8 and got.shape == (518, 518)
        np.testing.assert_array_equal(got.astype(bool), expected, err_msg=f"sample {i}: {s.img_path}")
        np.testing.assert_array_equal(ds.load_mask(s, 518), got)


def test_read_mask_is_convert_L_greater_than_zero(tmp_path, put):
    p = put(tmp_path / "m.png", size=(3, 1))
    Image.fromarray(np.array([[0, 1, 200]], np.uint8)).save(p)
    np.testing.assert_array_equal(read_mask(p), [[0, 1, 1]])
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.array([[[0, 0, 0], [255, 0, 0]]], np.uint8)).save(rgb)  # red -> L 76 -> 1
    np.testing.assert_array_equal(read_mask(rgb), [[0, 1]])


@pytest.mark.parametrize("size", [7, 518, (5, 9)])
def test_resize_mask_equals_literal_official_rule(tmp_path, size):
    rng = np.random.default_rng(0)
    arr = (rng.random((23, 31)) > 0.7).astype(np.uint8) * 255
    p = tmp_path / "m.png"
    Image.fromarray(arr).save(p)
    got = resize_mask(read_mask(p), size)
    if isinstance(size, int):
        np.testing.assert_array_equal(got, official_mask(p, size))
    else:
        assert got.shape == (size[1], size[0])


def test_resize_mask_rejects_non_2d():
    with pytest.raises(DatasetError, match="H x W"):
        resize_mask(np.zeros((2, 2, 3)), 4)


def test_load_mask_zeros_and_size_check(tmp_path, put):
    assert load_mask(None, (4, 2)).shape == (2, 4)
    assert load_mask(None, image_size_hw=(3, 5)).shape == (3, 5)
    with pytest.raises(DatasetError, match="size= or image_size_hw="):
        load_mask(None)
    p = put(tmp_path / "m.png", size=(6, 4), box=(0, 0, 3, 4))
    assert load_mask(p).shape == (4, 6)
    assert load_mask(p, 8, image_size_hw=(4, 6)).shape == (8, 8)
    with pytest.raises(DatasetError, match="does not belong to the image"):
        load_mask(p, image_size_hw=(6, 4))
    with pytest.raises(DatasetError, match="does not exist"):
        load_mask(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="Cannot read mask"):
        read_mask(bad)


def test_is_binary_mask():
    assert is_binary_mask(np.array([[0, 255]]))
    assert is_binary_mask(np.array([[0, 1]]))
    assert is_binary_mask(np.array([[255]]))
    assert not is_binary_mask(np.array([[0, 1, 255]]))
    assert not is_binary_mask(np.array([[0, 128]]))


def _grey_dataset(tmp_path, put, n=2):
    recs = []
    for i in range(n):
        put(tmp_path / f"{i}.png")
        m = np.zeros((8, 8), np.uint8)
        m[2:5, 2:5] = 40  # anti-aliased / grey annotation
        Image.fromarray(m).save(tmp_path / f"{i}_mask.png")
        recs.append({"img_path": f"{i}.png", "mask_path": f"{i}_mask.png", "cls_name": "c", "specie_name": "x", "anomaly": 1})
    (tmp_path / "meta.json").write_text(json.dumps({"train": {}, "test": {"c": recs}}))
    return open_dataset(tmp_path)


def test_grey_masks_warn_once_per_dataset_and_binarise_with_gt0(tmp_path, put):
    ds = _grey_dataset(tmp_path, put)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        masks = [ds.load_mask(s) for s in ds.samples()]
        ds.load_mask(ds.samples()[0], 16)
    assert len([w for w in caught if "binarised with > 0" in str(w.message)]) == 1
    assert all(int(m.sum()) == 9 for m in masks)
    with pytest.warns(UserWarning, match="2 mask"):
        grey = check_mask_values(ds)
    assert [p.name for p in grey] == ["0_mask.png", "1_mask.png"]


def test_binary_masks_do_not_warn(parity_dataset):
    ds = open_dataset(parity_dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for s in ds.samples():
            ds.load_mask(s, 32)
        assert check_mask_values(ds) == []


def test_validate_masks_sizes_and_unreadable(tmp_path, put, parity_dataset):
    validate_masks(open_dataset(parity_dataset))
    root = tmp_path / "d"
    recs = []
    for i in range(7):
        put(root / f"{i}.png", size=(8, 6))
        put(root / f"{i}_mask.png", size=(6, 8) if i < 6 else (8, 6))
        recs.append({"img_path": f"{i}.png", "mask_path": f"{i}_mask.png", "cls_name": "c", "specie_name": "", "anomaly": 1})
    (root / "meta.json").write_text(json.dumps({"test": {"c": recs}}))
    ds = open_dataset(root)
    with pytest.raises(DatasetError) as e:
        validate_masks(ds)
    msg = str(e.value)
    assert "6 mask problem(s)" in msg and "mask 6x8 != image 8x6" in msg and "... and 1 more" in msg
    validate_masks(ds, check_mask_sizes=False)
    (root / "6_mask.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="Cannot read mask"):
        validate_masks(ds, check_mask_sizes=False)
    with pytest.raises(DatasetError, match="mask problem"):
        open_dataset(root, check_mask_sizes=True)
