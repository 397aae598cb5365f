"""HTTP(S) and file:// requests for weight downloads, bounded in time by ``ZSAD_DOWNLOAD_TIMEOUT``.

``ZSAD_DOWNLOAD_TIMEOUT`` (seconds, default 60) is both a *stall* limit and a *total deadline*:

* stall: every wait on the server (connecting, each read) ends after that many seconds without a byte;
* deadline: a request must make progress, i.e. its headers and body must arrive within that many seconds in
  all, where every complete MiB of body received starts a new period. A server trickling a byte a second
  therefore fails after one period, while a slow but steady link (more than 1 MiB per period, ~17 KiB/s with the
  default) never does.

The deadline is enforced by a watchdog thread that shuts the request's socket down when it passes, so it holds
while the caller is blocked anywhere in ``urllib`` (connect, headers, body); the caller then gets a
:class:`~zsad.errors.DownloadError` that names the URL and the setting. Proxies (``https_proxy``, ...) work as
with plain ``urllib``.

Example:
    >>> import pathlib, tempfile
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> _ = p.write_bytes(b"hello")
    >>> with Deadline(5.0, p.as_uri()) as deadline, open_url(p.as_uri()) as resp:
    ...     b"".join(read_chunks(resp, deadline))
    b'hello'
"""

from __future__ import annotations

import http.client
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

from zsad.errors import DownloadError

__all__ = ["timeout", "Deadline", "open_url", "read_chunks", "PROGRESS_BYTES"]

PROGRESS_BYTES = 1 << 20
"""Bytes that must arrive within each ``ZSAD_DOWNLOAD_TIMEOUT`` period (1 MiB)."""

_ACTIVE = threading.local()


def timeout() -> float:
    """``ZSAD_DOWNLOAD_TIMEOUT`` in seconds (default 60; an unparsable or non-positive value means 60).

    Example:
        >>> import os, unittest.mock
        >>> with unittest.mock.patch.dict(os.environ, {"ZSAD_DOWNLOAD_TIMEOUT": "2.5"}):
        ...     timeout()
        2.5
    """
    try:
        value = float(os.environ.get("ZSAD_DOWNLOAD_TIMEOUT", "60"))
    except ValueError:
        return 60.0
    return value if value > 0 else 60.0


class Deadline:
    """A watchdog for one transfer: shuts its sockets down when no progress was made for ``seconds``.

    Use as a context manager around :func:`open_url` and :func:`read_chunks` (in the same thread); call
    :meth:`progress` when a period's worth of data arrived (``read_chunks`` does it) and :meth:`check` after any
    failure to turn an expired deadline into a clear :class:`~zsad.errors.DownloadError`.
    """

    def __init__(self, seconds: float, url: str) -> None:
        self.seconds, self.url = float(seconds), url
        self.expired = False
        self._deadline = time.monotonic() + self.seconds
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="zsad-download-deadline", daemon=True)

    def __enter__(self) -> Deadline:
        self._outer = getattr(_ACTIVE, "deadline", None)
        _ACTIVE.deadline = self
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        _ACTIVE.deadline = self._outer

    def progress(self) -> None:
        """Start a new period (called after each :data:`PROGRESS_BYTES` received)."""
        self._deadline = time.monotonic() + self.seconds

    def attach(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shutdown(sock)

    def check(self) -> None:
        """Raise the deadline's :class:`~zsad.errors.DownloadError` if it expired."""
        if self.expired:
            raise DownloadError(
                f"The server sent {self.url} too slowly: less than 1 MiB in {self.seconds:g} s "
                f"(ZSAD_DOWNLOAD_TIMEOUT={self.seconds:g}). Try again later, use a mirror (ZSAD_WEIGHTS_URL), or "
                "raise ZSAD_DOWNLOAD_TIMEOUT for a slow link."
            )

    def _watch(self) -> None:
        while not self._done.wait(max(0.0, min(self._deadline - time.monotonic(), 0.5))):
            if time.monotonic() >= self._deadline:
                with self._lock:
                    self.expired = True
                    for sock in self._sockets:
                        _shutdown(sock)
                return


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes up a thread blocked in recv() on this socket
    except OSError:
        pass


def _attach(sock: Any) -> None:
    deadline = getattr(_ACTIVE, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.attach(sock)


class _HTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _attach(self.sock)


class _HTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _attach(self.sock)


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_HTTPSConnection, req, context=getattr(self, "_context", None))


_OPENER = urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)


def open_url(url: str, start: int = 0, *, if_range: str | None = None) -> Any:
    """Open *url* (from byte *start*; with ``If-Range`` when a validator is given) with the stall timeout."""
    from zsad import __version__

    headers = {"User-Agent": f"zsad/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
        if if_range:
            headers["If-Range"] = if_range
    return _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout())


def read_chunks(resp: Any, deadline: Deadline, size: int = PROGRESS_BYTES) -> Iterator[bytes]:
    """The body of *resp* as it arrives (``read1``: no waiting for a full buffer), extending *deadline* per MiB."""
    read = getattr(resp, "read1", None) or resp.read
    received = 0
    while True:
        chunk = read(size)
        if not chunk:
            deadline.check()  # a watchdog shutdown looks like an end of file
            return
        received += len(chunk)
        if received >= PROGRESS_BYTES:
            received = 0
            deadline.progress()
        yield chunk
