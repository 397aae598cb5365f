"""The input pipeline: worker processes, exact and device preprocessing, lazy inputs, bad files, results back to
the host."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from parity import FIXTURE
from PIL import Image

from zsad.errors import ConfigError, ImageError
from zsad.io import load_image, prepare_batch
from zsad.pipeline import InputPipeline, PipelineOptions, Preprocess, _plain_jpeg_size
from zsad.transfer import maps_to_host

SIZE = 56
MEAN, STD = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8))
    return np.asarray(coarse.resize((w, h), Image.BICUBIC))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[str]:
    """PNG and JPEG files of several sizes and modes (RGB, L, RGBA, P, grayscale and progressive JPEG)."""
    folder = tmp_path_factory.mktemp("images")
    out = []
    for i, (h, w) in enumerate([(40, 60), (75, 50), (56, 56), (90, 120), (31, 47), (64, 80), (50, 50)]):
        img = Image.fromarray(_photo(h, w, i))
        mode, fmt = [("RGB", "png"), ("RGB", "jpg"), ("L", "png"), ("RGBA", "png"), ("P", "png"), ("L", "jpg"),
                     ("RGB", "jpg")][i]
        path = folder / f"{i}.{fmt}"
        img.convert(mode).save(path, **({"progressive": True} if i == 6 else {}))
        out.append(str(path))
    return out


def _pipe(spec: Preprocess | None = None, **options) -> InputPipeline:
    return InputPipeline(spec or Preprocess(SIZE), "cpu", PipelineOptions(**options))


def test_worker_processes_give_the_exact_pixels_in_order(files):
    expected = prepare_batch(files, SIZE, mean=MEAN, std=STD)
    with _pipe(Preprocess(SIZE, mean=MEAN, std=STD), workers=2) as pipe:
        got = list(pipe.batches(files, 3))
        assert pipe._pool is not None  # more files than one batch: decoded by the worker processes
        assert [len(chunk) for chunk, _ in got] == [3, 3, 1]
        pixels = torch.cat([b.pixels for _, b in got])
        assert torch.equal(pixels, expected.pixels)  # bit for bit, normalisation included
        assert [hw for _, b in got for hw in b.original_sizes] == expected.original_sizes
        assert [p for _, b in got for p in b.paths] == files
        again = torch.cat([b.pixels for _, b in pipe.batches(files[:2], 8)])  # small job, warm pool: reused
        assert torch.equal(again, expected.pixels[:2])
    assert pipe._pool is None  # closed by the with block


@pytest.mark.parametrize("workers", [0, 2])
def test_resize_before_rgb_conversion_is_kept_in_workers_and_threads(files, workers):
    """rgb_conversion='after_resize' (AnomalyCLIP): each file resized in its own mode, then converted to RGB."""
    spec = Preprocess(SIZE, resample="bicubic", mean=MEAN, std=STD, rgb_conversion="after_resize")
    expected = prepare_batch(files, SIZE, resample="bicubic", mean=MEAN, std=STD, rgb_conversion="after_resize")
    before = prepare_batch(files, SIZE, resample="bicubic", mean=MEAN, std=STD)
    assert not torch.equal(expected.pixels, before.pixels)  # the fixture's P / RGBA files tell the orders apart
    with _pipe(spec, workers=workers) as pipe:
        pixels = torch.cat([b.pixels for _, b in pipe.batches(files, 3)])
    assert torch.equal(pixels, expected.pixels)


def test_threads_only_in_memory_inputs_and_generators(files):
    arrays = [np.asarray(load_image(f)) for f in files]
    expected = prepare_batch(files, SIZE).pixels
    with _pipe(workers=0) as pipe:
        pixels = torch.cat([b.pixels for _, b in pipe.batches(arrays, 4)])
        assert pipe._pool is None
        assert torch.equal(pixels, expected)
        pulled = []

        def source():
            for a in arrays:
                pulled.append(1)
                yield a

        batches = pipe.batches(source(), 2)
        next(batches)  # the first batch and one loading ahead (prefetch 1 on a CPU): not the whole input
        assert len(pulled) == 4
        assert sum(b.pixels.shape[0] for _, b in batches) == 5


def test_tensor_inputs_and_mixed_lists_keep_their_rules(files):
    tensor = torch.rand(2, 3, 40, 30)
    for preprocess in ("exact", "device"):
        with _pipe(Preprocess(SIZE, mean=MEAN, std=STD), preprocess=preprocess) as pipe:
            (chunk, batch), = list(pipe.batches([files[1], tensor, files[0]], 4))
        expected = prepare_batch([files[1], tensor, files[0]], SIZE, mean=MEAN, std=STD)
        assert batch.original_sizes == [(75, 50), (40, 30), (40, 30), (40, 60)]
        tolerance = 0 if preprocess == "exact" else 1.01 / 255 / min(STD)
        assert (batch.pixels - expected.pixels).abs().max() <= tolerance
        assert torch.equal(batch.pixels[1:3], expected.pixels[1:3])  # tensors: always prepared as before


@pytest.mark.parametrize("workers", [0, 2])
def test_torch_resize_recipes_keep_their_float_resize(files, workers):
    """Recipes with resize_backend="torch" (WinCLIP: bicubic on float pixels): exact as zsad.io, and in the device
    mode the same torch resize run on the model's device."""
    spec = Preprocess(SIZE, "bicubic", MEAN, STD, backend="torch")
    expected = prepare_batch(files, SIZE, resample="bicubic", mean=MEAN, std=STD, backend="torch").pixels
    with _pipe(spec, workers=workers) as pipe:
        exact = torch.cat([b.pixels for _, b in pipe.batches(files, 3)])
    assert torch.equal(exact, expected)
    with _pipe(spec, preprocess="device", workers=workers) as pipe:
        device = torch.cat([b.pixels for _, b in pipe.batches(files, 3)])
    assert (device - expected).abs().max() < 1e-5  # batched vs one by one: float rounding only


def _broken_files(folder, png: str, jpeg: str) -> tuple[str, str, str]:
    truncated = folder / "truncated.png"
    truncated.write_bytes(open(png, "rb").read()[:200])
    data = open(jpeg, "rb").read()
    i = data.index(b"\xff\xc4")  # a Huffman table with impossible code counts: the header parses, decoding fails
    bad = bytearray(data)
    bad[i + 5 : i + 21] = b"\xff" * 16
    bad_jpeg = folder / "bad_huffman.jpg"
    bad_jpeg.write_bytes(bytes(bad))
    return str(truncated), str(bad_jpeg), str(folder / "missing.png")


@pytest.mark.parametrize("preprocess", ["exact", "device"])
def test_bad_files_raise_or_are_reported_and_the_rest_is_loaded(files, tmp_path, preprocess):
    truncated, bad_jpeg, missing = _broken_files(tmp_path, files[0], files[1])
    items = [files[0], bad_jpeg, files[1], truncated, missing, files[6]]
    cpu_errors = {}
    for i, item in enumerate(items):
        try:
            load_image(item)
        except ImageError as exc:
            cpu_errors[i] = str(exc)
    assert sorted(cpu_errors) == [1, 3, 4]
    with _pipe(preprocess=preprocess, workers=2) as pipe:
        (chunk, batch), = list(pipe.batches(items, 8, errors="return"))
        assert {i: str(e) for i, e in batch.errors.items()} == cpu_errors  # the CPU path's errors, word for word
        assert batch.paths == [files[0], files[1], files[6]] and batch.pixels.shape[0] == 3
        with pytest.raises(ImageError, match="bad_huffman.jpg"):
            list(pipe.batches(items, 8))
        everything_bad = list(pipe.batches([missing, truncated], 8, errors="return"))[0][1]
        assert everything_bad.pixels.shape == (0, 3, SIZE, SIZE) and sorted(everything_bad.errors) == [0, 1]
    good = prepare_batch([files[0], files[1], files[6]], SIZE).pixels
    tolerance = 0 if preprocess == "exact" else 1.01 / 255
    assert (batch.pixels - good).abs().max() <= tolerance


def test_device_mode_decodes_plain_jpegs_with_torchvision_and_stays_within_one_level(files, tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.open(files[1]).convert("CMYK").save(cmyk)
    items = files + [str(cmyk)]
    plain = [_plain_jpeg_size(open(f, "rb").read()) is not None for f in items]
    assert plain == [False, True, False, False, False, True, True, False]  # PNGs and CMYK go to Pillow
    expected = prepare_batch(items, SIZE).pixels
    with _pipe(preprocess="device", workers=2) as pipe:
        assert pipe.device_decode
        pixels = torch.cat([b.pixels for _, b in pipe.batches(items, 3)])
    diff = (pixels - expected).abs() * 255
    assert diff.max() <= 1.0 + 1e-4  # antialiased torch bilinear vs Pillow's: at most one 8-bit level apart
    assert diff.mean() < 0.25


def test_high_bit_depth_follows_the_loader_rules(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray((np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)).save(path)
    for preprocess in ("exact", "device"):
        with _pipe(preprocess=preprocess, workers=0) as pipe:
            with pytest.raises(ImageError, match="high_bit_depth"):
                list(pipe.batches([str(path)], 2))
    with _pipe(Preprocess(SIZE, high_bit_depth="scale"), workers=0) as scaled:
        (_, batch), = list(scaled.batches([str(path)], 2))
    assert torch.equal(batch.pixels, prepare_batch([str(path)], SIZE, high_bit_depth="scale").pixels)


def test_a_dead_worker_fails_the_call_and_the_next_call_starts_fresh_workers(files):
    from concurrent.futures.process import BrokenProcessPool

    with _pipe(workers=2) as pipe:
        list(pipe.batches(files, 3))
        for pid in list(pipe._pool._processes):
            os.kill(pid, signal.SIGKILL)
        with pytest.raises(BrokenProcessPool):
            list(pipe.batches(files, 3))
        assert pipe._pool is None
        assert len([b for _, b in pipe.batches(files, 3)]) == 3


_DECODE_THEN_WAIT = """
import sys, time
from zsad.pipeline import InputPipeline, PipelineOptions, Preprocess
pipe = InputPipeline(Preprocess(56), "cpu", PipelineOptions(workers=2))
list(pipe.batches(sys.argv[1:], 3))
print(*pipe._pool._processes, flush=True)
time.sleep(600)
"""


def test_decoding_workers_do_not_outlive_a_killed_process(files):
    proc = subprocess.Popen([sys.executable, "-c", _DECODE_THEN_WAIT, *files], stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(pid) for pid in proc.stdout.readline().split()]
        assert len(workers) == 2 and all(_running(pid) for pid in workers)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 20
    alive = list(workers)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _running(pid)]
    assert not alive, f"decoding workers {alive} outlived their process"


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_options_are_checked():
    with pytest.raises(ConfigError, match="preprocess"):
        PipelineOptions(preprocess="gpu")
    with pytest.raises(ConfigError, match="workers"):
        PipelineOptions(workers=-1)
    with pytest.raises(ConfigError, match="prefetch"):
        PipelineOptions(prefetch=-2)
    with pytest.raises(ConfigError, match="bilinear"):
        InputPipeline(Preprocess(SIZE, resample="bicubic"), "cpu", PipelineOptions(preprocess="device"))
    with pytest.raises(ConfigError, match="batch_size"):
        list(_pipe().batches([np.zeros((4, 4, 3), np.uint8)], 0))


def test_maps_come_back_at_each_size():
    maps = torch.rand(4, 20, 20)
    sizes = [(30, 40), (20, 20), (30, 40), (7, 9)]
    got = maps_to_host(maps, sizes)()
    for m, hw, g in zip(maps, sizes, got):
        ref = F.interpolate(m[None, None], size=hw, mode="bilinear", align_corners=False)[0, 0]
        assert g.dtype == np.float32 and g.shape == hw
        np.testing.assert_array_equal(g, ref.numpy())
    same = maps_to_host(maps, None)()
    assert all(np.array_equal(a, m.numpy()) for a, m in zip(same, maps))


def test_plain_jpeg_header_parser():
    buf = io.BytesIO()
    Image.new("RGB", (33, 21)).save(buf, "JPEG")
    assert _plain_jpeg_size(buf.getvalue()) == (21, 33)
    assert _plain_jpeg_size(buf.getvalue()[:-40]) is None  # no end-of-image marker: truncated
    assert _plain_jpeg_size(b"\x89PNG\r\n\x1a\n") is None
    assert _plain_jpeg_size(b"\xff\xd8\xff\xda\x00\x02\xff\xd9") is None  # a scan before any frame header


@pytest.mark.parametrize("preprocess", ["exact", "device"])
def test_detector_scores_the_rest_of_a_batch_with_a_bad_file(files, tmp_path, preprocess):
    from zsad import Detector

    _, bad_jpeg, _ = _broken_files(tmp_path, files[0], files[1])
    items = [files[1], bad_jpeg, files[6]]
    with Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), image_size=SIZE, device="cpu",
                              prompt_checkpoint=str(FIXTURE / "learnable_params.pth"),
                              pipeline={"preprocess": preprocess, "workers": 2}) as det:
        (chunk, batch), = list(det.iter_batches(items, 4, errors="return"))
        assert list(batch.errors) == [1] and "bad_huffman.jpg" in str(batch.errors[1])
        with torch.inference_mode():
            out = det.score_pixels(batch.pixels, ["screw"] * 2)
        assert out.maps.shape == (2, SIZE, SIZE) and torch.isfinite(out.scores["S5"]).all()
        with pytest.raises(ImageError, match="bad_huffman.jpg"):
            det.predict(items, class_name="screw")
        results = []
        with pytest.raises(ImageError, match="bad_huffman.jpg"):
            for r in det.predict_iter([files[1], files[6], bad_jpeg], "screw", batch_size=2):
                results.append(r)
        assert len(results) == 2  # the batch before the bad file was yielded before the error


def test_detector_pipeline_pixels_are_the_official_preprocessing():
    """The fixture images through the pipeline (worker processes) at 518 px: the official pixels, bit for bit."""
    from parity import image_paths, reference

    from zsad import Detector

    det = Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), image_size=518, device="cpu",
                               prompt_checkpoint=str(FIXTURE / "learnable_params.pth"), pipeline={"workers": 2})
    with det:
        pixels = torch.cat([b.pixels for _, b in det.iter_batches([str(p) for p in image_paths()], 4)])
    u8 = (pixels.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(u8, reference()["input_u8"])
    assert torch.equal(pixels, det.preprocess([str(p) for p in image_paths()]).pixels)
