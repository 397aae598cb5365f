"""Build random TIPS checkpoints in the official PyTorch npz format (for loader tests and end-to-end tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tipsomaly-parity"


def official_arrays(width=384, depth=1, text_layers=1, vocab=448, grid=4, mlp_ratio=4, swiglu=False, seed=0, text_mlp_ratio=4):
    """(vision, text) dicts with the exact official key names and shapes."""
    rng = np.random.default_rng(seed)
    r = lambda *shape: (rng.standard_normal(shape) * 0.02).astype(np.float32)  # noqa: E731
    ones = lambda n: np.ones(n, np.float32)  # noqa: E731
    d, m = width, int(width * mlp_ratio)
    vision = {
        "cls_token": r(1, 1, d),
        "register_tokens": r(1, 1, d),
        "mask_token": r(1, d),
        "pos_embed": r(1, 1 + grid * grid, d),
        "patch_embed.proj.weight": r(d, 3, 14, 14),
        "patch_embed.proj.bias": r(d),
        "norm.weight": ones(d),
        "norm.bias": r(d),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        vision.update({
            b + "norm1.weight": ones(d), b + "norm1.bias": r(d), b + "norm2.weight": ones(d), b + "norm2.bias": r(d),
            b + "attn.qkv.weight": r(3 * d, d), b + "attn.qkv.bias": r(3 * d),
            b + "attn.proj.weight": r(d, d), b + "attn.proj.bias": r(d),
            b + "ls1.gamma": ones(d), b + "ls2.gamma": ones(d),
        })
        if swiglu:
            h = (int(d * 4 * 2 / 3) + 7) // 8 * 8
            vision.update({b + "mlp.w12.weight": r(2 * h, d), b + "mlp.w12.bias": r(2 * h),
                           b + "mlp.w3.weight": r(d, h), b + "mlp.w3.bias": r(d)})
        else:
            vision.update({b + "mlp.fc1.weight": r(m, d), b + "mlp.fc1.bias": r(m),
                           b + "mlp.fc2.weight": r(d, m), b + "mlp.fc2.bias": r(d)})
    text = {"token_embedding.weight": r(vocab, d), "ln_final.weight": ones(d), "ln_final.bias": r(d),
            "temperature": np.float32(0.005)}
    for i in range(text_layers):
        b = f"transformer.resblocks.{i}."
        text.update({
            b + "attn.in_proj_weight": r(3 * d, d), b + "attn.in_proj_bias": r(3 * d),
            b + "attn.out_proj.weight": r(d, d), b + "attn.out_proj.bias": r(d),
            b + "ln_1.weight": ones(d), b + "ln_1.bias": r(d), b + "ln_2.weight": ones(d), b + "ln_2.bias": r(d),
            b + "mlp.c_fc.weight": r(text_mlp_ratio * d, d), b + "mlp.c_fc.bias": r(text_mlp_ratio * d),
            b + "mlp.c_proj.weight": r(d, text_mlp_ratio * d), b + "mlp.c_proj.bias": r(d),
        })
    return vision, text


def write_checkpoint(folder: Path, vision: dict, text: dict, stem: str | None = None, tokenizer: bool = True) -> Path:
    """Write npz files (official ``{stem}_vision.npz`` names when ``stem`` is given) and the fixture tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / (f"{stem}_vision.npz" if stem else "vision.npz"), **vision)
    np.savez(folder / (f"{stem}_text.npz" if stem else "text.npz"), **text)
    if tokenizer:
        shutil.copy(FIXTURE / "tokenizer.model", folder / "tokenizer.model")
    return folder


def copy_fixture_checkpoint(folder: Path, model_json: bool = True) -> Path:
    """The parity fixture's weights (vision.npz, text.npz, tokenizer.model[, model.json]) in a fresh folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vision.npz", "text.npz", "tokenizer.model") + (("model.json",) if model_json else ()):
        shutil.copy(FIXTURE / name, folder / name)
    return folder
