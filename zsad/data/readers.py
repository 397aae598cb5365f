"""Readers of dataset descriptions: AdaCLIP/AnomalyCLIP ``meta.json``, AA-CLIP ``jsonl``, MVTec-style folders and
plain folders of images. :func:`open_dataset` picks the right one.

Formats
-------
* ``meta.json`` (APRIL-GAN -> AnomalyCLIP -> AdaCLIP -> Tipsomaly):
  ``{"train": {cls: [rec, ...]}, "test": {cls: [rec, ...]}}`` with
  ``rec = {"img_path", "mask_path" ('' if none), "cls_name", "specie_name", "anomaly" (0/1)}``;
  paths are relative to the folder holding meta.json (absolute paths are kept). Class order = JSON key order.
* AA-CLIP ``*.jsonl`` (``dataset/metadata/<DS>/{full,k}-shot.jsonl`` of AA-CLIP): one JSON object per line,
  ``{"image_path", "label" (0/1, written as 0.0/1.0), "mask_path" ('' if none), "class_name"}``, paths relative to
  the dataset's data root (AA-CLIP's ``DATA_PATH[dataset]``), so pass ``root=`` unless the jsonl sits in that root.
  The field names were confirmed from AA-CLIP's published loader and metadata files; the meta.json names
  (``img_path``, ``anomaly``, ``cls_name``, ``specie_name``) are accepted as aliases. A jsonl file is one split.
* MVTec-style folders: ``{class}/{test|train}/{good|ok|<defect>}/*.png`` and
  ``{class}/ground_truth/<defect>/{stem}_mask.png`` (or ``{stem}.<ext>`` as in BTAD/MPDD variants). Species
  ``good`` and BTAD's ``ok`` are normal; every other species (``ko``, ``crack``, ...) is anomalous. Images and
  masks are paired by file stem, never by sorted position. A defect species without a ``ground_truth`` folder
  is image-level only.
* Plain folders / globs of images: unlabelled samples (``anomaly=None``) for prediction.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> d = Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (4, 4)).save(d / "a.png")
    >>> ds = open_dataset(d); ds.classes == [d.name], ds.has_labels
    (True, False)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zsad._boundary import reading
from zsad.data.files import (
    _GLOB_CHARS,
    IMAGE_EXTENSIONS,
    _listdir,
    image_files,
    is_image_file,
    list_images,
    pair_by_stem,
)
from zsad.data.samples import AnomalyDataset, Sample, check_files_exist, group_samples
from zsad.errors import DatasetError

__all__ = [
    "IMAGE_EXTENSIONS",
    "NORMAL_SPECIES",
    "image_files",
    "list_images",
    "open_dataset",
    "pair_by_stem",
    "read_image_folder",
    "read_jsonl",
    "read_meta_json",
    "read_mvtec_folders",
    "scan_mvtec_class",
]

NORMAL_SPECIES: frozenset[str] = frozenset({"good", "ok"})
"""Species folder names that hold normal images in MVTec-style layouts (``ok`` is BTAD's)."""

# ----------------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class _Schema:
    image: tuple[str, ...]
    mask: tuple[str, ...]
    cls: tuple[str, ...]
    specie: tuple[str, ...]
    label: tuple[str, ...]
    fmt: str


_META = _Schema(("img_path",), ("mask_path",), ("cls_name",), ("specie_name",), ("anomaly",), "meta.json")
_JSONL = _Schema(
    ("image_path", "img_path"), ("mask_path",), ("class_name", "cls_name"), ("specie_name",), ("label", "anomaly"), "jsonl"
)


def _field(rec: dict, names: tuple[str, ...]) -> Any:
    for n in names:
        if n in rec:
            return rec[n]
    return _MISSING


_MISSING = object()


def _parse_label(value: Any, where: str, field_name: str) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    raise DatasetError(f"{where}: field '{field_name}' is {value!r}; it must be 0 (normal) or 1 (anomalous).")


class _RecordReader:
    """Turns description records into Samples, collecting notes; one instance per file."""

    def __init__(self, schema: _Schema, source: Path, root: Path):
        self.schema, self.source, self.root = schema, source, root
        self.normal_with_mask = 0
        self.dropped: list[str] = []

    def sample(self, rec: Any, where: str, cls_key: str | None) -> Sample:
        s = self.schema
        if not isinstance(rec, dict):
            raise DatasetError(f"{where}: a record must be a JSON object, got {type(rec).__name__}.")
        img = _field(rec, s.image)
        label = _field(rec, s.label)
        cls = _field(rec, s.cls)
        for names, value in ((s.image, img), (s.label, label)) + (((s.cls, cls),) if cls_key is None else ()):
            if value is _MISSING:
                raise DatasetError(
                    f"{where}: required field '{names[0]}' is missing (record has {sorted(rec)}). "
                    f"Each {s.fmt} record needs {s.image[0]!r}, {s.label[0]!r}, {s.mask[0]!r}"
                    f"{'' if cls_key is not None else f' and {s.cls[0]!r}'}."
                )
        if not isinstance(img, str) or not img:
            raise DatasetError(f"{where}: field '{s.image[0]}' must be a non-empty path string, got {img!r}.")
        if cls is not _MISSING and cls_key is not None and cls != cls_key:
            raise DatasetError(
                f"{where}: field '{s.cls[0]}' is {cls!r} but the record is listed under class {cls_key!r}. "
                "Make the two agree (the class key is what zsad and the official code use)."
            )
        if cls_key is None and (not isinstance(cls, str) or not cls):
            raise DatasetError(f"{where}: field '{s.cls[0]}' must be a non-empty string, got {cls!r}.")
        anomaly = _parse_label(label, where, s.label[0])
        mask = _field(rec, s.mask)
        if mask is _MISSING and s.fmt == "meta.json":
            raise DatasetError(
                f"{where}: required field 'mask_path' is missing; write \"mask_path\": \"\" for images without a mask."
            )
        if mask not in (_MISSING, None, "") and not isinstance(mask, str):
            raise DatasetError(f"{where}: field '{s.mask[0]}' must be a path string or '', got {mask!r}.")
        mask_path = self.root / mask if isinstance(mask, str) and mask else None
        if mask_path is not None and anomaly == 0:
            self.normal_with_mask += 1
            mask_path = None
        specie = _field(rec, s.specie)
        return Sample(
            img_path=self.root / img,
            mask_path=mask_path,
            cls_name=cls_key if cls_key is not None else cls,
            specie_name=specie if isinstance(specie, str) else "",
            anomaly=anomaly,
        )

    def finish(self, splits: dict[str, dict[str, list[Sample]]], split: str, name: str | None, validate: bool) -> AnomalyDataset:
        ds = AnomalyDataset(self.root, name or _default_name(self.source), splits, split=split, source=self.source)
        if self.normal_with_mask:
            ds.notes.append(
                f"{self.normal_with_mask} normal record(s) name a mask; it is ignored (normal images get all-zero "
                "masks, as in the official loaders)."
            )
        if self.dropped:
            ds.notes.append(f"Empty classes left out of other splits: {self.dropped}.")
        _note_unmasked(ds)
        if validate:
            check_files_exist(
                ds.samples(split=split),
                f"{self.source} (split '{split}')",
                f"Paths are resolved against {self.root}; fix the paths or move the files"
                + (" (pass root= for jsonl files kept outside the data folder)." if self.schema.fmt == "jsonl" else "."),
            )
        return ds


def _default_name(source: Path) -> str:
    return source.parent.name if source.is_file() or source.suffix else source.name


def _note_unmasked(ds: AnomalyDataset) -> None:
    unmasked = ds.anomalies_without_mask()
    if unmasked:
        ds.notes.append(
            f"{len(unmasked)} anomalous image(s) have no mask (image-level only; their masks read as zeros), "
            f"e.g. {unmasked[0].img_path}."
        )


# --------------------------------------------------------------------------------------------------- meta.json


def _load_json(path: Path) -> Any:
    with reading(path, DatasetError, fix="It must be a UTF-8 JSON file."), open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from exc


def _pick_split(keys: Iterable[str], split: str, source: Path) -> str:
    keys = list(keys)
    if split in keys:
        return split
    for k in keys:  # AnomalyCLIP's DAGM generator writes "Train"/"Test"
        if k.lower() == split.lower():
            return k
    raise DatasetError(f"{source} has no split '{split}'; it has {keys}. Pass split= one of those.")


def read_meta_json(
    path: str | Path, split: str = "test", *, validate: bool = True, name: str | None = None
) -> AnomalyDataset:
    """Read an AdaCLIP/AnomalyCLIP ``meta.json`` (a file, or a folder holding one).

    All splits are read; ``split`` selects the default one. Paths are relative to the folder of meta.json.

    Raises:
        DatasetError: bad JSON or structure, missing split, empty class, missing field, ``anomaly`` not 0/1,
            class key / ``cls_name`` disagreement, or (``validate``) missing files (up to 5 listed, and the count).

    Example:
        >>> import json, tempfile
        >>> from PIL import Image
        >>> d = Path(tempfile.mkdtemp()); Image.new("RGB", (4, 4)).save(d / "x.png")
        >>> rec = {"img_path": "x.png", "mask_path": "", "cls_name": "c", "specie_name": "good", "anomaly": 0}
        >>> _ = (d / "meta.json").write_text(json.dumps({"train": {}, "test": {"c": [rec]}}))
        >>> ds = read_meta_json(d); ds.classes, ds.samples()[0].anomaly
        (['c'], 0)
    """
    source = Path(path).absolute()
    if source.is_dir():
        source = source / "meta.json"
    if not source.is_file():
        raise DatasetError(f"{source} does not exist. Give a meta.json file or the folder that holds it.")
    data = _load_json(source)
    if not isinstance(data, dict) or not data:
        raise DatasetError(
            f"{source}: the top level must be an object like {{\"train\": {{...}}, \"test\": {{class: [records]}}}}."
        )
    chosen = _pick_split(data, split, source)
    reader = _RecordReader(_META, source, source.parent)
    splits: dict[str, dict[str, list[Sample]]] = {}
    for split_key, classes in data.items():
        if not isinstance(classes, dict):
            raise DatasetError(f"{source}: split '{split_key}' must map class names to lists of records.")
        if split_key == chosen and not classes:
            raise DatasetError(f"{source}: split '{split_key}' has no classes. Pass another split= or fill it in.")
        splits[split_key] = {}
        for cls_key, records in classes.items():
            where = f"{source}: split '{split_key}', class '{cls_key}'"
            if not isinstance(records, list):
                raise DatasetError(f"{where}: must be a list of records, got {type(records).__name__}.")
            if not records and split_key == chosen:
                raise DatasetError(f"{where} has no records. Remove the class or add its images.")
            if not records:  # AdaCLIP writes e.g. "train": {"headct": []} for sets without training images
                reader.dropped.append(f"{split_key}/{cls_key}")
                continue
            splits[split_key][cls_key] = [
                reader.sample(rec, f"{where}, record {i}", cls_key) for i, rec in enumerate(records)
            ]
    return reader.finish(splits, chosen, name, validate)


# ------------------------------------------------------------------------------------------------------- jsonl


def read_jsonl(
    path: str | Path,
    split: str = "test",
    *,
    root: str | Path | None = None,
    validate: bool = True,
    name: str | None = None,
) -> AnomalyDataset:
    """Read an AA-CLIP ``*.jsonl`` file (one ``{"image_path", "label", "mask_path", "class_name"}`` per line).

    Args:
        path: the jsonl file.
        split: the split name the file's samples are stored under (a jsonl file is one split).
        root: folder the paths are relative to (AA-CLIP's ``DATA_PATH[dataset]``); default: the file's folder.

    Raises:
        DatasetError: bad JSON on a line (named), missing field, label not 0/1, empty file, missing files.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> d = Path(tempfile.mkdtemp()); Image.new("RGB", (4, 4)).save(d / "x.png")
        >>> line = '{"image_path": "x.png", "label": 1.0, "mask_path": "", "class_name": "can"}'
        >>> _ = (d / "full-shot.jsonl").write_text(line + "\\n")
        >>> ds = read_jsonl(d / "full-shot.jsonl"); ds.classes, ds.samples()[0].anomaly, ds.has_masks()
        (['can'], 1, False)
    """
    source = Path(path).absolute()
    if not source.is_file():
        raise DatasetError(f"{source} does not exist. Give the path of a .jsonl file.")
    base = Path(root).absolute() if root is not None else source.parent
    reader = _RecordReader(_JSONL, source, base)
    samples = []
    with open(source, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{source}, line {lineno}: not valid JSON ({exc.msg}).") from exc
            samples.append(reader.sample(rec, f"{source}, line {lineno}", None))
    if not samples:
        raise DatasetError(f"{source} holds no records (one JSON object per line expected).")
    return reader.finish({split: group_samples(samples)}, split, name, validate)


# ------------------------------------------------------------------------------------------------ MVTec folders


def scan_mvtec_class(class_dir: Path, split: str = "test", *, cls_name: str | None = None) -> list[Sample]:
    """Samples of one MVTec-style class folder: ``{split}/{specie}/*`` with masks in ``ground_truth/{specie}``.

    Species are sorted, images sorted by name; ``good``/``ok`` species are normal. Masks pair by stem
    (``{stem}_mask.*`` or ``{stem}.*``). A defect species without a ``ground_truth/{specie}`` folder gives
    anomalous samples without masks; a mask folder that lacks an image's mask is an error.

    Raises:
        DatasetError: no ``{split}`` folder, no images, or an image without its mask.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> for n in ("test/good/0.png", "test/ko/7.png", "ground_truth/ko/7.png"):
        ...     (d / n).parent.mkdir(parents=True, exist_ok=True); (d / n).touch()
        >>> [(s.specie_name, s.anomaly, s.mask_path is not None) for s in scan_mvtec_class(d)]
        [('good', 0, False), ('ko', 1, True)]
    """
    cls = cls_name or class_dir.name
    split_dir = class_dir / split
    if split not in _listdir(class_dir):
        raise DatasetError(f"Class folder {class_dir} has no '{split}' folder (MVTec layout: {cls}/{split}/<specie>/).")
    gt_root = class_dir / "ground_truth"
    samples: list[Sample] = []
    for specie in _listdir(split_dir):
        sdir = split_dir / specie
        if not sdir.is_dir() or specie.startswith("."):
            continue
        images = image_files(sdir)
        normal = specie.lower() in NORMAL_SPECIES
        gt_dir = gt_root / specie
        if normal or not gt_dir.is_dir():
            masks: list[Path | None] = [None] * len(images)
        else:
            masks = pair_by_stem(images, image_files(gt_dir), ("_mask",), where=f"{sdir} (masks in {gt_dir})")
        samples += [Sample(p, m, cls, specie, 0 if normal else 1) for p, m in zip(images, masks)]
    if not samples:
        raise DatasetError(f"Class folder {split_dir} holds no images in <specie>/ sub-folders.")
    return samples


def _mvtec_class_dirs(folder: Path, split: str) -> list[Path]:
    if split in _listdir(folder) and (folder / split).is_dir():
        return [folder]
    return [folder / n for n in _listdir(folder) if not n.startswith(".") and (folder / n / split).is_dir()]


def read_mvtec_folders(path: str | Path, split: str = "test", *, name: str | None = None) -> AnomalyDataset:
    """Read an MVTec-style tree: a folder of class folders, or one class folder (classes sorted by name).

    Both ``test`` and ``train`` are read when present; ``split`` selects the default one.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> for n in ("01/test/ok/0.bmp", "01/test/ko/1.bmp", "01/ground_truth/ko/1.png", "01/train/ok/2.bmp"):
        ...     (d / n).parent.mkdir(parents=True, exist_ok=True); (d / n).touch()
        >>> ds = read_mvtec_folders(d); ds.classes, ds.class_counts(), len(ds.samples(split="train"))
        (['01'], {'01': (1, 1)}, 1)
    """
    folder = Path(path).absolute()
    class_dirs = _mvtec_class_dirs(folder, split)
    if not class_dirs:
        raise DatasetError(
            f"{folder} is not an MVTec-style tree: no '<class>/{split}/<specie>/' folders found."
        )
    splits: dict[str, dict[str, list[Sample]]] = {}
    for sp in dict.fromkeys([split, "test", "train"]):
        dirs = class_dirs if sp == split else _mvtec_class_dirs(folder, sp)
        if dirs:
            splits[sp] = {d.name: scan_mvtec_class(d, sp) for d in dirs}
    ds = AnomalyDataset(folder, name or folder.name, splits, split=split, source=folder)
    _note_unmasked(ds)
    return ds


# ------------------------------------------------------------------------------------------------ plain images


def read_image_folder(
    paths_or_globs: str | Path | Iterable[str | Path],
    *,
    class_name: str | None = None,
    split: str = "test",
    name: str | None = None,
) -> AnomalyDataset:
    """Unlabelled dataset (``anomaly=None``, no masks) from files, folders or globs (see :func:`list_images`).

    ``class_name`` defaults to the name of the folder given (or of the first image's folder).

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> d = Path(tempfile.mkdtemp()); Image.new("RGB", (2, 2)).save(d / "x.png")
        >>> ds = read_image_folder(d, class_name="screw"); ds.classes, ds.samples()[0].anomaly
        (['screw'], None)
    """
    files = list_images(paths_or_globs)
    first = Path(paths_or_globs) if isinstance(paths_or_globs, (str, Path)) else None
    default = first.name if first is not None and first.is_dir() else files[0].parent.name
    cls = class_name or default
    samples = [Sample(p, None, cls, "", None) for p in files]
    root = first.absolute() if first is not None and first.is_dir() else Path(os.path.commonpath([str(p.parent) for p in files]))
    return AnomalyDataset(root, name or cls, {split: {cls: samples}}, split=split, source=first)


# ------------------------------------------------------------------------------------------------------- open


def open_dataset(
    path: str | Path,
    split: str = "test",
    *,
    root: str | Path | None = None,
    validate: bool = True,
    check_mask_sizes: bool = False,
    class_name: str | None = None,
    name: str | None = None,
) -> AnomalyDataset:
    """Open a dataset, detecting its format.

    * a ``*.json`` file, or a folder holding ``meta.json`` -> :func:`read_meta_json`
    * a ``*.jsonl`` file -> :func:`read_jsonl` (``root`` = folder its paths are relative to)
    * a folder of ``<class>/test/<specie>/`` folders, or one such class folder -> :func:`read_mvtec_folders`
    * any other folder, image file or glob pattern -> :func:`read_image_folder` (unlabelled; ``class_name``)

    Args:
        path: file, folder or glob.
        split: default split (``"test"``); a meta.json lacking it raises.
        root: jsonl only: the data root.
        validate: check that every image and mask file exists (fast ``stat`` calls).
        check_mask_sizes: also open every mask/image header and compare sizes (:func:`validate_masks`).
        class_name: plain folders only: the class key of the images.
        name: dataset name (default: folder name).

    Raises:
        DatasetError: with the file, class, record and field at fault, and how to fix it.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> d = Path(tempfile.mkdtemp())
        >>> for n in ("wood/test/good/0.png", "wood/test/hole/1.png", "wood/ground_truth/hole/1_mask.png"):
        ...     (d / n).parent.mkdir(parents=True, exist_ok=True); Image.new("L", (4, 4)).save(d / n)
        >>> ds = open_dataset(d); ds.classes, ds.class_counts(), ds.has_masks("wood")
        (['wood'], {'wood': (1, 1)}, True)
    """
    p = Path(path).expanduser()
    if p.is_file() and p.suffix.lower() == ".jsonl":
        ds = read_jsonl(p, split, root=root, validate=validate, name=name)
    elif (p.is_file() and p.suffix.lower() == ".json") or (p.is_dir() and (p / "meta.json").is_file()):
        ds = read_meta_json(p, split, validate=validate, name=name)
    elif p.is_dir() and _mvtec_class_dirs(p, split):
        ds = read_mvtec_folders(p, split, name=name)
    elif p.is_file() and not is_image_file(p):
        raise DatasetError(
            f"{path}: unsupported file type '{p.suffix}'. Give a meta.json, an AA-CLIP .jsonl, an image "
            f"({', '.join(IMAGE_EXTENSIONS)}), a folder or a glob pattern."
        )
    elif p.is_dir() or p.is_file() or _GLOB_CHARS & set(str(path)):
        ds = read_image_folder(path, class_name=class_name, split=split, name=name)
    else:
        raise DatasetError(
            f"{path} does not exist. Give a meta.json (or its folder), an AA-CLIP .jsonl file, an MVTec-style "
            "folder, a folder of images or a glob pattern."
        )
    if check_mask_sizes:
        from zsad.data.masks import validate_masks

        validate_masks(ds)
    return ds
