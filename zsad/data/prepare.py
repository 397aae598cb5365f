"""Write AdaCLIP-style ``meta.json`` files for the 14 zero-shot benchmark datasets from their published layouts.

``prepare_dataset("mvtec", "/data/mvtec_anomaly_detection")`` writes ``/data/mvtec_anomaly_detection/meta.json``
(``{"train": {...}, "test": {cls: [records]}}``, paths relative to the meta.json folder), which
:func:`zsad.data.open_dataset` and the official Tipsomaly/AdaCLIP/AnomalyCLIP code read.

Layouts read (``raw_root`` may also be a parent folder of the layout for the medical sets):

============  ==========================================================================================
dataset       raw layout
============  ==========================================================================================
mvtec, mpdd,  ``<cls>/{train,test}/<specie>/*`` + ``<cls>/ground_truth/<specie>/<stem>_mask.*`` (or ``<stem>.*``);
btad, dtd     BTAD (``BTech_Dataset_transformed``): normal specie ``ok``; DTD-Synthetic: ``good``/``bad``
visa          ``split_csv/1cls.csv`` (columns object, split, label, image, mask) of ``VisA_20220922``;
              ``specie_name`` is ``''`` as in AdaCLIP
sdd           KolektorSDD ``kos*/Part*.jpg`` + ``Part*_label.bmp``: each image is cut into 3 horizontal strips
              (top/middle/bottom third); a strip is anomalous iff its label strip is non-zero; 25% of the normal
              strips go to test (sklearn ``train_test_split(test_size=0.25, random_state=42)`` re-done with
              numpy). Strips are written as PNG under ``<out>/SDD/`` as AdaCLIP's ``sdd-pre.py`` does; AdaCLIP
              listed files with ``os.listdir`` (unordered), zsad sorts, so the normal split may differ.
dagm          DAGM 2007 ``Class<i>/{Train,Test}/*.PNG`` + ``Label/<stem>_label.PNG``; every Test image is used
              (normal iff it has no label), as AnomalyCLIP's generator does (paper counts 6996/1054)
isic          ISIC 2016 ``ISBI2016_ISIC_Part1_Test_Data/*.jpg`` + ``..._Test_GroundTruth/<stem>_Segmentation.png``
cvc-clinicdb  ``Original/`` + ``Ground Truth/`` (also under ``PNG/`` or ``TIF/``), or ``images/`` + ``masks/``
cvc-colondb   ``images/`` + ``masks/`` (or ``Original/`` + ``Ground Truth/``)
tn3k          ``test-image/`` + ``test-mask/``
headct        Kaggle Head CT: ``labels.csv`` (id, hemorrhage) + ``head_ct/<id:03d>.png``
brainmri      Kaggle Brain MRI: ``brain_tumor_dataset/{yes,no}/`` (or ``yes/``, ``no/``)
br35h         Kaggle Br35H: ``yes/``, ``no/`` (``pred/`` is ignored)
============  ==========================================================================================

Any dataset whose ``raw_root`` already is an AdaCLIP-preprocessed tree (``<class key>/test/<specie>/`` for every
class, e.g. ``HeadCT_anomaly_detection/headct/test/...``) is read as MVTec-style folders instead.
Masks are always paired with images by file stem, never by sorted position; an image without its mask raises.

Example:
    >>> default_prompt_type("brainmri"), default_prompt_type("mvtec"), DATASET_TASKS["isic"]
    ('medical', 'industrial', 'pixel')
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from zsad.data.files import _listdir, find_child, image_files, pair_by_stem
from zsad.data.readers import read_meta_json, scan_mvtec_class
from zsad.data.samples import AnomalyDataset, Sample
from zsad.errors import DatasetError

__all__ = [
    "DATASET_CLASSES",
    "DATASET_TASKS",
    "DEFAULT_PROMPTS",
    "PAPER_TEST_COUNTS",
    "PREPARERS",
    "canonical_dataset_name",
    "dataset_task",
    "default_prompt_type",
    "list_prepare_datasets",
    "prepare_dataset",
    "write_meta_json",
]

Splits = dict[str, dict[str, list[Sample]]]
Preparer = Callable[[Path, Path, Sequence[str]], Splits]

DATASET_CLASSES: dict[str, tuple[str, ...]] = {
    "mvtec": ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
              "tile", "toothbrush", "transistor", "wood", "zipper"),
    "visa": ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3",
             "pcb4", "pipe_fryum"),
    "mpdd": ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"),
    "btad": ("01", "02", "03"),
    "sdd": ("SDD",),
    "dagm": tuple(f"Class{i}" for i in range(1, 11)),
    "dtd": ("Blotchy_099", "Fibrous_183", "Marbled_078", "Matted_069", "Mesh_114", "Perforated_037", "Stratified_154",
            "Woven_001", "Woven_068", "Woven_104", "Woven_125", "Woven_127"),
    "isic": ("isic",),
    "cvc-clinicdb": ("ClinicDB",),
    "cvc-colondb": ("ColonDB",),
    "tn3k": ("tn3k",),
    "headct": ("headct",),
    "brainmri": ("brain_mri",),
    "br35h": ("br35h",),
}
"""Class keys (meta.json keys, in order) of each dataset, as AdaCLIP's generators write them."""

DATASET_TASKS: dict[str, str] = {
    **{k: "both" for k in ("mvtec", "visa", "mpdd", "btad", "sdd", "dagm", "dtd")},
    **{k: "pixel" for k in ("isic", "cvc-clinicdb", "cvc-colondb", "tn3k")},
    **{k: "image" for k in ("headct", "brainmri", "br35h")},
}
"""``"image"``: image-level labels only (no masks); ``"pixel"``: anomalous images with masks only (image metrics
are undefined); ``"both"``: normal and anomalous images with masks."""

DEFAULT_PROMPTS: dict[str, str] = {k: ("medical" if v == "image" else "industrial") for k, v in DATASET_TASKS.items()}
"""Fixed-prompt type Tipsomaly uses per dataset (``medical`` for HeadCT, BrainMRI, Br35H; ``industrial`` else)."""

PAPER_TEST_COUNTS: dict[str, tuple[int, int]] = {
    "mvtec": (467, 1258), "visa": (962, 1200), "mpdd": (176, 282), "btad": (451, 290), "sdd": (181, 74),
    "dagm": (6996, 1054), "dtd": (357, 947), "isic": (0, 379), "cvc-clinicdb": (0, 612), "cvc-colondb": (0, 380),
    "tn3k": (0, 614), "headct": (100, 100), "brainmri": (98, 155), "br35h": (1500, 1500),
}
"""(normal, anomalous) test images per dataset as given in the Tipsomaly paper's Table 3."""

_ALIASES = {
    "mvtec-ad": "mvtec", "mvtecad": "mvtec", "ksdd": "sdd", "kolektorsdd": "sdd", "kolektor": "sdd",
    "dagm2007": "dagm", "dagm-2007": "dagm", "dtd-synthetic": "dtd", "isic2016": "isic", "isic-2016": "isic",
    "clinicdb": "cvc-clinicdb", "colondb": "cvc-colondb", "head-ct": "headct", "brain-mri": "brainmri",
    "br35": "br35h",
}


def canonical_dataset_name(name: str) -> str:
    """Normalise a dataset name: lower case, ``_`` -> ``-``, aliases (``clinicdb``, ``ksdd``, ``brain_mri``...).

    Unknown names are returned normalised (no error).

    Example:
        >>> canonical_dataset_name("CVC_ClinicDB"), canonical_dataset_name("Brain_MRI"), canonical_dataset_name("KSDD")
        ('cvc-clinicdb', 'brainmri', 'sdd')
    """
    key = name.strip().lower().replace("_", "-")
    return _ALIASES.get(key, key)


def _known(name: str) -> str:
    key = canonical_dataset_name(name)
    if key not in DATASET_CLASSES:
        close = difflib.get_close_matches(key, list(DATASET_CLASSES), n=3)
        raise DatasetError(
            f"Unknown dataset {name!r}{f'; did you mean {close}' if close else ''}. "
            f"Known: {list(DATASET_CLASSES)}."
        )
    return key


def default_prompt_type(dataset_name: str) -> str:
    """The fixed-prompt type Tipsomaly uses for a dataset: ``"medical"`` or ``"industrial"`` (also for unknown names).

    Example:
        >>> default_prompt_type("HeadCT"), default_prompt_type("br35h"), default_prompt_type("my_parts")
        ('medical', 'medical', 'industrial')
    """
    return DEFAULT_PROMPTS.get(canonical_dataset_name(dataset_name), "industrial")


def dataset_task(dataset_name: str) -> str | None:
    """``"image"``, ``"pixel"`` or ``"both"`` for a known dataset (see :data:`DATASET_TASKS`), else ``None``.

    Example:
        >>> dataset_task("colondb"), dataset_task("headct"), dataset_task("mvtec"), dataset_task("custom")
        ('pixel', 'image', 'both', None)
    """
    return DATASET_TASKS.get(canonical_dataset_name(dataset_name))


def list_prepare_datasets() -> list[str]:
    """Names accepted by :func:`prepare_dataset` (canonical spelling, paper order).

    Example:
        >>> len(list_prepare_datasets()), list_prepare_datasets()[:3]
        (14, ['mvtec', 'visa', 'mpdd'])
    """
    return list(PREPARERS)


# ------------------------------------------------------------------------------------------------------ helpers


def _resolve(base: Path, rel: str) -> Path | None:
    """``base/rel`` with each part matched case-insensitively, or None."""
    cur = base
    for part in Path(rel).parts:
        nxt = find_child(cur, part)
        if nxt is None:
            return None
        cur = nxt
    return cur


def _locate(raw: Path, layouts: Sequence[Sequence[str]], what: str) -> tuple[Path, list[Path]]:
    """First (folder, resolved paths) where every path of a layout exists: ``raw``, its children, grandchildren."""
    level = [raw]
    for _ in range(3):
        for base in level:
            for rels in layouts:
                found = [_resolve(base, r) for r in rels]
                if all(f is not None for f in found):
                    return base, found  # type: ignore[return-value]
        level = [d / n for d in level for n in _listdir(d) if not n.startswith(".") and (d / n).is_dir()]
    shown = " or ".join("{" + ", ".join(rels) + "}" for rels in layouts)
    raise DatasetError(
        f"{raw} does not hold the {what} layout: expected {shown} (in the folder or up to two levels below). "
        "Point raw_root at the extracted download."
    )


def _ordered(samples: list[Sample]) -> list[Sample]:
    """Species sorted, then images sorted by name: the order MVTec-style scans produce."""
    return sorted(samples, key=lambda s: (s.specie_name, s.img_path.name))


def _check_class_dirs(raw: Path, classes: Sequence[str], split: str, exact: bool = True) -> None:
    def ok(c: str) -> bool:
        d = raw / c if c in _listdir(raw) else None
        if d is None:
            return False
        return split in _listdir(d) if exact else find_child(d, split) is not None

    missing = [c for c in classes if not ok(c)]
    if missing:
        present = [n for n in _listdir(raw) if (raw / n).is_dir() and not n.startswith(".")]
        raise DatasetError(
            f"{raw}: no '<class>/{split}/' folder for {missing} (found folders {present[:20]}). "
            "Point raw_root at the folder holding the class folders, or pass classes=[...] to prepare a subset."
        )


def _single(key: str, samples: list[Sample], where: Path) -> Splits:
    if not samples:
        raise DatasetError(f"No images found for '{key}' under {where}.")
    return {"train": {}, "test": {key: _ordered(samples)}}


# ------------------------------------------------------------------------------------------------------ writers


def _mvtec_like(raw: Path, out: Path, classes: Sequence[str]) -> Splits:
    """MVTec, MPDD, BTAD, DTD-Synthetic and every AdaCLIP-preprocessed tree."""
    _check_class_dirs(raw, classes, "test")
    splits: Splits = {"train": {}, "test": {}}
    for c in classes:
        splits["test"][c] = scan_mvtec_class(raw / c, "test")
        if "train" in _listdir(raw / c):
            splits["train"][c] = scan_mvtec_class(raw / c, "train")
    return splits


def _visa(raw: Path, out: Path, classes: Sequence[str]) -> Splits:
    base, (csv_path,) = _locate(raw, [("split_csv/1cls.csv",)], "VisA (split_csv/1cls.csv)")
    splits: Splits = {"train": {c: [] for c in classes}, "test": {c: [] for c in classes}}
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f)
        need = {"object", "split", "label", "image", "mask"}
        if not need <= set(rows.fieldnames or ()):
            raise DatasetError(f"{csv_path}: expected columns {sorted(need)}, found {rows.fieldnames}.")
        for line, row in enumerate(rows, 2):
            cls, split, label = row["object"].strip(), row["split"].strip(), row["label"].strip()
            if cls not in splits["test"]:
                continue
            where = f"{csv_path}, line {line}"
            if split not in splits or label not in ("normal", "anomaly"):
                raise DatasetError(f"{where}: split {split!r} / label {label!r}; expected train|test and normal|anomaly.")
            anomaly = int(label == "anomaly")
            mask = (row["mask"] or "").strip() if anomaly else ""
            if anomaly and not mask:
                raise DatasetError(f"{where}: anomalous image {row['image']} has no mask path.")
            splits[split][cls].append(Sample(base / row["image"].strip(), base / mask if mask else None, cls, "", anomaly))
    empty = [c for c in classes if not splits["test"][c]]
    if empty:
        raise DatasetError(f"{csv_path} lists no test images for {empty}; check the file or pass classes=[...].")
    splits["train"] = {c: v for c, v in splits["train"].items() if v}
    return splits


def _normal_test_split(n: int, test_size: float = 0.25, seed: int = 42) -> set[int]:
    """Indices sklearn's ``train_test_split(test_size=0.25, random_state=42)`` puts in the test part."""
    n_test = math.ceil(test_size * n)
    return {int(i) for i in np.random.RandomState(seed).permutation(n)[:n_test]}


def _strips(height: int) -> list[tuple[int, int]]:
    return [(0, height // 3), (height // 3, height * 2 // 3), (height * 2 // 3, height)]


def _sdd(raw: Path, out: Path, classes: Sequence[str]) -> Splits:
    kos = [raw / n for n in _listdir(raw) if n.lower().startswith("kos") and (raw / n).is_dir()]
    if not kos:
        raise DatasetError(f"{raw} holds no KolektorSDD 'kos*/' folders (kos01/Part0.jpg + Part0_label.bmp).")
    cls = classes[0]
    strips: list[tuple[str, Path, int, tuple[int, int], bool]] = []  # name, image, index, rows, anomalous
    pairs: dict[Path, Path] = {}
    for kdir in kos:
        files = image_files(kdir)
        labels = [p for p in files if p.stem.lower().endswith("_label")]
        images = [p for p in files if p not in labels]
        for img, lab in zip(images, pair_by_stem(images, labels, ("_label",), where=str(kdir))):
            pairs[img] = lab
            with Image.open(img) as im, Image.open(lab) as lb:
                if im.size != lb.size:
                    raise DatasetError(f"{img} is {im.size} but its label {lab} is {lb.size}; they must match.")
                label = np.asarray(lb.convert("L"))
            for i, (a, b) in enumerate(_strips(label.shape[0])):
                strips.append((f"{kdir.name}_{img.stem}_{i}", img, i, (a, b), bool(label[a:b].max() > 0)))
    normal_ids = [k for k, s in enumerate(strips) if not s[4]]
    test_normals = {normal_ids[j] for j in _normal_test_split(len(normal_ids))}
    target = out / "SDD"
    splits: Splits = {"train": {cls: []}, "test": {cls: []}}
    for k, (name, img, _, (a, b), anomalous) in enumerate(strips):
        split, specie = ("test", "defect") if anomalous else (("test" if k in test_normals else "train"), "good")
        img_out = target / split / specie / f"{name}.png"
        mask_out = target / "ground_truth" / "defect" / f"{name}_mask.png" if anomalous else None
        _write_strip(img, img_out, a, b, mode=None)
        if mask_out is not None:
            _write_strip(pairs[img], mask_out, a, b, mode="L")
        splits[split][cls].append(Sample(img_out, mask_out, cls, specie, int(anomalous)))
    return {k: {c: _ordered(v) for c, v in d.items() if v} for k, d in splits.items()}


def _write_strip(src: Path, dst: Path, top: int, bottom: int, mode: str | None) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im = im.convert(mode) if mode else im
        im.crop((0, top, im.width, bottom)).save(dst)


def _dagm(raw: Path, out: Path, classes: Sequence[str]) -> Splits:
    _check_class_dirs(raw, classes, "Test", exact=False)
    splits: Splits = {"train": {}, "test": {}}
    for c in classes:
        for key in ("test", "train"):
            sdir = find_child(raw / c, key)
            if sdir is None:
                continue
            ldir = find_child(sdir, "Label")
            images = image_files(sdir)
            masks = pair_by_stem(images, image_files(ldir) if ldir else [], ("_label",), required=False)
            samples = [Sample(p, m, c, "defect" if m else "good", int(m is not None)) for p, m in zip(images, masks)]
            if samples:
                splits[key][c] = _ordered(samples)
        if c not in splits["test"]:
            raise DatasetError(f"{raw / c}: the Test folder holds no *.PNG images.")
    return splits


def _headct(raw: Path, out: Path, classes: Sequence[str]) -> Splits:
    base, (csv_path,) = _locate(raw, [("labels.csv",)], "Head CT (labels.csv + head_ct/*.png)")
    img_dir = next(
        (d for d in (_resolve(base, "head_ct/head_ct"), _resolve(base, "head_ct"), base) if d and image_files(d)), None
    )
    if img_dir is None:
        raise DatasetError(f"{base}: no head_ct/*.png images next to {csv_path.name}.")
    index: dict[str, Path] = {p.stem: p for p in image_files(img_dir)}
    samples, missing = [], []
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r]
    for line, row in enumerate(rows[1:], 2):
        try:
            ident, label = int(row[0].strip()), int(row[1].strip())
        except (ValueError, IndexError) as exc:
            raise DatasetError(f"{csv_path}, line {line}: expected 'id, hemorrhage' integers, got {row}.") from exc
        if label not in (0, 1):
            raise DatasetError(f"{csv_path}, line {line}: hemorrhage must be 0 or 1, got {label}.")
        path = index.get(f"{ident:03d}") or index.get(str(ident))
        if path is None:
            missing.append(f"{ident:03d}.png")
            continue
        samples.append(Sample(path, None, classes[0], "defect" if label else "good", label))
    if missing:
        raise DatasetError(
            f"{csv_path} lists {len(missing)} image(s) not found in {img_dir}: {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}. Extract the whole archive."
        )
    return _single(classes[0], samples, csv_path)


def _yes_no(*layout_roots: str) -> Preparer:
    """Writer for ``yes/`` (anomalous) + ``no/`` (normal) folders, image-level only."""
    layouts = [tuple(f"{r}/{s}".lstrip("/") for s in ("yes", "no")) for r in layout_roots]

    def writer(raw: Path, out: Path, classes: Sequence[str]) -> Splits:
        _, (yes, no) = _locate(raw, layouts, "yes/ + no/ folders")
        samples = [Sample(p, None, classes[0], "defect", 1) for p in image_files(yes)]
        samples += [Sample(p, None, classes[0], "good", 0) for p in image_files(no)]
        return _single(classes[0], samples, raw)

    return writer


def _image_mask(layouts: Sequence[tuple[str, str]], suffixes: Sequence[str] = ()) -> Preparer:
    """Writer for an image folder + mask folder of anomalous images only (segmentation sets)."""

    def writer(raw: Path, out: Path, classes: Sequence[str]) -> Splits:
        _, (img_dir, mask_dir) = _locate(raw, layouts, "image + mask folders")
        images = image_files(img_dir)
        masks = pair_by_stem(images, image_files(mask_dir), suffixes, where=f"{img_dir} (masks in {mask_dir})")
        return _single(classes[0], [Sample(p, m, classes[0], "defect", 1) for p, m in zip(images, masks)], img_dir)

    return writer


PREPARERS: dict[str, Preparer] = {
    "mvtec": _mvtec_like,
    "visa": _visa,
    "mpdd": _mvtec_like,
    "btad": _mvtec_like,
    "sdd": _sdd,
    "dagm": _dagm,
    "dtd": _mvtec_like,
    "isic": _image_mask(
        [("ISBI2016_ISIC_Part1_Test_Data", "ISBI2016_ISIC_Part1_Test_GroundTruth"), ("images", "masks")],
        ("_Segmentation",),
    ),
    "cvc-clinicdb": _image_mask(
        [("Original", "Ground Truth"), ("PNG/Original", "PNG/Ground Truth"), ("TIF/Original", "TIF/Ground Truth"),
         ("images", "masks")]
    ),
    "cvc-colondb": _image_mask([("images", "masks"), ("Original", "Ground Truth")]),
    "tn3k": _image_mask([("test-image", "test-mask")]),
    "headct": _headct,
    "brainmri": _yes_no("brain_tumor_dataset", ""),
    "br35h": _yes_no(""),
}
"""Raw-layout writers: ``writer(raw_root, out_dir, classes) -> {split: {class: [Sample]}}`` (absolute paths)."""


# ----------------------------------------------------------------------------------------------------- writing


def _rel(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base).replace(os.sep, "/")
    except ValueError:  # another drive on Windows
        return str(path)


def write_meta_json(data: AnomalyDataset | Mapping[str, Mapping[str, Sequence[Sample]]], path: str | Path) -> Path:
    """Write samples as an AdaCLIP ``meta.json`` with paths relative to its folder; ``train`` is always present.

    Classes without samples are left out. Accepts an :class:`AnomalyDataset` (all its splits) or a
    ``{split: {class: [Sample]}}`` mapping; samples must be labelled.

    Raises:
        DatasetError: an unlabelled sample (``anomaly=None``).

    Example:
        >>> import tempfile, json
        >>> d = Path(tempfile.mkdtemp())
        >>> p = write_meta_json({"test": {"c": [Sample(d / "a.png", None, "c", "good", 0)]}}, d / "meta.json")
        >>> json.loads(p.read_text())["test"]["c"][0]["img_path"], list(json.loads(p.read_text()))
        ('a.png', ['train', 'test'])
    """
    path = Path(path).absolute()
    splits = data.splits if isinstance(data, AnomalyDataset) else data
    meta: dict[str, dict[str, list[dict]]] = {"train": {}, "test": {}}
    for split, classes in splits.items():
        out = meta.setdefault(split, {})
        for cls, samples in classes.items():
            recs = []
            for s in samples:
                if s.anomaly is None:
                    raise DatasetError(f"{s.img_path} has no 0/1 label; meta.json needs labelled samples.")
                recs.append({
                    "img_path": _rel(s.img_path, path.parent),
                    "mask_path": _rel(s.mask_path, path.parent) if s.mask_path is not None else "",
                    "cls_name": cls,
                    "specie_name": s.specie_name,
                    "anomaly": int(s.anomaly),
                })
            if recs:
                out[cls] = recs
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
    return path


def _is_adaclip_tree(raw: Path, classes: Sequence[str]) -> bool:
    names = _listdir(raw)
    return all(c in names and "test" in _listdir(raw / c) for c in classes)


def prepare_dataset(
    name: str,
    raw_root: str | Path,
    out: str | Path | None = None,
    *,
    classes: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``meta.json`` for one of the 14 benchmark datasets from its published raw layout.

    Args:
        name: dataset name (``mvtec, visa, mpdd, btad, sdd, dagm, dtd, isic, cvc-clinicdb, cvc-colondb, tn3k,
            headct, brainmri, br35h``; aliases such as ``clinicdb``, ``ksdd``, ``brain_mri`` are accepted).
        raw_root: the extracted download (see the module docstring for each layout).
        out: folder for meta.json (or a ``*.json`` file path); default ``raw_root``. Paths inside are relative to
            it. SDD writes its image strips under ``<out>/SDD/``.
        classes: a subset of the class keys (default: all, and all must be present).
        overwrite: replace an existing meta.json (default: refuse).

    Returns:
        The path of the written meta.json (read back and validated).

    Raises:
        DatasetError: unknown name, layout not found, missing class folders, image without its mask, ...

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> raw = Path(tempfile.mkdtemp())
        >>> for n in ("no/n1.jpg", "yes/y1.jpg"):
        ...     (raw / n).parent.mkdir(exist_ok=True); Image.new("L", (4, 4)).save(raw / n)
        >>> from zsad.data import open_dataset
        >>> open_dataset(prepare_dataset("br35h", raw)).class_counts()
        {'br35h': (1, 1)}
    """
    key = _known(name)
    raw = Path(raw_root).expanduser().absolute()
    if not raw.is_dir():
        raise DatasetError(f"raw_root {raw} is not a folder. Extract the {key} download and pass its folder.")
    target = Path(out).expanduser().absolute() if out is not None else raw
    meta_path = target if target.suffix.lower() == ".json" else target / "meta.json"
    if meta_path.exists() and not overwrite:
        raise DatasetError(f"{meta_path} already exists; pass overwrite=True to replace it.")
    wanted = list(DATASET_CLASSES[key]) if classes is None else list(classes)
    unknown = [c for c in wanted if c not in DATASET_CLASSES[key]]
    if unknown or not wanted:
        raise DatasetError(f"{key} has no class {unknown or wanted}; its classes are {list(DATASET_CLASSES[key])}.")
    writer = _mvtec_like if _is_adaclip_tree(raw, wanted) else PREPARERS[key]
    splits = writer(raw, meta_path.parent, wanted)
    write_meta_json(splits, meta_path)
    read_meta_json(meta_path)
    return meta_path
