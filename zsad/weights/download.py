"""Environment (cache folder, mirror, offline mode) and safe, resumable single-file downloads.

Example:
    >>> is_offline(True)
    True
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import logging
import os
import shutil
import sys
import urllib.error
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from zsad._files import sha256_file
from zsad.errors import DownloadError
from zsad.weights.table import GCS_PREFIX, INDEX_NAME, get_checkpoint
from zsad.weights.transport import Deadline, open_url, read_chunks, timeout

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


# ----------------------------------------------------------------------------------------------------------------
# Low-level download
# ----------------------------------------------------------------------------------------------------------------
def _write_chunk(fh: BinaryIO, data: bytes) -> None:
    """Write one chunk (a seam for tests that simulate a full disk)."""
    fh.write(data)


def _is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in (403, 404, 410)
    return isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, FileNotFoundError)


def _unreachable(url: str, exc: BaseException) -> DownloadError:
    reason = getattr(exc, "reason", None) or exc
    host = urllib.parse.urlsplit(url).netloc or url
    err = _Unreachable(
        f"Could not reach {host} to download {url} ({reason}). Check your network connection; or point "
        "ZSAD_WEIGHTS_URL at a reachable mirror; or fetch the file on another machine and add it with "
        "`zsad weights import NAME PATH...`."
    )
    err.why = (f"{host} could not be reached ({reason}; check the network connection, or set ZSAD_WEIGHTS_URL to "
               "a reachable mirror)")
    return err


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


class _Unreachable(DownloadError):
    """The host could not be reached (no network, DNS failure, refused connection)."""


def _part_paths(dest: Path) -> tuple[Path, Path]:
    """The partial file of *dest* and its record (URL, ETag and length the server announced)."""
    part = dest.with_suffix(dest.suffix + ".part")
    return part, part.with_name(part.name + ".json")


def _read_part_record(record: Path) -> dict[str, Any]:
    try:
        data = json.loads(record.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _discard(part: Path, record: Path) -> None:
    part.unlink(missing_ok=True)
    record.unlink(missing_ok=True)


def _download(
    url: str, dest: Path, *, sha256: str | None, size: int | None, progress: bool, desc: str | None = None
) -> str:
    """Download (or resume) *url* into *dest*; return the file's sha256. The caller holds the lock.

    A partial file is resumed only when the result can be verified: against a known sha256, or else against the
    server's ``ETag`` (sent as ``If-Range``, so a changed file comes back whole) and total length recorded when
    the partial file was started. Otherwise the download starts over.
    """
    part, record = _part_paths(dest)
    start = part.stat().st_size if part.is_file() else 0
    known = _read_part_record(record)
    if start and size is not None and start > size:
        _discard(part, record)
        start = 0
    if start and sha256 is None and not (known.get("url") == url and known.get("etag") and known.get("total")):
        logger.info("%s: no checksum and no server validator for the partial file; starting over", url)
        _discard(part, record)
        start = 0
    deadline = Deadline(timeout(), url)
    try:
        with deadline:
            if sha256 is None or size is None or start < size or not part.is_file():
                _stream(url, part, record, start, size, progress, desc or dest.name, deadline, known)
        actual = sha256_file(part)
        got = part.stat().st_size
    except OSError as exc:
        raise _download_error(url, dest, part, exc, deadline) from exc
    if size is not None and got != size:
        _discard(part, record)
        raise DownloadError(f"{url} has {got} bytes, expected {size}; the download was deleted, nothing was kept.")
    if sha256 is not None and actual != sha256.lower():
        _discard(part, record)
        raise DownloadError(
            f"Checksum mismatch for {url}: expected sha256 {sha256.lower()}, got {actual}. The download was "
            f"deleted and nothing was kept at {dest}. If you use a mirror (ZSAD_WEIGHTS_URL), check its files "
            f"and its {INDEX_NAME}."
        )
    os.replace(part, dest)
    record.unlink(missing_ok=True)
    _fsync_dir(dest.parent)
    return actual


def _download_error(url: str, dest: Path, part: Path, exc: OSError, deadline: Deadline) -> DownloadError:
    """The one :class:`DownloadError` for an OS/network failure during a download."""
    if isinstance(exc, DownloadError):
        return exc
    if deadline.expired:
        try:
            deadline.check()
        except DownloadError as slow:
            return DownloadError(f"{slow} The partial file {part} was kept; the next attempt resumes from it.")
    if exc.errno in _DISK_FULL:
        return _disk_full(dest, part, exc)
    if isinstance(exc, TimeoutError) or isinstance(getattr(exc, "reason", None), TimeoutError):
        return DownloadError(
            f"The server sent nothing for {timeout():g} s while downloading {url} (ZSAD_DOWNLOAD_TIMEOUT="
            f"{timeout():g}). Try again later, use a mirror (ZSAD_WEIGHTS_URL), or raise ZSAD_DOWNLOAD_TIMEOUT."
            + (f" The partial file {part} was kept; the next attempt resumes from it." if part.is_file() else "")
        )
    if isinstance(exc, urllib.error.HTTPError):
        return _http_error(url, exc)
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, FileNotFoundError):
        return DownloadError(f"{url} does not exist ({exc.reason}).")
    if isinstance(exc, urllib.error.URLError):
        err = _unreachable(url, exc)
        if part.is_file():
            kept = _Unreachable(f"{err} The partial file {part} was kept; the next attempt resumes from it.")
            kept.why, err = err.why, kept
        return err
    return DownloadError(
        f"The download of {url} was interrupted ({exc}). The partial file {part} was kept; run the same "
        "command again to resume."
    )


def _stream(
    url: str, part: Path, record: Path, start: int, size: int | None, progress: bool, desc: str, deadline: Deadline,
    known: dict[str, Any],
) -> None:
    """Fetch *url* into *part*, resuming from byte *start* when the server confirms it is the same file."""
    validator = known.get("etag") if start and known.get("url") == url else None
    try:
        resp = open_url(url, start, if_range=validator)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not start:
            raise
        exc.close()
        _discard(part, record)  # "range not satisfiable": the partial file is not a prefix of this file
        start, resp = 0, open_url(url)
    except (http.client.HTTPException, ConnectionError) as exc:
        raise urllib.error.URLError(exc) from exc
    with resp:
        status = getattr(resp, "status", None) or 200
        etag = resp.headers.get("ETag")
        if start and status == 206:
            content_range = resp.headers.get("Content-Range", "")
            announced = content_range.rpartition("/")[2]
            if not content_range.startswith(f"bytes {start}-"):
                raise DownloadError(f"{url}: the server answered a resume request with Content-Range "
                                    f"{content_range!r}; delete {part} and try again.")
            if validator and (etag != validator or announced != str(known.get("total"))):
                resp.close()  # the server ignored If-Range and the file changed: start over
                _discard(part, record)
                return _stream(url, part, record, 0, size, progress, desc, deadline, {})
        elif start:
            logger.info("%s sent the whole file instead of a range; downloading it from the start", url)
            start = 0
        length = resp.headers.get("Content-Length")
        total = start + int(length) if length is not None and length.isdigit() else size
        if size is not None and total is not None and total != size:
            raise DownloadError(f"{url} has {total} bytes on the server, expected {size}; nothing was downloaded.")
        if not start:
            strong = etag if etag and not etag.startswith("W/") else None
            record.write_text(json.dumps({"url": url, "etag": strong, "total": total}))
        logger.info("downloading %s to %s", url, part)
        received = start
        try:
            with open(part, "ab" if start else "wb") as fh, _progress_bar(total, start, desc, progress) as bar:
                for chunk in read_chunks(resp, deadline):
                    _write_chunk(fh, chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
        except http.client.HTTPException as exc:
            raise ConnectionError(f"connection lost after {received} bytes: {exc!r}") from exc
    deadline.check()
    if total is not None and received < total:
        raise ConnectionError(f"the server closed the connection after {received} of {total} bytes")


def _fetch_optional(url: str) -> bytes | None:
    """GET a small file; None when the server says it does not exist."""
    deadline = Deadline(timeout(), url)
    try:
        with deadline, open_url(url) as resp:
            return b"".join(read_chunks(resp, deadline))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        deadline.check()
        if _is_not_found(exc):
            return None
        if isinstance(exc, urllib.error.HTTPError):
            raise _http_error(url, exc) from exc
        raise _unreachable(url, exc) from exc


def _place(src: Path, dest: Path) -> None:
    """Copy *src* to *dest* atomically (a copy, never a link: editing the source must not change the cache)."""
    part = dest.with_suffix(dest.suffix + ".part")
    part.unlink(missing_ok=True)
    try:
        shutil.copyfile(src, part)
        with open(part, "rb+") as fh:
            os.fsync(fh.fileno())
    except OSError as exc:
        part.unlink(missing_ok=True)
        if exc.errno in _DISK_FULL:
            raise _disk_full(dest, part, exc) from exc
        raise DownloadError(f"Cannot copy {src} to {dest}: {exc}.") from exc
    os.replace(part, dest)
