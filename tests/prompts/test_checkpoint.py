"""Prompt checkpoints: official .pth (restricted unpickling), safetensors, npz, built-ins, conversion."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch

from zsad.errors import CheckpointError
from zsad.prompts.checkpoint import BUILTIN_PROMPTS, convert_official_checkpoint, load_prompt_checkpoint

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "tipsomaly-prompts"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tipsomaly-parity"


@pytest.mark.parametrize("dataset", ["mvtec", "visa"])
def test_builtin_prompts_equal_the_released_checkpoints(dataset):
    t_n, t_a, meta = load_prompt_checkpoint(f"tipsomaly-{dataset}")
    assert t_n.shape == (8, 1024) and meta["trained_on"] == dataset and meta["license"] == "MIT"
    official = REFERENCE / f"trained_on_{dataset}_epoch2.pth"
    if official.is_file():
        o_n, o_a, _ = load_prompt_checkpoint(official)
        assert torch.equal(t_n, o_n) and torch.equal(t_a, o_a)
        assert hashlib.sha256(official.read_bytes()).hexdigest() == meta["source_sha256"]
    notice = BUILTIN_PROMPTS[f"tipsomaly-{dataset}"].parent / "NOTICE"
    assert "MIT" in notice.read_text() and (notice.parent / "LICENSE").is_file()


def test_formats_agree_and_convert(tmp_path):
    a = load_prompt_checkpoint(FIXTURE / "learnable_params.pth")
    b = load_prompt_checkpoint(FIXTURE / "learnable_params.npz")
    out = convert_official_checkpoint(FIXTURE / "learnable_params.pth", tmp_path / "p.safetensors")
    c = load_prompt_checkpoint(out)
    for x, y in ((a, b), (a, c)):
        assert torch.equal(x[0], y[0]) and torch.equal(x[1], y[1])
    assert c[2]["converted_from"] == "learnable_params.pth"


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_arbitrary_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"learnable_prompts": _Evil()}, path, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_prompt_checkpoint(path)
    path2 = tmp_path / "plain.pth"
    with open(path2, "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(CheckpointError):
        load_prompt_checkpoint(path2)


def test_shape_and_name_errors(tmp_path):
    torch.save(torch.nn.ParameterList([torch.nn.Parameter(torch.zeros(8, 4)), torch.nn.Parameter(torch.zeros(4, 4))]), tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="same shape"):
        load_prompt_checkpoint(tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="Did you mean 'tipsomaly-mvtec'"):
        load_prompt_checkpoint("tipsomaly-mvtc")
    (tmp_path / "p.txt").write_text("x")
    with pytest.raises(CheckpointError, match="Unknown prompt checkpoint type"):
        load_prompt_checkpoint(tmp_path / "p.txt")
