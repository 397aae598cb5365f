"""The ``zsad`` command line.

Every subcommand has ``--help`` with examples. Errors print one ``zsad: error: ...`` line that says what to fix and
exit with status 2 (1 for unexpected failures, 130 on Ctrl-C).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from zsad import __version__
from zsad.errors import ZsadError

__all__ = ["main", "parse_set"]


def parse_set(items: Sequence[str] | None) -> dict[str, Any]:
    """Parse ``--set key=value`` pairs; values are JSON when they parse (``336``, ``true``, ``null``), else text.

    Example:
        >>> parse_set(["image_size=336", "backbone_checkpoint=/w/l14", "prompt_checkpoint=null"])
        {'image_size': 336, 'backbone_checkpoint': '/w/l14', 'prompt_checkpoint': None}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ZsadError(f"--set expects key=value, got {item!r} (e.g. --set image_size=336).")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _sub(subparsers, name: str, help: str, examples: str, description: str | None = None) -> argparse.ArgumentParser:
    return subparsers.add_parser(
        name, help=help, description=description or help, epilog="examples:\n" + examples, formatter_class=_Formatter
    )


def _add_recipe_args(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    p.add_argument("--recipe", default="tipsomaly", help="recipe name or JSON file (default: tipsomaly; see `zsad recipes`)")
    p.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set image_size=336 --set backbone_checkpoint=DIR (repeatable)")
    if device:
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
        p.add_argument("--dtype", default=None, choices=["float32", "bfloat16"], help="backbone precision (default float32)")


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="where the model runs: local = this process (default); ray = Ray workers "
                        "(pip install 'zsad[ray]')")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="Ray workers, one detector each (default: one per GPU, else one)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to join: auto = the running cluster, or ray://host:10001 "
                        "(default: a local Ray runtime started in this process)")


# -- commands ----------------------------------------------------------------------------------------------------
def cmd_predict(args: argparse.Namespace) -> int:
    out = _writable_folder(args.out, "--out")
    if args.model:  # an exported graph: ONNX Runtime / OpenVINO, no torch
        fixed = [flag for flag, given in (("--recipe", args.recipe), ("--set", args.overrides), ("--dtype", args.dtype),
                                          ("--engine ray", args.engine != "local")) if given]
        fixed += [flag for flag, given in _runtime_flags(args) if given]
        if fixed:
            raise ZsadError(f"{', '.join(fixed)} cannot change an exported model (the recipe, its overrides and the "
                            "dtype were fixed by `zsad export`, it runs in this process on its runtime and decodes "
                            "with the exact preprocessing); export it again with them, or drop --model.")
        from zsad.export.runtime import ExportedDetector

        det: Any = ExportedDetector.load(args.model, args.runtime, device=args.device or "cpu")
        class_name = det._default_class(args.class_name)
        recipe = det.config.name
    else:
        if args.runtime:
            raise ZsadError("--runtime applies to exported models only; pass the model file with --model FILE.")
        det, class_name, recipe = None, args.class_name or "object", args.recipe or "tipsomaly"
    from zsad.prediction import predict_files

    run = predict_files(
        args.inputs, out, recipe=recipe, overrides=parse_set(args.overrides), class_name=class_name,
        device=args.device, dtype=args.dtype, batch_size=args.batch_size, overlays=args.overlays,
        save_maps=args.save_maps, shard_size=args.shard_size, resume=not args.no_resume, progress=not args.quiet,
        detector=det, runtime=None if args.model else _runtime_options(args), **_engine_args(args),
    )
    if not args.quiet:
        _print_scores(run.files["scores_csv"], limit=20)
        extras = [f"{run.out / 'overlays'}/" if args.overlays else "", f"{run.out / 'maps'}/" if args.save_maps else ""]
        print(f"wrote {run.files['scores_csv']}, {run.files['scores_json']}, {run.files['names']}"
              + "".join(f", {e}" for e in extras if e))
    if run.failed:  # the others are scored and written; the exit code tells scripts that some were not
        with open(run.files["errors_csv"], newline="", encoding="utf-8") as f:
            first = next(csv.DictReader(f))
        print(f"zsad: error: {run.failed} of {run.images} image(s) could not be scored (first: {first['path']}: "
              f"{first['error']}); all of them are listed in {run.files['errors_csv']}", file=sys.stderr)
        return 2
    return 0


def _writable_folder(path: str, option: str) -> Path:
    """*path* as an output folder that can be written, checked before any work starts (nothing is created).

    Raises :class:`ZsadError` when it is a file, lies under a file, or its nearest existing folder cannot be
    written to (probed by creating and removing a temporary file there).
    """
    folder = Path(path).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        where = "is a file" if existing == folder else f"lies under the file {existing}"
        raise ZsadError(f"{option} {folder} {where}; give a folder (it is created if missing).")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".zsad-write-check-"):
            pass
    except OSError as exc:
        raise ZsadError(
            f"{option} {folder} cannot be written ({exc.strerror or exc} in {existing}); choose a folder you can "
            "write to."
        ) from None
    return folder


def cmd_export(args: argparse.Namespace) -> int:
    from zsad.detector import Detector

    det = Detector.from_recipe(args.recipe, device=args.device or "cpu", dtype=args.dtype, **parse_set(args.overrides))
    report = det.export(args.out, args.class_names, format=args.format, verify=not args.no_verify, opset=args.opset,
                        progress=not args.quiet)
    if not args.quiet:
        print(report.summary())
    return 0


def _print_scores(path: Path, limit: int) -> None:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for _, r in zip(range(limit + 1), reader)]
    if not rows:
        return
    width = max(len(Path(r["path"]).name) for r in rows[:limit])
    print(f"{'image':{width}s}  {'score':>7s}")
    for r in rows[:limit]:
        print(f"{Path(r['path']).name:{width}s}  {float(r['score']):7.4f}")
    if len(rows) > limit:
        print(f"... (all scores in {path})")


def _add_runtime_args(p: argparse.ArgumentParser, files: bool = True) -> None:
    """The runtime flags (--compile, --no-tf32, --preprocess; --decode-workers for commands that read files)."""
    speed = p.add_argument_group("speed (see the performance page of the docs; none changes the recipe)")
    speed.add_argument("--compile", action="store_true", help="torch.compile the model (the first batches are slower)")
    speed.add_argument("--no-tf32", action="store_true",
                       help="full float32 matmuls on CUDA (default: TF32 for a float32 backbone on CUDA)")
    speed.add_argument("--preprocess", choices=["exact", "device"], default="exact",
                       help="exact = the recipe's decode and resize on the host, identical to the reference "
                            "pipeline (default); device = resize (and decode JPEG files) on the model's device")
    if not files:  # uploads are decoded in this process
        p.set_defaults(decode_workers=None)
        return
    speed.add_argument("--decode-workers", type=_non_negative_int, default=None, metavar="N",
                       help="image-decoding worker processes per detector (default: one per CPU core for a GPU "
                            "model, none for a CPU model: threads decode; 0 = threads only)")


def _runtime_flags(args: argparse.Namespace) -> list[tuple[str, bool]]:
    return [("--compile", args.compile), ("--no-tf32", args.no_tf32), ("--preprocess", args.preprocess != "exact"),
            ("--decode-workers", args.decode_workers is not None)]


def _runtime_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """The runtime options of the flags, or None when none was given (a given detector keeps its own)."""
    if not any(given for _, given in _runtime_flags(args)):
        return None
    return {"compile": args.compile, "tf32": False if args.no_tf32 else None,
            "pipeline": {"preprocess": args.preprocess, "workers": args.decode_workers}}


def _engine_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"engine": args.engine, "workers": args.workers, "ray_address": args.ray_address}


def cmd_evaluate(args: argparse.Namespace) -> int:
    from zsad.evaluation import evaluate

    if args.seed is not None and args.shots is None:
        args.usage_error("--seed needs --shots K: the seeds draw the K normal reference images per class of the "
                         "few-shot protocol (e.g. --shots 4 --seed 0 1 2); without --shots the evaluation is zero-shot")
    _writable_folder(args.out, "--out")
    evaluate(
        args.recipe, args.data if len(args.data) > 1 else args.data[0], args.out,
        overrides=parse_set(args.overrides), aupro=args.aupro, protocol=args.protocol, device=args.device,
        dtype=args.dtype, batch_size=args.batch_size, classes=args.classes, save_maps=args.save_maps,
        save_overlays=args.save_overlays, resume=not args.no_resume, progress=not args.quiet, undefined=args.undefined,
        shots=args.shots, seeds=args.seed, runtime=_runtime_options(args), **_engine_args(args),
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from zsad.training import train_prompts

    _writable_folder(args.out, "--out")
    result = train_prompts(
        recipe=args.recipe, data=args.data, out=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, overrides=parse_set(args.overrides), device=args.device, feature_cache=args.feature_cache,
        resume=args.resume, progress=not args.quiet, dtype=args.dtype, shuffle=args.shuffle, overwrite=args.overwrite,
    )
    if not args.quiet:
        print(f"wrote {result.prompt_checkpoint} (use it with --set prompt_checkpoint={result.prompt_checkpoint})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from zsad.errors import require

    require("fastapi", "serve", "zsad serve")
    from zsad.serve import ModelSpec, ServeSettings, serve

    settings = ServeSettings(
        class_name=args.class_name, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
        max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, timeout_s=args.timeout_s,
        api_key=args.api_key or os.environ.get("ZSAD_API_KEY") or None, map_range=tuple(args.map_range),
    )
    spec = ModelSpec(recipe=args.recipe, overrides=parse_set(args.overrides), model=args.model, runtime=args.runtime,
                     device=args.device, dtype=args.dtype, runtime_options=_runtime_options(args))
    serve(spec, settings, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from zsad.components import RECIPES, get_recipe

    if args.name:
        print(get_recipe(args.name).model_dump_json(indent=2))
        return 0
    rows = [{"name": n, "description": _recipe_description(n)} for n in RECIPES.list()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(rows, ["name", "description"])
    return 0


def _recipe_description(name: str) -> str:
    """The recipe document's own description (plugin recipes are loaded for it); a broken plugin says so."""
    from zsad.components import RECIPES, get_recipe

    try:
        return get_recipe(name).description or RECIPES.describe(name)
    except ZsadError:
        return "(cannot be loaded; `zsad plugins` shows why)"


def cmd_plugins(args: argparse.Namespace) -> int:
    from zsad.components import all_registries

    rows = []
    for reg in all_registries():
        for info in reg.status(load=not args.no_load):
            if args.all or info.source == "plugin":
                rows.append({"name": info.name, "kind": info.kind[:-1], "source": info.source,
                             "distribution": info.distribution or "-", "version": info.version or "-",
                             "status": info.status})
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        _print_table(rows, ["name", "kind", "source", "distribution", "version", "status"])
    else:
        print("no plugins installed (packages register through the entry-point groups zsad.backbones, zsad.prompts, "
              "zsad.heads, zsad.recipes; `zsad plugins --all` lists the built-ins too)")
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from zsad import weights

    if args.action == "list":
        rows = []
        for r in weights.list_checkpoints():
            size = r["size"] or r["approx_size"]
            rows.append({"name": r["name"], "kind": r["kind"], "size": _human(size, approx=not r["size"]),
                         "sha256": "yes" if r["sha256_known"] else "no", "licence": r["licence"],
                         "cached": "yes" if r["cached"] else "no"})
        if args.json:
            print(json.dumps(weights.list_checkpoints(), indent=2))
        else:
            _print_table(rows, ["name", "kind", "size", "sha256", "licence", "cached"])
            print("TIPS weights and tokenizer: CC-BY 4.0, Google DeepMind (TIPS, ICLR 2025; TIPSv2, CVPR 2026). "
                  "AnomalyCLIP prompts: MIT, Qihang Zhou et al. (ICLR 2024). "
                  f"Cache: {weights.cache_dir()}")
        return 0
    if args.action == "path":
        print(weights.cache_dir())
        return 0
    if not args.names:
        raise ZsadError(f"`zsad weights {args.action}` needs a checkpoint name (see `zsad weights list`).")
    if args.action == "download":
        for name in args.names:  # repair: cached files that changed since they were stored are fetched again
            print(weights.ensure_checkpoint(name, progress=not args.quiet, repair=True, force=args.force))
        return 0
    if args.action == "verify":
        bad = 0
        for name in args.names:
            for filename, status in weights.verify_checkpoint(name).items():
                print(f"{name}/{filename}: {status}")
                bad += status in ("missing", "mismatch")
        return 1 if bad else 0
    if args.action == "import":
        name, paths = args.names[0], args.names[1:]
        if not paths:
            raise ZsadError("usage: zsad weights import NAME FILE [FILE ...] (e.g. the *_vision.npz, *_text.npz and "
                            "tokenizer.model you downloaded)")
        print(weights.import_files(name, paths))
        return 0
    raise ZsadError(f"unknown weights action {args.action!r}")


def cmd_info(args: argparse.Namespace) -> int:
    import platform

    info: dict[str, Any] = {"zsad": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for mod in ("torch", "transformers", "numpy", "PIL", "open_clip", "sentencepiece", "safetensors", "onnxruntime",
                "openvino"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional packages
            info[mod] = "not installed"
    try:
        import torch

        info["cuda"] = torch.cuda.is_available()
        info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or ["cpu"]
    except Exception:  # noqa: BLE001
        info["cuda"] = False
    from zsad.weights import cache_dir, is_offline

    info["cache"] = str(cache_dir())
    info["offline"] = is_offline()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:14s} {v}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from zsad import data

    if args.action == "prepare":
        path = data.prepare_dataset(args.dataset, args.raw, args.out, overwrite=args.overwrite)
        print(f"wrote {path}")
        return 0
    ds = data.open_dataset(args.path)
    data.validate_masks(ds, decode=True, progress=True)  # every mask decoded: truncated files are reported too
    print(ds.summary())
    return 0


def cmd_prompts(args: argparse.Namespace) -> int:
    from zsad.prompts.checkpoint import convert_official_checkpoint, read_prompt_file

    out = convert_official_checkpoint(args.src, args.dest)
    print(f"{out} ({read_prompt_file(out).describe()})")
    return 0


# -- helpers -----------------------------------------------------------------------------------------------------
def _human(n: int | None, approx: bool = False) -> str:
    if not n:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{'~' if approx else ''}{n:.0f} {unit}" if unit == "B" else f"{'~' if approx else ''}{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in columns).rstrip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsad",
        description="Zero-shot anomaly detection in images with vision-language models.",
        epilog="examples:\n  zsad predict examples/images --class-name 'metal plate'\n"
               "  zsad evaluate --recipe tipsomaly --data data/visa --out runs/visa\n"
               "  zsad serve --class-name screw\n"
               "  zsad weights list\n\nRun `zsad COMMAND --help` for each command's options.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"zsad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _sub(sub, "predict", "score images and write anomaly maps",
             "  zsad predict part.png --class-name 'metal nut'\n"
             "  zsad predict 'photos/*.jpg' folder/ --class-name screw --out runs/screws --device cuda\n"
             "  zsad predict photos/ --device cuda --dtype bfloat16 --compile --preprocess device --batch-size 64\n"
             "  zsad predict img.png --set backbone_checkpoint=/weights/tips-l14 --set image_size=448\n"
             "  zsad predict paths.txt --out runs/line3 --no-overlays --engine ray --workers 4\n"
             "  zsad predict --model detector.onnx parts/ --class-name screw   (a model from `zsad export`)\n")
    p.add_argument("inputs", nargs="+",
                   help="image files, folders (searched recursively), glob patterns or .txt files of paths")
    p.add_argument("--class-name", default=None,
                   help="object class used in the prompts (default: object; with --model: its only class)")
    _add_recipe_args(p)
    p.set_defaults(recipe=None)
    p.add_argument("--model", default=None, metavar="FILE",
                   help="run a model written by `zsad export` (*.onnx or *.xml) instead of a recipe; needs no PyTorch")
    p.add_argument("--runtime", choices=["onnxruntime", "openvino"], default=None,
                   help="runtime for --model (default: openvino for *.xml, else onnxruntime when installed)")
    p.add_argument("--out", default="zsad-predictions", help="output folder (default: zsad-predictions)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="images per forward pass (default: the recipe's)")
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="do not write overlay images")
    p.add_argument("--save-maps", action="store_true",
                   help="also write each anomaly map as OUT/maps/NAME.npy (float32, the image's height x width; "
                        "NAME is the output_name column of scores.csv, listed in OUT/names.json)")
    p.add_argument("--shard-size", type=_positive_int, default=256,
                   help="images per shard: the unit of work, of a part file and of resuming (default 256)")
    p.add_argument("--no-resume", action="store_true", help="replace the results of an earlier run in --out")
    _add_engine_args(p)
    _add_runtime_args(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or table")
    p.set_defaults(func=cmd_predict)

    p = _sub(sub, "export", "write a recipe as one ONNX or OpenVINO graph for given classes (deploy without PyTorch)",
             "  zsad export --class-name 'metal nut' --class-name screw --out detector.onnx\n"
             "  zsad export --recipe tipsomaly_v2 --class-name pcb --format openvino --out pcb.xml --dtype float16\n"
             "  zsad predict --model detector.onnx parts/ --class-name screw\n",
             "Compute the text prototypes of the classes and write one graph: vision tower, prototypes, image "
             "scores and the smoothed pixel map, normalisation included. Inputs: pixels float32 (B, 3, S, S) RGB in "
             "[0, 1] and class_index int64 (B,) in --class-name order; outputs: pred_score (B,), scores (B, K), "
             "anomaly_map (B, S, S). The written graph is run once and compared with PyTorch.")
    _add_recipe_args(p, device=False)
    p.add_argument("--class-name", dest="class_names", action="append", required=True, metavar="NAME",
                   help="a class to bake in (repeatable; class_index counts in this order)")
    p.add_argument("--format", choices=["onnx", "openvino"], default=None,
                   help="onnx (*.onnx) or openvino (IR, *.xml + *.bin); default: from the --out suffix")
    p.add_argument("--out", required=True, metavar="FILE", help="model file to write (*.onnx or *.xml)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16"], help="graph precision (default float32)")
    p.add_argument("--device", default=None, help="device to trace on: cpu (default), cuda, ...")
    p.add_argument("--opset", type=int, default=None,
                   help="ONNX opset (default 23: fused attention; 20 for ONNX Runtime < 1.23 or OpenVINO < 2026)")
    p.add_argument("--no-verify", action="store_true", help="skip running the written graph against PyTorch")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_export)

    p = _sub(sub, "evaluate", "evaluate a recipe on benchmark datasets (metrics, scores, manifest)",
             "  zsad evaluate --recipe tipsomaly --data data/mvtec --out runs/mvtec --set prompt_checkpoint=tipsomaly-visa\n"
             "  zsad evaluate --data data/visa --data data/mpdd --out runs/all --aupro legacy --device cuda\n"
             "  zsad evaluate --data data/visa --out runs/visa-4shot --shots 4 --seed 0 1 2   (few-shot protocol)\n")
    _add_recipe_args(p)
    p.add_argument("--data", action="append", required=True, help="dataset folder or meta.json (repeatable)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--aupro", choices=["exact", "legacy"], default="exact",
                   help="exact = MVTec AD definition (default); legacy = the 200-threshold variant of published code")
    p.add_argument("--protocol", choices=["tipsomaly", "original"], default="tipsomaly",
                   help="tipsomaly = score at the model input size (official); original = at each image's size")
    p.add_argument("--undefined", choices=["nan", "zero"], default="nan",
                   help="undefined metrics: n/a, excluded from means (default) or 0 as the official code")
    p.add_argument("--classes", nargs="+", default=None, help="only these classes")
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--save-maps", action="store_true", help="write anomaly maps")
    p.add_argument("--save-overlays", action="store_true", help="write overlay images (class-wide colour scale)")
    p.add_argument("--no-resume", action="store_true", help="recompute classes finished by an earlier run")
    p.add_argument("--shots", type=_positive_int, default=None, metavar="K",
                   help="few-shot protocol: K normal images per class from the dataset's train split are the class's "
                        "references (default: zero-shot)")
    p.add_argument("--seed", type=_non_negative_int, nargs="+", default=None, metavar="S",
                   help="with --shots: the seeds of the draws, one evaluation each, reported per seed and as their "
                        "mean (default: 0)")
    _add_engine_args(p)
    _add_runtime_args(p)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate, usage_error=p.error)

    p = _sub(sub, "train", "learn a recipe's prompt tokens on an auxiliary dataset",
             "  zsad train --data data/mvtec --out runs/prompts-mvtec\n"
             "  zsad train --data data/visa --out runs/p --epochs 2 --batch-size 8 --device cuda\n"
             "  zsad train --recipe anomalyclip --data data/mvtec --out runs/anomalyclip-mvtec --device cuda\n"
             "  zsad predict img.png --set prompt_checkpoint=runs/p/prompts.safetensors\n")
    _add_recipe_args(p)
    p.add_argument("--data", required=True, help="dataset folder or meta.json with masks (its test split is used)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, record)")
    p.add_argument("--epochs", type=_positive_int, default=None, help="default: the recipe's (tipsomaly 2, anomalyclip 15)")
    p.add_argument("--batch-size", type=_positive_int, default=None, help="default: the recipe's (8)")
    p.add_argument("--lr", type=float, default=None, help="default: the recipe's (1e-3)")
    p.add_argument("--seed", type=int, default=111)
    p.add_argument("--resume", default=None, help="resume from a training checkpoint")
    p.add_argument("--feature-cache", default=None, help="folder to cache image features across runs")
    p.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=None,
                   help="a new seeded order every epoch (default: the recipe's; tipsomaly: fixed order, anomalyclip: "
                   "shuffled)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = _sub(sub, "serve", "HTTP inference server with dynamic batching, and a web page to inspect images",
             "  zsad serve --recipe tipsomaly --class-name screw            # then open http://127.0.0.1:8000/\n"
             "  zsad serve --device cuda --max-batch 32 --max-wait-ms 5\n"
             "  ZSAD_API_KEY=$(openssl rand -hex 16) zsad serve --host 0.0.0.0 --port 8080\n"
             "  curl -F image=@part.png -F class_name=screw http://127.0.0.1:8000/v1/predict\n"
             "  curl -F image=@part.png -F class_name=screw -F return_map=npy -H 'Authorization: Bearer KEY' URL/v1/predict\n",
             description="Serve a detector over HTTP: POST /v1/predict (multipart image, class_name, return_map=png|npy) "
                         "answers the scores as JSON; GET / is a page to drop images into; GET /healthz is 200 once "
                         "the model is loaded; GET /docs is the API's OpenAPI page. Concurrent requests are batched "
                         "on one model. Requires: pip install 'zsad[serve]'.")
    _add_recipe_args(p)
    p.add_argument("--model", default=None, metavar="EXPORTED_FILE",
                   help="serve an exported model (ONNX / OpenVINO) instead of a recipe")
    p.add_argument("--runtime", default=None, help="runtime of --model: onnxruntime or openvino (default: the export's)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--class-name", default=None,
                   help="class used when a request names none (default: requests must send class_name)")
    p.add_argument("--max-batch", type=_positive_int, default=8, help="most images per forward pass (default 8)")
    p.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="how long a request may wait for others to fill its batch (default 10)")
    p.add_argument("--max-queue", type=_positive_int, default=64,
                   help="most requests waiting for the model; more get 503 with Retry-After (default 64)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MB; larger get 413 (default 20)")
    p.add_argument("--max-pixels", type=_positive_int, default=40_000_000,
                   help="largest image (width x height) decoded; larger get 413 (default 40000000)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request time limit; over it: 504 (default 30)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on /v1/* (default: $ZSAD_API_KEY; none: no auth)")
    p.add_argument("--map-range", nargs=2, type=float, default=(0.0, 1.0), metavar=("VMIN", "VMAX"),
                   help="fixed colour scale of the overlay PNGs (default: 0 1)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _add_runtime_args(p, files=False)
    p.set_defaults(func=cmd_serve)

    p = _sub(sub, "recipes", "list recipes, or show one as JSON",
             "  zsad recipes\n  zsad recipes tipsomaly > my_recipe.json\n")
    p.add_argument("name", nargs="?", help="show this recipe's configuration")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_recipes)

    p = _sub(sub, "plugins", "list installed plugins: name, kind, distribution, version, status",
             "  zsad plugins\n  zsad plugins --all --json\n")
    p.add_argument("--all", action="store_true", help="include built-in components")
    p.add_argument("--no-load", action="store_true", help="do not import plugins to check them")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = _sub(sub, "weights", "known checkpoints: list, download, verify, import local files, cache path",
             "  zsad weights list\n  zsad weights download tips-v1-l14-hr\n  zsad weights verify tips-v1-l14-hr\n"
             "  zsad weights import tips-v1-l14-hr ~/Downloads/tips_oss_l14_highres_distilled_*.npz ~/Downloads/tokenizer.model\n")
    p.add_argument("action", choices=["list", "download", "verify", "import", "path"])
    p.add_argument("names", nargs="*", help="checkpoint name(s); for import: NAME FILE...")
    p.add_argument("--force", action="store_true",
                   help="download: fetch every file again, even those whose record matches")
    p.add_argument("--json", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_weights)

    p = _sub(sub, "info", "versions, devices, cache", "  zsad info\n  zsad info --json\n")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = _sub(sub, "data", "prepare benchmark datasets (meta.json) or check one",
             "  zsad data prepare mvtec ~/datasets/mvtec_anomaly_detection\n  zsad data check data/visa\n")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = dsub.add_parser("prepare", help="write meta.json for a dataset from its published layout")
    q.add_argument("dataset", help="mvtec, visa, mpdd, btad, sdd, dagm, dtd, isic, cvc-clinicdb, cvc-colondb, tn3k, headct, brainmri, br35h")
    q.add_argument("raw", help="the dataset's raw folder")
    q.add_argument("--out", default=None, help="where to write meta.json (default: in the raw folder)")
    q.add_argument("--overwrite", action="store_true")
    q = dsub.add_parser("check", help="validate a dataset (files, masks) and print a summary")
    q.add_argument("path")
    p.set_defaults(func=cmd_data)

    p = _sub(sub, "prompts",
             "convert an official prompt checkpoint (Tipsomaly .pth, AnomalyCLIP epoch_N.pth) to zsad safetensors",
             "  zsad prompts learnable_params_2.pth prompts.safetensors\n"
             "  zsad prompts checkpoints/9_12_4_multiscale/epoch_15.pth anomalyclip.safetensors\n"
             "  zsad predict img.png --recipe anomalyclip --set prompt_checkpoint=anomalyclip.safetensors\n")
    p.add_argument("src")
    p.add_argument("dest")
    p.set_defaults(func=cmd_prompts)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ZsadError as exc:
        print(f"zsad: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("zsad: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `zsad weights list | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
