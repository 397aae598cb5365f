"""Helpers shared by the parity tests: the official-implementation fixture and its tolerances."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tipsomaly-parity"


@lru_cache(maxsize=4)
def load_reference(folder: Path) -> dict[str, np.ndarray]:
    """The arrays of a parity fixture's reference.npz."""
    with np.load(folder / "reference.npz") as data:
        return {k: data[k] for k in data.files}


@lru_cache(maxsize=4)
def load_manifest(folder: Path) -> dict:
    """A parity fixture's manifest.json."""
    return json.loads((folder / "manifest.json").read_text())


def reference() -> dict[str, np.ndarray]:
    return load_reference(FIXTURE)


def manifest() -> dict:
    return load_manifest(FIXTURE)


def samples() -> list[dict]:
    meta = json.loads((FIXTURE / "dataset" / "meta.json").read_text())
    return [s for records in meta["test"].values() for s in records]


def image_paths() -> list[Path]:
    return [FIXTURE / "dataset" / s["img_path"] for s in samples()]


def atol(name: str) -> float:
    tol = manifest()["arrays"][name]["tolerance"]
    assert tol["kind"] == "abs", tol
    return float(tol["atol"])


def assert_close(actual, name: str, expected=None) -> None:
    """Compare with reference.npz[name] within the manifest's recommended absolute tolerance."""
    expected = reference()[name] if expected is None else expected
    actual = np.asarray(actual, dtype=np.float64)
    assert actual.shape == expected.shape, (name, actual.shape, expected.shape)
    err = float(np.abs(actual - expected).max())
    assert err <= atol(name), f"{name}: max |diff| {err:.3g} > atol {atol(name):.3g}"
