"""Evaluate a recipe on a dataset described by a meta.json (or an MVTec-style folder) and print the table.

    python examples/evaluate_dataset.py data/visa --out runs/visa
    python examples/evaluate_dataset.py data/mvtec --out runs/mvtec --prompt-checkpoint tipsomaly-visa

MVTec-AD is evaluated with the VisA-trained prompts (``--prompt-checkpoint tipsomaly-visa``), every other dataset
with the recipe's MVTec-trained ones. ``--aupro legacy --undefined zero`` reproduces how published tables were
computed. The output folder gets metrics.json/.md/.csv, scores.csv and manifest.json (see the documentation's
"Evaluate on MVTec-AD / VisA" tutorial).
"""

from __future__ import annotations

import argparse

from common import add_model_options, recipe_overrides

from zsad.evaluation import evaluate


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="meta.json, its folder, or an MVTec-style folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--classes", nargs="+", help="only these classes (default: all)")
    parser.add_argument("--aupro", choices=["exact", "legacy"], default="exact",
                        help="exact = MVTec AD definition (default); legacy = the published 200-threshold variant")
    parser.add_argument("--undefined", choices=["nan", "zero"], default="nan",
                        help="undefined metrics: n/a, left out of means (default) or 0 as published code did")
    parser.add_argument("--batch-size", type=int, help="images per forward pass (default: the recipe's)")
    add_model_options(parser)
    args = parser.parse_args(argv)

    report = evaluate(
        args.recipe, args.data, args.out, overrides=recipe_overrides(args), classes=args.classes,
        aupro=args.aupro, undefined=args.undefined, device=args.device, dtype=args.dtype,
        batch_size=args.batch_size, progress=False,
    )
    print(report.table())
    mean = report.mean
    print(f"\nimage AUROC {100 * mean['image_auroc']:.2f}  pixel AUROC {100 * mean['pixel_auroc']:.2f}  "
          f"AUPRO ({args.aupro}) {100 * mean['pixel_aupro']:.2f}; results in {report.out}")
    return report


if __name__ == "__main__":
    main()
