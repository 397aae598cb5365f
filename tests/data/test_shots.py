"""The few-shot protocol's draw of K normal training images per class."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from zsad.data import draw_references, open_dataset
from zsad.errors import DatasetError


def _mvtec(root, train_counts: dict[str, int]):
    for cls, n in train_counts.items():
        for name in ("test/good/0.png", "test/crack/1.png", "ground_truth/crack/1_mask.png"):
            (root / cls / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8)).save(root / cls / name)
        for i in range(n):
            (root / cls / "train" / "good").mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8)).save(root / cls / "train" / "good" / f"{i:03d}.png")
    return open_dataset(root)


def test_draws_k_normal_train_images_per_class_reproducibly(tmp_path):
    ds = _mvtec(tmp_path, {"bottle": 10, "cable": 6})
    a = draw_references(ds, shots=4, seed=1)
    assert sorted(a) == ["bottle", "cable"] and all(len(v) == 4 for v in a.values())
    assert all("/train/good/" in str(s.img_path) and s.anomaly == 0 for v in a.values() for s in v)
    assert len({s.img_path for s in a["bottle"]}) == 4
    assert a == draw_references(ds, shots=4, seed=1)  # same seed, same draw
    assert draw_references(ds, shots=4, seed=1, classes=["cable"])["cable"] == a["cable"]  # independent of others
    draws = {tuple(s.img_path.name for s in draw_references(ds, 4, seed)["bottle"]) for seed in range(6)}
    assert len(draws) > 1  # seeds differ
    names = [s.img_path.name for s in a["bottle"]]
    assert names == sorted(names)  # file order


def test_meta_json_train_split(tmp_path):
    rec = lambda p, a: {"img_path": p, "mask_path": "", "cls_name": "c", "specie_name": "good", "anomaly": a}  # noqa: E731
    for n in ("t0.png", "t1.png", "r0.png", "r1.png", "r2.png"):
        Image.new("L", (4, 4)).save(tmp_path / n)
    meta = {"train": {"c": [rec("r0.png", 0), rec("r1.png", 1), rec("r2.png", 0)]},
            "test": {"c": [rec("t0.png", 0), rec("t1.png", 0)]}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    ds = open_dataset(tmp_path / "meta.json")
    assert {s.img_path.name for s in draw_references(ds, 2, seed=0)["c"]} == {"r0.png", "r2.png"}  # normal only
    with pytest.raises(DatasetError, match="class 'c' has 2 normal image"):
        draw_references(ds, 3, seed=0)


def test_clear_errors(tmp_path):
    no_train = _mvtec(tmp_path / "a", {"bottle": 0})
    with pytest.raises(DatasetError, match="has no 'train' split with images"):
        draw_references(no_train, 1, seed=0)
    ds = _mvtec(tmp_path / "b", {"bottle": 2})
    for bad in (0, -1, 1.5, True):
        with pytest.raises(DatasetError, match="shots must be a whole number"):
            draw_references(ds, bad, seed=0)
