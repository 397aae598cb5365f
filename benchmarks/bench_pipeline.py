"""Host-side decode + resize rate on CPU: images/second per core, JPEG and PNG files of 800x600 -> 518x518.

Measures the work one image costs the input pipeline (:mod:`zsad.pipeline`) in its exact mode (Pillow decode,
``convert("RGB")``, Pillow bilinear resize, as the official pipeline) and, for comparison, decode only and the
device mode's resize done by torch on the CPU. "Per core" is images per CPU-second of the process doing the work,
which stays meaningful on a shared machine; the wall-clock rate of the whole pipeline with its worker processes is
printed too (it needs idle cores to mean anything).

Run: ``python benchmarks/bench_pipeline.py [--images 64] [--workers 2]`` or, as a pytest-benchmark suite,
``pytest benchmarks/bench_pipeline.py --benchmark-enable``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 518


def write_images(folder: Path, count: int, fmt: str) -> list[str]:
    """``count`` 800x600 images with natural-image-like content (smooth colour fields plus sensor-like noise)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).resize((800, 600), Image.BICUBIC)
        pixels = np.clip(np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (600, 800, 3)), 0, 255)
        path = folder / f"{i:04d}.{fmt}"
        Image.fromarray(pixels.astype(np.uint8)).save(path, **({"quality": 90} if fmt == "jpg" else {}))
        paths.append(str(path))
    return paths


def per_core(fn, paths: list[str]) -> tuple[float, float]:
    """(images per CPU-second, images per wall-second) of ``fn(path)`` over the paths, in this thread."""
    fn(paths[0])
    cpu, wall = time.thread_time(), time.perf_counter()
    for p in paths:
        fn(p)
    return len(paths) / (time.thread_time() - cpu), len(paths) / (time.perf_counter() - wall)


def exact(path: str) -> np.ndarray:
    from zsad.io import load_image, resize_square

    return resize_square(load_image(path), SIZE)


def decode_only(path: str) -> np.ndarray:
    from zsad.io import load_image

    return np.asarray(load_image(path))


def torch_resize(path: str):
    import torch
    import torch.nn.functional as F

    from zsad.io import load_image

    x = torch.from_numpy(np.array(load_image(path))).permute(2, 0, 1)[None].float()
    return F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", antialias=True, align_corners=False).round_()


def pipeline_rate(paths: list[str], workers: int, batch: int = 32) -> float:
    """Wall-clock images/second of the exact-mode pipeline with ``workers`` processes (pixels as CPU float)."""
    from zsad.pipeline import InputPipeline, PipelineOptions, Preprocess

    with InputPipeline(Preprocess(SIZE), "cpu", PipelineOptions(workers=workers)) as pipe:
        list(pipe.batches(paths[:batch], batch // 2))  # start the workers
        start = time.perf_counter()
        for _ in pipe.batches(paths, batch):
            pass
        return len(paths) / (time.perf_counter() - start)


@pytest.fixture(scope="module", params=["jpg", "png"])
def files(request, tmp_path_factory):
    return write_images(tmp_path_factory.mktemp(request.param), 16, request.param)


def test_decode_and_resize_exact(benchmark, files):
    benchmark(lambda: [exact(p) for p in files])


def test_decode_only(benchmark, files):
    benchmark(lambda: [decode_only(p) for p in files])


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="zsad-bench-pipeline-"))
    print(f"decode + resize, 800x600 -> {SIZE}x{SIZE}, {args.images} files per format, Pillow {Image.__version__}")
    print(f"{'format':6s} {'step':34s} {'img/s per core':>15s} {'img/s wall':>11s}")
    for fmt in ("jpg", "png"):
        paths = write_images(folder, args.images, fmt)
        for label, fn in (("decode + Pillow resize (exact)", exact), ("decode only", decode_only),
                          ("decode + torch resize (device, CPU)", torch_resize)):
            core, wall = per_core(fn, paths)
            print(f"{fmt:6s} {label:34s} {core:15.1f} {wall:11.1f}")
        for workers in args.workers:
            print(f"{fmt:6s} {f'pipeline, {workers} worker process(es)':34s} {'':15s} "
                  f"{pipeline_rate(paths, workers):11.1f}")


if __name__ == "__main__":
    main()
