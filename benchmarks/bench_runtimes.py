"""Images per second on CPU: the PyTorch detector against its exported graph in ONNX Runtime and OpenVINO.

Run: ``python benchmarks/bench_runtimes.py`` (defaults: 2 threads, batch 8, 518 px, both models, 3 rounds).

Models:

* ``tiny``: the parity fixture's tiny TIPS (width 64, 2 blocks) with its decoupled prompts;
* ``s``: a TIPS-S/14-sized model with random weights (width 384, 12 blocks, 6 heads, MLP 1536).

Each runtime scores the same preprocessed batch (the model path: backbone, prototypes, S1–S5 and the smoothed pixel
maps; no image decoding) and the runtimes take turns, round after round, so that a busy machine slows them alike;
the table shows the median over rounds. Beside each figure is its largest deviation from PyTorch float32 on that
batch. ``--opset20`` adds graphs exported with opset 20, whose attention is plain matrix products instead of the
fused ``Attention`` operator of the default opset 23. ``OpenVINO bf16`` lets OpenVINO compute in bfloat16 where the CPU supports it (its own default there): it is
listed to show the price of that speed and is not a parity mode. Compare ratios within one run only: timings on
shared machines are noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from zsad import Detector
from zsad.export.runtime import ExportedDetector

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tipsomaly-parity"
TIPS_S = {"vision_width": 384, "vision_depth": 12, "vision_heads": 6, "mlp_ratio": 4.0, "swiglu": False,
          "native_image_size": 448, "text_width": 384, "text_layers": 12, "text_heads": 6, "text_mlp": 1536,
          "vocab_size": 32000}
CLASSES = ["metal_nut", "screw"]


def build(model: str, size: int) -> Detector:
    if model == "tiny":
        return Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), image_size=size, device="cpu",
                                    prompt_checkpoint=str(FIXTURE / "learnable_params.pth"))
    return Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_strategy="fixed", prompt_checkpoint=None,
                                image_size=size, backbone_options={"random_config": TIPS_S}, device="cpu")


def runners(det: Detector, folder: Path, threads: int, opset20: bool) -> dict[str, Callable[[np.ndarray, np.ndarray], dict]]:
    def pytorch(pixels: np.ndarray, index: np.ndarray) -> dict:
        with torch.inference_mode():
            out = det.score_pixels(torch.from_numpy(pixels), [CLASSES[i] for i in index])
        return {"pred_score": out.scores[det.config.heads.image_score].numpy(), "anomaly_map": out.maps.numpy()}

    table: dict[str, Callable] = {"PyTorch float32": pytorch}
    for opset in (23, 20) if opset20 else (23,):
        path = folder / f"model-{opset}.onnx"
        det.export(path, CLASSES, verify=False, opset=opset)
        tag = "" if opset == 23 else ", opset 20"
        table[f"ONNX Runtime{tag}"] = ExportedDetector.load(path, "onnxruntime", threads=threads).run
        table[f"OpenVINO{tag}"] = ExportedDetector.load(path, "openvino", threads=threads).run
    table["OpenVINO bf16"] = ExportedDetector.load(folder / "model-23.onnx", "openvino", threads=threads,
                                                   options={"INFERENCE_PRECISION_HINT": "bf16"}).run
    return table


def measure(model: str, args: argparse.Namespace) -> list[dict]:
    det = build(model, args.size)
    rng = np.random.default_rng(0)
    pixels = rng.random((args.batch, 3, args.size, args.size), dtype=np.float32)
    index = np.arange(args.batch) % len(CLASSES)
    with tempfile.TemporaryDirectory() as folder:
        table = runners(det, Path(folder), args.threads, args.opset20)
        reference = table["PyTorch float32"](pixels, index)
        seconds: dict[str, list[float]] = {name: [] for name in table}
        deviation: dict[str, tuple[float, float]] = {}
        for name, run in table.items():  # warm-up (first-call allocations, lazy init) and deviation
            out = run(pixels, index)
            deviation[name] = (float(np.abs(out["pred_score"] - reference["pred_score"]).max()),
                               float(np.abs(out["anomaly_map"] - reference["anomaly_map"]).max()))
        for round_ in range(args.rounds):
            for name, run in table.items():
                start = time.perf_counter()
                run(pixels, index)
                seconds[name].append(time.perf_counter() - start)
            print(f"  {model}: round {round_ + 1}/{args.rounds} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    base = statistics.median(seconds["PyTorch float32"])
    return [{"model": model, "runtime": name, "img_s": args.batch / statistics.median(t),
             "speedup": base / statistics.median(t), "d_score": deviation[name][0], "d_map": deviation[name][1]}
            for name, t in seconds.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "s"], choices=["tiny", "s"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=518)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--opset20", action="store_true", help="also time graphs exported with opset 20 (no fused attention)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [row for model in args.models for row in measure(model, args)]
    import onnxruntime
    import openvino

    print(f"\nCPU {platform.processor() or platform.machine()}, {args.threads} threads, batch {args.batch}, {args.size} px, "
          f"median of {args.rounds} rounds; torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"openvino {openvino.__version__.split('-')[0]}\n")
    print("| model | runtime | img/s | × PyTorch | max abs dev. pred_score | max abs dev. anomaly_map |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['runtime']} | {r['img_s']:.2f} | {r['speedup']:.2f} | {r['d_score']:.1e} | "
              f"{r['d_map']:.1e} |")


if __name__ == "__main__":
    main()
