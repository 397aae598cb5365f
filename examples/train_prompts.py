"""Learn the localisation prompt tokens on an auxiliary dataset with masks, then use them.

    python examples/train_prompts.py data/mvtec --out runs/prompts-mvtec
    python examples/train_prompts.py data/visa --out runs/prompts-visa --check examples/images/metal_plate_scratch.png

Official Tipsomaly settings by default: the dataset's test split, 2 epochs, batches of 8, Adam (lr 1e-3, betas
(0.5, 0.999)), seed 111, random initial tokens. The output folder holds prompts.safetensors, config.json (the
trained detector: ``Detector.load(out)``), training.json (the record) and one checkpoint per epoch;
``--resume`` continues an interrupted run.
"""

from __future__ import annotations

import argparse

from common import add_model_options, recipe_overrides

from zsad import Detector
from zsad.training import train_prompts


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", help="dataset with masks: meta.json, its folder, or an MVTec-style folder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=111)
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--check", nargs="*", default=[], metavar="IMAGE",
                        help="after training, score these images with the trained prompts")
    parser.add_argument("--class-name", default="object", help="class name for --check (default: object)")
    add_model_options(parser)
    args = parser.parse_args(argv)

    # --prompt-checkpoint, if given, is the starting point (fine-tuning); otherwise the tokens start random
    run = train_prompts(
        args.recipe, data=args.data, out=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        seed=args.seed, overrides=recipe_overrides(args), device=args.device, dtype=args.dtype,
        resume=args.out if args.resume else None, progress=False,
    )
    for epoch in run.history:
        print(f"epoch {epoch['epoch']}: loss {epoch['total']:.4f} (focal {epoch['focal']:.4f}, "
              f"dice {epoch['dice_pos']:.4f} + {epoch['dice_neg']:.4f})")
    print(f"wrote {run.prompt_checkpoint}")

    if args.check:
        det = Detector.load(run.out, device=args.device, dtype=args.dtype)
        for r in det.predict(args.check, class_name=args.class_name):
            print(f"{r.pred_score:8.4f}  {r.image_path}")
    return run


if __name__ == "__main__":
    main()
