"""Throughput of ``zsad predict`` (:func:`zsad.prediction.predict_files`) with the engine off and on Ray.

Run: ``python benchmarks/bench_distributed.py [--images 256] [--workers 1 2] [--device cpu|cuda]``.

A folder of 256 PNG images (256x256) is scored by a small random TIPS model (224 px, no overlays, no maps):

* ``local``: in this process (the default engine);
* ``ray xN``: on a local Ray runtime with N workers (one detector each; CPUs split between them, or one GPU each
  with ``--device cuda``).

Each configuration runs into fresh output folders: the first run includes starting the workers and loading the
model (``cold``), then ``--repeats`` runs measure the steady state (``warm``: workers and prototypes ready; the
best and the median rate are shown, the best being the least disturbed by other load on a shared machine). The
*driver overhead* is the CPU time this process spends per image while Ray workers do the scoring (listing,
sharding, receiving rows, part files, merging).

Wall-clock rates on a shared machine depend on what else runs (a process with more threads gets a larger share of
a busy CPU), so the CPU time per image is reported too: for ``local`` the CPU time of this process, for Ray the
workers' CPU time on the shards plus the driver's. It does not depend on other load and shows what Ray costs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ARCH = dict(vision_width=128, vision_depth=4, vision_heads=4, mlp_ratio=4.0, swiglu=False, native_image_size=224,
            text_width=128, text_layers=2, text_heads=4, text_mlp=512, vocab_size=512)
OVERRIDES = {"backbone_checkpoint": None, "prompt_checkpoint": None, "image_size": 224,
             "backbone.options": {"random_arch": ARCH}}


def make_images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return folder


def timed_run(images: Path, out: Path, engine, device: str, batch_size: int,
              shard_size: int) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, CPU seconds of the workers' shards) of one predict_files run."""
    import json
    import warnings

    from zsad.prediction import predict_files

    shutil.rmtree(out, ignore_errors=True)
    wall, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained random prompts
        run = predict_files(images, out, overrides=OVERRIDES, class_name="screw", device=device, overlays=False,
                            batch_size=batch_size, shard_size=shard_size, progress=False, engine=engine)
    assert run.failed == 0
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, json.loads((out / "manifest.json").read_text())["shard_cpu_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import ray
    import torch

    from zsad.engines.local import LocalEngine
    from zsad.engines.ray_engine import RayEngine

    tmp = Path(tempfile.mkdtemp(prefix="zsad-bench-"))
    images = make_images(tmp / "images", args.images)
    n = args.images
    print(f"{n} images 256x256, tiny TIPS at 224 px, batch {args.batch_size}, shard {args.shard_size}, "
          f"device {args.device}, {os.cpu_count()} CPU core(s), torch {torch.__version__}, ray {ray.__version__}")
    rows = []

    def measure(name: str, engine, driver: bool) -> None:
        cold = timed_run(images, tmp / "out", engine, args.device, args.batch_size, args.shard_size)[0]
        warm = [timed_run(images, tmp / "out", engine, args.device, args.batch_size, args.shard_size)
                for _ in range(args.repeats)]
        rates = sorted(n / w[0] for w in warm)
        cpu = sorted(w[1] + (w[2] if driver else 0.0) for w in warm)[len(warm) // 2]  # median CPU seconds
        drv = sorted(w[1] for w in warm)[len(warm) // 2]
        driver_ms = 1000 * drv / n if driver else None
        rows.append((name, n / cold, rates[-1], rates[len(rates) // 2], 1000 * cpu / n, driver_ms))

    local = LocalEngine(device=args.device)
    measure("local (engine off)", local, driver=False)
    ray.init(include_dashboard=False, logging_level="ERROR")
    try:
        for k in args.workers:
            engine = RayEngine(workers=k, device=args.device)
            try:
                measure(f"ray x{k}", engine, driver=True)
            finally:
                engine.close()
    finally:
        ray.shutdown()
    try:  # again at the end: load on a shared machine drifts, this shows by how much
        measure("local, again", local, driver=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base, base_cpu = rows[0][2], rows[0][4]
    print("\n| engine | cold img/s | warm img/s (best) | warm (median) | best vs local | CPU ms/img | CPU vs local "
          "| driver CPU ms/img |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, c, w, m, cpu, d in rows:
        print(f"| {name} | {c:.1f} | {w:.1f} | {m:.1f} | {w / base:.2f} | {cpu:.1f} | {cpu / base_cpu:.2f} | "
              f"{'-' if d is None else f'{d:.2f}'} |")

if __name__ == "__main__":
    main()
