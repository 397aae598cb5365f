"""The ASGI application: :func:`create_app` serves one :class:`~zsad.serve.predictor.Predictor` over HTTP.

Routes:

* ``GET /`` -- the web page (``static/``): drop images, see scores and overlays, set a threshold, download a CSV.
* ``GET /healthz`` -- 200 once the model is loaded and warmed up; 503 before (``status: loading``) or after a
  failed load (``status: failed``).
* ``POST /v1/predict`` -- multipart ``image`` (the file), ``class_name`` (unless the server has a default),
  optional ``return_map`` (``png`` | ``npy``); answers a :class:`~zsad.serve.replies.Prediction`.
* ``GET /v1/stats`` -- batching counters (batch sizes formed, requests refused, ...).
* ``GET /docs``, ``GET /openapi.json`` -- the OpenAPI schema and its browser.

Every error answer is JSON ``{"error": "..."}`` with a 4xx/5xx status; a bad request never stops the server. With
``ServeSettings(api_key=...)`` every ``/v1/*`` request needs ``Authorization: Bearer <key>`` (else 401).

Example (a tiny random model; ``TestClient`` runs the app in-process):
    >>> from fastapi.testclient import TestClient
    >>> from zsad.serve import ModelSpec
    >>> spec = ModelSpec(device="cpu", overrides={"backbone_checkpoint": None, "prompt_strategy": "fixed",
    ...     "prompt_checkpoint": None, "image_size": 56, "backbone.options": {"random_config": {}}})
    >>> app = create_app(loader=spec.load)
    >>> import io; from PIL import Image
    >>> png = io.BytesIO(); Image.new("RGB", (40, 30), "gray").save(png, format="PNG")
    >>> with TestClient(app) as client:
    ...     ready = wait_until_ready(app, timeout_s=60)
    ...     reply = client.post("/v1/predict", files={"image": ("part.png", png.getvalue())},
    ...                         data={"class_name": "screw"}).json()
    >>> reply["original_size"], sorted(reply["scores"])
    ([30, 40], ['S1', 'S2', 'S3', 'S4', 'S5'])
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from zsad import __version__
from zsad.errors import ConfigError, ZsadError
from zsad.results import AnomalyResult
from zsad.serve.batching import BatchQueue, QueueClosed, QueueFull
from zsad.serve.guards import RequestGuard
from zsad.serve.predictor import ModelInfo, Predictor
from zsad.serve.replies import (
    ErrorReply,
    Health,
    MapFormat,
    Prediction,
    prediction_reply,
)
from zsad.serve.settings import ServeSettings
from zsad.serve.uploads import UploadRejected, decode_upload

__all__ = ["create_app", "wait_until_ready"]

logger = logging.getLogger("zsad.serve")

WARMUP_SIZE = (32, 32)

# the page runs only its own script and talks only to this server; images come back as data: URLs
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
}

# module level: endpoint annotations are resolved in this module's namespace (``from __future__ import annotations``)
_bearer = HTTPBearer(auto_error=False, description="The server's API key (zsad serve --api-key).")


@dataclass(frozen=True)
class _Job:
    image: Any  # decoded PIL image
    class_name: str


@dataclass(frozen=True)
class _Scored:
    result: AnomalyResult
    batch_size: int


class _Model:
    """The served predictor's lifecycle (loading -> ready | failed) and its batching queue."""

    def __init__(self, settings: ServeSettings, loader: Callable[[], Predictor]) -> None:
        self.settings = settings
        self.loader = loader
        self.predictor: Predictor | None = None
        self.info: ModelInfo | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.on_failure: Callable[[BaseException], None] | None = None
        self.queue: BatchQueue[_Job, _Scored] = BatchQueue(
            self._process, max_batch=settings.max_batch, max_wait_s=settings.max_wait_ms / 1000.0,
            max_pending=settings.max_queue,
        )
        self._loading: asyncio.Task | None = None

    @property
    def status(self) -> str:
        return "ok" if self.ready.is_set() else ("failed" if self.error is not None else "loading")

    async def start(self) -> None:
        self._loading = asyncio.get_running_loop().create_task(self._load(), name="zsad-load-model")

    async def stop(self) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        await self.queue.stop()

    async def _load(self) -> None:
        started = time.perf_counter()
        try:
            predictor = await run_in_threadpool(self.loader)
            if not isinstance(predictor, Predictor):
                raise ConfigError(
                    f"The model loader returned a {type(predictor).__name__}, which has no predict() and config; "
                    "serve a zsad.Detector or an exported model."
                )
            self.predictor, self.info = predictor, ModelInfo.of(predictor)
            await run_in_threadpool(self._warm_up)
            await self.queue.start()
        except Exception as exc:  # noqa: BLE001 - reported on /healthz and by `zsad serve`
            self.error = exc
            logger.error("loading the model failed: %s: %s", type(exc).__name__, exc)
            if self.on_failure is not None:
                self.on_failure(exc)
            return
        self.ready.set()
        logger.info("model ready in %.1f s: %s", time.perf_counter() - started, self.info)

    def _warm_up(self) -> None:
        """One prediction before the first request: builds the class prototypes and checks the contract."""
        from PIL import Image

        from zsad.export.runtime import ExportedDetector

        exported = isinstance(self.predictor, ExportedDetector)  # it scores only the classes it was exported for
        name = self.settings.class_name or (self.predictor.class_names[0] if exported else "object")
        out = self._predict([_Job(Image.new("RGB", WARMUP_SIZE, (128, 128, 128)), name)])
        if not (isinstance(out, list) and len(out) == 1 and isinstance(out[0], AnomalyResult)
                and out[0].anomaly_map.shape == WARMUP_SIZE[::-1]):
            raise ConfigError(
                f"The served {type(self.predictor).__name__}.predict broke the predictor contract (one AnomalyResult "
                "per image, maps at the image size); check it with zsad.testing.check_predictor."
            )

    def _predict(self, jobs: Sequence[_Job]) -> list[AnomalyResult]:
        assert self.predictor is not None
        return self.predictor.predict([j.image for j in jobs], class_name=[j.class_name for j in jobs],
                                      map_size="original", batch_size=len(jobs), progress=False)

    def _process(self, jobs: Sequence[_Job]) -> list[_Scored | BaseException]:
        """Score a batch; if it fails, score its images one by one so a bad one fails alone."""
        try:
            return [_Scored(r, len(jobs)) for r in self._predict(jobs)]
        except Exception as exc:  # noqa: BLE001
            if len(jobs) == 1:
                return [exc]
            logger.warning("a batch of %d images failed (%s: %s); scoring them one by one", len(jobs),
                           type(exc).__name__, exc)
        out: list[_Scored | BaseException] = []
        for job in jobs:
            try:
                out.append(_Scored(self._predict([job])[0], 1))
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        return out


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "form"))
        if err.get("type") == "missing":
            parts.append(f"the form field '{field}' is missing")
        else:
            parts.append(f"{field}: {err.get('msg')}")
    return "Invalid request: " + "; ".join(parts) + " (POST /v1/predict takes multipart fields image, class_name, " \
        "return_map)."


def _static_text(name: str) -> str:
    return resources.files("zsad.serve").joinpath("static", name).read_text(encoding="utf-8")


def create_app(
    predictor: Predictor | None = None,
    settings: ServeSettings | None = None,
    *,
    loader: Callable[[], Predictor] | None = None,
) -> FastAPI:
    """The FastAPI application serving *predictor* (or the one ``loader()`` builds when the app starts).

    With a ``loader`` the app answers ``/healthz`` with 503 until the model is loaded (in a worker thread) and
    warmed up; ``zsad serve`` uses this so the port opens at once.

    Args:
        predictor: a :class:`~zsad.detector.Detector` or any :class:`~zsad.serve.predictor.Predictor`.
        settings: limits and defaults (:class:`~zsad.serve.settings.ServeSettings`).
        loader: builds the predictor (instead of ``predictor``).
    """
    if (predictor is None) == (loader is None):
        raise ConfigError("create_app needs exactly one of predictor= or loader=.")
    settings = settings or ServeSettings()
    model = _Model(settings, loader or (lambda: predictor))  # type: ignore[arg-type,return-value]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await model.start()
        try:
            yield
        finally:
            await model.stop()

    app = FastAPI(
        title="zsad",
        version=__version__,
        summary="Zero-shot anomaly detection: score images and get anomaly maps.",
        lifespan=lifespan,
        responses={401: {"model": ErrorReply}},
    )
    app.state.model = model
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_upload_bytes, timeout_s=settings.timeout_s)
    _install_error_handlers(app)
    async def require_key(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        if settings.api_key is None:
            return
        if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), settings.api_key.encode()):
            raise HTTPException(401, "Missing or wrong API key: send the header 'Authorization: Bearer <key>'.",
                                headers={"WWW-Authenticate": "Bearer"})

    api = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_static_text("index.html"), headers=_PAGE_HEADERS)

    @app.get("/colorbar.png", include_in_schema=False)
    async def colorbar() -> Response:
        return Response(_colorbar_png(), media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz() -> JSONResponse:
        """200 when the model is loaded and answers requests; 503 while it loads, or after its loading failed."""
        body = Health(
            status=model.status,  # type: ignore[arg-type]
            model=model.info.to_dict() if model.info else None,
            class_name=settings.class_name,
            auth=settings.api_key is not None,
            max_upload_mb=settings.max_upload_mb,
            error=_load_error(model.error, public=settings.api_key is not None),
        )
        return JSONResponse(body.model_dump(), status_code=200 if model.status == "ok" else 503)

    @api.post(
        "/predict",
        response_model=Prediction,
        response_model_exclude_none=True,
        responses={code: {"model": ErrorReply} for code in (413, 415, 422, 503, 504)},
    )
    async def predict(
        request: Request,
        image: Annotated[UploadFile, File(description="The image file (PNG, JPEG, BMP, TIFF, WebP).")],
        class_name: Annotated[str | None, Form(description="Object class in the prompts (default: the server's).")] = None,
        return_map: Annotated[MapFormat | None, Form(description="'png': overlay; 'npy': float32 map.")] = None,
    ) -> Prediction:
        """Score one image: the image scores (S1-S5), and the anomaly map when ``return_map`` is given."""
        name = (class_name or "").strip() or settings.class_name
        if name is None:
            raise ConfigError("The form field 'class_name' is missing and this server has no default class "
                              "(zsad serve --class-name NAME sets one); send e.g. class_name=screw.")
        if not model.ready.is_set():
            raise QueueClosed(f"The model is {model.status}; retry when GET /healthz answers 200.")
        data = await image.read()
        picture = await run_in_threadpool(decode_upload, data, max_pixels=settings.max_pixels)
        scored = await model.queue.submit(_Job(picture, name))
        request.state.batch_size = scored.batch_size
        assert model.info is not None and model.predictor is not None
        reply = partial(prediction_reply, scored.result, image_score=model.info.image_score, return_map=return_map,
                        map_range=settings.map_range)
        if return_map is None:  # cheap: no encoding, no hand-off to a thread
            return reply(picture)
        base = await run_in_threadpool(_model_view, model.predictor, picture) if return_map == "png" else picture
        return await run_in_threadpool(reply, base)

    @api.get("/stats")
    async def stats() -> dict[str, Any]:
        """Batching counters since the start: batch sizes formed, images scored, requests refused or abandoned."""
        return {**model.queue.stats.to_dict(), "pending": model.queue.pending, "running": model.queue.running,
                "max_batch": settings.max_batch, "max_queue": settings.max_queue}

    app.include_router(api)
    app.mount("/static", StaticFiles(packages=[("zsad.serve", "static")]), name="static")
    return app


def _load_error(error: BaseException | None, *, public: bool) -> str | None:
    """Why loading failed, for /healthz; on a server with an API key (reachable by others) without the details,
    which may name server paths."""
    if error is None:
        return None
    return f"{type(error).__name__} (see the server log)" if public else f"{type(error).__name__}: {error}"


def _model_view(predictor: Predictor, picture: Any) -> Any:
    """The RGB image the model saw (EXIF orientation and bit-depth rules of its recipe), to draw the map on."""
    from zsad.io import load_image

    pre = predictor.config.preprocess
    return load_image(picture, exif_transpose=pre.exif_transpose, high_bit_depth=pre.high_bit_depth)


def _colorbar_png() -> bytes:
    """A horizontal colour bar of the overlay colormap, low values on the left (the page labels its ends)."""
    import io

    import numpy as np
    from PIL import Image

    from zsad.viz import colorize

    ramp = np.linspace(0.0, 1.0, 256, dtype=np.float32)[None, :].repeat(16, axis=0)
    buf = io.BytesIO()
    Image.fromarray(colorize(ramp, 0.0, 1.0)).save(buf, format="PNG")
    return buf.getvalue()


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(ZsadError)
    async def zsad_error(request: Request, exc: ZsadError) -> JSONResponse:
        if isinstance(exc, QueueFull):
            return _error(503, str(exc), {"Retry-After": str(exc.retry_after)})
        if isinstance(exc, QueueClosed):
            return _error(503, str(exc), {"Retry-After": "1"})
        if isinstance(exc, UploadRejected):
            return _error(exc.status, str(exc))
        return _error(422, str(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"Internal error ({type(exc).__name__}); the server log has the details.")


def wait_until_ready(app: FastAPI, timeout_s: float = 300.0) -> bool:
    """Block until the app's model is loaded (True) or failed / the time is up (False); for scripts and tests."""
    model: _Model = app.state.model
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if model.ready.wait(0.05):
            return True
        if model.error is not None:
            return False
    return False
