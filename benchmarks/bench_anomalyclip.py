"""Throughput of the ``anomalyclip`` recipe vs the official AnomalyCLIP code, side by side in one run (CPU).

Both sides run on the same random ViT-L/14@336-sized CLIP weights (one OpenAI-layout state dict, loaded by the
official ``AnomalyCLIP_lib.load`` and by zsad's open_clip backbone) and the same random prompt learner (the
official ``AnomalyCLIP_PromptLearner`` initialisation, saved in the official checkpoint format and read by zsad),
at the official settings: image size 518, feature layer 24, DPAM on blocks 6-24 (``DPAM_layer=20``), sigma 4.

* **inference**: the official ``test.py`` loop -- batch 1, ``encode_image(..., DPAM_layer=20)``,
  ``compute_similarity``, ``get_similarity_map``, the per-image ``scipy.ndimage.gaussian_filter`` -- driven here
  by calling the official functions in ``test.py``'s order; zsad: :meth:`Detector.score_pixels` on batches of
  ``--batch-size`` preprocessed images.
* **training**: one official ``train.py`` step (no-grad image features, prompt learner forward,
  ``encode_text_learn`` with gradients, ``FocalLoss`` + two ``BinaryDiceLoss`` per layer times ``lam`` 4 plus the
  image cross-entropy, Adam) vs :meth:`PromptTrainer.step` on the same batch (image features recomputed, as the
  official loop does every epoch), and :meth:`PromptTrainer.step_features` on cached features (what
  ``zsad train`` does after computing them once).

The official code is imported at run time from a checkout of github.com/zqhang/AnomalyCLIP at commit 45ed4dd
(``--official``; nothing of it is copied here). Its checkpoint blobs are not needed, e.g.::

    git clone https://github.com/zqhang/AnomalyCLIP /tmp/anomalyclip-git && git -C /tmp/anomalyclip-git checkout 45ed4dd
    python benchmarks/bench_anomalyclip.py --official /tmp/anomalyclip-git

It needs ``ftfy``, ``regex`` and ``scipy``; ``thop`` (imported for an unused profiler) and ``pkg_resources``
(gone from recent setuptools; only its ``packaging`` attribute is used) are replaced by stubs when missing, as
the parity fixture's generator does. Each side gets the same torch thread count and one warm-up pass, then
the sides run in turns for several rounds and each side's best round counts (on a shared machine other work only
slows a round down); the printed table has images/s, steps/s and the speed-ups, and the largest difference of the two sides' scores, maps
and first-step losses (a check that both computed the same thing). Timings are noisy on a shared machine:
compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

DESIGN = {"Prompt_length": 12, "learnabel_text_embedding_depth": 9, "learnabel_text_embedding_length": 4}


def _official_modules(root: Path) -> dict:
    """Import the official modules from the checkout (with the two import stubs when needed)."""
    if not (root / "AnomalyCLIP_lib" / "AnomalyCLIP.py").is_file():
        raise SystemExit(f"{root} is not a checkout of zqhang/AnomalyCLIP (no AnomalyCLIP_lib/AnomalyCLIP.py).")
    try:
        import thop  # noqa: F401
    except ImportError:
        sys.modules["thop"] = types.SimpleNamespace(profile=None)  # type: ignore[assignment]
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        import packaging
        import packaging.version  # noqa: F401

        sys.modules["pkg_resources"] = types.SimpleNamespace(packaging=packaging)  # type: ignore[assignment]
    sys.path.insert(0, str(root))
    import AnomalyCLIP_lib
    import loss
    import prompt_ensemble
    from AnomalyCLIP_lib.build_model import build_model
    from scipy.ndimage import gaussian_filter

    return {"lib": AnomalyCLIP_lib, "loss": loss, "prompts": prompt_ensemble, "gaussian_filter": gaussian_filter,
            "build_model": build_model}


def _write_weights(folder: Path, seed: int) -> dict:
    """Random ViT-L/14@336-sized CLIP weights as an OpenAI-layout state dict; returns the open_clip config."""
    import open_clip

    torch.manual_seed(seed)
    config = {**open_clip.get_model_config("ViT-L-14-336"), "quick_gelu": True}
    model = open_clip.create_model("ViT-L-14-336", pretrained=None, force_quick_gelu=True)
    torch.save(model.state_dict(), folder / "clip.pt")
    return config


def _inputs(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    """``n`` random images in [0, 1], their OpenAI-normalised pixels, and masks with a square defect on half."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=gen)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    masks = []
    for i in range(n):
        m = np.zeros((size, size), np.uint8)
        if i % 2:
            m[size // 4 : size // 2, size // 3 : 2 * size // 3] = 1
        masks.append(m)
    return images, (images - mean) / std, masks


def _alternating(fns: dict, rounds: int) -> tuple[dict[str, float], dict]:
    """Warm each function up, then time them in turns for ``rounds`` rounds; the best time of each (other work on
    a shared machine only ever slows a round down) and the last outputs."""
    outs = {name: fn() for name, fn in fns.items()}  # warm-up
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            outs[name] = fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best, outs


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    official = _official_modules(Path(args.official).resolve())
    folder = Path(tempfile.mkdtemp(prefix="zsad-bench-anomalyclip-"))
    config = _write_weights(folder, args.seed)
    images, pixels, masks = _inputs(args.images, args.image_size, args.seed)
    size, layers = args.image_size, [24]

    # -- official model and prompt learner (random init, saved in train.py's checkpoint format) --------------------
    lib, loss_mod = official["lib"], official["loss"]
    # AnomalyCLIP_lib.load's path for a state-dict file (torch.jit.load fails, then build_model and .float() on the
    # CPU); its torch.load re-reads the file handle the failed JIT load moved to the end, so build directly
    state = torch.load(folder / "clip.pt", map_location="cpu", weights_only=True)
    model = official["build_model"]("ViT-L/14@336px", state, DESIGN).float().eval()
    torch.manual_seed(args.seed)
    learner = official["prompts"].AnomalyCLIP_PromptLearner(model.to("cpu"), DESIGN)
    torch.save({"prompt_learner": learner.state_dict()}, folder / "prompt_learner.pth")
    model.visual.DAPM_replace(DPAM_layer=20)

    def official_text():
        prompts, tokenized, deep = learner(cls_id=None)
        text = model.encode_text_learn(prompts, tokenized, deep).float()
        text = torch.stack(torch.chunk(text, dim=0, chunks=2), dim=1)
        return text / text.norm(dim=-1, keepdim=True)

    with torch.no_grad():
        text_features = official_text()

    def official_predict():  # test.py's per-image loop, batch 1
        scores, maps = [], []
        with torch.no_grad():
            for i in range(pixels.shape[0]):
                image_features, patch_features = model.encode_image(pixels[i : i + 1], layers, DPAM_layer=20)
                image_features = image_features / image_features.norm(dim=-1, keepdim=True)
                probs = ((image_features @ text_features.permute(0, 2, 1)) / 0.07).softmax(-1)
                per_layer = []
                for patch in patch_features:
                    patch = patch / patch.norm(dim=-1, keepdim=True)
                    similarity, _ = lib.compute_similarity(patch, text_features[0])
                    sim = lib.get_similarity_map(similarity[:, 1:, :], size)
                    per_layer.append((sim[..., 1] + 1 - sim[..., 0]) / 2.0)
                summed = torch.stack(per_layer).sum(dim=0)
                smooth = torch.stack([torch.from_numpy(official["gaussian_filter"](m, sigma=4)) for m in summed])
                scores.append(float(probs[0, 0, 1]))
                maps.append(smooth[0])
        return scores, torch.stack(maps)

    focal, dice = loss_mod.FocalLoss(), loss_mod.BinaryDiceLoss()
    optimizer = torch.optim.Adam(list(learner.parameters()), lr=1e-3, betas=(0.5, 0.999))
    batch = slice(0, args.batch_size)
    gt = torch.from_numpy(np.stack(masks[batch])).float()
    labels = torch.tensor([int(m.any()) for m in masks[batch]])
    official_state = {k: v.clone() for k, v in learner.state_dict().items()}

    def official_step():  # one train.py step on the batch
        with torch.no_grad():
            image_features, patch_features = model.encode_image(pixels[batch], layers, DPAM_layer=20)
            image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text = official_text()
        logits = (image_features.unsqueeze(1) @ text.permute(0, 2, 1))[:, 0, ...] / 0.07
        image_loss = torch.nn.functional.cross_entropy(logits.squeeze(), labels)
        seg = 0
        for patch in patch_features:
            patch = patch / patch.norm(dim=-1, keepdim=True)
            similarity, _ = lib.compute_similarity(patch, text[0])
            sim = lib.get_similarity_map(similarity[:, 1:, :], size).permute(0, 3, 1, 2)
            seg = seg + focal(sim, gt) + dice(sim[:, 1], gt) + dice(sim[:, 0], 1 - gt)
        seg = 4 * seg
        optimizer.zero_grad()
        (seg + image_loss).backward()
        optimizer.step()
        return float((seg + image_loss).detach())

    # -- zsad: the recipe on the same files -------------------------------------------------------------------------
    from zsad import Detector
    from zsad.training import PromptTrainer

    det = Detector.from_recipe(
        "anomalyclip", backbone_checkpoint=str(folder / "clip.pt"), backbone_options={"model_config": config},
        prompt_checkpoint=str(folder / "prompt_learner.pth"), image_size=size, device="cpu",
    )
    names = ["object"] * pixels.shape[0]

    def zsad_predict():
        with torch.inference_mode():
            outs = [det.score_pixels(chunk, names[: chunk.shape[0]]) for chunk in pixels.split(args.batch_size)]
        return torch.cat([o.scores["anomalyclip"] for o in outs]).tolist(), torch.cat([o.maps for o in outs])

    rows = {}
    seconds, outs = _alternating({"official": official_predict, "zsad": zsad_predict}, args.repeats)
    (o_scores, o_maps), (z_scores, z_maps) = outs["official"], outs["zsad"]
    rows["inference: official test.py loop (batch 1, scipy Gaussian)"] = pixels.shape[0] / seconds["official"]
    rows[f"inference: zsad Detector.score_pixels (batch {args.batch_size})"] = pixels.shape[0] / seconds["zsad"]
    agreement = {
        "max_abs_score_diff": float(np.abs(np.array(o_scores) - np.array(z_scores)).max()),
        "max_abs_map_diff": float((o_maps - z_maps).abs().max()),
    }

    # training: the first step of each side from the same start, for the loss check; then timed steps
    first_official = official_step()
    learner.load_state_dict(official_state)
    trainer = PromptTrainer(det, lr=1e-3, betas=(0.5, 0.999))
    batch_images = [images[i] for i in range(args.batch_size)]
    first_zsad = trainer.step(batch_images, masks[batch])["total"]
    agreement["first_step_total_loss"] = {"official": first_official, "zsad": first_zsad}
    features, _ = trainer.encode_images(batch_images)
    mask_tensor = torch.from_numpy(np.stack(masks[batch])).float()
    seconds, _ = _alternating({
        "official": official_step,
        "zsad": lambda: trainer.step(batch_images, masks[batch]),
        "cached": lambda: trainer.step_features(features, mask_tensor),
    }, args.train_steps)
    rows[f"training: official train.py step (batch {args.batch_size})"] = 1 / seconds["official"]
    rows[f"training: zsad PromptTrainer.step (batch {args.batch_size})"] = 1 / seconds["zsad"]
    rows[f"training: zsad step_features, cached features (batch {args.batch_size})"] = 1 / seconds["cached"]
    return {"rows": rows, "agreement": agreement, "settings": vars(args), "torch": torch.__version__}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", required=True, help="checkout of zqhang/AnomalyCLIP at 45ed4dd")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--repeats", type=int, default=2, help="timed inference rounds (the best one counts)")
    parser.add_argument("--train-steps", type=int, default=2, help="timed training rounds (the best one counts)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    result = run(args)
    rows = result["rows"]
    keys = list(rows)
    width = max(len(k) for k in keys)
    print(f"{'':{width}}  per second")
    for k in keys:
        print(f"{k:{width}}  {rows[k]:10.4f}")
    print(f"inference speed-up (zsad / official): {rows[keys[1]] / rows[keys[0]]:.2f}x")
    print(f"training speed-up, features recomputed: {rows[keys[3]] / rows[keys[2]]:.2f}x; "
          f"cached features: {rows[keys[4]] / rows[keys[2]]:.2f}x")
    print("agreement:", json.dumps(result["agreement"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
