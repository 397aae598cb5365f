"""Readers: meta.json (parity fixture + every error path), AA-CLIP jsonl, MVTec folders, BTAD, plain folders/globs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zsad.data import (
    AnomalyDataset,
    Sample,
    list_images,
    open_dataset,
    pair_by_stem,
    read_jsonl,
    read_meta_json,
)
from zsad.errors import DatasetError

# ------------------------------------------------------------------------------------------------- meta.json


def test_parity_meta_json(parity_dataset):
    for path in (parity_dataset, parity_dataset / "meta.json", str(parity_dataset)):
        ds = open_dataset(path)
        assert ds.classes == ["metal_nut", "pipe_fryum"]  # JSON key order
        assert len(ds) == 6 and ds.has_labels and ds.split == "test"
        assert ds.source == parity_dataset.absolute() / "meta.json"
    s = ds.samples()
    assert [x.anomaly for x in s] == [0, 1, 1, 1, 0, 1]
    assert [x.specie_name for x in s] == ["good", "scratch", "color", "crack", "good", "burnt"]
    assert all(x.img_path.is_absolute() and x.img_path.is_file() for x in s)
    assert s[1].mask_path == parity_dataset.absolute() / "metal_nut/ground_truth/scratch/000_mask.png"
    assert s[0].mask_path is None and s[4].mask_path is None
    assert ds.has_masks("metal_nut") and ds.has_masks()
    assert ds.class_counts() == {"metal_nut": (1, 2), "pipe_fryum": (1, 2)}
    assert [x.img_path for x in ds.samples("pipe_fryum")] == [x.img_path for x in s[3:]]
    assert list(ds) == s
    assert "metal_nut: 1 normal, 2 anomalous, 2 with mask" in ds.summary()
    assert ds.notes == []


def test_parity_train_split_is_empty(parity_dataset):
    with pytest.raises(DatasetError, match="split 'train' has no classes"):
        open_dataset(parity_dataset, split="train")


def _meta(tmp_path: Path, put, test: dict, **extra) -> Path:
    for recs in test.values():
        for r in recs if isinstance(recs, list) else []:
            for key in ("img_path", "mask_path"):
                value = r.get(key) if isinstance(r, dict) else None
                if isinstance(value, str) and value and not value.startswith("missing"):
                    put(tmp_path / value)
    (tmp_path / "meta.json").write_text(json.dumps({"train": {}, "test": test, **extra}))
    return tmp_path / "meta.json"


def rec(img="a.png", mask="", cls="c", specie="good", anomaly=0, **kw):
    r = {"img_path": img, "mask_path": mask, "cls_name": cls, "specie_name": specie, "anomaly": anomaly}
    r.update(kw)
    return r


def test_meta_json_image_level_anomaly_is_recorded(tmp_path, put):
    meta = _meta(tmp_path, put, {"c": [rec(), rec("b.png", "", anomaly=1, specie="bad")]})
    ds = open_dataset(meta)
    assert ds.has_labels and not ds.has_masks("c")
    assert [s.img_path.name for s in ds.anomalies_without_mask()] == ["b.png"]
    assert any("1 anomalous image(s) have no mask" in n for n in ds.notes)
    assert ds.load_mask(ds.samples()[1], 4).sum() == 0


def test_meta_json_normal_mask_is_ignored_and_noted(tmp_path, put):
    ds = open_dataset(_meta(tmp_path, put, {"c": [rec(mask="a_mask.png")]}))
    assert ds.samples()[0].mask_path is None
    assert any("normal record(s) name a mask" in n for n in ds.notes)


def test_meta_json_absolute_paths_and_uppercase_split(tmp_path, put):
    img = put(tmp_path / "elsewhere" / "x.png")
    d = tmp_path / "m"
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({"Train": {}, "Test": {"k": [rec(str(img), cls="k")]}}))
    ds = open_dataset(d)
    assert ds.samples()[0].img_path == img and ds.split == "Test"


def test_meta_json_missing_files_lists_five_and_count(tmp_path, put):
    recs = [rec(f"missing_{i}.png") for i in range(7)]
    meta = _meta(tmp_path, put, {"c": recs})
    with pytest.raises(DatasetError) as e:
        open_dataset(meta)
    msg = str(e.value)
    assert "7 files named by" in msg and str(meta) in msg and "missing_4.png" in msg
    assert "missing_5.png" not in msg and "... and 2 more" in msg and "fix the paths" in msg
    assert len(open_dataset(meta, validate=False)) == 7  # validate=False skips the check


def test_meta_json_missing_mask_file(tmp_path, put):
    meta = _meta(tmp_path, put, {"c": [rec(mask="missing_mask.png", anomaly=1)]})
    with pytest.raises(DatasetError, match="1 file named by .* does not exist:\n.*missing_mask.png"):
        open_dataset(meta)


@pytest.mark.parametrize(
    "records, pattern",
    [
        ([rec(anomaly=2)], r"class 'c', record 0: field 'anomaly' is 2; it must be 0 \(normal\) or 1"),
        ([rec(anomaly="1")], r"field 'anomaly' is '1'"),
        ([rec(), {k: v for k, v in rec("b.png").items() if k != "img_path"}], r"record 1: required field 'img_path' is missing"),
        ([{k: v for k, v in rec().items() if k != "anomaly"}], r"required field 'anomaly' is missing"),
        ([{k: v for k, v in rec().items() if k != "mask_path"}], r"'mask_path' is missing; write \"mask_path\": \"\""),
        ([rec(cls="other")], r"field 'cls_name' is 'other' but the record is listed under class 'c'"),
        ([rec(img="")], r"field 'img_path' must be a non-empty path string"),
        ([rec(mask=3, anomaly=1)], r"field 'mask_path' must be a path string"),
        (["not a dict"], r"a record must be a JSON object"),
        ([], r"split 'test', class 'c' has no records. Remove the class or add its images"),
        ({"x": 1}, r"class 'c': must be a list of records"),
    ],
)
def test_meta_json_record_errors(tmp_path, put, records, pattern):
    meta = _meta(tmp_path, put, {"c": records})
    with pytest.raises(DatasetError, match=pattern) as e:
        open_dataset(meta)
    assert str(meta) in str(e.value)


def test_meta_json_structure_errors(tmp_path):
    p = tmp_path / "meta.json"
    p.write_text("{not json")
    with pytest.raises(DatasetError, match=r"not valid JSON \(line 1"):
        read_meta_json(p)
    p.write_text("[]")
    with pytest.raises(DatasetError, match="top level must be an object"):
        read_meta_json(p)
    p.write_text(json.dumps({"train": {}}))
    with pytest.raises(DatasetError, match=r"has no split 'test'; it has \['train'\]"):
        read_meta_json(p)
    p.write_text(json.dumps({"test": []}))
    with pytest.raises(DatasetError, match="split 'test' must map class names"):
        read_meta_json(p)
    with pytest.raises(DatasetError, match="does not exist"):
        read_meta_json(tmp_path / "nothing")


def test_dataset_unknown_class_and_split(parity_dataset):
    ds = open_dataset(parity_dataset)
    with pytest.raises(DatasetError, match="no class 'bottle'"):
        ds.samples("bottle")
    with pytest.raises(DatasetError, match="no split 'val'"):
        ds.samples(split="val")
    assert len(ds.samples(["pipe_fryum", "metal_nut"])) == 6


# ----------------------------------------------------------------------------------------------------- jsonl


def test_aaclip_jsonl_with_root(tmp_path, put):
    data = tmp_path / "data"
    put(data / "can/test/bad/000.png")
    put(data / "can/ground_truth/000.png")
    put(data / "can/test/good/000.png")
    put(data / "vial/test/good/000.png")
    lines = [
        {"image_path": "vial/test/good/000.png", "label": 0.0, "mask_path": "", "class_name": "vial"},
        {"image_path": "can/test/bad/000.png", "label": 1.0, "mask_path": "can/ground_truth/000.png", "class_name": "can"},
        {"image_path": "can/test/good/000.png", "label": 0, "mask_path": "", "class_name": "can"},
    ]
    meta = tmp_path / "metadata" / "X" / "full-shot.jsonl"
    meta.parent.mkdir(parents=True)
    meta.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    with pytest.raises(DatasetError, match=r"pass root= for jsonl"):
        open_dataset(meta)
    ds = open_dataset(meta, root=data)
    assert ds.classes == ["vial", "can"]  # first-appearance order
    assert ds.class_counts() == {"vial": (1, 0), "can": (1, 1)}
    assert ds.samples("can")[0].mask_path == data.absolute() / "can/ground_truth/000.png"
    assert ds.has_masks("can") and not ds.has_masks("vial")
    assert read_jsonl(meta, "train", root=data).split == "train"


def test_jsonl_meta_style_aliases(tmp_path, put):
    put(tmp_path / "a.png")
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"img_path": "a.png", "anomaly": 1, "cls_name": "k"}) + "\n")
    s = open_dataset(p).samples()[0]
    assert (s.cls_name, s.anomaly, s.mask_path) == ("k", 1, None)


@pytest.mark.parametrize(
    "line, pattern",
    [
        ("{bad", r"line 2: not valid JSON"),
        (json.dumps({"image_path": "a.png", "label": 0.5, "class_name": "k"}), r"line 2: field 'label' is 0.5"),
        (json.dumps({"image_path": "a.png", "label": 1}), r"line 2: required field 'class_name' is missing"),
        (json.dumps({"label": 1, "class_name": "k"}), r"line 2: required field 'image_path' is missing"),
        (json.dumps({"image_path": "a.png", "label": 1, "class_name": ""}), r"'class_name' must be a non-empty string"),
    ],
)
def test_jsonl_errors(tmp_path, put, line, pattern):
    put(tmp_path / "a.png")
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"image_path": "a.png", "label": 0, "class_name": "k"}) + "\n" + line + "\n")
    with pytest.raises(DatasetError, match=pattern):
        open_dataset(p)


def test_jsonl_empty_and_missing(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text("\n")
    with pytest.raises(DatasetError, match="holds no records"):
        open_dataset(p)
    with pytest.raises(DatasetError, match="does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")


# --------------------------------------------------------------------------------------------- MVTec folders


def test_mvtec_folders_pair_by_stem_not_position(tmp_path, put):
    # sorted() puts 70_mask.png before 7_mask.png but 7.png before 70.png: positional pairing would swap them
    put(tmp_path / "wood/test/good/000.png")
    put(tmp_path / "wood/test/hole/7.png")
    put(tmp_path / "wood/test/hole/70.png")
    put(tmp_path / "wood/ground_truth/hole/7_mask.png", box=(0, 0, 1, 1))
    put(tmp_path / "wood/ground_truth/hole/70_mask.png", box=(0, 0, 7, 7))
    put(tmp_path / "wood/train/good/001.png")
    put(tmp_path / "bottle/test/good/000.png")
    (tmp_path / "notes").mkdir()
    ds = open_dataset(tmp_path)
    assert ds.classes == ["bottle", "wood"]
    pairs = {s.img_path.name: s.mask_path.name for s in ds.samples("wood") if s.mask_path}
    assert pairs == {"7.png": "7_mask.png", "70.png": "70_mask.png"}
    assert ds.class_counts() == {"bottle": (1, 0), "wood": (1, 2)}
    assert [s.img_path.name for s in ds.samples(split="train")] == ["001.png"]
    assert int(ds.load_mask(ds.samples("wood")[2]).sum()) == 49  # 70.png took the 7x7 box
    # one class folder opens as a one-class dataset
    assert open_dataset(tmp_path / "wood").classes == ["wood"]


def test_btad_ok_is_normal_ko_anomalous_same_stem_masks(tmp_path, put):
    put(tmp_path / "01/test/ok/0000.bmp")
    put(tmp_path / "01/test/ko/0010.bmp")
    put(tmp_path / "01/test/ko/0020.bmp")
    put(tmp_path / "01/ground_truth/ko/0005.png")  # orphan: would shift a positional pairing
    put(tmp_path / "01/ground_truth/ko/0010.png")
    put(tmp_path / "01/ground_truth/ko/0020.png")
    put(tmp_path / "01/train/ok/0000.bmp")
    ds = open_dataset(tmp_path)
    got = [(s.specie_name, s.anomaly, s.mask_path.name if s.mask_path else None) for s in ds.samples()]
    assert got == [("ko", 1, "0010.png"), ("ko", 1, "0020.png"), ("ok", 0, None)]


def test_mvtec_defect_without_ground_truth_is_image_level(tmp_path, put):
    put(tmp_path / "headct/test/good/0.png")
    put(tmp_path / "headct/test/defect/1.png")
    ds = open_dataset(tmp_path)
    assert ds.has_labels and not ds.has_masks() and len(ds.anomalies_without_mask()) == 1
    assert ds.notes


def test_mvtec_image_without_mask_raises(tmp_path, put):
    put(tmp_path / "c/test/crack/1.png")
    put(tmp_path / "c/test/crack/2.png")
    put(tmp_path / "c/ground_truth/crack/1_mask.png")
    put(tmp_path / "c/ground_truth/crack/9_mask.png")
    with pytest.raises(DatasetError) as e:
        open_dataset(tmp_path)
    msg = str(e.value)
    assert "1 image(s) in" in msg and "2.png" in msg and "'<stem>_mask.<ext>'" in msg and "9_mask.png" in msg


def test_mvtec_empty_class_raises(tmp_path):
    (tmp_path / "c/test/good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no images"):
        open_dataset(tmp_path)


def test_pair_by_stem_ambiguous_and_optional():
    with pytest.raises(DatasetError, match="both match images with stem '7'"):
        pair_by_stem([Path("7.png")], [Path("7.png"), Path("7_mask.png")])
    assert pair_by_stem([Path("1.png")], [], required=False) == [None]
    got = pair_by_stem([Path("ISIC_1.jpg")], [Path("ISIC_1_segmentation.png")], ("_Segmentation",))
    assert got == [Path("ISIC_1_segmentation.png")]


# ---------------------------------------------------------------------------------------------- plain images


def test_list_images_files_folders_globs(tmp_path, put):
    put(tmp_path / "a/z.PNG")
    put(tmp_path / "a/sub/b.jpeg")
    put(tmp_path / "a/c.TIFF")
    put(tmp_path / "a/.hidden.png")
    put(tmp_path / "a/.cache/x.png")
    (tmp_path / "a/readme.txt").write_text("x")
    put(tmp_path / "single.webp")
    got = list_images(tmp_path / "a")
    assert [p.name for p in got] == ["c.TIFF", "b.jpeg", "z.PNG"]  # sorted by path: a/c, a/sub/b, a/z
    assert all(p.is_absolute() for p in got)
    assert [p.name for p in list_images(str(tmp_path / "a" / "*.png"))] == ["z.PNG"]
    assert [p.name for p in list_images(str(tmp_path / "**" / "*.jpeg"))] == ["b.jpeg"]
    both = list_images([tmp_path / "single.webp", str(tmp_path / "a" / "*.png"), tmp_path / "single.webp"])
    assert [p.name for p in both] == ["single.webp", "z.PNG"]


def test_list_images_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        list_images(tmp_path / "missing")
    with pytest.raises(DatasetError, match="No image matched"):
        list_images(str(tmp_path / "*.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="No image matched"):
        list_images(tmp_path / "empty")


def test_open_dataset_plain_folder_and_glob(tmp_path, put):
    put(tmp_path / "parts/x1.png")
    put(tmp_path / "parts/x2.jpg")
    ds = open_dataset(tmp_path / "parts")
    assert ds.classes == ["parts"] and len(ds) == 2 and not ds.has_labels and not ds.has_masks()
    assert all(s.anomaly is None and s.mask_path is None for s in ds)
    ds2 = open_dataset(str(tmp_path / "parts" / "*.jpg"), class_name="screw")
    assert ds2.classes == ["screw"] and [s.img_path.name for s in ds2] == ["x2.jpg"]
    with pytest.raises(DatasetError, match="does not exist. Give a meta.json"):
        open_dataset(tmp_path / "nothing")


def test_anomaly_dataset_direct_construction():
    s = Sample(Path("/x/a.png"), None, "a", "good", 0)
    ds = AnomalyDataset(Path("/x"), "x", {"test": {"a": [s]}})
    assert ds.classes == ["a"] and len(ds) == 1 and not s.is_anomalous and not s.has_mask


def test_meta_json_empty_class_in_other_split_is_dropped(tmp_path, put):
    put(tmp_path / "a.png")
    doc = {"train": {"headct": []}, "test": {"headct": [rec(cls="headct")]}}
    (tmp_path / "meta.json").write_text(json.dumps(doc))
    ds = open_dataset(tmp_path)
    assert ds.splits["train"] == {} and any("train/headct" in n for n in ds.notes)
    with pytest.raises(DatasetError, match="split 'train', class 'headct' has no records"):
        open_dataset(tmp_path, split="train")


def test_open_dataset_rejects_unknown_file_type(tmp_path):
    p = tmp_path / "list.txt"
    p.write_text("a.png\n")
    with pytest.raises(DatasetError, match="unsupported file type '.txt'"):
        open_dataset(p)


def test_zsad_data_imports_no_model_code():
    import subprocess
    import sys

    code = "import sys, zsad.data; bad = [m for m in sys.modules if m == 'torch' or m.startswith(('zsad.backbones', 'zsad.heads', 'zsad.prompts', 'zsad.detector'))]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
