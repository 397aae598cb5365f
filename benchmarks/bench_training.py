"""Prompt-learning steps per second on CPU with a small random TIPS model, with and without the feature cache.

* ``no cache``: every step preprocesses the images and runs the (frozen) vision tower again, as the official
  ``train.py`` does each epoch;
* ``memory cache``: features computed once, each step scores them (what :func:`zsad.training.train_prompts` does
  without ``feature_cache``);
* ``disk cache``: each step reads the batch's features from a :class:`~zsad.training.cache.DiskFeatureCache`.

Every step still runs the text tower once (forward and backward) for the whole prompt ensemble.

Run: ``pytest benchmarks/bench_training.py --benchmark-enable`` (pytest-benchmark table), or
``python benchmarks/bench_training.py [--arch tiny|small] [--device cuda]`` for a short report with the ratios. ``tiny`` is the
default random TIPS of the tests (width 32, 56 px); ``small`` is the width-128, 224 px model of
``bench_predict.py``, where the vision tower weighs more. Compare ratios within one run only.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pytest
import torch

from zsad import Detector
from zsad.training import PromptTrainer, prepare_masks
from zsad.training.cache import DiskFeatureCache

BATCH = 8
ARCHS = {
    "tiny": ({}, 56),
    "small": (
        dict(
            vision_width=128,
            vision_depth=4,
            vision_heads=4,
            mlp_ratio=4.0,
            swiglu=False,
            native_image_size=224,
            text_width=128,
            text_layers=2,
            text_heads=4,
            text_mlp=512,
            vocab_size=512,
        ),
        224,
    ),
}


def make_detector(arch: str = "tiny", device: str = "cpu") -> Detector:
    options, size = ARCHS[arch]
    return Detector.from_recipe(
        "tipsomaly",
        backbone_checkpoint=None,
        prompt_checkpoint=None,
        image_size=size,
        backbone_options={"random_config": options},
        device=device,
    )


def make_batch(n: int = BATCH) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(n)]
    masks = []
    for i in range(n):
        m = np.zeros((96, 128), np.uint8)
        if i % 2:
            m[20:50, 30:70] = 1
        masks.append(m)
    return images, masks


class Setup:
    """A trainer with one batch prepared for the three ways of getting features."""

    def __init__(self, arch: str = "tiny", cache_dir: str | None = None, device: str = "cpu") -> None:
        self.det = make_detector(arch, device)
        self.trainer = PromptTrainer(self.det)
        self.images, self.masks = make_batch()
        features, sizes = self.trainer.encode_images(self.images)
        self.patches, self.grid = features.patches.cpu(), features.grid
        self.mask_tensor = prepare_masks(self.masks, sizes, self.det.config.preprocess.image_size)
        self.cache = DiskFeatureCache(cache_dir or tempfile.mkdtemp(), {"bench": arch}, label="bench")
        self.keys = [f"img{i}" for i in range(BATCH)]
        for key, p in zip(self.keys, self.patches):
            self.cache.put(key, {}, p, self.grid)

    def step_no_cache(self) -> dict:
        return self.trainer.step(self.images, self.masks)

    def step_memory(self) -> dict:
        return self.trainer.step_features(self.patches, self.grid, self.mask_tensor)

    def step_disk(self) -> dict:
        patches = torch.stack([self.cache.get(k, {})[0] for k in self.keys])
        return self.trainer.step_features(patches, self.grid, self.mask_tensor)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    s = Setup("tiny", str(tmp_path_factory.mktemp("features")))
    s.step_memory()  # warm-up
    return s


def test_step_without_feature_cache(benchmark, setup):
    benchmark.extra_info["batch"] = BATCH
    benchmark(setup.step_no_cache)


def test_step_with_memory_feature_cache(benchmark, setup):
    benchmark.extra_info["batch"] = BATCH
    benchmark(setup.step_memory)


def test_step_with_disk_feature_cache(benchmark, setup):
    benchmark.extra_info["batch"] = BATCH
    benchmark(setup.step_disk)


def _steps_per_second(fn, steps: int, device: str) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return steps / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=sorted(ARCHS), default="tiny")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    s = Setup(args.arch, device=args.device)
    rows = [
        ("no cache (vision tower every step)", _steps_per_second(s.step_no_cache, args.steps, args.device)),
        ("memory feature cache", _steps_per_second(s.step_memory, args.steps, args.device)),
        ("disk feature cache", _steps_per_second(s.step_disk, args.steps, args.device)),
    ]
    options, size = ARCHS[args.arch]
    where = args.device if args.device != "cpu" else f"cpu, {torch.get_num_threads()} threads"
    print(
        f"PromptTrainer steps/s, random TIPS '{args.arch}' ({options or 'tiny default'}), {size}px, batch {BATCH}, "
        f"{where}"
    )
    base = rows[0][1]
    for name, rate in rows:
        print(f"  {name:36s} {rate:8.2f} steps/s  x{rate / base:.2f}")


if __name__ == "__main__":
    main()
