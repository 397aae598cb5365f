"""A tiny local HTTP file server for tests that must never touch the network.

:class:`FileServer` serves one directory on ``127.0.0.1`` with an ephemeral port from a background thread. It
speaks enough HTTP for download code: ``GET``/``HEAD``, single ``Range: bytes=START-[END]`` requests answered with
``206 Partial Content`` (or ``416`` past the end), and it records every request so tests can assert on them.
Every file is served with a strong ``ETag`` (its sha256) and ``If-Range`` is honoured: a Range request whose
``If-Range`` does not match the current ETag gets the whole file with status 200. Failures are injected per path:
an HTTP status (404, 500, …), a truncated body (the full ``Content-Length`` is announced, then the connection is
closed early) or a slow body (``delay`` seconds before each byte: a trickle, or a stall when long), for all
requests or only for the next *times* requests.

Use it as a context manager (``from http_server import FileServer, unused_url``: pytest puts ``tests/`` on
``sys.path``) or through the ``http_server`` pytest fixture (``tests/conftest.py``), which serves a fresh temporary
directory::

    def test_download(http_server):
        http_server.put("models/a.bin", b"hello")          # write a file under the served root
        http_server.write_index()                           # zsad-weights.json with sha256/size of every file
        url = http_server.url_for("models/a.bin")          # http://127.0.0.1:PORT/models/a.bin
        http_server.fail("models/a.bin", status=500, times=1)  # the next request gets a 500
        http_server.fail("models/a.bin", truncate_at=2)     # every request: 2 bytes then EOF
        http_server.fail("models/a.bin", delay=0.1)         # every request: one byte per 0.1 s
        http_server.clear_failures()
        http_server.ignore_range = True                     # answer Range requests with a full 200
        http_server.requests[-1].range                      # e.g. "bytes=2-" (None without Range)

:func:`unused_url` gives a URL on a closed local port, for "host unreachable" tests.

Example:
    >>> import tempfile, urllib.request
    >>> with FileServer(tempfile.mkdtemp()) as srv:
    ...     _ = srv.put("a.txt", b"abcdef")
    ...     req = urllib.request.Request(srv.url_for("a.txt"), headers={"Range": "bytes=2-"})
    ...     with urllib.request.urlopen(req) as resp:
    ...         (resp.status, resp.read())
    (206, b'cdef')
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["FileServer", "RequestRecord", "point_hub_at", "unused_url"]


@dataclass(frozen=True)
class RequestRecord:
    """One request the server answered: method, path (no leading ``/``), ``Range`` header, status sent."""

    method: str
    path: str
    range: str | None
    status: int
    if_range: str | None = None


@dataclass
class _Failure:
    status: int | None
    truncate_at: int | None
    times: int | None  # None: forever
    delay: float | None = None


class FileServer:
    """Serve *root* over HTTP on 127.0.0.1 (ephemeral port) from a daemon thread.

    Attributes:
        root: the served directory.
        url: base URL with a trailing slash, e.g. ``http://127.0.0.1:43211/`` (set once started).
        requests: every answered request, in order (:class:`RequestRecord`).
        ignore_range: when true, ``Range`` headers are ignored and the full file is sent with status 200.
    """

    def __init__(self, root: str | Path, *, ignore_range: bool = False) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ignore_range = ignore_range
        self.requests: list[RequestRecord] = []
        self.url = ""
        self._failures: dict[str, _Failure] = {}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- set-up helpers -------------------------------------------------------------------------------------
    def put(self, relpath: str, data: bytes | str) -> Path:
        """Write *data* to ``root/relpath`` (creating folders) and return the file's path."""
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def write_index(self, name: str = "zsad-weights.json") -> dict[str, dict[str, object]]:
        """Write a zsad mirror index ``{relpath: {"sha256", "size"}}`` of every served file to ``root/name``.

        With ``ZSAD_WEIGHTS_URL`` pointing at this server, zsad then verifies (and accepts) these files even where
        its table knows a different checksum for the real checkpoint, e.g. a tiny stand-in for TIPS L/14.
        """
        entries = {
            p.relative_to(self.root).as_posix(): {
                "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                "size": p.stat().st_size,
            }
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and p.name != name
        }
        (self.root / name).write_text(json.dumps(entries, indent=1))
        return entries

    def url_for(self, relpath: str) -> str:
        """The URL of ``root/relpath``."""
        return self.url + urllib.parse.quote(relpath.lstrip("/"))

    def fail(
        self, relpath: str, *, status: int | None = None, truncate_at: int | None = None, delay: float | None = None,
        times: int | None = None,
    ) -> None:
        """Make requests for *relpath* fail: answer *status* (e.g. 404, 500), send only *truncate_at* bytes of the
        body and close the connection, or wait *delay* seconds before each byte of the body (a trickle; a stall
        when long). *times* limits it to the next N requests (default: all)."""
        if sum(x is not None for x in (status, truncate_at, delay)) != 1:
            raise ValueError("give exactly one of status=, truncate_at= or delay=")
        with self._lock:
            self._failures[relpath.lstrip("/")] = _Failure(status, truncate_at, times, delay)

    def clear_failures(self) -> None:
        """Remove every injected failure."""
        with self._lock:
            self._failures.clear()

    def paths_requested(self) -> list[str]:
        """The paths of all requests so far, in order."""
        return [r.path for r in self.requests]

    # -- life cycle -----------------------------------------------------------------------------------------
    def start(self) -> FileServer:
        """Start serving (idempotent); returns self."""
        if self._httpd is None:
            handler = type("_BoundHandler", (_Handler,), {"file_server": self})
            self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            self._httpd.daemon_threads = True
            self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/"
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
            if self._thread is not None:
                self._thread.join(timeout=5)

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler --------------------------------------------------------------------------------
    def _take_failure(self, relpath: str) -> _Failure | None:
        with self._lock:
            failure = self._failures.get(relpath)
            if failure is None:
                return None
            if failure.times is not None:
                failure.times -= 1
                if failure.times <= 0:
                    del self._failures[relpath]
            return failure

    def _record(self, method: str, relpath: str, rng: str | None, status: int, if_range: str | None = None) -> None:
        with self._lock:
            self.requests.append(RequestRecord(method, relpath, rng, status, if_range))


_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    file_server: FileServer  # set on the per-server subclass

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def _serve(self, *, send_body: bool) -> None:
        srv = self.file_server
        relpath = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        rng = self.headers.get("Range")
        failure = srv._take_failure(relpath)
        if failure is not None and failure.status is not None:
            return self._error(relpath, rng, failure.status)
        path = (srv.root / relpath).resolve()
        if srv.root.resolve() not in path.parents or not path.is_file():
            return self._error(relpath, rng, 404)
        data = path.read_bytes()
        etag = '"' + hashlib.sha256(data).hexdigest() + '"'
        if_range = self.headers.get("If-Range")
        start, end, status = 0, len(data) - 1, 200
        match = _RANGE.match(rng or "")
        if match and not srv.ignore_range and (if_range is None or if_range == etag):
            start = int(match.group(1))
            if start >= len(data):
                srv._record(self.command, relpath, rng, 416)  # before answering: the client may look at once
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if match.group(2):
                end = min(end, int(match.group(2)))
            status = 206
        body = data[start : end + 1]
        srv._record(self.command, relpath, rng, status, if_range)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if not send_body:
            return
        if failure is not None and failure.truncate_at is not None:
            body = body[: failure.truncate_at]
            self.close_connection = True
        if failure is not None and failure.delay is not None:
            self.close_connection = True
            try:
                for i in range(len(body)):
                    time.sleep(failure.delay)
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
            except OSError:  # the client gave up
                pass
            return
        self.wfile.write(body)
        self.wfile.flush()

    def _error(self, relpath: str, rng: str | None, status: int) -> None:
        body = f"{status} for /{relpath}\n".encode()
        self.file_server._record(self.command, relpath, rng, status)
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def unused_url(path: str = "") -> str:
    """A URL on a local port that nothing listens on (connections are refused at once).

    Example:
        >>> unused_url("x.bin").startswith("http://127.0.0.1:")
        True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{path.lstrip('/')}"


def point_hub_at(monkeypatch, url: str) -> None:
    """Make ``huggingface_hub`` send its requests to *url* (as ``HF_ENDPOINT`` would when set before import).

    With a :class:`FileServer` the hub "answers" (a 404 for unknown files); with :func:`unused_url` it cannot
    be reached.
    """
    from huggingface_hub import constants

    url = url.rstrip("/")
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
