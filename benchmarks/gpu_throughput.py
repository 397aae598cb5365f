"""Images/second and peak GPU memory of ``Detector.predict`` internals for TIPS L/14 at 518 px on CUDA.

Random weights are fine for speed: the architecture is the real TIPS v1 L/14-HR (24 blocks, width 1024, text
12 layers). Measures the model path (preprocessed tensors already on the device: backbone + scoring + pixel
maps), fp32 and bf16, batch sizes 1-64, and prints one table.

Run on a machine with a CUDA device: ``python benchmarks/gpu_throughput.py [--batches 1 2 4 8 16 32 64]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from zsad import Detector
from zsad.backbones.tips import TipsArchitecture, TipsBackbone
from zsad.config import DetectorConfig

L14 = TipsArchitecture(vision_width=1024, vision_depth=24, vision_heads=16, mlp_ratio=4.0, swiglu=False,
                       native_image_size=448, text_width=1024, text_layers=12, text_heads=16, text_mlp=4096)


def measure(det: Detector, batch: int, size: int, iters: int) -> tuple[float, float]:
    pixels = torch.rand(batch, 3, size, size, device=det.device)
    names = ["metal_nut"] * batch
    with torch.inference_mode():
        det.score_pixels(pixels, names)  # warm-up (and prototypes)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(iters):
            det.score_pixels(pixels, names)
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return batch * iters / elapsed, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--size", type=int, default=518)
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("No CUDA device: this benchmark needs a GPU.")
    config = DetectorConfig(name="tipsomaly-l14-random").with_overrides(image_size=args.size, prompt_checkpoint=None)
    print(f"TIPS L/14 (random weights), {args.size} px, {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"{'dtype':8s} {'batch':>5s} {'img/s':>9s} {'peak GiB':>9s}")
    backbone = TipsBackbone.random(L14)
    for dtype in ("float32", "bfloat16"):
        det = Detector(config, device="cuda", dtype=dtype, backbone=backbone)
        for b in args.batches:
            try:
                ips, peak = measure(det, b, args.size, args.iters)
                print(f"{dtype:8s} {b:5d} {ips:9.1f} {peak:9.2f}")
            except torch.cuda.OutOfMemoryError:
                print(f"{dtype:8s} {b:5d} {'OOM':>9s}")
                torch.cuda.empty_cache()
        backbone = det.backbone.float()
        del det
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
