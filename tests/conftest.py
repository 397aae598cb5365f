"""Shared pytest fixtures. Keep this file small; add fixtures at the end."""

from __future__ import annotations

import pytest
from http_server import FileServer  # tests/ is on sys.path (pytest's default 'prepend' import mode)


@pytest.fixture(autouse=True)
def _isolated_zsad_env(tmp_path, monkeypatch):
    """Every test gets its own empty zsad cache and neither offline mode nor a weights mirror from the user."""
    monkeypatch.setenv("ZSAD_CACHE", str(tmp_path / "zsad-cache"))
    monkeypatch.delenv("ZSAD_OFFLINE", raising=False)
    monkeypatch.delenv("ZSAD_WEIGHTS_URL", raising=False)


@pytest.fixture
def http_server(tmp_path):
    """A started :class:`tests.http_server.FileServer` serving ``tmp_path / "www"`` on 127.0.0.1."""
    with FileServer(tmp_path / "www") as server:
        yield server


@pytest.fixture
def lock_held_elsewhere():
    """``hold(folder, what)``: another Python process takes zsad's output lock on ``folder`` and keeps it until the
    test ends (it is then killed, leaving a stale lock behind); returns that process."""
    import subprocess
    import sys

    code = ("import sys, time; from zsad.runs import OutputLock; "
            "OutputLock(sys.argv[1], sys.argv[2]).acquire(); print('locked', flush=True); time.sleep(300)")
    started = []

    def hold(folder, what="evaluation"):
        proc = subprocess.Popen([sys.executable, "-c", code, str(folder), what], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield hold
    for proc in started:
        proc.kill()
        proc.wait()
