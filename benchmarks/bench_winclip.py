"""Throughput of the ``winclip`` recipe vs anomalib 2.7.0's ``WinClipModel``, side by side in one run (CPU).

Both run the per-batch scoring of preprocessed (resized and normalised) 240 x 240 pixels on the same random
weights: zsad's :meth:`Detector.score_pixels` and anomalib's ``WinClipModel.forward``, zero-shot and with k
normal references, for a tiny open_clip model (the parity fixture's architecture) and a ViT-B-16-plus-240-sized
one. anomalib needs open_clip_torch < 2.26.1, so it runs in its own virtual environment, driven as a
subprocess (this script's own driver code; nothing of anomalib is copied)::

    python -m venv /tmp/anomalib-venv
    /tmp/anomalib-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 anomalib==2.7.0 open_clip_torch==2.24.0
    python benchmarks/bench_winclip.py --anomalib-python /tmp/anomalib-venv/bin/python

Each side gets the same torch thread count, one warm-up batch, then ``--repeats`` timed passes over the images;
the printed table has images/second of the fastest pass (the pass least disturbed by other jobs) and the speed-up, and the largest difference of the two sides' scores and
maps (a sanity check that both computed the same thing). Timings are noisy on a shared machine: compare the
ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = ROOT / "tests" / "fixtures" / "winclip-parity" / "model_config.json"

_ANOMALIB_DRIVER = r'''
import json, sys, time
import numpy as np, torch
import open_clip

args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
real = open_clip.create_model_and_transforms


def from_files(name, pretrained=None, **kwargs):  # stand-in for the hard-coded download (same random weights)
    folder = args["model_dir"]
    open_clip.add_model_config(folder + "/zsad_bench_model.json")
    model, _, transform = real("zsad_bench_model", **kwargs)
    open_clip.load_checkpoint(model, folder + "/clip.pt", strict=True)
    return model, None, transform


open_clip.create_model_and_transforms = from_files
from anomalib.models.image.winclip.torch_model import WinClipModel

data = torch.load(args["data"])
pixels, refs = data["pixels"], data["references"]
out = {}
for k in args["shots"]:
    model = WinClipModel(class_name="metal nut", reference_images=refs[:k] if k else None, scales=(2, 3)).eval()
    batches = pixels.split(args["batch_size"])
    with torch.inference_mode():
        model(batches[0])  # warm-up
        seconds = []
        for _ in range(args["repeats"]):
            start = time.perf_counter()
            results = [model(b) for b in batches]
            seconds.append(time.perf_counter() - start)
    out[str(k)] = {
        "images_per_s": pixels.shape[0] / min(seconds),
        "scores": torch.cat([r.pred_score for r in results]).tolist(),
        "maps": torch.cat([r.anomaly_map for r in results]).numpy().tolist(),
    }
print(json.dumps(out))
'''


def _model_files(folder: Path, size: str, seed: int = 0) -> dict:
    """Write a random open_clip model (state dict + config) of the given size; return its config."""
    import open_clip

    config = json.loads(TINY_CONFIG.read_text()) if size == "tiny" else open_clip.get_model_config("ViT-B-16-plus-240")
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    (folder / "zsad_bench_model.json").write_text(json.dumps(config))  # how open_clip 2.24 takes a config
    model = open_clip.create_model(f"local-dir:{folder}")
    torch.save(model.state_dict(), folder / "clip.pt")
    return config


def _zsad(folder: Path, config: dict, pixels: torch.Tensor, refs_raw: torch.Tensor, shots, batch_size: int, repeats: int):
    from zsad import Detector

    det = Detector.from_recipe("winclip", backbone_checkpoint=str(folder / "clip.pt"),
                               backbone_options={"model_config": config}, image_size=240, device="cpu")
    out = {}
    for k in shots:
        det.clear_references()
        if k:
            det.add_references(refs_raw[:k], class_name="metal nut")  # [0, 1] pixels, normalised inside
        batches = pixels.split(batch_size)
        with torch.inference_mode():
            det.score_pixels(batches[0], ["metal nut"] * len(batches[0]))  # warm-up (and prototypes)
            seconds = []
            for _ in range(repeats):
                start = time.perf_counter()
                results = [det.score_pixels(b, ["metal nut"] * len(b)) for b in batches]
                seconds.append(time.perf_counter() - start)
        out[str(k)] = {
            "images_per_s": pixels.shape[0] / min(seconds),
            "scores": torch.cat([r.scores["winclip"] for r in results]).tolist(),
            "maps": torch.cat([r.maps for r in results]).numpy().tolist(),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anomalib-python", default=os.environ.get("ZSAD_ANOMALIB_PYTHON", "/tmp/anomalib-venv/bin/python"),
                        help="python of a venv with anomalib==2.7.0 and open_clip_torch==2.24.0")
    parser.add_argument("--sizes", nargs="+", default=["tiny", "b16plus"], choices=["tiny", "b16plus"])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 4])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    if not Path(args.anomalib_python).is_file():
        sys.exit(f"No anomalib python at {args.anomalib_python}; create the venv as the module docstring shows.")
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="zsad-bench-winclip-") as tmp:
        for size in args.sizes:
            folder = Path(tmp) / size
            config = _model_files(folder, size)
            gen = torch.Generator().manual_seed(1)
            mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
            std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
            raw = torch.rand(args.images + max(args.shots), 3, 240, 240, generator=gen)
            normalised = (raw - mean) / std
            pixels, refs = normalised[: args.images], normalised[args.images :]
            torch.save({"pixels": pixels, "references": refs}, folder / "data.pt")
            ours = _zsad(folder, config, pixels, raw[args.images :], args.shots, args.batch_size, args.repeats)
            spec = {"model_dir": str(folder), "data": str(folder / "data.pt"), "shots": args.shots,
                    "batch_size": args.batch_size, "repeats": args.repeats, "threads": args.threads}
            done = subprocess.run([args.anomalib_python, "-c", _ANOMALIB_DRIVER, json.dumps(spec)],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"anomalib side failed:\n{done.stderr[-3000:]}")
            theirs = json.loads(done.stdout.strip().splitlines()[-1])
            for k in args.shots:
                a, b = ours[str(k)], theirs[str(k)]
                diff = max(float(np.abs(np.subtract(a["scores"], b["scores"])).max()),
                           float(np.abs(np.subtract(a["maps"], b["maps"])).max()))
                rows.append((size, k, a["images_per_s"], b["images_per_s"], diff))
    print(f"threads={args.threads} images={args.images} batch_size={args.batch_size} repeats={args.repeats}")
    print(f"{'model':8} {'k':>2} {'zsad img/s':>11} {'anomalib img/s':>15} {'speed-up':>9} {'max |diff|':>11}")
    for size, k, ours_ips, theirs_ips, diff in rows:
        print(f"{size:8} {k:>2} {ours_ips:>11.2f} {theirs_ips:>15.2f} {ours_ips / theirs_ips:>8.2f}x {diff:>11.2e}")


if __name__ == "__main__":
    main()
