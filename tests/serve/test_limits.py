"""Bad requests get a 4xx/5xx JSON answer with an `error`, and the server keeps serving after every one."""

from __future__ import annotations

import httpx
import pytest

from serve.conftest import IMAGES, GatedDetector, hold_model, png_bytes, post_image, queue_up, running, wait_for

LIMIT_MB = 0.2  # 200 kB body limit
MAX_PIXELS = 100_000


@pytest.fixture(scope="module")
def server(detector):
    with running(detector, max_upload_mb=LIMIT_MB, max_pixels=MAX_PIXELS) as (_app, client):
        yield client


def _multipart(content: bytes) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", files={"image": ("big.png", content)}, data={"class_name": "x"})
    return request.read(), request.headers["content-type"]


def _chunked_upload(client: httpx.Client, content: bytes) -> httpx.Response:
    """A multipart body sent with Transfer-Encoding: chunked (no Content-Length for the server to check first)."""
    body, content_type = _multipart(content)

    def chunks():
        for i in range(0, len(body), 16_384):
            yield body[i : i + 16_384]

    return client.post("/v1/predict", content=chunks(), headers={"content-type": content_type})


def _truncated_png() -> bytes:
    data = IMAGES[1].read_bytes()
    return data[: len(data) // 2]


BAD_REQUESTS = {
    "not an image": (lambda c: post_image(c, b"path,score\n/etc/passwd,1\n"), 415, "not an image"),
    "empty file": (lambda c: post_image(c, b""), 422, "empty"),
    "truncated png": (lambda c: post_image(c, _truncated_png()), 422, "truncated"),
    "eps is refused": (lambda c: post_image(c, b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"), 415, "not an image"),
    "missing image field": (lambda c: c.post("/v1/predict", data={"class_name": "x"}), 422, "'image' is missing"),
    "bad return_map": (lambda c: post_image(c, IMAGES[1], return_map="jpeg"), 422, "return_map"),
    "decompression bomb": (lambda c: post_image(c, png_bytes((2000, 2000))), 413, "4000000 pixels"),
    "too large (content-length)": (lambda c: post_image(c, b"\0" * 300_000), 413, "larger than"),
    "too large (chunked)": (lambda c: _chunked_upload(c, b"\0" * 300_000), 413, "larger than"),
    "16-bit image (model refuses)": (lambda c: post_image(c, png_bytes(mode="I;16")), 422, "high_bit_depth"),
    "unknown route": (lambda c: c.get("/v1/nothing"), 404, "Not Found"),
    "wrong method": (lambda c: c.get("/v1/predict"), 405, "Method Not Allowed"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_json_error_and_server_keeps_serving(server, case):
    send, status, message = BAD_REQUESTS[case]
    reply = send(server)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    assert message in reply.json()["error"]
    good = post_image(server, IMAGES[1])
    assert good.status_code == 200 and good.json()["original_size"] == [200, 300]


def test_chunked_upload_below_the_limit_is_accepted(server):
    assert len(IMAGES[1].read_bytes()) < LIMIT_MB * 1e6
    reply = _chunked_upload(server, IMAGES[1].read_bytes())
    assert reply.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in reply.request.headers
    assert reply.status_code == 200 and reply.json()["class_name"] == "x"


def test_request_past_the_timeout_gets_504_and_its_queued_work_is_dropped(detector):
    gated = GatedDetector(detector)
    with running(gated, timeout_s=0.5, max_batch=1) as (app, client):
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            first = hold_model(app, gated, pool, client)  # taken by the model, which waits at the gate
            (second,) = queue_up(app, pool, client, [IMAGES[1]])  # waits in the queue
            for reply in (first.result(), second.result()):
                assert reply.status_code == 504 and "did not finish within 0.5 s" in reply.json()["error"]
        gated.gate.set()
        wait_for(lambda: app.state.model.queue.running == 0, what="the model to finish")
        assert post_image(client, IMAGES[1]).status_code == 200
        stats = app.state.model.queue.stats
        assert stats.abandoned == 1  # the second image never reached the model
        assert gated.calls == [1, 1, 1]  # warm-up, first, the request after the gate opened
