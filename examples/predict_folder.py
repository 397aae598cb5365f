"""Score every image of a folder, write a CSV of scores and one overlay per image on a shared colour scale.

    python examples/predict_folder.py examples/images --class-name "metal plate" --out runs/predictions

Inputs may be files, folders (searched recursively) or glob patterns. The CSV has one row per image, most
anomalous first: path, score (the recipe's image score), S1..S5 and the maximum of the anomaly map. Overlays share
one colour scale (the 1st and 99.9th percentile over all maps), so colours are comparable between images.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from common import add_model_options, recipe_overrides

from zsad import Detector
from zsad.data import list_images
from zsad.viz import class_scale, save_overlays


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--class-name", default="object", help="the object in the images, in words (default: object)")
    parser.add_argument("--out", default="runs/predictions", help="output folder (default: runs/predictions)")
    parser.add_argument("--batch-size", type=int, help="images per forward pass (default: the recipe's)")
    add_model_options(parser)
    args = parser.parse_args(argv)

    paths = list_images(args.inputs)
    det = Detector.from_recipe(args.recipe, device=args.device, dtype=args.dtype, **recipe_overrides(args))
    results = det.predict(paths, class_name=args.class_name, batch_size=args.batch_size)
    results.sort(key=lambda r: r.pred_score, reverse=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "scores.csv"
    with open(csv_path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "score", *results[0].scores, "map_max"])
        for r in results:
            writer.writerow([r.image_path, f"{r.pred_score:.6f}", *(f"{v:.6f}" for v in r.scores.values()),
                             f"{r.anomaly_map.max():.6f}"])

    scale = class_scale([r.anomaly_map for r in results])
    overlays = save_overlays(results, None, out / "overlays", scale=scale)

    for r in results:
        print(f"{r.pred_score:8.4f}  {r.image_path}")
    print(f"wrote {csv_path} and {len(overlays)} overlays in {out / 'overlays'} (map scale {scale[0]:.3f}..{scale[1]:.3f})")
    return csv_path


if __name__ == "__main__":
    main()
