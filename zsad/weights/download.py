"""Environment (cache folder, mirror, offline mode) and safe, resumable single-file downloads.

Example:
    >>> is_offline(True)
    True
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import logging
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from zsad._files import sha256_file
from zsad.errors import DownloadError
from zsad.weights.table import GCS_PREFIX, INDEX_NAME, get_checkpoint

logger = logging.getLogger("zsad.weights")
_CHUNK = 1 << 20
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


# ----------------------------------------------------------------------------------------------------------------
# Environment: cache, mirror, offline
# ----------------------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """The zsad cache: ``$ZSAD_CACHE``, else ``$XDG_CACHE_HOME/zsad``, else ``~/.cache/zsad`` (not created).

    Example:
        >>> import os
        >>> cache_dir() == Path(os.environ["ZSAD_CACHE"]).expanduser() if os.environ.get("ZSAD_CACHE") else True
        True
    """
    if os.environ.get("ZSAD_CACHE"):
        return Path(os.environ["ZSAD_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "zsad"
    return Path.home() / ".cache" / "zsad"


def checkpoint_dir(name: str) -> Path:
    """The cache folder of a ``"tips"`` checkpoint: ``cache_dir() / name`` (not created).

    Example:
        >>> checkpoint_dir("tips-v1-l14-hr").name
        'tips-v1-l14-hr'
    """
    return cache_dir() / get_checkpoint(name).name


def weights_base_url() -> str:
    """Where TIPS files come from: ``$ZSAD_WEIGHTS_URL`` (a URL or a local folder) or :data:`GCS_PREFIX`.

    Always ends with ``/``; a plain folder path becomes a ``file://`` URL.

    Example:
        >>> import os
        >>> weights_base_url() == GCS_PREFIX or "ZSAD_WEIGHTS_URL" in os.environ
        True
    """
    base = os.environ.get("ZSAD_WEIGHTS_URL", "").strip()
    if not base:
        return GCS_PREFIX
    if "://" not in base:
        base = Path(base).expanduser().resolve().as_uri()
    return base.rstrip("/") + "/"


def is_offline(offline: bool | None = None) -> bool:
    """*offline* if given, else whether ``ZSAD_OFFLINE`` is set to a true value (``1``, ``true``, ``yes``, ``on``).

    Example:
        >>> is_offline(True), is_offline(False)
        (True, False)
    """
    from zsad._env import offline as _offline

    return _offline(offline)


def _timeout() -> float:
    try:
        return float(os.environ.get("ZSAD_DOWNLOAD_TIMEOUT", "60"))
    except ValueError:
        return 60.0


# ----------------------------------------------------------------------------------------------------------------
# Low-level download
# ----------------------------------------------------------------------------------------------------------------
def _write_chunk(fh: BinaryIO, data: bytes) -> None:
    """Write one chunk (a seam for tests that simulate a full disk)."""
    fh.write(data)


def _open_url(url: str, start: int = 0) -> Any:
    from zsad import __version__

    headers = {"User-Agent": f"zsad/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=_timeout())


def _is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in (403, 404, 410)
    return isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, FileNotFoundError)


def _unreachable(url: str, exc: BaseException) -> DownloadError:
    reason = getattr(exc, "reason", None) or exc
    host = urllib.parse.urlsplit(url).netloc or url
    return DownloadError(
        f"Could not reach {host} to download {url} ({reason}). Check your network connection; or point "
        "ZSAD_WEIGHTS_URL at a reachable mirror; or fetch the file on another machine and add it with "
        "`zsad weights import NAME PATH...`."
    )


def _http_error(url: str, exc: urllib.error.HTTPError) -> DownloadError:
    hint = ""
    if exc.code == 404:
        hint = " The file is not on that server: check the URL" + (
            f" and the mirror in ZSAD_WEIGHTS_URL={os.environ['ZSAD_WEIGHTS_URL']!r}."
            if os.environ.get("ZSAD_WEIGHTS_URL") else "."
        )
    elif exc.code in (401, 403):
        hint = " Access was denied: the server needs credentials or does not publish this file."
    elif exc.code >= 500:
        hint = " The server failed; try again later or use a mirror (ZSAD_WEIGHTS_URL)."
    return DownloadError(f"HTTP {exc.code} ({exc.reason}) while downloading {url}.{hint}")


def _disk_full(dest: Path, part: Path, exc: OSError) -> DownloadError:
    return DownloadError(
        f"The disk is full: writing {dest} failed ({exc.strerror or exc}). The zsad cache is {cache_dir()}; "
        "free some space there, or set ZSAD_CACHE to a folder on a larger disk. "
        f"The partial file {part} was kept so the next attempt resumes; delete it to reclaim its space."
    )


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / file system
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _file_lock(dest: Path) -> Iterator[None]:
    """Serialise processes working on *dest* (POSIX ``flock``; a no-op where unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock = dest.with_name(f".{dest.name}.lock")
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    stream = sys.stderr
    tty = bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())
    return tqdm(
        total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
        disable=not enabled or stream is None, file=stream, mininterval=0.1 if tty else 5.0, dynamic_ncols=True,
    )


def download_file(
    url: str, dest: str | os.PathLike[str], *, sha256: str | None = None, size: int | None = None,
    progress: bool = True,
) -> Path:
    """Download *url* to *dest* safely and return *dest* as a :class:`~pathlib.Path`.

    - Streams in 1 MiB chunks with a tqdm progress bar (on stderr; harmless when it is not a terminal).
    - Writes ``dest + ".part"`` first; an existing ``.part`` is continued with an HTTP ``Range`` request (a server
      that ignores Range and answers 200 gets a full download).
    - Checks *size* and *sha256* when given; on a mismatch the partial file is deleted and nothing is kept.
    - Fsyncs and atomically renames into place, replacing an existing *dest*: the final path never holds a
      partial or corrupt file.

    Raises :class:`~zsad.errors.DownloadError` for an unreachable host, an HTTP error (status and URL), an
    interrupted transfer (the ``.part`` file is kept for resuming), a checksum or size mismatch, or a full disk.
    Works for ``http(s)://`` and ``file://`` URLs.

    Example:
        >>> import hashlib, pathlib, tempfile
        >>> tmp = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (tmp / "src.bin").write_bytes(b"zsad" * 1000)
        >>> out = download_file((tmp / "src.bin").as_uri(), tmp / "out" / "copy.bin", progress=False,
        ...                     sha256=hashlib.sha256(b"zsad" * 1000).hexdigest(), size=4000)
        >>> out.read_bytes() == b"zsad" * 1000, sorted(p.name for p in out.parent.iterdir() if p.suffix != ".lock")
        (True, ['copy.bin'])
    """
    dest = Path(dest)
    _mkdir(dest.parent, dest)
    with _file_lock(dest):
        _download(url, dest, sha256=sha256, size=size, progress=progress)
    return dest


def _mkdir(folder: Path, dest: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise _disk_full(dest, dest.with_suffix(dest.suffix + ".part"), exc) from exc
        raise DownloadError(f"Cannot create the folder {folder} ({exc}); set ZSAD_CACHE to a writable folder.") from exc


def _download(
    url: str, dest: Path, *, sha256: str | None, size: int | None, progress: bool, desc: str | None = None
) -> str:
    """Download (or resume) *url* into *dest*; return the file's sha256. The caller holds the lock."""
    part = dest.with_suffix(dest.suffix + ".part")
    start = part.stat().st_size if part.is_file() else 0
    if size is not None and start > size:
        part.unlink()
        start = 0
    try:
        if size is None or start < size or not part.is_file():
            start = _stream(url, part, start, size, progress, desc or dest.name)
        actual = sha256_file(part)
        got = part.stat().st_size
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise _disk_full(dest, part, exc) from exc
        if isinstance(exc, DownloadError):
            raise
        if isinstance(exc, urllib.error.HTTPError):
            raise _http_error(url, exc) from exc
        if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, FileNotFoundError):
            raise DownloadError(f"{url} does not exist ({exc.reason}).") from exc
        if isinstance(exc, urllib.error.URLError):
            err = _unreachable(url, exc)
            if part.is_file():
                err = DownloadError(f"{err} The partial file {part} was kept; the next attempt resumes from it.")
            raise err from exc
        raise DownloadError(
            f"The download of {url} was interrupted ({exc}). The partial file {part} was kept; run the same "
            "command again to resume."
        ) from exc
    if size is not None and got != size:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url} has {got} bytes, expected {size}; the download was deleted, nothing was kept.")
    if sha256 is not None and actual != sha256.lower():
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"Checksum mismatch for {url}: expected sha256 {sha256.lower()}, got {actual}. The download was "
            f"deleted and nothing was kept at {dest}. If you use a mirror (ZSAD_WEIGHTS_URL), check its files "
            f"and its {INDEX_NAME}."
        )
    os.replace(part, dest)
    _fsync_dir(dest.parent)
    return actual


def _stream(url: str, part: Path, start: int, size: int | None, progress: bool, desc: str) -> int:
    """Fetch *url* into *part*, resuming from byte *start* when the server allows it; returns the start used."""
    try:
        resp = _open_url(url, start)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not start:
            raise
        exc.close()
        part.unlink()  # "range not satisfiable": the partial file is not a prefix of this file
        start = 0
        resp = _open_url(url)
    except (http.client.HTTPException, ConnectionError) as exc:
        raise urllib.error.URLError(exc) from exc
    with resp:
        status = getattr(resp, "status", None) or 200
        if start and status == 206:
            content_range = resp.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {start}-"):
                raise DownloadError(f"{url}: the server answered a resume request with Content-Range "
                                    f"{content_range!r}; delete {part} and try again.")
        elif start:
            logger.info("%s ignored the Range request; downloading it from the start", url)
            start = 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None and length.isdigit() else size
        if size is not None and total is not None and total != size:
            raise DownloadError(f"{url} has {total} bytes on the server, expected {size}; nothing was downloaded.")
        logger.info("downloading %s to %s", url, part)
        received = start
        try:
            with open(part, "ab" if start else "wb") as fh, _progress_bar(total, start, desc, progress) as bar:
                while chunk := resp.read(_CHUNK):
                    _write_chunk(fh, chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
        except http.client.HTTPException as exc:
            raise ConnectionError(f"connection lost after {received} bytes: {exc!r}") from exc
    if total is not None and received < total:
        raise ConnectionError(f"the server closed the connection after {received} of {total} bytes")
    return start


def _fetch_optional(url: str) -> bytes | None:
    """GET a small file; None when the server says it does not exist."""
    try:
        with _open_url(url) as resp:
            return resp.read()
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        if _is_not_found(exc):
            return None
        if isinstance(exc, urllib.error.HTTPError):
            raise _http_error(url, exc) from exc
        raise _unreachable(url, exc) from exc


def _place(src: Path, dest: Path) -> None:
    """Hard-link (or copy) *src* to *dest* atomically."""
    part = dest.with_suffix(dest.suffix + ".part")
    part.unlink(missing_ok=True)
    try:
        os.link(src, part)
    except OSError:
        try:
            shutil.copyfile(src, part)
            with open(part, "rb+") as fh:
                os.fsync(fh.fileno())
        except OSError as exc:
            part.unlink(missing_ok=True)
            if exc.errno in _DISK_FULL:
                raise _disk_full(dest, part, exc) from exc
            raise
    os.replace(part, dest)
