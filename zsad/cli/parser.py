"""The ``zsad`` argument parser: every subcommand with its options, help text and examples."""

from __future__ import annotations

import argparse

from zsad import __version__
from zsad.cli.commands import (
    cmd_data,
    cmd_evaluate,
    cmd_export,
    cmd_info,
    cmd_plugins,
    cmd_predict,
    cmd_prompts,
    cmd_recipes,
    cmd_serve,
    cmd_train,
    cmd_weights,
)
from zsad.cli.options import (
    Formatter,
    add_engine_args,
    add_recipe_args,
    add_runtime_args,
    non_negative_int,
    positive_int,
    subcommand,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zsad",
        description="Zero-shot anomaly detection in images with vision-language models.",
        epilog="examples:\n  zsad predict examples/images --class-name 'metal plate'\n"
               "  zsad evaluate --recipe tipsomaly --data data/visa --out runs/visa\n"
               "  zsad serve --class-name screw\n"
               "  zsad weights list\n\nRun `zsad COMMAND --help` for each command's options.",
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"zsad {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = subcommand(sub, "predict", "score images and write anomaly maps",
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
    add_recipe_args(p)
    p.set_defaults(recipe=None)
    p.add_argument("--model", default=None, metavar="FILE",
                   help="run a model written by `zsad export` (*.onnx or *.xml) instead of a recipe; needs no PyTorch")
    p.add_argument("--runtime", choices=["onnxruntime", "openvino"], default=None,
                   help="runtime for --model (default: openvino for *.xml, else onnxruntime when installed)")
    p.add_argument("--out", default="zsad-predictions", help="output folder (default: zsad-predictions)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="images per forward pass (default: the recipe's)")
    p.add_argument("--no-overlays", dest="overlays", action="store_false", help="do not write overlay images")
    p.add_argument("--save-maps", action="store_true",
                   help="also write each anomaly map as OUT/maps/NAME.npy (float32, the image's height x width; "
                        "NAME is the output_name column of scores.csv, listed in OUT/names.json)")
    p.add_argument("--shard-size", type=positive_int, default=256,
                   help="images per shard: the unit of work, of a part file and of resuming (default 256)")
    p.add_argument("--no-resume", action="store_true", help="replace the results of an earlier run in --out")
    add_engine_args(p)
    add_runtime_args(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or table")
    p.set_defaults(func=cmd_predict)

    p = subcommand(sub, "export", "write a recipe as one ONNX or OpenVINO graph for given classes (deploy without PyTorch)",
                   "  zsad export --class-name 'metal nut' --class-name screw --out detector.onnx\n"
                   "  zsad export --recipe tipsomaly_v2 --class-name pcb --format openvino --out pcb.xml --dtype float16\n"
                   "  zsad predict --model detector.onnx parts/ --class-name screw\n",
                   "Compute the text prototypes of the classes and write one graph: vision tower, prototypes, image "
                   "scores and the smoothed pixel map, normalisation included. Inputs: pixels float32 (B, 3, S, S) RGB in "
                   "[0, 1] and class_index int64 (B,) in --class-name order; outputs: pred_score (B,), scores (B, K), "
                   "anomaly_map (B, S, S). The written graph is run once and compared with PyTorch.")
    add_recipe_args(p, device=False)
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

    p = subcommand(sub, "evaluate", "evaluate a recipe on benchmark datasets (metrics, scores, manifest)",
                   "  zsad evaluate --recipe tipsomaly --data data/mvtec --out runs/mvtec --set prompt_checkpoint=tipsomaly-visa\n"
                   "  zsad evaluate --data data/visa --data data/mpdd --out runs/all --aupro legacy --device cuda\n"
                   "  zsad evaluate --data data/visa --out runs/visa-4shot --shots 4 --seed 0 1 2   (few-shot protocol)\n")
    add_recipe_args(p)
    p.add_argument("--data", action="append", required=True, help="dataset folder or meta.json (repeatable)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--aupro", choices=["exact", "legacy"], default="exact",
                   help="exact = MVTec AD definition (default); legacy = the 200-threshold variant of published code")
    p.add_argument("--protocol", choices=["tipsomaly", "original"], default="tipsomaly",
                   help="tipsomaly = score at the model input size (official); original = at each image's size")
    p.add_argument("--undefined", choices=["nan", "zero"], default="nan",
                   help="undefined metrics: n/a, excluded from means (default) or 0 as the official code")
    p.add_argument("--classes", nargs="+", default=None, help="only these classes")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--save-maps", action="store_true", help="write anomaly maps")
    p.add_argument("--save-overlays", action="store_true", help="write overlay images (class-wide colour scale)")
    p.add_argument("--no-resume", action="store_true", help="recompute classes finished by an earlier run")
    p.add_argument("--shots", type=positive_int, default=None, metavar="K",
                   help="few-shot protocol: K normal images per class from the dataset's train split are the class's "
                        "references (default: zero-shot)")
    p.add_argument("--seed", type=non_negative_int, nargs="+", default=None, metavar="S",
                   help="with --shots: the seeds of the draws, one evaluation each, reported per seed and as their "
                        "mean (default: 0)")
    add_engine_args(p)
    add_runtime_args(p)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate, usage_error=p.error)

    p = subcommand(sub, "train", "learn a recipe's prompt tokens on an auxiliary dataset",
                   "  zsad train --data data/mvtec --out runs/prompts-mvtec\n"
                   "  zsad train --data data/visa --out runs/p --epochs 2 --batch-size 8 --device cuda\n"
                   "  zsad train --recipe anomalyclip --data data/mvtec --out runs/anomalyclip-mvtec --device cuda\n"
                   "  zsad predict img.png --set prompt_checkpoint=runs/p/prompts.safetensors\n")
    add_recipe_args(p)
    p.add_argument("--data", required=True, help="dataset folder or meta.json with masks (its test split is used)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, record)")
    p.add_argument("--epochs", type=positive_int, default=None, help="default: the recipe's (tipsomaly 2, anomalyclip 15)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: the recipe's (8)")
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

    p = subcommand(sub, "serve", "HTTP inference server with dynamic batching, and a web page to inspect images",
                   "  zsad serve --recipe tipsomaly --class-name screw            # then open http://127.0.0.1:8000/\n"
                   "  zsad serve --device cuda --max-batch 32 --max-wait-ms 5\n"
                   "  ZSAD_API_KEY=$(openssl rand -hex 16) zsad serve --host 0.0.0.0 --port 8080\n"
                   "  curl -F image=@part.png -F class_name=screw http://127.0.0.1:8000/v1/predict\n"
                   "  curl -F image=@part.png -F class_name=screw -F return_map=npy -H 'Authorization: Bearer KEY' URL/v1/predict\n",
                   description="Serve a detector over HTTP: POST /v1/predict (multipart image, class_name, "
                               "return_map=png|npy) answers the scores as JSON; GET / is a page to drop images into; "
                               "GET /healthz is 200 once the model is loaded; GET /docs is the API's OpenAPI page. "
                               "Concurrent requests are batched on one model. Requires: pip install 'zsad[serve]'.")
    add_recipe_args(p)
    p.add_argument("--model", default=None, metavar="EXPORTED_FILE",
                   help="serve an exported model (ONNX / OpenVINO) instead of a recipe")
    p.add_argument("--runtime", default=None, help="runtime of --model: onnxruntime or openvino (default: the export's)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--class-name", default=None,
                   help="class used when a request names none (default: requests must send class_name)")
    p.add_argument("--max-batch", type=positive_int, default=8, help="most images per forward pass (default 8)")
    p.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="how long a request may wait for others to fill its batch (default 10)")
    p.add_argument("--max-queue", type=positive_int, default=64,
                   help="most requests waiting for the model; more get 503 with Retry-After (default 64)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload in MB; larger get 413 (default 20)")
    p.add_argument("--max-pixels", type=positive_int, default=40_000_000,
                   help="largest image (width x height) decoded; larger get 413 (default 40000000)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request time limit; over it: 504 (default 30)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on /v1/* (default: $ZSAD_API_KEY; none: no auth)")
    p.add_argument("--map-range", nargs=2, type=float, default=(0.0, 1.0), metavar=("VMIN", "VMAX"),
                   help="fixed colour scale of the overlay PNGs (default: 0 1)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_runtime_args(p, files=False)
    p.set_defaults(func=cmd_serve)

    p = subcommand(sub, "recipes", "list recipes, or show one as JSON",
                   "  zsad recipes\n  zsad recipes tipsomaly > my_recipe.json\n")
    p.add_argument("name", nargs="?", help="show this recipe's configuration")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_recipes)

    p = subcommand(sub, "plugins", "list installed plugins: name, kind, distribution, version, status",
                   "  zsad plugins\n  zsad plugins --all --json\n")
    p.add_argument("--all", action="store_true", help="include built-in components")
    p.add_argument("--no-load", action="store_true", help="do not import plugins to check them")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = subcommand(sub, "weights", "known checkpoints: list, download, verify, import local files, cache path",
                   "  zsad weights list\n  zsad weights download tips-v1-l14-hr\n  zsad weights verify tips-v1-l14-hr\n"
                   "  zsad weights import tips-v1-l14-hr ~/Downloads/tips_oss_l14_highres_distilled_*.npz ~/Downloads/tokenizer.model\n")
    p.add_argument("action", choices=["list", "download", "verify", "import", "path"])
    p.add_argument("names", nargs="*", help="checkpoint name(s); for import: NAME FILE...")
    p.add_argument("--force", action="store_true",
                   help="download: fetch every file again, even those whose record matches")
    p.add_argument("--json", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_weights)

    p = subcommand(sub, "info", "versions, devices, cache", "  zsad info\n  zsad info --json\n")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = subcommand(sub, "data", "prepare benchmark datasets (meta.json) or check one",
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

    p = subcommand(sub, "prompts",
                   "convert an official prompt checkpoint (Tipsomaly .pth, AnomalyCLIP epoch_N.pth) to zsad safetensors",
                   "  zsad prompts learnable_params_2.pth prompts.safetensors\n"
                   "  zsad prompts checkpoints/9_12_4_multiscale/epoch_15.pth anomalyclip.safetensors\n"
                   "  zsad predict img.png --recipe anomalyclip --set prompt_checkpoint=anomalyclip.safetensors\n")
    p.add_argument("src")
    p.add_argument("dest")
    p.set_defaults(func=cmd_prompts)
    return parser
