"""Fixtures of the server tests: the tiny fixture detector, real servers on 127.0.0.1, test images.

Servers are real (uvicorn on a free local port, in a thread of the test process); requests go over TCP with
httpx. To control *timing* (fill the queue, form a batch, pass a timeout), :class:`GatedDetector` wraps the real
detector and holds each ``predict`` call until the test opens the gate; what it computes is the detector's own
output.
"""

from __future__ import annotations

import io
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from tips_factory import FIXTURE

from zsad import Detector
from zsad.serve import BackgroundServer, ServeSettings, create_app, wait_until_ready

DATASET = FIXTURE / "dataset"
IMAGES = sorted(DATASET.glob("*/test/*/*.png"))  # 6 real fixture images (256 x 320 and similar)


def tiny_detector() -> Detector:
    return Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE),
                                prompt_checkpoint=str(FIXTURE / "learnable_params.pth"), image_size=56, device="cpu")


@pytest.fixture(scope="session")
def detector() -> Detector:
    """The tiny fixture TIPS detector (56 px input), built once."""
    return tiny_detector()


class GatedDetector:
    """The real detector, with a gate: while closed, ``predict`` waits (the test then opens it)."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.config = detector.config
        self.gate = threading.Event()
        self.gate.set()
        self.calls: list[int] = []

    def predict(self, inputs, class_name="object", **kwargs):
        self.calls.append(len(inputs))
        if not self.gate.wait(60):
            raise TimeoutError("the test never opened the gate")
        return self.detector.predict(inputs, class_name, **kwargs)


@contextmanager
def running(predictor=None, *, loader=None, ready: bool = True, **settings):
    """A real server for *predictor* on 127.0.0.1; yields ``(app, httpx.Client)`` with the server's base URL."""
    app = create_app(predictor, ServeSettings(**settings), loader=loader)
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        if ready:
            assert wait_until_ready(app, timeout_s=120), app.state.model.error
        yield app, client


def wait_for(condition, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def png_bytes(size=(40, 30), mode="RGB", value=128, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    if mode == "I;16":
        Image.fromarray(np.full((size[1], size[0]), 40000, np.uint16)).save(buf, format=fmt)
    else:
        Image.new(mode, size, value if mode in ("L", "I") else (value,) * len(mode)).save(buf, format=fmt)
    return buf.getvalue()


def post_image(client: httpx.Client, data: bytes | Path, class_name: str | None = "metal_nut", **fields):
    content = data.read_bytes() if isinstance(data, Path) else data
    form = {k: v for k, v in {"class_name": class_name, **fields}.items() if v is not None}
    return client.post("/v1/predict", files={"image": ("upload.png", content)}, data=form)


def hold_model(app, gated: GatedDetector, pool, client: httpx.Client, path: Path = IMAGES[1]):
    """Close the gate and send one request, which the model takes and then holds; returns its future."""
    gated.gate.clear()
    held = pool.submit(post_image, client, path)
    wait_for(lambda: app.state.model.queue.running == 1, what="a request held in the model")
    return held


def queue_up(app, pool, client: httpx.Client, images: list) -> list:
    """Send one request per image (a path or bytes) and wait until all of them wait in the queue; their futures."""
    futures = [pool.submit(post_image, client, image) for image in images]
    wait_for(lambda: app.state.model.queue.pending == len(images), what=f"{len(images)} waiting requests")
    return futures
