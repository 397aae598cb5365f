"""Input loading: every accepted input kind, pixel modes, and clear errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from zsad.errors import ImageError
from zsad.io import load_image, prepare, prepare_batch


def _rgb(h=20, w=30):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "YCbCr", "1"])
def test_modes_convert_like_the_official_pipeline(tmp_path, mode):
    img = Image.fromarray(_rgb()).convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "YCbCr") else "x.png")
    img.save(path)
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(np.asarray(load_image(path)), expected)
    np.testing.assert_array_equal(np.asarray(load_image(img)), np.asarray(img.convert("RGB")))


def test_16_bit_is_refused_unless_asked(tmp_path):
    arr = (np.arange(600, dtype=np.uint16).reshape(20, 30) * 100).astype(np.uint16)
    img = Image.fromarray(arr)
    assert img.mode.startswith("I;16")
    with pytest.raises(ImageError, match="high_bit_depth='scale'"):
        load_image(img)
    scaled = np.asarray(load_image(img, high_bit_depth="scale"))
    np.testing.assert_array_equal(scaled[..., 0], np.round(arr / 65535 * 255).astype(np.uint8))
    clipped = np.asarray(load_image(img, high_bit_depth="clip"))
    np.testing.assert_array_equal(clipped, np.asarray(img.convert("RGB")))


def test_corrupt_truncated_and_missing_files(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(_rgb(64, 64)).save(good)
    data = good.read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"hello")
    with pytest.raises(ImageError, match=r"trunc\.png.*corrupt, truncated"):
        load_image(tmp_path / "trunc.png")
    with pytest.raises(ImageError, match=r"junk\.png"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_arrays_and_tensors():
    arr = _rgb()
    np.testing.assert_array_equal(np.asarray(load_image(arr)), arr)
    np.testing.assert_array_equal(np.asarray(load_image(arr[..., 0])), np.repeat(arr[..., :1], 3, axis=2))
    with pytest.raises(ImageError, match="uint8"):
        load_image(arr.astype(np.float32))
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((3, 20, 30), np.uint8))
    batch = prepare_batch([torch.rand(3, 20, 30), torch.rand(2, 3, 28, 28), arr], 28)
    assert batch.pixels.shape == (4, 3, 28, 28)
    assert batch.original_sizes == [(20, 30), (28, 28), (28, 28), (20, 30)]
    with pytest.raises(ImageError, match=r"\[0, 1\]"):
        prepare_batch([torch.full((3, 4, 4), 255.0)], 28)
    with pytest.raises(ImageError, match="float"):
        prepare_batch([torch.zeros(3, 4, 4, dtype=torch.uint8)], 28)
    with pytest.raises(ImageError, match="3xHxW"):
        prepare_batch([torch.rand(1, 4, 4)], 28)
    with pytest.raises(ImageError, match="Unsupported input"):
        load_image(123)  # type: ignore[arg-type]
    with pytest.raises(ImageError, match="empty"):
        prepare_batch([], 28)


def test_prepare_matches_pil_bilinear_and_normalises():
    img = Image.fromarray(_rgb())
    t = prepare(img, 28)
    expected = np.asarray(img.resize((28, 28), Image.BILINEAR), dtype=np.float32) / 255
    np.testing.assert_array_equal(t.permute(1, 2, 0).numpy(), expected)
    n = prepare(img, 28, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    torch.testing.assert_close(n, (t - 0.5) / 0.5)


def test_exif_orientation_optional(tmp_path):
    img = Image.fromarray(_rgb(10, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    path = tmp_path / "o.jpg"
    img.save(path, exif=exif)
    assert load_image(path).size == (20, 10)
    assert load_image(path, exif_transpose=True).size == (10, 20)


def test_numpy_output_is_the_torch_path_without_torch(tmp_path):
    Image.fromarray(_rgb(33, 47)).save(tmp_path / "a.png")
    inputs = [str(tmp_path / "a.png"), _rgb(20, 30), Image.fromarray(_rgb(64, 16)), torch.rand(2, 3, 28, 28)]
    for mean, std in ((None, None), ((0.5, 0.4, 0.3), (0.2, 0.3, 0.4))):
        as_torch = prepare_batch(inputs, 28, mean=mean, std=std)
        as_numpy = prepare_batch(inputs, 28, mean=mean, std=std, output="numpy")
        assert isinstance(as_numpy.pixels, np.ndarray) and as_numpy.pixels.dtype == np.float32
        np.testing.assert_array_equal(as_numpy.pixels, as_torch.pixels.numpy())
        assert as_numpy.original_sizes == as_torch.original_sizes and as_numpy.paths == as_torch.paths


def test_resize_map_is_torch_bilinear():
    from zsad.results import resize_map

    rng = np.random.default_rng(0)
    for source, size in (((56, 56), (40, 50)), ((37, 37), (518, 518)), ((518, 518), (200, 300)), ((5, 7), (1, 9))):
        amap = rng.random(source, dtype=np.float32)
        expected = torch.nn.functional.interpolate(torch.from_numpy(amap)[None, None], size=size, mode="bilinear",
                                                   align_corners=False)[0, 0].numpy()
        got = resize_map(amap, size)
        assert got.dtype == np.float32 and got.shape == size
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "L", "RGB", "CMYK"])
def test_resize_before_conversion_keeps_the_file_mode(tmp_path, mode):
    """rgb_conversion='after_resize': PIL resize in the file's own mode, then convert('RGB') (AnomalyCLIP's order)."""
    rgba = np.random.default_rng(1).integers(0, 256, (23, 31, 4), dtype=np.uint8)
    img = Image.fromarray(rgba, "RGBA").convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    with Image.open(path) as im:
        expected = np.asarray(im.resize((28, 28), Image.BICUBIC).convert("RGB")).astype(np.float32) / 255
    batch = prepare_batch([path], 28, resample="bicubic", rgb_conversion="after_resize")
    np.testing.assert_array_equal(batch.pixels[0].permute(1, 2, 0).numpy(), expected)
    assert batch.original_sizes == [(23, 31)]
    if mode in ("P", "RGBA"):  # the order matters for these modes
        before = prepare_batch([path], 28, resample="bicubic").pixels
        assert not torch.equal(before, batch.pixels)
