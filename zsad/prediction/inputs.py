"""The inputs of a prediction run: files, folders, glob patterns and text files of paths -> one ordered list.

A text file (``.txt``) lists one image path per line (blank lines and lines starting with ``#`` are skipped;
relative paths are relative to the text file's folder). Its paths are not checked here: an image that cannot be
read is recorded with its error when the run reaches it, like any other unreadable image. Everything else is
resolved as :func:`zsad.data.list_images` does (folders recursively, globs with ``**``).

The listing is de-duplicated (each file once, first occurrence wins) and its order is the order of the results.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp()); (d / "a.png").touch(); (d / "b.png").touch()
    >>> _ = (d / "list.txt").write_text("# two images\\nb.png\\na.png\\nb.png\\n")
    >>> [p.name for p in list_inputs([d / "list.txt"])]
    ['b.png', 'a.png']
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from zsad.errors import DatasetError

__all__ = ["LIST_SUFFIXES", "list_inputs", "read_path_list"]

LIST_SUFFIXES = (".txt",)
"""Input files with these suffixes are lists of image paths, one per line."""


def read_path_list(path: str | os.PathLike) -> Iterator[Path]:
    """The paths a text file lists, in order (absolute; relative lines are taken from the file's folder)."""
    path = Path(path)
    base = path.parent.absolute()
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = line.strip()
                if text and not text.startswith("#"):
                    p = Path(text).expanduser()
                    yield Path(os.path.abspath(p if p.is_absolute() else base / p))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"The path list {path} is not UTF-8 text ({exc}); write one image path per line.") from exc


def list_inputs(items: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Resolve the inputs of a run (see the module docstring) to a de-duplicated list of absolute paths.

    Raises:
        DatasetError: a path that is neither a file, a folder nor a matching glob; nothing listed at all.
    """
    from zsad.data import list_images

    given: Iterable[str | os.PathLike] = [items] if isinstance(items, (str, os.PathLike)) else items
    seen: dict[Path, None] = {}
    for item in given:
        p = Path(item).expanduser()
        found = read_path_list(p) if p.is_file() and p.suffix.lower() in LIST_SUFFIXES else list_images(item)
        for f in found:
            seen.setdefault(Path(os.path.abspath(f)), None)
    if not seen:
        raise DatasetError(f"The inputs {[str(i) for i in given]} list no image; check the paths.")
    return list(seen)
