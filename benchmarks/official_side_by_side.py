"""zsad next to the official Tipsomaly inference: same device, same random weights, same image files, one run.

The official code (github.com/AlirezaSalehy/Tipsomaly at commit 7eb43a7) is not part of zsad: pass the path of a
checkout with ``--official``; it is imported at run time, in a worker process, and run as published. Its
``test.test()`` is called with the official defaults (batch 8, sigma 4, decoupled learned prompts, local-to-global
aggregation, its own ``DataLoader`` with 4 workers); what is timed is its inference loop (the ``tqdm`` loop over the
``DataLoader``: decoding, transforms, the model, scores and smoothed 518 px maps), seen through a timing wrapper
around that loop's ``tqdm``; model loading, text prototypes and metrics are outside the timed part, as zsad's
model loading and (cached) prototypes are. zsad runs ``Detector.predict(paths, map_size="input")``, which returns
the same things (every image score and the smoothed map at the model input size).

Both sides run in their own worker process with ``--threads`` torch threads and are timed in alternation, round
after round; the figures are the ratio of the medians of the wall-clock times, and of the best (shortest) times. The
CPU seconds each side spends (its process, its threads and its decoding processes) are reported too. On a machine
shared with other work the best times and the CPU seconds say more than the medians.

Changes to the official code's environment, none of them on the TIPS inference path:

* ``model.big_vision.load_siglip`` (SigLIP2 through JAX/TensorFlow, not on PyPI) is replaced by an empty module when
  it cannot be imported;
* the tiny model's shapes are added to the official ``load_model`` size tables under a new id (the published
  sizes, used for TIPS-S and TIPS-L/14, are untouched), and ``VOCAB_SIZE`` is set to the fixture tokenizer's.

The official requirements come from PyPI. Its imports beyond zsad's own (``jax``, ``transformers==5.0.0`` for its
SigLIP2 module, ``pandas``, ``tabulate``, ``torchmetrics``, ``opencv-python-headless``, ``matplotlib``,
``humanhash3``, ``pillow==11.3.0``) conflict with zsad's pins, so install them into a separate environment that
sees the system torch and pass its interpreter with ``--official-python``::

    python -m venv --system-site-packages /tmp/official-venv
    /tmp/official-venv/bin/pip install "jax[cpu]" transformers==5.0.0 pandas tabulate torchmetrics \\
        opencv-python-headless matplotlib humanhash3 pillow==11.3.0
    python benchmarks/official_side_by_side.py --official /path/to/Tipsomaly \\
        --official-python /tmp/official-venv/bin/python --models tiny s14 --device cpu --threads 2

Models (random weights in the official npz format, written once into ``--workdir``): ``tiny`` (the parity fixture:
width 64, depth 2, with its learned prompts), ``s14`` (TIPS-S/14 shapes: 384 wide, 12 + 12 layers), ``l14`` (TIPS
v1 L/14 shapes: 1024 wide, 24 vision + 12 text layers; a 1.8 GB checkpoint, meant for a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "tipsomaly-parity"
CLASS = "metal_nut"

# official checkpoint id -> (basename of its npz files, vision/text shapes); "zsad_tiny" is the parity fixture
MODELS = {
    "tiny": ("zsad_tiny", "zsad_tiny_model", None),
    "s14": ("s14h", "tips_oss_s14_highres_distilled", dict(width=384, depth=12, text_layers=12)),
    "l14": ("l14h", "tips_oss_l14_highres_distilled", dict(width=1024, depth=24, text_layers=12)),
}
TINY_SHAPES = {
    "vision": {"embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 4.0},
    "text": {"hidden_size": 64, "mlp_dim": 128, "num_heads": 4, "num_layers": 2},
}


# ------------------------------------------------------------------------------------------------------------
# inputs: weights and images
# ------------------------------------------------------------------------------------------------------------
def write_model(workdir: Path, name: str) -> Path:
    """The model folder: official ``{base}_vision.npz`` / ``{base}_text.npz``, tokenizer, learned prompts."""
    import shutil

    import numpy as np
    import torch

    _, base, shapes = MODELS[name]
    folder = workdir / "models" / name
    done = folder / "learnable_params_1.pth"
    if done.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURE / "tokenizer.model", folder / "tokenizer.model")
    if shapes is None:
        shutil.copy(FIXTURE / "vision.npz", folder / f"{base}_vision.npz")
        shutil.copy(FIXTURE / "text.npz", folder / f"{base}_text.npz")
        shutil.copy(FIXTURE / "model.json", folder / "model.json")
        shutil.copy(FIXTURE / "learnable_params.pth", done)
        return folder
    sys.path.insert(0, str(ROOT / "tests"))
    from tips_factory import official_arrays

    vision, text = official_arrays(vocab=32000, grid=32, seed=1, **shapes)
    np.savez(folder / f"{base}_vision.npz", **vision)
    np.savez(folder / f"{base}_text.npz", **text)
    gen = torch.Generator().manual_seed(2)
    prompts = [torch.nn.Parameter(torch.randn(8, shapes["width"], generator=gen) * 0.08) for _ in range(2)]
    torch.save(torch.nn.ParameterList(prompts), done)
    return folder


def write_images(workdir: Path, count: int, fmt: str, size: tuple[int, int] = (800, 600)) -> Path:
    """``count`` images of ``size`` (W, H) with natural-image-like content, and the meta.json the official reads."""
    import numpy as np
    from PIL import Image

    root = workdir / f"images-{fmt}-{count}-{size[0]}x{size[1]}"
    meta = root / "meta.json"
    if meta.is_file():
        return root
    (root / CLASS / "test" / "good").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (size[1] // 20, size[0] // 20, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize(size, Image.BICUBIC), dtype=np.int16)
        pixels = np.clip(smooth + rng.integers(-12, 13, smooth.shape), 0, 255).astype(np.uint8)
        rel = f"{CLASS}/test/good/{i:04d}.{fmt}"
        Image.fromarray(pixels).save(root / rel, **({"quality": 90} if fmt == "jpg" else {}))
        records.append({"img_path": rel, "mask_path": "", "cls_name": CLASS, "specie_name": "good", "anomaly": 0})
    meta.write_text(json.dumps({"train": {}, "test": {CLASS: records}}))
    return root


def image_paths(root: Path) -> list[str]:
    meta = json.loads((root / "meta.json").read_text())
    return [str(root / r["img_path"]) for r in meta["test"][CLASS]]


# ------------------------------------------------------------------------------------------------------------
# workers
# ------------------------------------------------------------------------------------------------------------
class _TimedLoop:
    """Iterates like the wrapped iterable and records the seconds from the first request to exhaustion."""

    seconds: list[float] = []

    def __init__(self, iterable, *args, **kwargs) -> None:
        self.iterable = iterable

    def __iter__(self):
        start = time.perf_counter()
        yield from self.iterable
        _TimedLoop.seconds.append(time.perf_counter() - start)


def _import_official(checkout: Path, model: str, folder: Path):
    """Import the official ``test`` module from the checkout (see the module docstring for what is adjusted)."""
    os.environ.setdefault("XFORMERS_DISABLED", "1")
    sys.path.insert(0, str(checkout))
    try:
        from model.big_vision import load_siglip  # noqa: F401  (SigLIP2 only)
    except ImportError:
        sys.modules["model.big_vision.load_siglip"] = types.ModuleType("model.big_vision.load_siglip")
    import test as official  # the official test.py
    from model.tips import load_model
    from model.tips.checkpoints import checkpoint

    ident, base, _ = MODELS[model]
    if model == "tiny":
        checkpoint.MODEL_REGISTRY[ident] = base
        load_model.CHECKPOINT_TO_VARIANT[ident] = ident
        load_model.vision_models[ident] = TINY_SHAPES["vision"]
        load_model.text_models[ident] = TINY_SHAPES["text"]
        load_model.VOCAB_SIZE = json.loads((folder / "model.json").read_text())["text"]["vocab_size"]
    official.tqdm = _TimedLoop
    return official


def official_worker(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    official = _import_official(Path(spec["official"]), spec["model"], Path(spec["folder"]))
    folder = Path(spec["folder"])
    logs = Path(tempfile.mkdtemp(prefix="official-logs-"))
    args = argparse.Namespace(
        image_size=518, seed=111, device=spec["device"], models_dir=str(folder), model_version=MODELS[spec["model"]][0],
        checkpoint_path=str(folder), params_path=str(folder / "learnable_params_1.pth"), epoch=1, batch_size=8,
        sigma=4, dataset="bench", dataset_category="", class_name=["all"], image_metrics=[], pixel_metrics=[],
        k_shot=0, type="test", visualize=False, backbone_name="tips", n_deep_tokens=0, d_deep_tokens=0, n_prompt=8,
        fixed_prompt_type="industrial", prompt_learn_method="concat", decoupled_prompt=True,
        aggregate_local2global=True, data_path=[spec["images"]], save_path=str(logs), log_dir="bench",
    )

    def run() -> float:
        official.setup_seed(111)  # as the official __main__ does before test()
        official.test(args)
        if spec["device"].startswith("cuda"):
            torch.cuda.synchronize()
        return _TimedLoop.seconds[-1]

    _serve(run)


def zsad_worker(spec: dict) -> None:
    import torch

    torch.set_num_threads(spec["threads"])
    from zsad import Detector

    folder = Path(spec["folder"])
    det = Detector.from_recipe(
        "tipsomaly", backbone_checkpoint=str(folder), prompt_checkpoint=str(folder / "learnable_params_1.pth"),
        image_size=518, sigma=4, device=spec["device"], dtype=spec["dtype"], **spec.get("runtime", {}),
    )
    paths = image_paths(Path(spec["images"]))

    def run() -> float:
        start = time.perf_counter()
        det.predict(paths, class_name=CLASS, batch_size=8, map_size=spec["map_size"], progress=False)
        if det.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    _serve(run)


def _cpu_seconds() -> tuple[float, dict[int, float]]:
    """CPU seconds of this process, its reaped children, and each live descendant process (Linux /proc)."""
    import resource

    own = time.process_time() + sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), f) for f in ("ru_utime", "ru_stime"))
    live: dict[int, float] = {}
    parents: dict[int, int] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else ():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
            live[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    mine, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - mine
        mine |= frontier
    return own, {pid: live[pid] for pid in mine}


def _serve(run) -> None:
    """Answer ``run`` lines on stdin with the wall and CPU seconds (this process and its children) of one pass."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the code under test prints goes to stderr
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if line.strip() != "run":
            break
        try:
            own0, live0 = _cpu_seconds()
            seconds = run()
            own1, live1 = _cpu_seconds()
            cpu = own1 - own0 + sum(v - live0.get(pid, 0.0) for pid, v in live1.items())
            reply = {"seconds": seconds, "cpu": cpu}
        except Exception as exc:  # report, do not hang the driver
            import traceback

            traceback.print_exc()
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


class Worker:
    def __init__(self, python: str, role: str, spec: dict, log: Path) -> None:
        self.role, self.log = role, log
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        env.setdefault("OMP_NUM_THREADS", str(spec["threads"]))
        self.proc = subprocess.Popen(
            [python, __file__, "--worker", role, "--spec", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True, env=env,
        )

    def run(self) -> dict:
        """One timed pass: ``{"seconds": wall, "cpu": CPU seconds of the worker and its children}``."""
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.role} worker died; see {self.log}")
        reply = json.loads(line)
        if "error" in reply:
            raise SystemExit(f"the {self.role} worker failed: {reply['error']}; see {self.log}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def compare(args, model: str, images: Path, n: int, workdir: Path) -> dict:
    folder = write_model(workdir, model)
    base = {"threads": args.threads, "device": args.device, "model": model, "folder": str(folder), "images": str(images)}
    official = Worker(args.official_python, "official", {**base, "official": str(args.official)},
                      workdir / f"official-{model}.log")
    runtime = {"compile": True} if args.compile else {}
    ours = Worker(sys.executable, "zsad", {**base, "dtype": args.dtype, "map_size": args.map_size, "runtime": runtime},
                  workdir / f"zsad-{model}.log")
    try:
        official.run(), ours.run()  # warm-up (the official side also builds its model and prototypes every run)
        runs: dict[str, list[dict]] = {"official": [], "zsad": []}
        for _ in range(args.rounds):
            runs["official"].append(official.run())
            runs["zsad"].append(ours.run())
    finally:
        official.close(), ours.close()
    wall = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    best = {k: min(r["seconds"] for r in v) for k, v in runs.items()}
    cpu = {k: statistics.median(r["cpu"] for r in v) for k, v in runs.items()}
    return {"model": model, "images": n, "official_ips": n / wall["official"], "zsad_ips": n / wall["zsad"],
            "ratio": wall["official"] / wall["zsad"], "best_ratio": best["official"] / best["zsad"],
            "cpu_ratio": cpu["official"] / cpu["zsad"], "official_cpu_per_image": cpu["official"] / n,
            "zsad_cpu_per_image": cpu["zsad"] / n, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, help="path of the official Tipsomaly checkout (commit 7eb43a7)")
    parser.add_argument("--official-python", default=sys.executable, help="interpreter with the official requirements")
    parser.add_argument("--models", nargs="+", default=["tiny", "s14"], choices=sorted(MODELS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each side (default 2)")
    parser.add_argument("--dtype", default="float32", help="zsad backbone dtype (the official code runs float32)")
    parser.add_argument("--compile", action="store_true", help="zsad with compile=True")
    parser.add_argument("--map-size", default="input", choices=["input", "original"], help="zsad map size")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--format", default="png", choices=["png", "jpg"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "zsad-side-by-side")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", choices=["official", "zsad"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        (official_worker if args.worker == "official" else zsad_worker)(json.loads(args.spec))
        return
    if args.official is None or not (args.official / "test.py").is_file():
        parser.error("--official must be the path of an official Tipsomaly checkout (it holds test.py)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    images = write_images(args.workdir, args.images, args.format)
    print(f"official Tipsomaly vs zsad, {args.device}, {args.threads} threads, 518 px, batch 8, {args.images} "
          f"{args.format.upper()} files 800x600, zsad dtype {args.dtype}{' compiled' if args.compile else ''}, "
          f"maps at the {args.map_size} size, median of {args.rounds} interleaved rounds")
    print(f"{'model':6s} {'official img/s':>15s} {'zsad img/s':>11s} {'ratio':>7s} {'best':>7s}   "
          f"{'CPU s/img official':>18s} {'zsad':>6s} {'ratio':>7s}")
    rows = []
    for model in args.models:
        r = compare(args, model, images, args.images, args.workdir)
        rows.append(r)
        print(f"{model:6s} {r['official_ips']:15.2f} {r['zsad_ips']:11.2f} {r['ratio']:6.2f}x {r['best_ratio']:6.2f}x   "
              f"{r['official_cpu_per_image']:18.3f} {r['zsad_cpu_per_image']:6.3f} {r['cpu_ratio']:6.2f}x", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
