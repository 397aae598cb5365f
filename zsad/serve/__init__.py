"""``zsad serve``: an HTTP inference server with dynamic batching, and a web page to inspect images.

Install with ``pip install 'zsad[serve]'`` (FastAPI, uvicorn, python-multipart). Nothing else in zsad imports
this package.

* :func:`create_app` -- the FastAPI application over a :class:`~zsad.Detector` or any :class:`Predictor`
  (for example an exported model);
* :func:`serve` -- run it with uvicorn (what the ``zsad serve`` command calls); :class:`BackgroundServer` runs it
  on a thread, for tests and notebooks;
* :class:`ServeSettings` -- batching, limits and defaults; :class:`ModelSpec` -- which model to build.

Example (a tiny random model, served on a free local port):
    >>> import io, json, urllib.request
    >>> from PIL import Image
    >>> spec = ModelSpec(device="cpu", overrides={"backbone_checkpoint": None, "prompt_strategy": "fixed",
    ...     "prompt_checkpoint": None, "image_size": 56, "backbone.options": {"random_config": {}}})
    >>> app = create_app(loader=spec.load, settings=ServeSettings(class_name="screw"))
    >>> with BackgroundServer(app) as server:
    ...     ready = wait_until_ready(app)
    ...     health = json.load(urllib.request.urlopen(server.url + "/healthz"))
    >>> health["status"], health["model"]["image_size"], health["class_name"]
    ('ok', 56, 'screw')
"""

from __future__ import annotations

from zsad.serve.app import create_app, wait_until_ready
from zsad.serve.predictor import ModelInfo, ModelSpec, Predictor
from zsad.serve.server import BackgroundServer, exposure_warning, serve
from zsad.serve.settings import ServeSettings

__all__ = [
    "BackgroundServer",
    "ModelInfo",
    "ModelSpec",
    "Predictor",
    "ServeSettings",
    "create_app",
    "exposure_warning",
    "serve",
    "wait_until_ready",
]
