"""Prompt learning (zsad.training): parity with the official train.py, whole runs, resume, feature cache, errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from zsad import Detector
from zsad.data import AnomalyDataset, open_dataset, read_mask
from zsad.errors import CheckpointError, ConfigError, DatasetError
from zsad.training import PromptTrainer, SegmentationLoss, dice_loss, focal_loss, train_prompts
from zsad.training.state import read_train_state

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tipsomaly-parity"
DATASET = FIXTURE / "dataset"
SMALL = 56  # image size of the fast runs (4 x 4 patch grid) through the fixture weights
FAST = {"backbone_checkpoint": str(FIXTURE), "image_size": SMALL, "prompt_checkpoint": str(FIXTURE / "learnable_params.pth")}


def _run(out: Path, **kw):
    args = dict(data=DATASET, out=out, epochs=2, batch_size=4, device="cpu", overrides=dict(FAST), progress=False)
    args.update(kw)
    return train_prompts("tipsomaly", **args)


def _tokens(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from zsad.prompts.checkpoint import load_prompt_checkpoint

    t_n, t_a, _ = load_prompt_checkpoint(path)
    return t_n, t_a


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted two-epoch run on the 6-image fixture dataset (features in memory)."""
    return _run(tmp_path_factory.mktemp("train") / "run")


# ------------------------------------------------------------------------------------------------- parity (518)
def test_three_steps_match_the_official_training():
    ref = np.load(FIXTURE / "reference.npz")
    det = Detector.from_recipe(
        "tipsomaly", backbone_checkpoint=str(FIXTURE), prompt_checkpoint=str(FIXTURE / "learnable_params.pth"),
        image_size=518, device="cpu",
    )
    samples = open_dataset(DATASET).samples()[:4]
    images = [str(s.img_path) for s in samples]
    masks = []
    for s in samples:
        if s.mask_path is not None:
            masks.append(read_mask(s.mask_path))
        else:
            from PIL import Image

            with Image.open(s.img_path) as im:
                masks.append(np.zeros((im.height, im.width), np.uint8))
    trainer = PromptTrainer(det, lr=1e-3, betas=(0.5, 0.999))
    t_n, t_a = trainer.prompt_tokens()
    np.testing.assert_allclose(t_n.numpy(), ref["train_T_n"][0], atol=0)
    np.testing.assert_allclose(t_a.numpy(), ref["train_T_a"][0], atol=0)
    for step in range(3):
        losses = trainer.step(images, masks)
        assert all(isinstance(v, float) for v in losses.values())
        for name in ("focal", "dice_pos", "dice_neg", "total"):
            np.testing.assert_allclose(losses[name], ref[f"train_loss_{name}"][step], rtol=1e-4, err_msg=name)
        np.testing.assert_allclose(trainer.last_prototypes()[0].numpy(), ref["train_G_l"][step], atol=1e-5)
        for grad, key in zip(trainer.last_gradients(), ("train_grad_T_n", "train_grad_T_a")):
            expected = ref[key][step]
            np.testing.assert_allclose(grad.numpy(), expected, atol=1e-3 * np.abs(expected).max(), err_msg=key)
        t_n, t_a = trainer.prompt_tokens()
        np.testing.assert_allclose(t_n.numpy(), ref["train_T_n"][step + 1], atol=2e-5)
        np.testing.assert_allclose(t_a.numpy(), ref["train_T_a"][step + 1], atol=2e-5)
    assert trainer.steps == 3


# ------------------------------------------------------------------------------------------------- losses
def _official_focal(logit, target, gamma=2, smooth=1e-5):
    """Transcription of the official FocalLoss.forward (apply_nonlin=None, alpha=None, size_average=True)."""
    num_class = logit.shape[1]
    logit = logit.view(logit.size(0), logit.size(1), -1).permute(0, 2, 1).contiguous().view(-1, num_class)
    target = torch.squeeze(target, 1).view(-1, 1)
    alpha = torch.ones(num_class, 1)
    idx = target.cpu().long()
    one_hot = torch.FloatTensor(target.size(0), num_class).zero_().scatter_(1, idx, 1)
    one_hot = torch.clamp(one_hot, smooth / (num_class - 1), 1.0 - smooth)
    pt = (one_hot * logit).sum(1) + smooth
    alpha = torch.squeeze(alpha[idx])
    return (-1 * alpha * torch.pow((1 - pt), gamma) * pt.log()).mean()


def _official_dice(inp, targets):
    n = targets.size()[0]
    i, t = inp.view(n, -1), targets.view(n, -1)
    return 1 - ((2 * (i * t).sum(1) + 1) / (i.sum(1) + t.sum(1) + 1)).sum() / n


def test_losses_match_the_official_definitions():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(3, 2, 9, 7, generator=g), dim=1)
    mask = (torch.rand(3, 9, 7, generator=g) > 0.7).float()
    torch.testing.assert_close(focal_loss(probs, mask), _official_focal(probs, mask), rtol=1e-6, atol=0)
    torch.testing.assert_close(dice_loss(probs[:, 1], mask), _official_dice(probs[:, 1], mask), rtol=1e-6, atol=0)
    out = SegmentationLoss()(probs, mask)
    torch.testing.assert_close(out["dice_neg"], _official_dice(probs[:, 0], 1 - mask), rtol=1e-6, atol=0)
    torch.testing.assert_close(out["total"], out["focal"] + out["dice_pos"] + out["dice_neg"])
    weighted = focal_loss(probs, mask, alpha=(0.0, 1.0))  # only abnormal pixels count
    assert 0 < float(weighted) < float(focal_loss(probs, mask))
    with pytest.raises(ConfigError, match="do not match"):
        SegmentationLoss()(probs, mask[:, :5])
    with pytest.raises(ConfigError, match="gamma"):
        SegmentationLoss(gamma=-1)


# ------------------------------------------------------------------------------------------------- whole runs
def test_train_prompts_writes_a_loadable_checkpoint_that_changes_predictions(reference_run):
    res = reference_run
    out = res.out
    assert res.epochs_completed == 2 and [h["epoch"] for h in res.history] == [1, 2]
    assert [p.name for p in res.checkpoints] == ["epoch_001.safetensors", "epoch_002.safetensors"]
    record = json.loads(res.record_path.read_text())
    import zsad

    assert record["zsad_version"] == zsad.__version__ and record["completed"] is True
    assert record["seed"] == 111 and record["training"]["epochs"] == 2 and record["training"]["batch_size"] == 4
    assert record["data"]["classes"] == ["metal_nut", "pipe_fryum"] and record["data"]["images"] == 6
    assert record["data"]["counts"]["metal_nut"] == {"images": 3, "normal": 1, "anomalous": 2, "with_mask": 2}
    assert set(record["history"][0]) >= {"focal", "dice_pos", "dice_neg", "total"}
    assert all(np.isfinite(h["total"]) for h in record["history"])

    images = [str(s.img_path) for s in open_dataset(DATASET).samples()]
    before = Detector.from_recipe("tipsomaly", device="cpu", **FAST)
    after = Detector.from_recipe("tipsomaly", device="cpu", **{**FAST, "prompt_checkpoint": str(res.prompt_checkpoint)})
    t_n, t_a = _tokens(res.prompt_checkpoint)
    torch.testing.assert_close(after.prompts.learned.T_n.detach(), t_n)
    assert not torch.equal(t_n, before.prompts.learned.T_n.detach())
    maps_before = np.stack([r.anomaly_map for r in before.predict(images, map_size="input")])
    maps_after = np.stack([r.anomaly_map for r in after.predict(images, map_size="input")])
    assert np.abs(maps_after - maps_before).max() > 1e-4
    # the in-memory trained detector already predicts with the new tokens (prototype cache invalidated)
    maps_mem = np.stack([r.anomaly_map for r in res.detector.predict(images, map_size="input")])
    np.testing.assert_allclose(maps_mem, maps_after, atol=1e-6)
    # config.json rebuilds the trained detector; an epoch checkpoint is a prompt checkpoint too
    loaded = Detector.load(out, device="cpu")
    torch.testing.assert_close(loaded.prompts.learned.T_a.detach(), t_a)
    torch.testing.assert_close(_tokens(out / "checkpoints" / "epoch_002.safetensors")[0], t_n)


def test_resume_gives_the_same_tokens_as_an_uninterrupted_run(reference_run, tmp_path):
    out = tmp_path / "run"
    first = _run(out, epochs=1)
    assert first.epochs_completed == 1 and json.loads(first.record_path.read_text())["epochs_completed"] == 1
    done = _sha(out / "checkpoints" / "epoch_001.safetensors")
    resumed = _run(out, epochs=2, resume=out)
    assert resumed.resumed_from == out / "checkpoints" / "epoch_001.safetensors"
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert _sha(out / "checkpoints" / "epoch_001.safetensors") == done
    for a, b in zip(_tokens(resumed.prompt_checkpoint), _tokens(reference_run.prompt_checkpoint)):
        assert torch.equal(a, b)
    ref_state, _ = read_train_state(reference_run.checkpoints[-1])
    new_state, meta = read_train_state(resumed.checkpoints[-1])
    for key in ("optim.0.exp_avg", "optim.1.exp_avg_sq", "optim.0.step"):
        assert torch.equal(ref_state[key], new_state[key]), key
    assert meta["epoch"] == 2 and meta["steps"] == 4
    # resuming a finished run just rewrites the outputs
    again = _run(out, epochs=2, resume=out / "checkpoints" / "epoch_002.safetensors")
    assert again.epochs_completed == 2 and torch.equal(_tokens(again.prompt_checkpoint)[0], _tokens(resumed.prompt_checkpoint)[0])


def test_feature_cache_gives_identical_results(reference_run, tmp_path):
    cache = tmp_path / "cache"
    cold = _run(tmp_path / "cold", feature_cache=cache)
    (folder,) = [p for p in cache.iterdir() if p.is_dir()]
    entries = sorted(folder.glob("*.safetensors"))
    assert len(entries) == 6 and (folder / "key.json").is_file()
    key = json.loads((folder / "key.json").read_text())
    assert key["preprocess"]["image_size"] == SMALL and key["backbone"]["weights"]
    stamps = {p: p.stat().st_mtime_ns for p in entries}
    warm = _run(tmp_path / "warm", feature_cache=cache)
    assert {p: p.stat().st_mtime_ns for p in entries} == stamps  # read, not recomputed
    for run in (cold, warm):
        for a, b in zip(_tokens(run.prompt_checkpoint), _tokens(reference_run.prompt_checkpoint)):
            assert torch.equal(a, b)
        assert run.history[-1]["total"] == reference_run.history[-1]["total"]
    entries[0].write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="unreadable"):
        fixed = _run(tmp_path / "fixed", feature_cache=cache)
    assert torch.equal(_tokens(fixed.prompt_checkpoint)[1], _tokens(reference_run.prompt_checkpoint)[1])
    # another image size is another cache folder
    _run(tmp_path / "other", feature_cache=cache, epochs=1, overrides={**FAST, "image_size": 28})
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2


def test_shuffle_is_seeded(reference_run, tmp_path):
    a = _run(tmp_path / "a", shuffle=True, epochs=1)
    b = _run(tmp_path / "b", shuffle=True, epochs=1)
    in_order = _tokens(reference_run.checkpoints[0])[0]  # the same run without shuffling, after epoch 1
    assert torch.equal(_tokens(a.prompt_checkpoint)[0], _tokens(b.prompt_checkpoint)[0])
    assert not torch.equal(_tokens(a.prompt_checkpoint)[0], in_order)
    assert a.record["training"]["shuffle"] is True


def test_random_init_is_seeded_and_learnable_strategy_trains(tmp_path):
    base = {"backbone_checkpoint": str(FIXTURE), "image_size": 28}
    r1 = _run(tmp_path / "r1", epochs=1, overrides=base)
    r2 = _run(tmp_path / "r2", epochs=1, overrides={**base, "prompt_strategy": "learnable"})
    assert r1.record["detector_config"]["prompts"]["checkpoint"] is None
    # same seed -> same initial tokens; the learnable strategy differs only in the image scores
    assert torch.equal(_tokens(r1.prompt_checkpoint)[0], _tokens(r2.prompt_checkpoint)[0])
    det = Detector.from_recipe("tipsomaly", device="cpu", backbone_checkpoint=str(FIXTURE), image_size=28,
                               prompt_checkpoint=str(r1.prompt_checkpoint))
    assert det.prompts.learned.trained


# ------------------------------------------------------------------------------------------------- errors
def _meta(folder: Path, records: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for recs in records.values():
        for r in recs:
            for key in ("img_path", "mask_path"):
                if r[key]:
                    dest = folder / r[key]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(DATASET / r[key], dest)
    (folder / "meta.json").write_text(json.dumps({"test": records}))
    return folder


def test_dataset_without_masks_is_refused(tmp_path):
    recs = json.loads((DATASET / "meta.json").read_text())["test"]
    image_level = {c: [{**r, "mask_path": ""} for r in rs] for c, rs in recs.items()}
    data = _meta(tmp_path / "ds", image_level)
    with pytest.raises(DatasetError, match="needs pixel masks"):
        _run(tmp_path / "out", data=data)
    assert not (tmp_path / "out").exists()


def test_empty_or_unknown_class_is_refused(tmp_path):
    ds = open_dataset(DATASET)
    empty = AnomalyDataset(ds.root, "toy", {"test": {**ds.splits["test"], "screw": []}})
    with pytest.raises(DatasetError, match="'screw'.*no images"):
        _run(tmp_path / "a", data=empty)
    with pytest.raises(DatasetError, match="bottle"):
        _run(tmp_path / "b", classes=["bottle"])
    with pytest.raises(DatasetError, match="no classes"):
        _run(tmp_path / "c", classes=[])


def test_prompt_width_mismatch_is_refused(tmp_path):
    # the fixture prompts are 64 wide; the tiny random TIPS text tower takes 32
    bad = {"backbone_checkpoint": None, "image_size": 28, "backbone.options": {"random_config": "tiny"},
           "prompt_checkpoint": str(FIXTURE / "learnable_params.pth")}
    with pytest.raises(ConfigError, match="64 wide.*32"):
        _run(tmp_path / "out", overrides=bad)
    tiny = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_checkpoint=None, image_size=28,
                                backbone_options={"random_config": "tiny"}, device="cpu")
    trainer = PromptTrainer(tiny)
    with pytest.raises(ConfigError, match="do not fit"):
        trainer.set_tokens(torch.zeros(8, 64), torch.zeros(8, 64))


def test_backbone_or_strategy_without_learnable_prompts_is_refused():
    det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_checkpoint=None, image_size=28,
                               backbone_options={"random_config": "tiny"}, device="cpu", prompt_strategy="fixed")
    with pytest.raises(ConfigError, match="no learnable prompt tokens"):
        PromptTrainer(det)
    det.backbone.supports_learnable_prompts = False
    with pytest.raises(ConfigError, match="cannot learn prompts"):
        PromptTrainer(det)


def test_step_checks_masks():
    det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_checkpoint=None, image_size=28,
                               backbone_options={"random_config": "tiny"}, device="cpu")
    trainer = PromptTrainer(det)
    image = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(DatasetError, match="30x20"):
        trainer.step([image], [np.zeros((30, 20))])
    with pytest.raises(DatasetError, match="1 masks for 2 images"):
        trainer.step([image, image], [None])
    losses = trainer.step([image, image], None)  # None = all normal
    assert 0 < losses["dice_pos"] < 1 and trainer.steps == 1  # empty target: dice = 1 / (sum p_a + 1)
    with pytest.raises(ConfigError, match="lr"):
        PromptTrainer(det, lr=0)


def test_corrupt_resume_checkpoint_names_the_file_and_loses_nothing(reference_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference_run.out, out)
    ckpt = out / "checkpoints" / "epoch_002.safetensors"
    before = {p.name: _sha(p) for p in out.rglob("*") if p.is_file()}
    data = bytearray(ckpt.read_bytes())
    data[-20] ^= 0xFF  # flip a byte in the tensor data: only the checksum notices
    ckpt.write_bytes(bytes(data))
    before[ckpt.name] = _sha(ckpt)
    with pytest.raises(CheckpointError, match=r"epoch_002\.safetensors.*checksum"):
        _run(out, epochs=3, resume=out)
    ckpt.write_bytes(bytes(data[: len(data) // 2]))  # truncated
    before[ckpt.name] = _sha(ckpt)
    with pytest.raises(CheckpointError, match=r"epoch_002\.safetensors"):
        _run(out, epochs=3, resume=ckpt)
    assert {p.name: _sha(p) for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(CheckpointError, match="not a zsad training checkpoint"):
        _run(out, epochs=3, resume=out / "prompts.safetensors")
    with pytest.raises(CheckpointError, match="No training checkpoint"):
        _run(out, resume=tmp_path)


def test_resume_of_another_run_and_clobbering_are_refused(reference_run, tmp_path):
    with pytest.raises(ConfigError, match="different run.*lr"):
        _run(tmp_path / "x", resume=reference_run.out, lr=2e-3)
    with pytest.raises(ConfigError, match="already holds training checkpoints"):
        _run(reference_run.out)
    copy = tmp_path / "copy"
    shutil.copytree(reference_run.out, copy)
    redo = _run(copy, epochs=1, overwrite=True)
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["epoch_001.safetensors"]
    assert redo.epochs_completed == 1
    with pytest.raises(ConfigError, match="epochs"):
        _run(tmp_path / "y", epochs=0)
