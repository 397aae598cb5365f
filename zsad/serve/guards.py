"""Per-request limits and the access log, as one pure ASGI middleware (:class:`RequestGuard`).

* **Body size**: a ``Content-Length`` above the limit is answered 413 before the body is read; a body sent
  without one (chunked) is counted while it streams and cut off with 413 as soon as it passes the limit.
* **Time**: requests under ``/v1/`` get ``timeout_s`` in all (upload, queue, model, reply); past it they are
  answered 504 and their work is abandoned (a queued image never reaches the model).
* **Log**: one line per request on the ``zsad.serve`` logger: client, method, path, status, latency, and the
  size of the batch the request's image was scored in.

Error answers are JSON objects with an ``error`` message, like every error of the API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["RequestGuard", "json_error_message"]

logger = logging.getLogger("zsad.serve")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


def json_error_message(status: int, error: str, headers: dict[str, str] | None = None) -> tuple[Message, Message]:
    """The two ASGI messages of a JSON ``{"error": ...}`` answer."""
    body = json.dumps({"error": error}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {"type": "http.response.start", "status": status, "headers": raw}, {"type": "http.response.body", "body": body}


class RequestGuard:
    """ASGI middleware enforcing ``max_body_bytes`` and ``timeout_s`` (for ``/v1/``) and logging every request."""

    def __init__(self, app: Callable, *, max_body_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        state: dict[str, Any] = {"status": None, "too_large": False, "received": 0}

        async def answer(status: int, error: str) -> None:
            for message in json_error_message(status, error):
                await send(message)
            state["status"] = status

        async def guarded_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body_bytes:
                    state["too_large"] = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if state["too_large"]:  # the app's own answer to the aborted body is replaced by the 413
                return
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            await send(message)

        too_large = (
            f"The request body is larger than this server accepts ({self.max_body_bytes / 1e6:g} MB); send a "
            "smaller image (the limit is zsad serve --max-upload-mb)."
        )
        try:
            declared = _content_length(scope)
            if declared is not None and declared > self.max_body_bytes:
                await answer(413, too_large)
                return
            call = self.app(scope, guarded_receive, guarded_send)
            if scope["path"].startswith("/v1/"):
                await asyncio.wait_for(call, self.timeout_s)
            else:
                await call
        except asyncio.TimeoutError:
            if state["status"] is None:
                await answer(504, f"The request did not finish within {self.timeout_s:g} s; retry later, or send "
                                  "a smaller image (the limit is zsad serve --timeout-s).")
        except Exception:
            if not state["too_large"]:
                state["status"] = state["status"] or 500  # answered by the app's error handler
                raise
        finally:
            if state["too_large"] and state["status"] is None:
                await answer(413, too_large)
            _log(scope, state["status"], time.perf_counter() - started_at)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _log(scope: Scope, status: int | None, seconds: float) -> None:
    client = scope.get("client")
    who = f"{client[0]}:{client[1]}" if client else "-"
    batch = scope.get("state", {}).get("batch_size")
    extra = f" batch={batch}" if batch else ""
    logger.info('%s "%s %s" %s %.1f ms%s', who, scope["method"], scope["path"], status or "-", seconds * 1e3, extra)
