"""Finding image files: extensions, folders (recursive, each real file once), glob patterns, case-insensitive
children, and pairing images with masks by file stem. Used by the dataset readers and by prediction inputs.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> for n in ("b.png", "a.JPG", "notes.txt"):
    ...     _ = (d / n).write_bytes(b"")
    >>> [p.name for p in image_files(d)]
    ['a.JPG', 'b.png']
"""

from __future__ import annotations

import fnmatch
import glob as _glob
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from zsad.errors import DatasetError

__all__ = ["IMAGE_EXTENSIONS", "image_files", "is_image_file", "list_images", "find_child", "pair_by_stem"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""Extensions (lower case) treated as images; matching is case-insensitive."""


_GLOB_CHARS = set("*?[")


# ----------------------------------------------------------------------------------------------------------- files


def is_image_file(path: Path) -> bool:
    """True for a visible file whose extension is an image extension (case-insensitive).

    Example:
        >>> is_image_file(Path("a.JPG")), is_image_file(Path(".a.png")), is_image_file(Path("a.txt"))
        (True, False, False)
    """
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files of a folder, sorted by path; hidden files (``.DS_Store``, ``._x.png``) are skipped.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "b.PNG").touch(); (d / "a.jpg").touch(); (d / "n.txt").touch()
        >>> [p.name for p in image_files(d)]
        ['a.jpg', 'b.PNG']
    """
    it = _walk_files(folder) if recursive else folder.iterdir()
    return sorted(p for p in it if is_image_file(p) and p.is_file() and not _hidden_under(p, folder))


def _hidden_under(path: Path, top: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(top).parts)


def _walk_files(top: Path) -> Iterator[Path]:
    """Every file below *top*, following symbolic links to folders but entering each real folder once.

    A link back to a parent (a loop) or two links to one folder would otherwise list the same files again and
    again; :func:`list_images` also keeps each real file once.
    """
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(top, followlinks=True):
        try:
            st = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        for name in files:
            yield Path(root) / name


def list_images(paths_or_globs: str | Path | Iterable[str | Path]) -> list[Path]:
    """Resolve files, folders (recursive) and glob patterns to a sorted, de-duplicated list of image paths.

    Folders are searched recursively for png/jpg/jpeg/bmp/tif/tiff/webp (any case); a file named explicitly is
    kept whatever its extension; glob patterns follow :mod:`glob` (``**`` recursive). Order: each argument's
    matches sorted, arguments in the given order.

    Raises:
        DatasetError: a path does not exist, or nothing matched at all.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "s").mkdir()
        >>> for n in ("s/b.png", "a.JPG", "c.txt"): (d / n).touch()
        >>> [p.name for p in list_images(d)], [p.name for p in list_images(str(d / "*.jpg"))]
        (['a.JPG', 'b.png'], ['a.JPG'])
    """
    items = [paths_or_globs] if isinstance(paths_or_globs, (str, Path)) else list(paths_or_globs)
    seen: dict[Path, None] = {}
    real: set[str] = set()  # each real file once, whatever links lead to it
    for item in items:
        p = Path(item).expanduser()
        if p.is_dir():
            found = image_files(p, recursive=True)
        elif p.is_file():
            found = [p]
        elif _GLOB_CHARS & set(str(item)):
            found = _glob_images(p)
        else:
            raise DatasetError(f"Image path {item!r} does not exist. Give an image file, a folder or a glob pattern.")
        for f in found:
            target = os.path.realpath(f)
            if target not in real:
                real.add(target)
                seen.setdefault(Path(os.path.abspath(f)), None)
    if not seen:
        raise DatasetError(
            f"No image matched {[str(i) for i in items]}. zsad looks for files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)} (any case); check the path or the pattern."
        )
    return list(seen)


def _glob_images(pattern: Path) -> list[Path]:
    """Image files matching a glob; a literal extension matches in any case (``*.jpg`` also finds ``X.JPG``).

    A ``**`` pattern is matched while walking its fixed leading folder with :func:`_walk_files`, so symbolic
    link loops cannot make it list files again and again (``glob`` follows them to its recursion limit).
    """
    patterns = {str(pattern)}
    stem, dot, ext = str(pattern).rpartition(".")
    if dot and ext and not (_GLOB_CHARS & set(ext)) and "/" not in ext and os.sep not in ext:
        patterns.add(stem + "." + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in ext))
    if "**" in str(pattern):
        root, rest = _split_fixed(pattern)
        hits = {p for p in _walk_files(root)
                if any(_match_parts(p.relative_to(root).parts, _split_fixed(Path(pat))[1]) for pat in patterns)}
    else:
        hits = {Path(m) for pat in patterns for m in _glob.glob(pat)}
    return sorted(h for h in hits if is_image_file(h) and h.is_file())


def _split_fixed(pattern: Path) -> tuple[Path, tuple[str, ...]]:
    """A glob pattern as (its leading folders without wildcards, the remaining pattern parts)."""
    parts = pattern.parts
    n = next((i for i, part in enumerate(parts) if _GLOB_CHARS & set(part)), len(parts))
    return (Path(*parts[:n]) if n else Path(".")), parts[n:]


def _match_parts(parts: tuple[str, ...], patterns: tuple[str, ...]) -> bool:
    """Whether path *parts* match glob pattern *patterns* as ``glob.glob(recursive=True)`` does: ``**`` spans any
    number of folders, and wildcards do not match hidden names."""
    if not patterns:
        return not parts
    head, rest = patterns[0], patterns[1:]
    if head == "**":
        return any(
            _match_parts(parts[i:], rest) for i in range(len(parts) + 1)
            if not any(p.startswith(".") for p in parts[:i])
        )
    if not parts or (parts[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(parts[0], head) and _match_parts(parts[1:], rest)


def find_child(parent: Path, name: str) -> Path | None:
    """The entry of ``parent`` named ``name``, compared case-insensitively (exact name preferred), or None.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); (d / "Test").mkdir()
        >>> find_child(d, "test").name, find_child(d, "train")
        ('Test', None)
    """
    exact = parent / name
    if name in _listdir(parent):
        return exact
    low = name.lower()
    for entry in _listdir(parent):
        if entry.lower() == low:
            return parent / entry
    return None


def _listdir(folder: Path) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _strip_suffix(stem: str, suffixes: Sequence[str]) -> str:
    low = stem.lower()
    for suf in suffixes:
        if suf and low.endswith(suf.lower()) and len(stem) > len(suf):
            return stem[: -len(suf)]
    return stem


def pair_by_stem(
    images: Sequence[Path],
    masks: Sequence[Path],
    suffixes: Sequence[str] = ("_mask",),
    *,
    required: bool = True,
    where: str = "",
) -> list[Path | None]:
    """For each image, the mask with the same file stem (``{stem}{suffix}.*`` or ``{stem}.*``), never by position.

    Suffixes are matched case-insensitively (``_mask``, ``_label``, ``_Segmentation``); extensions may differ
    (``000.bmp`` takes ``000.png``). Masks that match no image are ignored.

    Args:
        images, masks: file paths.
        suffixes: stem suffixes a mask may carry.
        required: raise when an image has no mask (otherwise its entry is ``None``).
        where: text naming the folders, for the error message.

    Raises:
        DatasetError: two masks claim the same image, or (``required``) images without a mask (up to 5 named).

    Example:
        >>> imgs = [Path("7.png"), Path("70.png")]
        >>> masks = sorted([Path("7_mask.png"), Path("70_mask.png")])  # sorted: 70_mask first!
        >>> [m.name for m in pair_by_stem(imgs, masks)]
        ['7_mask.png', '70_mask.png']
    """
    index: dict[str, Path] = {}
    for m in masks:
        key = _strip_suffix(m.stem, suffixes)
        if key in index:
            raise DatasetError(
                f"Masks {index[key]} and {m} both match images with stem '{key}'{' in ' + where if where else ''}; "
                "keep one mask per image."
            )
        index[key] = m
    out = [index.get(p.stem) for p in images]
    missing = [p for p, m in zip(images, out) if m is None]
    if required and missing:
        used = {m for m in out if m is not None}
        orphans = [m.name for m in masks if m not in used]
        shown = "\n".join(f"  {p}" for p in missing[:5])
        more = f"\n  ... and {len(missing) - 5} more" if len(missing) > 5 else ""
        hint = f" Masks matching no image: {orphans[:5]}{' ...' if len(orphans) > 5 else ''}." if orphans else ""
        sfx = " or ".join(f"'<stem>{s}.<ext>'" for s in suffixes if s)
        raise DatasetError(
            f"{len(missing)} image(s){' in ' + where if where else ''} have no mask:\n{shown}{more}\n"
            f"Masks are paired with images by file stem: image '<stem>.<ext>' takes mask {sfx or ''}"
            f"{' or ' if sfx else ''}'<stem>.<ext>'.{hint} Add or rename the masks."
        )
    return out
