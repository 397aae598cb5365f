"""`zsad serve` as scripts use it: a subprocess on a free port, /healthz, /v1/predict, Ctrl-C; and its errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from tips_factory import FIXTURE

from serve.conftest import IMAGES, running
from zsad.cli import main
from zsad.serve import ModelSpec, exposure_warning

TINY = ["--set", f"backbone_checkpoint={FIXTURE}", "--set", f"prompt_checkpoint={FIXTURE / 'learnable_params.pth'}",
        "--set", "image_size=56", "--device", "cpu"]


def _listening_url(proc: subprocess.Popen, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen.append(line)
        if "listening on " in line:
            return line.split("listening on ")[1].split()[0]
        if not line and proc.poll() is not None:
            break
    raise AssertionError("zsad serve did not start:\n" + "".join(seen))


def test_serve_command_end_to_end(detector, tmp_path):
    cmd = [sys.executable, "-m", "zsad", "serve", "--recipe", "tipsomaly", *TINY, "--host", "127.0.0.1",
           "--port", "0", "--max-batch", "4", "--max-wait-ms", "5"]
    env = {**os.environ, "ZSAD_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        url = _listening_url(proc)
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=url, timeout=60) as client:
            deadline = time.monotonic() + 120
            while (health := client.get("/healthz")).status_code != 200:
                assert health.status_code == 503 and time.monotonic() < deadline, health.text
                time.sleep(0.2)
            reply = client.post("/v1/predict", files={"image": ("part.png", IMAGES[3].read_bytes())},
                                data={"class_name": "pipe fryum"})
            assert reply.status_code == 200
            expected = detector.predict(IMAGES[3], class_name="pipe fryum")
            assert reply.json()["pred_score"] == pytest.approx(expected.pred_score, rel=1e-6)
            bad = client.post("/v1/predict", files={"image": ("x.png", b"GIF89a nonsense")}, data={"class_name": "x"})
            assert bad.status_code in (415, 422) and bad.json()["error"]
            assert client.get("/").status_code == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        log = proc.stderr.read()
        assert '"POST /v1/predict" 200' in log and " ms batch=1" in log
        assert "warning" not in log.lower()  # loopback: no exposure warning
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serving_an_exported_model_gives_the_detectors_scores(detector, tmp_path):
    """`zsad serve --model FILE`: a real server on an ONNX export, no torch needed; same scores as the detector."""
    exported = tmp_path / "model.onnx"
    detector.export(exported, ["pipe fryum", "metal nut"])
    spec = ModelSpec(model=str(exported))
    with running(loader=spec.load) as (app, client):
        health = client.get("/healthz").json()
        assert health["model"]["recipe"] == "tipsomaly"
        for path in IMAGES[:3]:
            reply = client.post("/v1/predict", files={"image": (path.name, path.read_bytes())},
                                data={"class_name": "pipe fryum", "return_map": "npy"})
            assert reply.status_code == 200, reply.text
            expected = detector.predict(path, class_name="pipe fryum")
            body = reply.json()
            assert body["pred_score"] == pytest.approx(expected.pred_score, abs=1e-4)
            assert all(body["scores"][k] == pytest.approx(v, abs=1e-4) for k, v in expected.scores.items())
        unknown = client.post("/v1/predict", files={"image": (IMAGES[0].name, IMAGES[0].read_bytes())},
                              data={"class_name": "screw"})  # not among the exported classes
        assert unknown.status_code == 422 and "screw" in unknown.json()["error"]


def test_export_options_are_checked_before_loading(tmp_path):
    from zsad.errors import ConfigError

    with pytest.raises(ConfigError, match="does not exist"):
        ModelSpec(model=str(tmp_path / "missing.onnx")).load()
    with pytest.raises(ConfigError, match="baked into the export"):
        ModelSpec(model=str(tmp_path), overrides={"image_size": 336}).load()
    with pytest.raises(ConfigError, match="--runtime"):
        ModelSpec(model=str(tmp_path), device="cuda").load()
    with pytest.raises(ConfigError, match="exported models only"):
        ModelSpec(runtime="onnxruntime").load()
    with pytest.raises(ConfigError, match="--compile"):
        ModelSpec(model=str(tmp_path), runtime_options={"compile": True}).load()


@pytest.mark.parametrize("args, message", [
    (["--max-wait-ms", "-1"], "max_wait_ms"),
    (["--api-key", "short"], "api_key"),
    (["--map-range", "1", "0"], "map_range"),
])
def test_invalid_settings_are_reported(args, message, capsys):
    assert main(["serve", *TINY, "--port", "0", *args]) == 2
    assert message in capsys.readouterr().err


def test_a_busy_port_is_reported(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", *TINY, "--port", str(port), "--log-level", "error"]) == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.mark.parametrize("host, warns", [("127.0.0.1", False), ("::1", False), ("localhost", False),
                                         ("0.0.0.0", True), ("192.168.1.20", True), ("box.example", True)])
def test_exposure_warning(host, warns):
    assert (exposure_warning(host, None) is not None) == warns
    assert exposure_warning(host, "a-long-api-key") is None


def test_nothing_outside_the_serve_package_imports_it():
    code = ("import sys, zsad.cli, zsad.detector, zsad.evaluation, zsad.viz, zsad.testing; "
            "print(sorted(m for m in sys.modules if m.startswith(('zsad.serve', 'fastapi', 'uvicorn'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
