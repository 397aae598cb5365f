"""Running the app with uvicorn: :func:`serve` (what ``zsad serve`` calls) and :class:`BackgroundServer`.

:func:`serve` opens the port at once and loads the model in the background (``/healthz`` answers 503 until it is
ready), logs one line per request, and stops on Ctrl-C after answering the requests in progress. If the model
cannot be loaded, the server stops and :func:`serve` raises the loading error.

:class:`BackgroundServer` runs an app on a thread of the current process, for tests, notebooks and benchmarks.

Example:
    >>> exposure_warning("127.0.0.1", api_key=None) is None
    True
    >>> exposure_warning("0.0.0.0", api_key=None).startswith("listening on 0.0.0.0 without an API key")
    True
    >>> exposure_warning("0.0.0.0", api_key="s3cret-key") is None
    True
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from zsad.errors import ConfigError, require
from zsad.serve.app import create_app
from zsad.serve.predictor import ModelSpec, Predictor
from zsad.serve.settings import ServeSettings

__all__ = ["BackgroundServer", "exposure_warning", "serve"]

logger = logging.getLogger("zsad.serve")


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """The warning to print when *host* is reachable from other machines and no API key protects the API."""
    if api_key or host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:  # a host name: assume it is reachable
        pass
    return (
        f"listening on {host} without an API key: anyone who can reach this machine can use the model. Pass "
        "--api-key KEY (or set ZSAD_API_KEY), or listen on 127.0.0.1 behind a reverse proxy."
    )


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"Cannot resolve the host {host!r} ({exc.strerror}); use an address such as 127.0.0.1.") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)  # clients connecting before uvicorn runs wait in the backlog instead of being refused
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"Cannot listen on {host}:{port} ({exc.strerror}); choose another --port, or --port 0 for a free one."
        ) from None
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_server(app: Any, settings: ServeSettings, log_level: str) -> Any:
    uvicorn = require("uvicorn", "serve", "zsad serve")
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=int(settings.timeout_s) + 5)
    return uvicorn.Server(config)


@contextmanager
def _request_log(level: str) -> Iterator[None]:
    """While serving, send the zsad.serve log (one line per request) to stderr, formatted like uvicorn's lines."""
    from uvicorn.logging import DefaultFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def serve(
    model: ModelSpec | Predictor,
    settings: ServeSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
) -> None:
    """Serve *model* until Ctrl-C or SIGTERM; raise the loading error if the model cannot be loaded.

    Ctrl-C returns normally after the requests in progress are answered (SIGTERM does the same, then ends the
    process with the signal's status, as uvicorn does).

    Args:
        model: what to build in the background (:class:`~zsad.serve.predictor.ModelSpec`), or a built predictor.
        settings: limits and defaults; ``port=0`` picks a free port (the address is printed).
    """
    settings = settings or ServeSettings()
    warning = exposure_warning(host, settings.api_key)
    if warning:
        print(f"zsad serve: warning: {warning}", file=sys.stderr)
    app = create_app(loader=model.load, settings=settings) if isinstance(model, ModelSpec) else create_app(model, settings)
    server = _uvicorn_server(app, settings, log_level)
    app.state.model.on_failure = lambda exc: setattr(server, "should_exit", True)
    sock = _bind(host, port)
    url = _url(sock)
    print(f"zsad serve: listening on {url} (page {url}/, API {url}/v1/predict, docs {url}/docs); loading the model",
          file=sys.stderr, flush=True)
    try:
        with _request_log(log_level):
            server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: that is a normal stop
        pass
    finally:
        sock.close()
    print("zsad serve: stopped", file=sys.stderr)
    if app.state.model.error is not None:
        raise app.state.model.error


class BackgroundServer:
    """Serve an app on ``host:port`` (default: a free port on 127.0.0.1) from a daemon thread.

    Example:
        >>> from fastapi import FastAPI
        >>> import urllib.request
        >>> app = FastAPI(); _ = app.get("/ping")(lambda: "pong")
        >>> with BackgroundServer(app) as server:
        ...     urllib.request.urlopen(server.url + "/ping").read()
        b'"pong"'
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, *, log_level: str = "warning") -> None:
        self.app = app
        self.host, self.port = host, port
        self.server = _uvicorn_server(app, ServeSettings(), log_level)
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.url = ""

    def __enter__(self) -> BackgroundServer:  # noqa: PYI034 - Python 3.10 has no typing.Self
        self._sock = _bind(self.host, self.port)
        self.url = _url(self._sock)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True,
                                        name="zsad-serve")
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(f"The server on {self.url} did not start (see the log above).")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self._sock is not None:
            self._sock.close()
