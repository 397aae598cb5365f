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
sys.path.insert(0, str(ROOT / "benchmarks"))
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
    # end-to-end predict throughput from PNG files (decode + resize + model + maps at the original size)
    import tempfile

    from PIL import Image

    from zsad.backbones.tips import TipsBackbone
    from gpu_throughput import L14

    folder = Path(tempfile.mkdtemp())
    for i in range(128):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (600, 800, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    files = sorted(str(p) for p in folder.glob("*.png"))
    tiny = Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE),
                                prompt_checkpoint=str(FIXTURE / "learnable_params.pth"), image_size=518, device="cuda")
    l14 = Detector(tiny.config.with_overrides(prompt_strategy="fixed"), device="cuda", dtype="bfloat16",
                   backbone=TipsBackbone.random(L14))
    for label, det in (("tiny TIPS fp32", tiny), ("TIPS L/14 bf16 (random weights)", l14)):
        det.predict(files[:32], class_name="x", batch_size=32, progress=False)
        torch.cuda.synchronize()
        t = time.perf_counter()
        det.predict(files, class_name="x", batch_size=32, progress=False)
        torch.cuda.synchronize()
        print(f"end-to-end predict, {label}, 128 PNG files 800x600 -> 518 px, batch 32: "
              f"{len(files) / (time.perf_counter() - t):.1f} img/s")


if __name__ == "__main__":
    main()
