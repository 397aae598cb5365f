"""The plugin tutorial works when followed literally: its files, installed with pip, are a working plugin.

The files of docs/tutorials/plugins.md (its titled code blocks) are written to a new folder, pip-installed into a
``--target`` folder (no network: ``--no-deps --no-build-isolation``), and then ``zsad plugins``, ``zsad recipes``
and the package's own tests run in fresh processes that see only that folder, exactly as a reader would run them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import test_docs as docs

PAGE = "docs/tutorials/plugins.md"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    """(folder with the tutorial's files, environment seeing the pip-installed package)."""
    folder = tmp_path_factory.mktemp("tutorial")
    (project,) = docs.write_files(PAGE, folder)
    site = folder / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target",
         str(site), str(project)],
        check=True, capture_output=True, text=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    return folder, env


def _zsad(env: dict, *args: str, cwd: Path) -> str:
    run = subprocess.run([sys.executable, "-m", "zsad", *args], capture_output=True, text=True, env=env, cwd=cwd)
    assert run.returncode == 0, run.stderr
    return run.stdout


def _squeeze(text: str) -> list[list[str]]:
    return [line.split() for line in text.strip().splitlines()]


def test_zsad_plugins_lists_the_tutorial_package_as_the_page_shows(tutorial):
    folder, env = tutorial
    listing = _zsad(env, "plugins", cwd=folder)
    shown = next(b.code for b in docs.blocks(PAGE) if b.language == "text" and "flip_averaged" in b.code)
    assert _squeeze(listing) == _squeeze(shown)  # every component ok, with distribution and version


def test_zsad_recipes_shows_the_plugin_recipes_description(tutorial):
    folder, env = tutorial
    listing = _zsad(env, "recipes", cwd=folder)
    assert re.search(r"^tipsomaly_flip_topk +Tipsomaly with mirror-averaged TIPS features", listing, re.M), listing


def test_the_packages_own_tests_pass(tutorial):
    folder, env = tutorial
    run = subprocess.run([sys.executable, "-m", "pytest", "zsad-topk/tests", "-q", "-p", "no:cacheprovider"],
                         capture_output=True, text=True, env=env, cwd=folder)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed" in run.stdout
