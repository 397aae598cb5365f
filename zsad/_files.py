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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_path", "write_bytes", "write_text", "write_json", "sha256_file", "safe_filename"]


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
    """Write *data* as indented JSON (plus a newline) to *path* atomically."""
    return write_text(path, json.dumps(data, indent=2, **dumps) + "\n", durable=durable)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def safe_filename(name: str, fallback: str = "item") -> str:
    """*name* usable as a file name on every platform: runs of characters other than ``A-Za-z0-9._-`` become ``_``.

    Example:
        >>> safe_filename("a/b c"), safe_filename("..", "class")
        ('a_b_c', 'class')
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip(".") or fallback
