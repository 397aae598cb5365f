"""The HTTP API on a real server: health, predictions equal to Detector.predict, maps, class names, auth, docs."""

from __future__ import annotations

import base64
import io
import logging
import threading

import numpy as np
import pytest
from PIL import Image

from serve.conftest import IMAGES, post_image, running, wait_for
from zsad.errors import ConfigError
from zsad.serve.replies import decode_npy


@pytest.fixture(scope="module")
def server(detector):
    with running(detector) as (_app, client):
        yield client


def test_healthz_is_503_until_the_model_is_loaded(detector):
    release = threading.Event()

    def slow_loader():
        assert release.wait(60)
        return detector

    with running(loader=slow_loader, ready=False) as (app, client):
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["status"] == "loading"
        early = post_image(client, IMAGES[0])
        assert early.status_code == 503 and "loading" in early.json()["error"]
        assert int(early.headers["Retry-After"]) >= 1
        release.set()
        from zsad.serve import wait_until_ready

        assert wait_until_ready(app, timeout_s=60)
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["model"] == {"recipe": "tipsomaly", "image_size": 56, "image_score": "S5",
                                          "predictor": "Detector"}
        assert post_image(client, IMAGES[0]).status_code == 200


def test_a_failed_load_is_reported_on_healthz():
    def broken_loader():
        raise ConfigError("backbone_checkpoint /nowhere does not exist")

    with running(loader=broken_loader, ready=False) as (app, client):
        from zsad.serve import wait_until_ready

        assert not wait_until_ready(app, timeout_s=30)
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "failed" and "/nowhere does not exist" in health.json()["error"]
        assert post_image(client, IMAGES[0]).status_code == 503
    with running(loader=broken_loader, ready=False, api_key="k3y-for-tests-only") as (app, client):
        assert not wait_until_ready(app, timeout_s=30)
        # a server others can reach names the error but not its details (which may name server paths)
        assert client.get("/healthz").json()["error"] == "ConfigError (see the server log)"


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: f"{p.parts[-4]}-{p.parts[-2]}")
def test_scores_equal_detector_predict_on_the_same_file(server, detector, path):
    expected = detector.predict(path, class_name="metal_nut")
    reply = post_image(server, path, class_name="metal_nut", return_map="npy")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["pred_score"] == pytest.approx(expected.pred_score, rel=1e-6, abs=1e-7)
    assert body["scores"] == pytest.approx(expected.scores, rel=1e-6, abs=1e-7)
    assert body["image_score"] == "S5" and body["class_name"] == "metal_nut"
    assert body["original_size"] == list(expected.original_size)
    amap = decode_npy(body["anomaly_map"])
    assert amap.dtype == np.float32 and amap.shape == expected.anomaly_map.shape
    np.testing.assert_allclose(amap, expected.anomaly_map, atol=1e-5)
    assert body["map_max"] == pytest.approx(float(expected.anomaly_map.max()), abs=1e-6)


def test_return_map_png_is_the_overlay_at_the_original_size(server):
    reply = post_image(server, IMAGES[1], return_map="png").json()  # 300 x 200 RGB
    assert reply["map_format"] == "png" and reply["map_range"] == [0.0, 1.0]
    overlay = Image.open(io.BytesIO(base64.b64decode(reply["anomaly_map"])))
    assert overlay.format == "PNG" and overlay.size == (300, 200) and overlay.mode == "RGB"
    plain = post_image(server, IMAGES[1]).json()
    assert "anomaly_map" not in plain and "map_format" not in plain


def test_class_name_is_required_unless_the_server_has_a_default(server, detector):
    reply = post_image(server, IMAGES[0], class_name=None)
    assert reply.status_code == 422 and "class_name" in reply.json()["error"]
    assert "--class-name" in reply.json()["error"]
    with running(detector, class_name="pipe fryum") as (_app, client):
        assert client.get("/healthz").json()["class_name"] == "pipe fryum"
        default = post_image(client, IMAGES[0], class_name=None).json()
        assert default["class_name"] == "pipe fryum"
        expected = detector.predict(IMAGES[0], class_name="pipe fryum")
        assert default["pred_score"] == pytest.approx(expected.pred_score, rel=1e-6)
        assert post_image(client, IMAGES[0], class_name="screw").json()["class_name"] == "screw"


def test_api_key_guards_every_v1_route(detector):
    key = "k3y-for-tests-only"
    with running(detector, api_key=key) as (_app, client):
        assert client.get("/healthz").json()["auth"] is True
        assert client.get("/").status_code == 200  # the page itself is public; it sends the key it is given
        missing = post_image(client, IMAGES[0])
        assert missing.status_code == 401 and "Bearer" in missing.json()["error"]
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = client.post("/v1/predict", headers={"Authorization": "Bearer nope"},
                            files={"image": ("a.png", IMAGES[0].read_bytes())}, data={"class_name": "x"})
        assert wrong.status_code == 401
        assert client.get("/v1/stats").status_code == 401
        ok = client.post("/v1/predict", headers={"Authorization": f"Bearer {key}"},
                         files={"image": ("a.png", IMAGES[0].read_bytes())}, data={"class_name": "x"})
        assert ok.status_code == 200 and "pred_score" in ok.json()
        assert client.get("/v1/stats", headers={"Authorization": f"Bearer {key}"}).json()["processed"] == 1


def test_openapi_docs_page_static_files_and_colour_bar(server):
    docs = server.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = server.get("/openapi.json").json()
    assert {"/healthz", "/v1/predict", "/v1/stats"} <= set(schema["paths"])
    form = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["$ref"].endswith("Body_predict_v1_predict_post")
    page = server.get("/")
    assert page.status_code == 200 and 'id="file-input"' in page.text and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]  # the browser test runs under it
    js = server.get("/static/app.js")
    assert js.status_code == 200 and "/v1/predict" in js.text
    bar = Image.open(io.BytesIO(server.get("/colorbar.png").content))
    assert bar.size == (256, 16)
    assert bar.getpixel((0, 8)) == (0, 0, 128) and bar.getpixel((255, 8)) == (128, 0, 0)  # jet: blue -> red
    missing = server.get("/no/such/page")
    assert missing.status_code == 404 and "error" in missing.json()


def test_requests_are_logged_with_their_latency(server, caplog):
    def lines():
        return [r.getMessage() for r in caplog.records if r.name == "zsad.serve"]

    with caplog.at_level(logging.INFO, logger="zsad.serve"):
        assert post_image(server, IMAGES[0]).status_code == 200
        assert server.get("/healthz").status_code == 200
        # a line is written when the request is finished, which can be just after the client has its answer
        wait_for(lambda: len(lines()) >= 2, what="two log lines")
    lines = lines()
    predict = next(line for line in lines if '"POST /v1/predict" 200' in line)
    assert predict.startswith("127.0.0.1:") and " ms batch=1" in predict
    assert any('"GET /healthz" 200' in line and line.rstrip().endswith("ms") for line in lines)


def test_check_predictor_accepts_the_detector_and_names_a_broken_contract(detector):
    from zsad.testing import check_predictor

    check_predictor(detector)

    class InputSizeMaps:  # forgets to bring the maps back to the images' sizes
        config = detector.config

        def predict(self, inputs, class_name="object", **kwargs):
            return detector.predict(inputs, class_name, **{**kwargs, "map_size": "input"})

    with pytest.raises(AssertionError, match=r"anomaly_map must be float32 \(30, 40\)"):
        check_predictor(InputSizeMaps())
    with running(loader=InputSizeMaps, ready=False) as (app, client):
        from zsad.serve import wait_until_ready

        assert not wait_until_ready(app, timeout_s=60)
        assert "broke the predictor contract" in client.get("/healthz").json()["error"]
