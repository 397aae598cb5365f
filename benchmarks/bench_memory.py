"""Peak memory of long prediction runs: 200 vs 2,000 images at 224 px (resident set size, RSS).

Run: ``python benchmarks/bench_memory.py [--counts 200 2000]``. Each measurement runs in a fresh Python process
(peak RSS is per process) on a folder of 300x300 PNG images, with a small random TIPS model at 224 px on the CPU:

* ``predict(list)``: :meth:`zsad.Detector.predict` on the list of paths keeps every result (map at the image
  size) until it returns: memory grows with the number of images, by design;
* ``predict_iter``: :meth:`zsad.Detector.predict_iter`, each result dropped once used: constant memory;
* ``predict_files``: what ``zsad predict`` runs (shards, part files, an overlay PNG per image): constant memory.

For each mode: peak RSS at each count, the growth per image between the two counts (MB/image), and the drift
within the longer run (largest RSS in its second half minus the largest in its first half, sampled every 0.2 s):
a flat run shows a few tens of MB of allocator noise and no drift; ``predict(list)`` grows by about the size of
a result per image (a 300x300 float32 map is 0.34 MB). ``--malloc-arena-max 2`` runs the children with
``MALLOC_ARENA_MAX=2`` (glibc: fewer per-thread heaps, less fragmentation from the decoding threads).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

MODES = ("predict(list)", "predict_iter", "predict_files")

CHILD = r"""
import json, resource, sys, threading, time, warnings
warnings.simplefilter("ignore")
from pathlib import Path
from zsad import Detector
ARCH = dict(vision_width=128, vision_depth=4, vision_heads=4, mlp_ratio=4.0, swiglu=False, native_image_size=224,
            text_width=128, text_layers=2, text_heads=4, text_mlp=512, vocab_size=512)
mode, folder, n, out = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
paths = sorted(str(p) for p in folder.glob("*.png"))[:n]
det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_checkpoint=None, image_size=224,
                           backbone_options={"random_arch": ARCH}, device="cpu")
det.predict(paths[0], class_name="screw")  # warm-up: prototypes, thread pools
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
samples, running = [], True
def sample():
    while running:
        with open("/proc/self/statm") as f:
            samples.append(int(f.read().split()[1]) * resource.getpagesize() / 2**20)
        time.sleep(0.2)
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
if mode == "predict(list)":
    results = det.predict(paths, class_name="screw", batch_size=8, progress=False)
    assert len(results) == n
elif mode == "predict_iter":
    assert sum(1 for _ in det.predict_iter(paths, "screw", batch_size=8)) == n
else:
    from zsad.prediction import predict_files
    run = predict_files(paths, out, class_name="screw", detector=det, batch_size=8, progress=False)
    assert run.scored == n
running = False
sampler.join()
half = len(samples) // 2
print(json.dumps({"after_warmup_mb": before, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "drift_mb": max(samples[half:]) - max(samples[:half] or samples)}))
"""


def make_images(folder: Path, n: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)
    for i in range(n):
        Image.fromarray(np.roll(base, 7 * i, axis=i % 2)).save(folder / f"{i:05d}.png")


def measure(mode: str, folder: Path, n: int, out: Path, env: dict[str, str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-c", CHILD, mode, str(folder), str(n), str(out)],
                          capture_output=True, text=True, check=True, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs=2, default=[200, 2000])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--malloc-arena-max", type=int, default=None)
    args = parser.parse_args()
    env = dict(os.environ)
    if args.malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
    small, large = args.counts
    tmp = Path(tempfile.mkdtemp(prefix="zsad-mem-"))
    try:
        make_images(tmp / "images", large)
        arena = f", MALLOC_ARENA_MAX={args.malloc_arena_max}" if args.malloc_arena_max else ""
        print(f"images 300x300 PNG, tiny TIPS at 224 px, CPU, batch 8{arena}; RSS in MB\n")
        print(f"| mode | after warm-up | peak, {small} images | peak, {large} images | growth MB/image "
              f"| drift within {large} |")
        print("|---|---:|---:|---:|---:|---:|")
        for mode in args.modes:
            a = measure(mode, tmp / "images", small, tmp / "out", env)
            b = measure(mode, tmp / "images", large, tmp / "out", env)
            growth = (b["peak_mb"] - a["peak_mb"]) / (large - small)
            print(f"| {mode} | {a['after_warmup_mb']:.0f} | {a['peak_mb']:.0f} | {b['peak_mb']:.0f} | {growth:.3f} "
                  f"| {b['drift_mb']:+.0f} |", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
