"""Every GPU figure of the throughput work in one run, printed as one table (a few minutes on an H200).

Sections (each can be skipped with ``--skip NAME``):

``parity``
    The parity fixture (official Tipsomaly outputs, tiny random TIPS) at 518 px on the device, float32, through
    ``Detector.predict`` with every runtime option: default (TF32 allowed), ``tf32=False``, ``compile=True``,
    ``preprocess="device"`` (resize on the GPU), bfloat16; the exact pipeline's pixels on the device compared bit for
    bit with the CPU's; and nvJPEG (``preprocess="device"``) against Pillow on JPEG copies of the fixture images.
``attention``
    Which scaled-dot-product-attention kernels the L/14 image encoder runs in float32 and bfloat16.
``model``
    Model-only images/second of TIPS v1 L/14 (random weights, 518 px; pixels already on the device): bfloat16 at
    several batch sizes, eager and compiled; float32 with TF32 and with IEEE matmuls.
``e2e``
    End to end ``Detector.predict`` (as ``zsad predict``: maps at each image's size) from 800x600 JPEG and PNG files,
    bfloat16, exact and device preprocessing.
``official``
    Side by side with the official Tipsomaly code (``--official PATH`` of a checkout at 7eb43a7, and
    ``--official-python`` with its requirements; see ``benchmarks/official_side_by_side.py``), tiny, TIPS-S and
    TIPS-L/14 shapes, same weights and files, interleaved.

Run: ``python benchmarks/gpu_checks.py --official /path/to/Tipsomaly --official-python /path/to/venv/bin/python``
(``--device cpu --arch tiny --quick`` runs every section on a CPU with small settings, to try the script).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from parity import FIXTURE, image_paths, manifest, reference, samples

from zsad import Detector
from zsad.backbones.tips import TipsArchitecture, TipsBackbone
from zsad.config import DetectorConfig
from zsad.io import prepare_batch
from zsad.runtime import attention_kernels

L14 = TipsArchitecture(vision_width=1024, vision_depth=24, vision_heads=16, mlp_ratio=4.0, swiglu=False,
                       native_image_size=448, text_width=1024, text_layers=12, text_heads=16, text_mlp=4096)
TINY = TipsArchitecture(vision_width=64, vision_depth=2, vision_heads=4, mlp_ratio=4.0, swiglu=False,
                        native_image_size=448, text_width=64, text_layers=2, text_heads=4, text_mlp=128, vocab_size=448)
TABLE: list[tuple[str, str, str]] = []  # (what, measured, target / note)


def row(what: str, value: str, note: str = "") -> None:
    TABLE.append((what, value, note))
    print(f"  {what}: {value}{'  (' + note + ')' if note else ''}", flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------------------
def parity(args) -> None:
    ref, tol = reference(), manifest()["arrays"]["anomaly_map"]["tolerance"]["atol"]
    names = [s["cls_name"] for s in samples()]
    paths = [str(p) for p in image_paths()]

    def fixture_detector(**runtime) -> Detector:
        return Detector.from_recipe("tipsomaly", backbone_checkpoint=str(FIXTURE), image_size=518,
                                    prompt_checkpoint=str(FIXTURE / "learnable_params.pth"), device=args.device,
                                    **runtime)

    options = [("float32 default (TF32 allowed)", {}), ("float32 tf32=False", {"tf32": False}),
               ("float32 compile=True", {"compile": True}), ("float32 preprocess=device", {"pipeline": {"preprocess": "device"}}),
               ("bfloat16 backbone", {"dtype": "bfloat16"})]
    for label, runtime in options:
        with fixture_detector(**runtime) as det:
            res = det.predict(paths, class_name=names, map_size="input", batch_size=6, progress=False)
        dm = np.abs(np.stack([r.anomaly_map for r in res]) - ref["anomaly_map"]).max()
        ds = np.abs(np.array([r.scores["S5"] for r in res]) - ref["score_S2_plus_max"]).max()
        row(f"parity {label}", f"map {dm:.1e}, S5 {ds:.1e}", f"tolerance {tol:g}: {'within' if max(dm, ds) <= tol else 'OUTSIDE'}")
    with fixture_detector() as det:
        (_, batch), = list(det.iter_batches(paths, 6))
        same = torch.equal(batch.pixels.cpu(), prepare_batch(paths, 518).pixels)
    row("exact pipeline pixels on the device == CPU pixels", "bit-identical" if same else "DIFFERENT", "must be identical")
    folder = Path(tempfile.mkdtemp(prefix="zsad-jpeg-fixture-"))
    jpegs = []
    for p in paths:
        from PIL import Image

        out = folder / (Path(p).parent.name + "_" + Path(p).stem + ".jpg")
        Image.open(p).convert("RGB").save(out, quality=95)
        jpegs.append(str(out))
    outs = {}
    for mode in ("exact", "device"):
        with fixture_detector(pipeline={"preprocess": mode}) as det:
            outs[mode] = det.predict(jpegs, class_name=names, map_size="input", batch_size=6, progress=False)
    dm = max(np.abs(a.anomaly_map - b.anomaly_map).max() for a, b in zip(outs["exact"], outs["device"]))
    ds = max(abs(a.scores["S5"] - b.scores["S5"]) for a, b in zip(outs["exact"], outs["device"]))
    row("JPEG fixture copies: device decode + resize vs Pillow", f"map {dm:.1e}, S5 {ds:.1e}", "documented deviation")


def attention(args, backbone: TipsBackbone) -> None:
    x = torch.rand(2, 3, 518, 518, device=args.device)
    for dtype in (torch.float32, torch.bfloat16):
        backbone.to(dtype=dtype)
        with torch.inference_mode():
            kernels = attention_kernels(lambda: backbone.encode_image(x))
        row(f"attention kernels {str(dtype)[6:]}", ", ".join(kernels) or "none found")
    backbone.float()


def model_only(args, backbone: TipsBackbone) -> dict:
    config = DetectorConfig(name="tipsomaly-random").with_overrides(image_size=518, prompt_checkpoint=None)
    best = {}

    def rate(det: Detector, batch: int) -> float:
        pixels = torch.rand(batch, 3, 518, 518, device=args.device)
        names = ["metal_nut"] * batch
        with torch.inference_mode():
            for _ in range(2):
                det.score_pixels(pixels, names)  # warm-up (prototypes, compilation, autotuning)
            sync(args.device)
            start = time.perf_counter()
            for _ in range(args.iters):
                det.score_pixels(pixels, names)
            sync(args.device)
        return batch * args.iters / (time.perf_counter() - start)

    runs = [("bfloat16 eager", "bfloat16", {}, args.batches), ("bfloat16 compiled", "bfloat16", {"compile": True}, None),
            ("float32 TF32 eager", "float32", {}, [args.batches[-1]]),
            ("float32 IEEE eager", "float32", {"tf32": False}, [args.batches[-1]]),
            ("float32 TF32 compiled", "float32", {"compile": True}, [args.batches[-1]])]
    if args.autotune:
        runs.insert(2, ("bfloat16 max-autotune", "bfloat16", {"compile": "max-autotune"}, None))
    if args.cudagraphs:
        runs.insert(2, ("bfloat16 reduce-overhead (CUDA graphs)", "bfloat16", {"compile": "reduce-overhead"}, None))
    for label, dtype, runtime, batches in runs:
        det = Detector(config, device=args.device, dtype=dtype, backbone=backbone, **runtime)
        for b in batches or [best.get("bfloat16 eager", (None, args.batches[-1]))[1]]:
            try:
                ips = rate(det, b)
            except torch.cuda.OutOfMemoryError:
                row(f"model only {label}, batch {b}", "out of memory")
                torch.cuda.empty_cache()
                continue
            if ips > best.get(label, (0, 0))[0]:
                best[label] = (ips, b)
            row(f"model only {label}, batch {b}", f"{ips:.1f} img/s")
        del det
        torch.compiler.reset()
        backbone.float()
    for prefix, target in (("bfloat16", "target >= 600 img/s"), ("float32 TF32", "target >= 250 img/s")):
        found = [(ips, b, label) for label, (ips, b) in best.items() if label.startswith(prefix)]
        if found:
            ips, b, label = max(found)
            row(f"model only, best {prefix}", f"{ips:.1f} img/s ({label}, batch {b})", target)
    return best


def end_to_end(args, backbone: TipsBackbone, best_model: dict) -> None:
    from official_side_by_side import image_paths as meta_paths
    from official_side_by_side import write_images

    work = Path(tempfile.mkdtemp(prefix="zsad-e2e-"))
    config = DetectorConfig(name="tipsomaly-random").with_overrides(image_size=518, prompt_checkpoint=None)
    model_rate = best_model.get("bfloat16 compiled" if args.e2e_compile else "bfloat16 eager", (None, None))[0]
    for fmt in ("jpg", "png"):
        files = meta_paths(write_images(work, args.files, fmt))
        for mode in ("exact", "device"):
            det = Detector(config, device=args.device, dtype="bfloat16", backbone=backbone, compile=args.e2e_compile,
                           pipeline={"preprocess": mode})
            with det:
                det.predict(files[: 2 * args.e2e_batch], class_name="x", batch_size=args.e2e_batch, progress=False)
                sync(args.device)
                start = time.perf_counter()
                det.predict(files, class_name="x", batch_size=args.e2e_batch, progress=False)
                sync(args.device)
                ips = len(files) / (time.perf_counter() - start)
            target = "target >= 90 %" if fmt == "jpg" else "target >= 75 %"
            share = f"{100 * ips / model_rate:.0f} % of model only; {target}" if model_rate else target
            row(f"end to end {fmt.upper()} 800x600, bfloat16, preprocess={mode}, batch {args.e2e_batch}", f"{ips:.1f} img/s",
                share)
            backbone.float()


def official(args) -> None:
    import official_side_by_side as sbs

    if args.official is None:
        row("side by side with the official code", "not run", "pass --official PATH --official-python PY")
        return
    work = Path(tempfile.mkdtemp(prefix="zsad-official-")) if args.workdir is None else args.workdir
    images = sbs.write_images(work, args.official_images, "png")
    for dtype in args.official_dtypes:
        ns = argparse.Namespace(official=args.official, official_python=args.official_python, threads=args.threads,
                                device=args.device, dtype=dtype, compile=False, map_size="input", rounds=args.rounds)
        for model in args.official_models:
            r = sbs.compare(ns, model, images, args.official_images, work)
            row(f"official vs zsad {model}, zsad {dtype}", f"{r['official_ips']:.1f} vs {r['zsad_ips']:.1f} img/s",
                f"zsad {r['ratio']:.2f}x faster" + ("; target >= 10x" if model == "l14" else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", choices=["l14", "tiny"], default="l14", help="model of the model/e2e sections")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--autotune", action="store_true", help="also compile with max-autotune (several minutes)")
    parser.add_argument("--cudagraphs", action="store_true", help="also compile with reduce-overhead (CUDA graphs)")
    parser.add_argument("--files", type=int, default=512, help="image files per format for the e2e section")
    parser.add_argument("--e2e-batch", type=int, default=64)
    parser.add_argument("--e2e-compile", action="store_true", help="compile the model in the e2e section")
    parser.add_argument("--official", type=Path, help="official Tipsomaly checkout (commit 7eb43a7)")
    parser.add_argument("--official-python", default=sys.executable)
    parser.add_argument("--official-models", nargs="+", default=["tiny", "s14", "l14"])
    parser.add_argument("--official-images", type=int, default=64)
    parser.add_argument("--official-dtypes", nargs="+", default=["bfloat16"], help="zsad dtypes (official: float32)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16, help="torch CPU threads of each side (official section)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--skip", nargs="*", default=[], choices=["parity", "attention", "model", "e2e", "official"])
    parser.add_argument("--quick", action="store_true", help="small settings (to try the script on a CPU)")
    parser.add_argument("--json", type=Path, help="also write the table here")
    args = parser.parse_args()
    if args.quick:
        args.batches, args.iters, args.files, args.e2e_batch = [2, 4], 2, 16, 4
        args.official_images, args.rounds, args.official_models = 8, 1, ["tiny"]
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("No CUDA device: run with --device cpu --arch tiny --quick to try the script on a CPU.")
    started = time.perf_counter()
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"zsad GPU checks on {name}, torch {torch.__version__}", flush=True)
    sections = [s for s in ("parity", "attention", "model", "e2e", "official") if s not in args.skip]
    backbone = TipsBackbone.random(L14 if args.arch == "l14" else TINY) if {"attention", "model", "e2e"} & set(sections) else None
    best: dict = {}
    for section in sections:
        t = time.perf_counter()
        print(f"[{section}]", flush=True)
        if section == "parity":
            parity(args)
        elif section == "attention":
            attention(args, backbone)
        elif section == "model":
            best = model_only(args, backbone)
        elif section == "e2e":
            end_to_end(args, backbone, best)
        else:
            official(args)
        print(f"[{section}] {time.perf_counter() - t:.0f} s", flush=True)
    print("\n| what | measured | note |\n|---|---|---|")
    for what, value, note in TABLE:
        print(f"| {what} | {value} | {note} |")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(TABLE, indent=1))


if __name__ == "__main__":
    main()
