"""GPU checks run on a CUDA machine: parity of the Tipsomaly pipeline on CUDA (fp32 and bf16) with the official
reference outputs, and end-to-end predict throughput. Usage: ``python benchmarks/gpu_checks.py``."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from parity import FIXTURE, image_paths, reference, samples  # noqa: E402

from zsad import Detector  # noqa: E402


def main() -> None:
    ref = reference()
    names = [s["cls_name"] for s in samples()]
    paths = [str(p) for p in image_paths()]
    for dtype in ("float32", "bfloat16"):
        det = Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE),
                                   prompt_checkpoint=str(FIXTURE / "learnable_params.pth"), image_size=518,
                                   device="cuda", dtype=dtype)
        res = det.predict(paths, class_name=names, map_size="input")
        maps = np.stack([r.anomaly_map for r in res])
        s5 = np.array([r.scores["S5"] for r in res])
        print(f"cuda {dtype}: max|map - official| = {np.abs(maps - ref['anomaly_map']).max():.2e} (tol 2e-4), "
              f"max|S5 - official| = {np.abs(s5 - ref['score_S2_plus_max']).max():.2e} (tol 2e-4)")
    # end-to-end predict throughput (decode + resize + model + maps at original size), tiny model, many images
    det = Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE),
                               prompt_checkpoint=str(FIXTURE / "learnable_params.pth"), image_size=518, device="cuda")
    imgs = [np.random.default_rng(i).integers(0, 256, (600, 800, 3), dtype=np.uint8) for i in range(64)]
    det.predict(imgs[:8], class_name="x", progress=False)
    torch.cuda.synchronize()
    t = time.perf_counter()
    det.predict(imgs, class_name="x", batch_size=32, progress=False)
    torch.cuda.synchronize()
    print(f"end-to-end predict, tiny TIPS, 800x600 uint8 arrays -> 518 px: {64 / (time.perf_counter() - t):.1f} img/s")


if __name__ == "__main__":
    main()
