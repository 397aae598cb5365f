"""Parity with the official AnomalyCLIP code (zqhang/AnomalyCLIP at 45ed4dd) on the tiny random-weight fixture.

Checked through the API the fixture's README documents: ``Detector.from_recipe("anomalyclip", ...,
feature_layers=[1, 2, 3, 4], dpam_start=2)``, ``predict(..., map_size="input")`` from file paths and from the
fixture's resized (3, S, S) tensors, maps at the original size, and three ``PromptTrainer`` steps (the five losses
after each step's forward, the contexts and deep prompts after each update). Tolerances (and per-element
exceptions for sign-sensitive learned elements) come from the fixture's manifest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from parity import load_manifest, load_reference
from PIL import Image

from zsad import Detector
from zsad.training import PromptTrainer

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "anomalyclip-parity"
DATASET = FIXTURE / "dataset"
LOSSES = ("focal", "dice_pos", "dice_neg", "image", "total")


def reference() -> dict[str, np.ndarray]:
    return load_reference(FIXTURE)


def manifest() -> dict:
    return load_manifest(FIXTURE)


def samples() -> list[dict]:
    return manifest()["samples"]


def build(**kw) -> Detector:
    """The detector exactly as the fixture README builds it."""
    return Detector.from_recipe(
        "anomalyclip",
        backbone_checkpoint=str(FIXTURE / "clip.pt"),
        backbone_options={"model_config": json.loads((FIXTURE / "model_config.json").read_text())},
        prompt_checkpoint=str(FIXTURE / "prompt_learner.pth"),
        **{**manifest()["contract"]["overrides"], **kw},
        device="cpu",
    )


def error_ratio(actual, name: str, index=None, exceptions: np.ndarray | None = None) -> float:
    """Largest |error| / tolerance of ``actual`` against ``reference.npz[name]`` (``[index]``); <= 1 passes.

    ``exceptions`` is an optional per-element tolerance array (the manifest's sign-sensitive elements).
    """
    expected = reference()[name] if index is None else reference()[name][index]
    actual = np.asarray(actual, dtype=np.float64).reshape(expected.shape)  # row-major, as the README allows
    tol = manifest()["arrays"][name]["tolerance"]
    err = np.abs(actual - expected.astype(np.float64))
    if tol["kind"] == "abs":
        limit = np.full(expected.shape, float(tol["atol"]))
    elif tol["kind"] == "rel":
        limit = float(tol["rtol"]) * np.abs(expected.astype(np.float64))
    else:
        raise AssertionError(f"{name}: unexpected tolerance kind {tol}")
    if exceptions is not None:
        limit = np.maximum(limit, exceptions)
    return float((err / limit).max())


def assert_close(actual, name: str, index=None, exceptions=None) -> float:
    ratio = error_ratio(actual, name, index, exceptions)
    assert ratio <= 1.0, f"{name}[{index}]: error is {ratio:.3g} x the tolerance"
    return ratio


# ------------------------------------------------------------------------------------------------- the fixture
def test_fixture_files_and_arrays_are_the_published_ones():
    files = manifest()["files"]
    for rel in ("clip.pt", "prompt_learner.pth", "model_config.json", "reference.npz", "dataset/meta.json"):
        assert hashlib.sha256((FIXTURE / rel).read_bytes()).hexdigest() == files[rel]["sha256"], rel
    for name in ("score", "anomaly_map", "input_u8", "train_loss_total", "train_deep_prompts"):
        arr = np.ascontiguousarray(reference()[name])
        assert hashlib.sha256(arr.tobytes()).hexdigest() == manifest()["array_sha256"][name], name


# ------------------------------------------------------------------------------------------------- inference
@pytest.fixture(scope="module")
def det() -> Detector:
    return build()


@pytest.mark.parametrize("index", range(6))
def test_scores_and_maps_from_paths_and_tensors(det, index):
    sample = samples()[index]
    cls_name = sample["sample"]["cls_name"]
    path = DATASET / sample["sample"]["img_path"]
    tensor = torch.from_numpy(reference()["input_u8"][index]).permute(2, 0, 1).float() / 255
    for x in (path, tensor):
        r = det.predict(x, class_name=cls_name, map_size="input")
        assert_close(r.pred_score, "score", index)
        assert_close(r.anomaly_map, "anomaly_map", index)
    w, h = sample["size"]
    assert det.predict(path, class_name=cls_name).anomaly_map.shape == (h, w)


def test_class_names_do_not_change_the_result(det):
    path = DATASET / samples()[0]["sample"]["img_path"]
    a = det.predict(path, class_name="bottle", map_size="input")
    b = det.predict(path, class_name="transistor", map_size="input")
    assert a.pred_score == b.pred_score and np.array_equal(a.anomaly_map, b.anomaly_map)


def test_a_batch_gives_the_single_image_results(det):
    paths = [DATASET / s["sample"]["img_path"] for s in samples()]
    results = det.predict(paths, class_name=[s["sample"]["cls_name"] for s in samples()], map_size="input",
                          batch_size=6)
    for i, r in enumerate(results):
        assert_close(r.pred_score, "score", i)
        assert_close(r.anomaly_map, "anomaly_map", i)


# ------------------------------------------------------------------------------------------------- training
def _mask(sample: dict) -> np.ndarray:
    if sample["sample"]["mask_path"]:
        with Image.open(DATASET / sample["sample"]["mask_path"]) as im:
            return (np.array(im.convert("L")) > 0).astype(np.uint8)
    w, h = sample["size"]
    return np.zeros((h, w), np.uint8)


def _exceptions(name: str, steps: int) -> np.ndarray | None:
    """2 * lr * steps for the manifest's sign-sensitive elements of a learned tensor (none in profile A)."""
    listed = manifest()["training"]["sign_sensitive_elements"].get(name, [])
    if not listed:
        return None
    ref = reference()
    shape = ref["train_ctx_pos"].shape[1:] if name.startswith("ctx") else ref["train_deep_prompts"].shape[2:]
    out = np.zeros(shape)
    for row, col in listed:
        out[row, col] = 2 * 1e-3 * steps
    return out


def test_three_training_steps_match_the_official_train_py():
    ref = reference()
    order = ref["train_batch_order"]
    trainer = PromptTrainer(build(), lr=1e-3, betas=(0.5, 0.999))
    paths = [DATASET / s["sample"]["img_path"] for s in samples()]
    masks = [_mask(s) for s in samples()]
    normal, abnormal = trainer.prompt_tokens()
    assert_close(normal, "train_ctx_pos", 0)  # the start: the checkpoint, loaded exactly
    assert_close(abnormal, "train_ctx_neg", 0)
    for step in range(3):
        idx = order[step]
        losses = trainer.step([paths[i] for i in idx], [masks[i] for i in idx])
        for name in LOSSES:
            assert isinstance(losses[name], float)
            assert_close(losses[name], f"train_loss_{name}", step)
        normal, abnormal = trainer.prompt_tokens()
        assert_close(normal, "train_ctx_pos", step + 1, _exceptions("ctx_pos", step + 1))
        assert_close(abnormal, "train_ctx_neg", step + 1, _exceptions("ctx_neg", step + 1))
        deep = trainer.deep_prompt_tokens()
        assert len(deep) == ref["train_deep_prompts"].shape[1]
        for i, tensor in enumerate(deep):
            assert_close(tensor, "train_deep_prompts", (step + 1, i),
                         _exceptions(f"compound_prompts_text.{i}", step + 1))
    assert trainer.steps == 3


def test_the_float16_deep_prompt_rounding_is_reproduced():
    """The official code casts deep prompts to float16 after expanding them to the two sentences: an element whose
    gradient underflows there does not move (manifest: training.zero_gradient_elements)."""
    zero = manifest()["training"]["zero_gradient_elements"]
    listed = [(int(k.rsplit(".", 1)[1]), tuple(e)) for k, v in zero.items() if k.startswith("compound") for e in v]
    assert listed, "the fixture lists an element with a zero gradient"
    ref = reference()
    trainer = PromptTrainer(build(), lr=1e-3, betas=(0.5, 0.999))
    paths = [DATASET / s["sample"]["img_path"] for s in samples()]
    masks = [_mask(s) for s in samples()]
    zero_seen = set()
    for step in range(3):
        idx = ref["train_batch_order"][step]
        trainer.step([paths[i] for i in idx], [masks[i] for i in idx])
        grads = trainer.last_gradients()[2:]
        zero_seen |= {(i, (r, c)) for i, (r, c) in listed if float(grads[i][r, c]) == 0.0}
    assert zero_seen == set(listed)
