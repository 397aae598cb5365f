"""Atomic file writes: a file at its final path is always complete.

Example:
    >>> import tempfile, pathlib
    >>> p = write_text(pathlib.Path(tempfile.mkdtemp()) / "sub" / "a.txt", "hello")
    >>> p.read_text()
    'hello'
    >>> with atomic_path(p) as tmp:
    ...     _ = tmp.write_text("bye")
    >>> p.read_text()
    'bye'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import unicodedata
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "atomic_path", "write_bytes", "write_text", "write_json", "sha256_file", "safe_filename", "unique_names",
    "write_name_map",
]


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    try:  # make the rename itself durable where the platform allows it
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - e.g. Windows
        pass


@contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = False, mode: int | None = 0o644) -> Iterator[Path]:
    """Yield a temporary sibling of *path* to write; on success it replaces *path*, on error it is removed.

    ``durable=True`` fsyncs the file and its folder (for checkpoints that must survive a crash); ``mode`` sets the
    permissions of the result (some writers create 0600 files).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        yield tmp
        if mode is not None:
            tmp.chmod(mode)
        if durable:
            _fsync(tmp)
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = False) -> Path:
    """Write *data* to *path* atomically."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, durable: bool = False) -> Path:
    """Write UTF-8 *text* to *path* atomically."""
    return write_bytes(path, text.encode("utf-8"), durable=durable)


def write_json(path: str | os.PathLike, data: Any, *, durable: bool = False, **dumps: Any) -> Path:
    """Write *data* as indented JSON (plus a newline) to *path* atomically.

    NaN and infinite numbers are refused (``ValueError``, nothing written): they are not valid JSON.
    """
    dumps.setdefault("allow_nan", False)
    return write_text(path, json.dumps(data, indent=2, **dumps) + "\n", durable=durable)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_MAX_NAME = 120  # characters; leaves room for suffixes within the usual 255-byte limit of file names


def safe_filename(name: str, fallback: str = "item") -> str:
    """*name* usable as a file name on every platform: runs of characters other than letters, digits (of any
    script), ``_``, ``.`` and ``-`` become ``_``; leading/trailing dots are dropped; Windows device names get a
    leading ``_``. Different names can give the same result: use :func:`unique_names` for sets of outputs.

    Example:
        >>> safe_filename("a/b c"), safe_filename("..", "class"), safe_filename("金属 板"), safe_filename("con")
        ('a_b_c', 'class', '金属_板', '_con')
    """
    text = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFC", str(name))).strip(".") or fallback
    return "_" + text if text.split(".")[0].upper() in _RESERVED else text


def distinct_filename(key: str, fallback: str = "item") -> str:
    """A file name for *key* that no other key gets, from the key alone (stable across runs and resumes).

    A key that is already a safe, lower-case file name is kept as it is (``metal_nut``, ``pcb1``); any other key
    gets its :func:`safe_filename` plus ``-`` and 8 hex digits of its sha1, so keys that sanitise alike (``"a b"``,
    ``"a_b"``, ``"A B"``) or differ only in case never share a file, on any file system.

    Example:
        >>> distinct_filename("metal_nut"), distinct_filename("a b"), distinct_filename("A_B")
        ('metal_nut', 'a_b-7dbde935', 'A_B-c0cd2118')
    """
    safe = _clip(safe_filename(key, fallback))
    return safe if safe == key and key == key.lower() else f"{safe}-{_short_hash(str(key))}"


def _short_hash(key: str) -> str:
    return hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def unique_names(keys: Sequence[str], *candidates: Sequence[str]) -> list[str]:
    """One distinct, file-system-safe name per distinct key (equal keys get equal names), deterministically.

    ``candidates`` are lists parallel to ``keys`` with name choices from the most readable to the most specific
    (default: the key itself). A key takes its first choice (after :func:`safe_filename`) that no other key
    shares, compared case-insensitively as on macOS and Windows; a key whose every choice is shared gets its
    last choice plus ``-`` and 8 hex digits of the key's sha1. Names are the same whatever order the keys come
    in. Record which input each name stands for with :func:`write_name_map`.

    Example:
        >>> unique_names(["a b", "a_b", "A B", "screw"])
        ['a_b-7dbde935', 'a_b-eb2980a5', 'A_B-8aabb8bc', 'screw']
        >>> unique_names(["d/good/0.png", "d/bad/0.png"], ["0", "0"], ["good__0", "bad__0"])
        ['good__0', 'bad__0']
    """
    keys = [str(k) for k in keys]
    levels = [list(c) for c in candidates] or [keys]
    if any(len(level) != len(keys) for level in levels):
        raise ValueError("unique_names: every candidate list needs one entry per key")
    names: dict[str, str] = {}
    for level in levels:
        proposed = {k: _clip(safe_filename(level[i])) for i, k in enumerate(keys) if k not in names}
        owners: dict[str, set[str]] = {}
        for k, n in [*names.items(), *proposed.items()]:
            owners.setdefault(n.casefold(), set()).add(k)
        names.update({k: n for k, n in proposed.items() if len(owners[n.casefold()]) == 1})
    last = levels[-1]
    for i, k in enumerate(keys):
        if k not in names:
            names[k] = f"{_clip(safe_filename(last[i]))}-{_short_hash(k)}"
    return [names[k] for k in keys]


def _clip(name: str) -> str:
    return name if len(name) <= _MAX_NAME else f"{name[:_MAX_NAME]}-{_short_hash(name)}"


def write_name_map(path: str | os.PathLike, names: Sequence[str], keys: Sequence[str]) -> Path:
    """Write ``{name: key}`` (which input each output name stands for) as JSON to *path*, atomically.

    Example:
        >>> import tempfile, pathlib
        >>> p = write_name_map(pathlib.Path(tempfile.mkdtemp()) / "names.json", ["a_b-1"], ["a b"])
        >>> json.loads(p.read_text())
        {'a_b-1': 'a b'}
    """
    return write_json(path, {n: str(k) for n, k in sorted(zip(names, keys))}, ensure_ascii=False)
