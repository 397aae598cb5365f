"""Shared helpers for the zsad.data tests: tiny images written with PIL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tipsomaly-parity"


def write_image(path: Path, size=(8, 8), value: int = 0, mode: str = "L", box=None) -> Path:
    """Write a (w, h) image filled with ``value``; ``box=(x0, y0, x1, y1)`` is painted 255. Format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    arr = np.full(shape, value, np.uint8)
    if box is not None:
        x0, y0, x1, y1 = box
        arr[y0:y1, x0:x1] = 255
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture
def put():
    """``put(path, size=(8, 8), value=0, mode="L", box=None)`` writes a tiny image and returns its path."""
    return write_image


@pytest.fixture
def parity_dataset() -> Path:
    return FIXTURE / "dataset"
