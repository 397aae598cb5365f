"""What each ``zsad`` subcommand does (``cmd_<name>(args) -> exit status``), given its parsed arguments."""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

from zsad import __version__
from zsad.cli.options import (
    engine_args,
    parse_set,
    runtime_flags,
    runtime_options,
    writable_folder,
)
from zsad.errors import ZsadError


def cmd_predict(args: argparse.Namespace) -> int:
    out = writable_folder(args.out, "--out")
    if args.model:  # an exported graph: ONNX Runtime / OpenVINO, no torch
        fixed = [flag for flag, given in (("--recipe", args.recipe), ("--set", args.overrides), ("--dtype", args.dtype),
                                          ("--engine ray", args.engine != "local")) if given]
        fixed += [flag for flag, given in runtime_flags(args) if given]
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
        detector=det, runtime=None if args.model else runtime_options(args), **engine_args(args),
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


def cmd_evaluate(args: argparse.Namespace) -> int:
    from zsad.evaluation import evaluate

    if args.seed is not None and args.shots is None:
        args.usage_error("--seed needs --shots K: the seeds draw the K normal reference images per class of the "
                         "few-shot protocol (e.g. --shots 4 --seed 0 1 2); without --shots the evaluation is zero-shot")
    writable_folder(args.out, "--out")
    evaluate(
        args.recipe, args.data if len(args.data) > 1 else args.data[0], args.out,
        overrides=parse_set(args.overrides), aupro=args.aupro, protocol=args.protocol, device=args.device,
        dtype=args.dtype, batch_size=args.batch_size, classes=args.classes, save_maps=args.save_maps,
        save_overlays=args.save_overlays, resume=not args.no_resume, progress=not args.quiet, undefined=args.undefined,
        shots=args.shots, seeds=args.seed, runtime=runtime_options(args), **engine_args(args),
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from zsad.training import train_prompts

    writable_folder(args.out, "--out")
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
                     device=args.device, dtype=args.dtype, runtime_options=runtime_options(args))
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
