"""Throughput of ``Detector.predict`` on CPU with a small random TIPS model.

Run: ``pytest benchmarks/bench_predict.py --benchmark-enable`` (pytest-benchmark table), or
``python benchmarks/bench_predict.py`` for a short ratio report. Compare ratios within one run only: timings on
shared machines are noisy.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from zsad import Detector

N_IMAGES = 16
IMAGE_SIZE = 224
# a small TIPS-shaped model: 4 blocks of width 128 (random weights)
ARCH = dict(vision_width=128, vision_depth=4, vision_heads=4, mlp_ratio=4.0, swiglu=False, native_image_size=224,
            text_width=128, text_layers=2, text_heads=4, text_mlp=512, vocab_size=512)


def make_detector() -> Detector:
    return Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_checkpoint=None, image_size=IMAGE_SIZE,
                                backbone_options={"random_config": ARCH}, device="cpu")


def make_images(n: int = N_IMAGES) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def det():
    d = make_detector()
    d.predict(make_images(1))  # warm-up, fills the prototype cache
    return d


def test_predict_batched(benchmark, det):
    imgs = make_images()
    benchmark.extra_info["images"] = len(imgs)
    benchmark(lambda: det.predict(imgs, class_name="metal_nut", batch_size=8, progress=False))


def test_predict_one_at_a_time(benchmark, det):
    imgs = make_images()
    benchmark.extra_info["images"] = len(imgs)
    benchmark(lambda: [det.predict(x, class_name="metal_nut") for x in imgs])


def test_predict_uncached_prototypes(benchmark, det):
    imgs = make_images()

    def run():
        det.clear_cache()
        det.predict(imgs, class_name="metal_nut", batch_size=8, progress=False)

    benchmark(run)


def main() -> None:
    torch.manual_seed(0)
    det = make_detector()
    imgs = make_images()
    det.predict(imgs[:1])
    rows = []
    for name, fn in [
        ("batched (8)", lambda: det.predict(imgs, class_name="metal_nut", batch_size=8, progress=False)),
        ("one at a time", lambda: [det.predict(x, class_name="metal_nut") for x in imgs]),
        ("batched, uncached prototypes",
         lambda: (det.clear_cache(), det.predict(imgs, class_name="metal_nut", batch_size=8, progress=False))),
    ]:
        fn()
        t = min(_timed(fn) for _ in range(3))
        rows.append((name, len(imgs) / t))
    base = rows[1][1]
    print(f"Detector.predict, random TIPS width {ARCH['vision_width']} depth {ARCH['vision_depth']}, {IMAGE_SIZE}px, "
          f"{torch.get_num_threads()} threads")
    for name, ips in rows:
        print(f"  {name:30s} {ips:8.2f} img/s   x{ips / base:.2f} vs one at a time")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
