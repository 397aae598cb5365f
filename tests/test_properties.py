"""Property-based tests of the loaders: any bytes or array either loads correctly or raises a ZsadError.

Never another exception (a library's ``OSError``, ``struct.error``, ``SafetensorError``, ...), never a hang. The
inputs are random bytes, and valid files (PNG, JPEG, TIFF, BMP, safetensors, npz, meta.json) with bytes flipped,
cut or inserted, which reach much deeper into the parsers than random bytes do. Each example runs under a
10-second alarm; the whole module stays well under a minute (``ZSAD_PROPERTY_EXAMPLES`` sets the number of
examples per test, 60 by default; raise it to search longer).
"""

from __future__ import annotations

import io
import json
import os
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from zsad.backbones.tips import _read_npz
from zsad.data import read_mask
from zsad.data.readers import read_meta_json
from zsad.errors import CheckpointError, DatasetError, ImageError, ZsadError
from zsad.io import load_image
from zsad.prompts.checkpoint import load_prompt_checkpoint

PROPERTY = settings(max_examples=int(os.environ.get("ZSAD_PROPERTY_EXAMPLES", "60")), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@contextmanager
def no_hang(seconds: int = 10):
    """Fail (instead of waiting forever) when the block runs longer than *seconds*."""

    def alarm(signum, frame):
        raise AssertionError(f"a loader ran for more than {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _valid_images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    out = {}
    for fmt, mode, ext in (("PNG", "RGB", "png"), ("PNG", "I;16", "png"), ("JPEG", "RGB", "jpg"),
                           ("TIFF", "F", "tif"), ("BMP", "P", "bmp"), ("PNG", "RGBA", "png")):
        if mode == "I;16":
            img = Image.fromarray(rng.integers(0, 65535, (9, 7), dtype=np.uint16))
        elif mode == "F":
            img = Image.fromarray(rng.standard_normal((9, 7)).astype(np.float32))
        else:
            img = Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).convert(mode)
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out[f"{fmt}-{mode}.{ext}"] = buf.getvalue()
    return out


VALID_IMAGES = _valid_images()


@st.composite
def mutated(draw, valid: dict[str, bytes]):
    """(name, bytes): a valid file with some bytes flipped, cut or inserted, or plain random bytes."""
    name = draw(st.sampled_from(sorted(valid)))
    data = bytearray(valid[name])
    kind = draw(st.sampled_from(["flip", "cut", "insert", "random"]))
    if kind == "random":
        return name, draw(st.binary(max_size=512))
    if kind == "cut":
        return name, bytes(data[: draw(st.integers(0, len(data)))])
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return name, bytes(data)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------------------- images
@PROPERTY
@given(case=mutated(VALID_IMAGES), high_bit_depth=st.sampled_from(["error", "scale", "clip"]),
       exif_transpose=st.booleans())
def test_image_files_load_or_raise_image_error(tmp_path, case, high_bit_depth, exif_transpose):
    path = _write(tmp_path, *case)
    with no_hang():
        try:
            image = load_image(path, high_bit_depth=high_bit_depth, exif_transpose=exif_transpose)
        except ImageError:
            return
    assert image.mode == "RGB" and image.width > 0 and image.height > 0


@PROPERTY
@given(array=hnp.arrays(
    dtype=st.sampled_from([np.uint8, np.float32, np.int16, np.bool_, np.uint16]),
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6),
))
def test_arrays_load_or_raise_image_error(array):
    with no_hang():
        try:
            image = load_image(array)
        except ImageError:
            return
    assert image.mode == "RGB" and image.size == (array.shape[1], array.shape[0])


@PROPERTY
@given(tensor=hnp.arrays(dtype=np.float32, shape=hnp.array_shapes(min_dims=1, max_dims=5, min_side=0, max_side=5),
                         elements=st.floats(-2, 2, width=32) | st.just(np.nan)))
def test_tensors_prepare_or_raise_image_error(tensor):
    from zsad.io import prepare_batch

    with no_hang():
        try:
            batch = prepare_batch([torch.from_numpy(tensor)], 14)
        except ImageError:
            return
    assert batch.pixels.shape[1:] == (3, 14, 14) and torch.isfinite(batch.pixels).all()


# ------------------------------------------------------------------------------------------------- masks
@PROPERTY
@given(case=mutated(VALID_IMAGES))
def test_mask_files_load_or_raise_dataset_error(tmp_path, case):
    path = _write(tmp_path, *case)
    with no_hang():
        try:
            mask = read_mask(path)
        except DatasetError:
            return
    assert mask.dtype == np.uint8 and mask.ndim == 2 and set(np.unique(mask)) <= {0, 1}


# ------------------------------------------------------------------------------------------------- meta.json
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=8)
    | st.sampled_from(["a.png", "", "m.png", "test", "train", "c", "/abs.png", "\x00"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["test", "train", "c", "img_path", "mask_path", "cls_name", "specie_name", "anomaly", "x"]),
        inner, max_size=5),
    max_leaves=20,
)


@st.composite
def meta_documents(draw) -> bytes:
    """A meta.json: a JSON document (often close to a valid one), or bytes that are not JSON at all."""
    kind = draw(st.sampled_from(["json", "near", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=256))
    if kind == "near":
        rec = {"img_path": draw(st.sampled_from(["a.png", "missing.png", "", 3])),
               "mask_path": draw(st.sampled_from(["", "m.png", None, "a.png"])),
               "cls_name": draw(st.sampled_from(["c", "d", ""])), "specie_name": "x",
               "anomaly": draw(st.sampled_from([0, 1, 2, "1", None, 1.0]))}
        for key in draw(st.lists(st.sampled_from(sorted(rec)), max_size=2)):
            rec.pop(key, None)
        doc = {"test": {"c": [rec]}} if draw(st.booleans()) else {"train": {"c": [rec]}, "test": {"c": []}}
        return json.dumps(doc).encode()
    return json.dumps(draw(_JSON)).encode()


@PROPERTY
@given(document=meta_documents())
def test_meta_json_loads_or_raises_dataset_error(tmp_path, document):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    Image.new("L", (4, 4)).save(tmp_path / "m.png")
    (tmp_path / "meta.json").write_bytes(document)
    with no_hang():
        try:
            ds = read_meta_json(tmp_path)
        except DatasetError:
            return
    assert all(s.img_path.is_file() for s in ds.samples())


# ------------------------------------------------------------------------------------------------- checkpoints
def _valid_checkpoints() -> dict[str, bytes]:
    from safetensors.torch import save

    t_n, t_a = torch.randn(4, 8), torch.randn(4, 8)
    out = {"prompts.safetensors": save({"T_n": t_n, "T_a": t_a}, metadata={"format": "zsad-prompts"})}
    buf = io.BytesIO()
    np.savez(buf, T_n=t_n.numpy(), T_a=t_a.numpy())
    out["prompts.npz"] = buf.getvalue()
    buf = io.BytesIO()
    torch.save(torch.nn.ParameterList([torch.nn.Parameter(t_n), torch.nn.Parameter(t_a)]), buf)
    out["prompts.pth"] = buf.getvalue()
    return out


VALID_CHECKPOINTS = _valid_checkpoints()


@PROPERTY
@given(case=mutated(VALID_CHECKPOINTS))
def test_prompt_checkpoints_load_or_raise_checkpoint_error(tmp_path, case):
    path = _write(tmp_path, *case)
    with no_hang():
        try:
            t_n, t_a, _ = load_prompt_checkpoint(path)
        except CheckpointError:
            return
    assert t_n.shape == t_a.shape and t_n.ndim == 2 and torch.isfinite(t_n).all() and torch.isfinite(t_a).all()


@PROPERTY
@given(case=mutated({"vision.npz": VALID_CHECKPOINTS["prompts.npz"]}))
def test_weight_npz_files_load_or_raise_checkpoint_error(tmp_path, case):
    path = _write(tmp_path, *case)
    with no_hang():
        try:
            arrays = _read_npz(path)
        except CheckpointError:
            return
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")


@pytest.mark.parametrize("error", [ImageError, DatasetError, CheckpointError])
def test_the_expected_errors_are_zsad_errors(error):
    assert issubclass(error, ZsadError)
