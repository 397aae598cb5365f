"""prepare_dataset: each of the 14 writers on a tiny synthetic replica of its raw layout.

File names are chosen so that pairing images and masks by sorted position would give the wrong pair
(``7.png``/``70.png`` with ``7_mask.png``/``70_mask.png`` sort in opposite orders; orphan masks shift positions),
so every test also proves that pairing is by file stem.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from zsad.data import (
    DATASET_CLASSES,
    DATASET_TASKS,
    DEFAULT_PROMPTS,
    PAPER_TEST_COUNTS,
    PREPARERS,
    Sample,
    dataset_task,
    default_prompt_type,
    list_prepare_datasets,
    open_dataset,
    prepare_dataset,
    write_meta_json,
)
from zsad.data.prepare import _normal_test_split
from zsad.errors import DatasetError

ALL = ["mvtec", "visa", "mpdd", "btad", "sdd", "dagm", "dtd", "isic", "cvc-clinicdb", "cvc-colondb", "tn3k",
       "headct", "brainmri", "br35h"]


def pairs(ds, cls=None):
    """{image name: mask name} of the masked samples."""
    return {s.img_path.name: s.mask_path.name for s in ds.samples(cls) if s.mask_path is not None}


def records(meta_path):
    return json.loads(meta_path.read_text())


# --------------------------------------------------------------------------------------------------- registry


def test_registry_names_classes_prompts_tasks():
    assert list_prepare_datasets() == ALL == list(PREPARERS) == list(DATASET_CLASSES)
    assert set(DEFAULT_PROMPTS) == set(DATASET_TASKS) == set(PAPER_TEST_COUNTS) == set(ALL)
    assert {k for k, v in DEFAULT_PROMPTS.items() if v == "medical"} == {"headct", "brainmri", "br35h"}
    assert {k for k, v in DATASET_TASKS.items() if v == "image"} == {"headct", "brainmri", "br35h"}
    assert {k for k, v in DATASET_TASKS.items() if v == "pixel"} == {"isic", "cvc-clinicdb", "cvc-colondb", "tn3k"}
    assert default_prompt_type("Brain_MRI") == "medical" and default_prompt_type("unknown") == "industrial"
    assert dataset_task("ClinicDB") == "pixel" and dataset_task("x") is None
    assert len(DATASET_CLASSES["mvtec"]) == 15 and len(DATASET_CLASSES["visa"]) == 12
    assert DATASET_CLASSES["dagm"][-1] == "Class10" and DATASET_CLASSES["brainmri"] == ("brain_mri",)


def test_unknown_dataset_and_class(tmp_path):
    with pytest.raises(DatasetError, match=r"Unknown dataset 'mvtek'; did you mean \['mvtec'"):
        prepare_dataset("mvtek", tmp_path)
    with pytest.raises(DatasetError, match="mvtec has no class"):
        prepare_dataset("mvtec", tmp_path, classes=["bottel"])
    with pytest.raises(DatasetError, match="is not a folder"):
        prepare_dataset("mvtec", tmp_path / "missing")


# ----------------------------------------------------------------------------------------------- MVTec family


@pytest.mark.parametrize(
    "name, cls, normal, defect, ext, mask_of",
    [
        ("mvtec", "metal_nut", "good", "scratch", ".png", lambda s: f"{s}_mask.png"),
        ("mpdd", "tubes", "good", "anomalous", ".png", lambda s: f"{s}_mask.png"),
        ("dtd", "Woven_001", "good", "bad", ".png", lambda s: f"{s}_mask.png"),
        ("btad", "03", "ok", "ko", ".bmp", lambda s: f"{s}.bmp"),
        ("btad", "01", "ok", "ko", ".bmp", lambda s: f"{s}.png"),
    ],
)
def test_mvtec_family(tmp_path, put, name, cls, normal, defect, ext, mask_of):
    raw = tmp_path / "raw"
    put(raw / cls / "train" / normal / f"000{ext}")
    put(raw / cls / "test" / normal / f"001{ext}")
    for stem, box in (("7", (0, 0, 1, 1)), ("70", (0, 0, 7, 7))):
        put(raw / cls / "test" / defect / f"{stem}{ext}")
        put(raw / cls / "ground_truth" / defect / mask_of(stem), box=box)
    put(raw / cls / "ground_truth" / defect / mask_of("5"))  # orphan mask
    with pytest.raises(DatasetError, match="pass classes=\\[...\\] to prepare a subset"):
        prepare_dataset(name, raw)
    meta = prepare_dataset(name, raw, classes=[cls])
    assert meta == raw / "meta.json"
    doc = records(meta)
    assert list(doc) == ["train", "test"] and list(doc["test"]) == [cls]
    by_img = {r["img_path"]: r for r in doc["test"][cls]}
    assert by_img[f"{cls}/test/{defect}/7{ext}"]["mask_path"] == f"{cls}/ground_truth/{defect}/{mask_of('7')}"
    assert by_img[f"{cls}/test/{normal}/001{ext}"] == {
        "img_path": f"{cls}/test/{normal}/001{ext}", "mask_path": "", "cls_name": cls, "specie_name": normal, "anomaly": 0
    }
    ds = open_dataset(meta)
    assert pairs(ds) == {f"7{ext}": mask_of("7"), f"70{ext}": mask_of("70")}
    assert ds.class_counts() == {cls: (1, 2)}
    assert len(ds.samples(split="train")) == 1
    assert [s.specie_name for s in ds.samples()] == sorted([normal, defect, defect])  # species sorted


def test_mvtec_image_without_mask_names_it(tmp_path, put):
    raw = tmp_path / "raw"
    put(raw / "bottle/test/broken_large/000.png")
    put(raw / "bottle/test/broken_large/001.png")
    put(raw / "bottle/ground_truth/broken_large/000_mask.png")
    with pytest.raises(DatasetError, match=r"1 image\(s\) in .*broken_large.* have no mask:\n.*001.png"):
        prepare_dataset("mvtec", raw, classes=["bottle"])


def test_existing_meta_needs_overwrite_and_out_elsewhere(tmp_path, put):
    raw = tmp_path / "raw"
    put(raw / "bottle/test/good/000.png")
    prepare_dataset("mvtec", raw, classes=["bottle"])
    with pytest.raises(DatasetError, match="already exists; pass overwrite=True"):
        prepare_dataset("mvtec", raw, classes=["bottle"])
    prepare_dataset("mvtec", raw, classes=["bottle"], overwrite=True)
    meta = prepare_dataset("mvtec", raw, tmp_path / "metas" / "mvtec.json", classes=["bottle"])
    assert records(meta)["test"]["bottle"][0]["img_path"] == "../raw/bottle/test/good/000.png"
    assert open_dataset(meta).samples()[0].img_path.is_file()


# ------------------------------------------------------------------------------------------------------- VisA


def test_visa_split_csv(tmp_path, put):
    raw = tmp_path / "VisA_20220922"
    rows = [
        ("candle", "train", "normal", "candle/Data/Images/Normal/0000.JPG", ""),
        ("pcb1", "test", "normal", "pcb1/Data/Images/Normal/0000.JPG", ""),
        ("candle", "test", "anomaly", "candle/Data/Images/Anomaly/070.JPG", "candle/Data/Masks/Anomaly/070.png"),
        ("candle", "test", "normal", "candle/Data/Images/Normal/0001.JPG", ""),
        ("candle", "test", "anomaly", "candle/Data/Images/Anomaly/007.JPG", "candle/Data/Masks/Anomaly/007.png"),
    ]
    for row in rows:
        put(raw / row[3], mode="RGB")
        if row[4]:
            put(raw / row[4])
    (raw / "split_csv").mkdir()
    text = "object,split,label,image,mask\n" + "\n".join(",".join(r) for r in rows) + "\n"
    (raw / "split_csv/1cls.csv").write_text(text)
    ds = open_dataset(prepare_dataset("visa", raw, classes=["candle"]))
    assert ds.classes == ["candle"]
    assert [s.img_path.name for s in ds.samples()] == ["070.JPG", "0001.JPG", "007.JPG"]  # CSV order
    assert pairs(ds) == {"070.JPG": "070.png", "007.JPG": "007.png"}
    assert {s.specie_name for s in ds.samples()} == {""}
    assert len(ds.samples(split="train")) == 1
    with pytest.raises(DatasetError, match="lists no test images for \\['capsules'\\]"):
        prepare_dataset("visa", raw, classes=["capsules"], overwrite=True)
    (raw / "split_csv/1cls.csv").write_text(text.replace("candle/Data/Masks/Anomaly/007.png", ""))
    with pytest.raises(DatasetError, match=r"1cls.csv, line 6: anomalous image .*007.JPG has no mask path"):
        prepare_dataset("visa", raw, classes=["candle"], overwrite=True)
    (raw / "split_csv/1cls.csv").write_text(text.replace("test,normal", "test,fine"))
    with pytest.raises(DatasetError, match="expected train|test and normal|anomaly"):
        prepare_dataset("visa", raw, classes=["candle"], overwrite=True)
    (raw / "split_csv/1cls.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="expected columns"):
        prepare_dataset("visa", raw, classes=["candle"], overwrite=True)
    with pytest.raises(DatasetError, match=r"does not hold the VisA \(split_csv/1cls.csv\) layout"):
        prepare_dataset("visa", tmp_path / "VisA_20220922" / "candle", classes=["candle"])


# -------------------------------------------------------------------------------------------------------- SDD


def test_sdd_strips_and_split(tmp_path, put):
    raw = tmp_path / "KolektorSDD"
    # Part1 has a defect in its top third; Part10 has none. Sorted: Part1.jpg < Part10.jpg but
    # Part10_label.bmp < Part1_label.bmp, so positional pairing would give Part1 an empty label.
    put(raw / "kos01/Part1.jpg", size=(4, 9), value=100)
    put(raw / "kos01/Part1_label.bmp", size=(4, 9), box=(0, 0, 2, 2))
    put(raw / "kos01/Part10.jpg", size=(4, 9), value=50)
    put(raw / "kos01/Part10_label.bmp", size=(4, 9))
    put(raw / "kos02/Part0.jpg", size=(4, 9))
    put(raw / "kos02/Part0_label.bmp", size=(4, 9), box=(0, 8, 4, 9))  # bottom strip
    meta = prepare_dataset("sdd", raw)
    ds = open_dataset(meta)
    assert ds.classes == ["SDD"]
    assert pairs(ds) == {"kos01_Part1_0.png": "kos01_Part1_0_mask.png", "kos02_Part0_2.png": "kos02_Part0_2_mask.png"}
    normal, anomalous = ds.class_counts()["SDD"]
    n_normal = 9 - 2
    assert anomalous == 2 and normal == math.ceil(0.25 * n_normal)
    assert len(ds.samples(split="train")) == n_normal - normal
    strip = ds.samples()[0]
    assert strip.img_path == raw / "SDD/test/defect/kos01_Part1_0.png"
    with Image.open(strip.img_path) as im:
        assert im.size == (4, 3) and np.asarray(im).max() == 100
    assert int(ds.load_mask(strip).sum()) == 4
    # the written tree is AdaCLIP's: preparing again reads it as MVTec-style folders
    assert open_dataset(prepare_dataset("sdd", raw, overwrite=True)).class_counts() == ds.class_counts()


def test_sdd_errors(tmp_path, put):
    with pytest.raises(DatasetError, match="no KolektorSDD 'kos\\*/' folders"):
        prepare_dataset("sdd", tmp_path)
    put(tmp_path / "kos01/Part0.jpg", size=(4, 9))
    put(tmp_path / "kos01/Part0_label.bmp", size=(4, 6))
    with pytest.raises(DatasetError, match="must match"):
        prepare_dataset("sdd", tmp_path)
    put(tmp_path / "kos01/Part2.jpg", size=(4, 9))
    with pytest.raises(DatasetError, match="have no mask:\n.*Part2.jpg"):
        prepare_dataset("sdd", tmp_path)


def test_normal_split_matches_sklearn():
    # test indices of sklearn 1.9.1 train_test_split(range(n), test_size=0.25, random_state=42)
    # (hard-coded: importing sklearn costs seconds)
    expected = {5: {1, 4}, 7: {0, 1}, 30: {8, 9, 15, 17, 23, 24, 27, 28}}
    for n, test in expected.items():
        assert _normal_test_split(n) == test


# ------------------------------------------------------------------------------------------------------- DAGM


def test_dagm_2007(tmp_path, put):
    raw = tmp_path / "DAGM2007"
    for stem in ("5", "7", "70"):
        put(raw / f"Class1/Test/{stem}.PNG")
    put(raw / "Class1/Test/Label/7_label.PNG", box=(0, 0, 1, 1))
    put(raw / "Class1/Test/Label/70_label.PNG", box=(0, 0, 7, 7))
    (raw / "Class1/Test/Label/Labels.txt").write_text("1 0 ...")
    put(raw / "Class1/Train/1.PNG")
    put(raw / "Class1/Train/Label/1_label.PNG")
    put(raw / "Class2/Test/2.PNG")
    ds = open_dataset(prepare_dataset("dagm", raw, classes=["Class1", "Class2"]))
    assert ds.classes == ["Class1", "Class2"]
    assert pairs(ds, "Class1") == {"7.PNG": "7_label.PNG", "70.PNG": "70_label.PNG"}
    assert ds.class_counts() == {"Class1": (1, 2), "Class2": (1, 0)}
    assert int(ds.load_mask(ds.samples("Class1")[1]).sum()) == 49
    assert [s.anomaly for s in ds.samples("Class1", split="train")] == [1]
    with pytest.raises(DatasetError, match=r"no '<class>/Test/' folder for \['Class3'"):
        prepare_dataset("dagm", raw, classes=["Class3"], overwrite=True)
    (raw / "Class4/Test").mkdir(parents=True)
    with pytest.raises(DatasetError, match="holds no \\*.PNG images"):
        prepare_dataset("dagm", raw, classes=["Class4"], overwrite=True)


# ---------------------------------------------------------------------------------------------- segmentation


SEG_CASES = [
    ("isic", "isic", "ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth",
     ["ISIC_7.jpg", "ISIC_70.jpg"], ["ISIC_7_Segmentation.png", "ISIC_70_Segmentation.png"]),
    ("cvc-clinicdb", "ClinicDB", "PNG/Original", "PNG/Ground Truth", ["7.png", "70.png"], ["5.png", "7.png", "70.png"]),
    ("cvc-clinicdb", "ClinicDB", "Original", "Ground Truth", ["7.tif", "70.tif"], ["7.tif", "70.tif", "5.tif"]),
    ("cvc-colondb", "ColonDB", "images", "masks", ["7.png", "70.png"], ["0.png", "7.png", "70.png"]),
    ("tn3k", "tn3k", "test-image", "test-mask", ["0007.jpg", "0070.jpg"], ["0001.jpg", "0007.jpg", "0070.jpg"]),
]


@pytest.mark.parametrize("name, cls, img_dir, mask_dir, images, masks", SEG_CASES)
def test_segmentation_sets(tmp_path, put, name, cls, img_dir, mask_dir, images, masks):
    raw = tmp_path / "download"
    base = raw / "extracted"  # the layout may sit below raw_root
    for n in images:
        put(base / img_dir / n, mode="RGB")
    for n in masks:
        put(base / mask_dir / n, box=(0, 0, 2, 2) if "7" in n else None)
    ds = open_dataset(prepare_dataset(name, raw))
    assert ds.classes == [cls] and ds.class_counts() == {cls: (0, 2)}
    stems = {k.rsplit(".", 1)[0]: v.rsplit(".", 1)[0].replace("_Segmentation", "") for k, v in pairs(ds).items()}
    assert len(stems) == 2 and all(k == v for k, v in stems.items()), stems
    assert {s.specie_name for s in ds.samples()} == {"defect"}


def test_segmentation_missing_mask_and_layout(tmp_path, put):
    put(tmp_path / "test-image/0001.jpg")
    put(tmp_path / "test-image/0002.jpg")
    put(tmp_path / "test-mask/0001.jpg")
    with pytest.raises(DatasetError, match="have no mask:\n.*0002.jpg"):
        prepare_dataset("tn3k", tmp_path)
    with pytest.raises(DatasetError, match=r"expected \{images, masks\} or \{Original, Ground Truth\}"):
        prepare_dataset("cvc-colondb", tmp_path / "test-image")


def test_tn3k_jpeg_masks_warn_about_grey_values(tmp_path, put):
    put(tmp_path / "test-image/0001.jpg")
    m = np.zeros((16, 16), np.uint8)
    m[3:11, 3:11] = 255
    (tmp_path / "test-mask").mkdir()
    Image.fromarray(m).save(tmp_path / "test-mask/0001.jpg")  # JPEG ringing puts grey values around the edge
    ds = open_dataset(prepare_dataset("tn3k", tmp_path))
    with pytest.warns(UserWarning, match="binarised with > 0"):
        ds.load_mask(ds.samples()[0], 16)


# --------------------------------------------------------------------------------------------- image-level


def test_headct_labels_csv(tmp_path, put):
    raw = tmp_path / "head_ct"
    for i in (0, 1, 2):
        put(raw / f"head_ct/head_ct/{i:03d}.png")
    (raw / "labels.csv").write_text("id, hemorrhage\n0,1\n1,0\n2, 1\n")
    ds = open_dataset(prepare_dataset("headct", raw))
    assert ds.classes == ["headct"] and ds.class_counts() == {"headct": (1, 2)}
    assert {s.img_path.name: s.anomaly for s in ds.samples()} == {"000.png": 1, "001.png": 0, "002.png": 1}
    assert not ds.has_masks() and len(ds.anomalies_without_mask()) == 2
    assert records(raw / "meta.json")["test"]["headct"][0]["mask_path"] == ""
    (raw / "labels.csv").write_text("id, hemorrhage\n0,1\n9,0\n")
    with pytest.raises(DatasetError, match=r"lists 1 image\(s\) not found .*\['009.png'\]"):
        prepare_dataset("headct", raw, overwrite=True)
    (raw / "labels.csv").write_text("id, hemorrhage\n0,x\n")
    with pytest.raises(DatasetError, match="line 2: expected 'id, hemorrhage' integers"):
        prepare_dataset("headct", raw, overwrite=True)
    (raw / "labels.csv").write_text("id, hemorrhage\n0,3\n")
    with pytest.raises(DatasetError, match="hemorrhage must be 0 or 1"):
        prepare_dataset("headct", raw, overwrite=True)


@pytest.mark.parametrize(
    "name, cls, sub", [("brainmri", "brain_mri", "brain_tumor_dataset"), ("brainmri", "brain_mri", ""), ("br35h", "br35h", "")]
)
def test_yes_no_sets(tmp_path, put, name, cls, sub):
    base = tmp_path / sub if sub else tmp_path
    put(base / "yes/Y1.jpg")
    put(base / "yes/Y2.jpg")
    put(base / "no/1 no.jpeg")
    put(base / "pred/pred0.jpg")  # Br35H's unlabelled folder is ignored
    ds = open_dataset(prepare_dataset(name, tmp_path))
    assert ds.classes == [cls] and ds.class_counts() == {cls: (1, 2)}
    assert not ds.has_masks() and {s.specie_name for s in ds.samples()} == {"good", "defect"}


def test_yes_no_empty_and_missing(tmp_path):
    with pytest.raises(DatasetError, match="yes/ \\+ no/ folders"):
        prepare_dataset("br35h", tmp_path)
    (tmp_path / "yes").mkdir()
    (tmp_path / "no").mkdir()
    with pytest.raises(DatasetError, match="No images found for 'br35h'"):
        prepare_dataset("br35h", tmp_path)


# --------------------------------------------------------------------------------- AdaCLIP-preprocessed trees


def test_adaclip_preprocessed_tree_is_read_as_folders(tmp_path, put):
    raw = tmp_path / "HeadCT_anomaly_detection"
    put(raw / "headct/test/good/000.png")
    put(raw / "headct/test/defect/001.png")
    ds = open_dataset(prepare_dataset("headct", raw))
    assert ds.class_counts() == {"headct": (1, 1)} and not ds.has_masks()


def test_write_meta_json_rejects_unlabelled(tmp_path, put):
    p = put(tmp_path / "a.png")
    with pytest.raises(DatasetError, match="has no 0/1 label"):
        write_meta_json({"test": {"c": [Sample(p, None, "c", "", None)]}}, tmp_path / "meta.json")
    ds = open_dataset(tmp_path / "a.png")
    assert not ds.has_labels
