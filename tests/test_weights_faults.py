"""Faults of the weights cache: stale partial files, slow servers, failed optional files, changed cached files,
unreachable servers. Everything runs against a real HTTP server on 127.0.0.1 (tests/http_server.py)."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from http_server import point_hub_at, unused_url
from test_weights import BLOB, publish, sha

import zsad.weights as w
from zsad.cli import main
from zsad.errors import CheckpointError, DownloadError, WeightsError


@pytest.fixture
def mirror(http_server, monkeypatch):
    monkeypatch.setenv("ZSAD_WEIGHTS_URL", http_server.url)
    return http_server


# ----------------------------------------------------------------------------------------- partial files
def test_stale_partial_without_checksum_or_validator_starts_over(http_server, tmp_path):
    http_server.put("f.bin", BLOB)
    dest = tmp_path / "f.bin"
    dest.with_suffix(".bin.part").write_bytes(b"z" * 7000)  # left by someone else: nothing says what it is
    w.download_file(http_server.url_for("f.bin"), dest, progress=False)
    assert dest.read_bytes() == BLOB
    assert [(r.range, r.status) for r in http_server.requests] == [(None, 200)]


def test_resume_without_checksum_uses_the_servers_etag(http_server, tmp_path):
    http_server.put("f.bin", BLOB)
    http_server.fail("f.bin", truncate_at=40_000, times=1)
    dest = tmp_path / "out" / "f.bin"
    with pytest.raises(DownloadError, match="interrupted"):
        w.download_file(http_server.url_for("f.bin"), dest, progress=False)
    w.download_file(http_server.url_for("f.bin"), dest, progress=False)
    assert dest.read_bytes() == BLOB
    last = http_server.requests[-1]
    assert (last.range, last.status, last.if_range) == ("bytes=40000-", 206, f'"{sha(BLOB)}"')
    assert sorted(p.name for p in dest.parent.iterdir() if not p.name.startswith(".")) == ["f.bin"]


def test_resume_of_a_file_that_changed_on_the_server_starts_over(http_server, tmp_path):
    http_server.put("f.bin", BLOB)
    http_server.fail("f.bin", truncate_at=40_000, times=1)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError):
        w.download_file(http_server.url_for("f.bin"), dest, progress=False)
    new = bytes(reversed(BLOB))
    http_server.put("f.bin", new)  # a new version with the same length: only the ETag tells them apart
    w.download_file(http_server.url_for("f.bin"), dest, progress=False)
    assert dest.read_bytes() == new  # not 40,000 old bytes + the new file's tail
    assert (http_server.requests[-1].range, http_server.requests[-1].status) == ("bytes=40000-", 200)


# ------------------------------------------------------------------------------- ZSAD_DOWNLOAD_TIMEOUT
@pytest.mark.parametrize("delay", [0.05, 30.0], ids=["trickle", "stall"])
def test_download_timeout_is_a_stall_limit_and_a_deadline(http_server, tmp_path, monkeypatch, delay):
    http_server.put("f.bin", BLOB[:2000])
    http_server.fail("f.bin", delay=delay)  # 1 byte every 50 ms would take 100 s; a stall never ends
    monkeypatch.setenv("ZSAD_DOWNLOAD_TIMEOUT", "1")
    started = time.monotonic()
    with pytest.raises(DownloadError) as info:
        w.download_file(http_server.url_for("f.bin"), tmp_path / "f.bin", progress=False)
    assert time.monotonic() - started < 10
    assert "ZSAD_DOWNLOAD_TIMEOUT=1" in str(info.value)
    assert not (tmp_path / "f.bin").exists()


def test_download_timeout_bounds_small_optional_files_too(mirror, monkeypatch):
    publish(mirror, "tips-v1-s14-hr", model_json="{}" + " " * 400)  # 20 s at one byte per 50 ms
    mirror.fail(w.get_checkpoint("tips-v1-s14-hr").model_json_relpath, delay=0.05)
    monkeypatch.setenv("ZSAD_DOWNLOAD_TIMEOUT", "1")
    started = time.monotonic()
    with pytest.raises(DownloadError, match="ZSAD_DOWNLOAD_TIMEOUT"):
        w.ensure_checkpoint("tips-v1-s14-hr", progress=False)
    assert time.monotonic() - started < 10


def test_a_steady_download_longer_than_the_timeout_succeeds(http_server, tmp_path, monkeypatch):
    data = bytes(range(256)) * 4096 * 3  # 3 MiB, each MiB well within the period
    http_server.put("big.bin", data)
    monkeypatch.setenv("ZSAD_DOWNLOAD_TIMEOUT", "2")
    w.download_file(http_server.url_for("big.bin"), tmp_path / "big.bin", sha256=sha(data), progress=False)
    assert (tmp_path / "big.bin").read_bytes() == data


# ----------------------------------------------------------------------------------------------- model.json
def test_a_failed_model_json_fetch_is_retried_on_the_next_run(mirror):
    rel = w.get_checkpoint("tips-v1-s14-hr").model_json_relpath
    publish(mirror, "tips-v1-s14-hr", model_json='{"vision": {}}')
    mirror.fail(rel, status=500, times=1)
    with pytest.raises(DownloadError, match="HTTP 500"):
        w.ensure_checkpoint("tips-v1-s14-hr", progress=False)
    folder = w.ensure_checkpoint("tips-v1-s14-hr", progress=False)  # no longer "complete" without it
    assert (folder / "model.json").read_text() == '{"vision": {}}'
    assert mirror.paths_requested().count(rel) == 2


def test_a_missing_model_json_is_remembered(mirror):
    publish(mirror, "tips-v1-s14-hr")  # no model.json on this mirror: a 404, which is normal
    w.ensure_checkpoint("tips-v1-s14-hr", progress=False)
    before = len(mirror.requests)
    w.ensure_checkpoint("tips-v1-s14-hr", progress=False)
    assert len(mirror.requests) == before  # nothing asked again


# ------------------------------------------------------------------------------------------- cached files
def test_a_changed_cached_file_is_reported_and_download_replaces_it(mirror, capsys):
    entries = publish(mirror, "tips-v1-s14-hr")
    folder = w.ensure_checkpoint("tips-v1-s14-hr", progress=False)
    manifest = json.loads((folder / w.store.MANIFEST_NAME).read_text())
    assert {f: (manifest[f]["size"], manifest[f]["sha256"]) for f in ("vision.npz", "text.npz", "tokenizer.model")} == {
        wf.filename: (entries[wf.relpath]["size"], entries[wf.relpath]["sha256"])
        for wf in w.get_checkpoint("tips-v1-s14-hr").files}
    good = (folder / "vision.npz").read_bytes()
    (folder / "vision.npz").write_bytes(good[: len(good) // 2])  # truncated (a full disk, a bad copy)
    with pytest.raises(CheckpointError) as info:
        w.ensure_checkpoint("tips-v1-s14-hr", progress=False)
    assert "vision.npz" in str(info.value) and "zsad weights download tips-v1-s14-hr" in str(info.value)
    assert main(["weights", "download", "tips-v1-s14-hr", "-q"]) == 0  # the suggested fix works
    assert (folder / "vision.npz").read_bytes() == good
    assert w.ensure_checkpoint("tips-v1-s14-hr", progress=False) == folder


def test_same_size_edit_is_found_by_its_checksum(mirror):
    publish(mirror, "tips-v1-s14-hr")
    folder = w.ensure_checkpoint("tips-v1-s14-hr", progress=False)
    data = bytearray((folder / "text.npz").read_bytes())
    data[10] ^= 0xFF
    (folder / "text.npz").write_bytes(bytes(data))  # same size, new modification time
    with pytest.raises(CheckpointError, match="sha256"):
        w.ensure_checkpoint("tips-v1-s14-hr", progress=False)


def test_force_downloads_every_file_again(mirror):
    publish(mirror, "tips-v1-s14-hr")
    w.ensure_checkpoint("tips-v1-s14-hr", progress=False)
    before = len(mirror.requests)
    assert main(["weights", "download", "tips-v1-s14-hr", "--force", "-q"]) == 0
    fetched = mirror.paths_requested()[before:]
    assert sum(p.endswith((".npz", ".model")) for p in fetched) == 3


def test_import_copies_so_editing_the_source_does_not_change_the_cache(tmp_path):
    src = tmp_path / "tips_oss_s14_highres_distilled_text.npz"
    src.write_bytes(b"original")
    folder = w.import_files("tips-v1-s14-hr", [src])
    with open(src, "r+b") as fh:  # edit in place (a hard link would share this inode)
        fh.write(b"EDITED!!")
    assert (folder / "text.npz").read_bytes() == b"original"
    assert (folder / "text.npz").stat().st_ino != src.stat().st_ino


# -------------------------------------------------------------------------------------- unreachable servers
def test_unreachable_server_names_every_missing_file_and_the_import_command(monkeypatch):
    monkeypatch.setenv("ZSAD_WEIGHTS_URL", unused_url())
    with pytest.raises(WeightsError) as info:
        w.ensure_checkpoint("tips-v1-l14-hr", progress=False)
    msg = str(info.value)
    assert "could not be reached" in msg
    assert ("zsad weights import tips-v1-l14-hr PATH/tips_oss_l14_highres_distilled_vision.npz "
            "PATH/tips_oss_l14_highres_distilled_text.npz PATH/tokenizer.model") in msg
    for name in ("vision.npz", "text.npz", "tokenizer.model"):
        assert name in msg
    assert "--recipe tiny" in msg


def test_unreachable_hub_fails_fast_in_one_line(monkeypatch, tmp_path):
    point_hub_at(monkeypatch, unused_url())
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    started = time.monotonic()
    with pytest.raises(WeightsError) as info:
        w.ensure_checkpoint("google/siglip2-base-patch16-224")
    assert time.monotonic() - started < 15
    msg = str(info.value)
    assert "\n" not in msg and "hf download google/siglip2-base-patch16-224" in msg and "huggingface-cli" not in msg


def test_mirror_index_sha_is_recorded_as_verified(mirror):
    data = b"tok" * 10
    publish(mirror, "tips-v1-s14-hr", contents={"tokenizer.model": data})
    folder = w.ensure_checkpoint("tips-v1-s14-hr", progress=False)
    entry = json.loads((folder / w.store.MANIFEST_NAME).read_text())["tokenizer.model"]
    assert entry["verified"] is True and entry["sha256"] == hashlib.sha256(data).hexdigest()


def test_the_fix_a_corrupt_weight_file_error_suggests_works(mirror, tmp_path):
    """A file that was bad from the start (so its record matches it): the error names the exact command."""
    from tips_factory import FIXTURE

    from zsad.backbones.tips import create_tips

    files = {f: (FIXTURE / f).read_bytes() for f in ("vision.npz", "text.npz", "tokenizer.model")}
    publish(mirror, "tips-v1-s14-hr", contents=files, model_json=(FIXTURE / "model.json").read_text())
    src = tmp_path / "downloads"
    src.mkdir()
    (src / "tips_oss_s14_highres_distilled_vision.npz").write_bytes(files["vision.npz"][:5000])  # a bad copy
    (src / "tips_oss_s14_highres_distilled_text.npz").write_bytes(files["text.npz"])
    (src / "tokenizer.model").write_bytes(files["tokenizer.model"])
    (src / "tips_oss_s14_highres_distilled_model.json").write_bytes((FIXTURE / "model.json").read_bytes())
    w.import_files("tips-v1-s14-hr", [src])
    with pytest.raises(CheckpointError) as info:
        create_tips("tips-v1-s14-hr")
    assert "`zsad weights download tips-v1-s14-hr --force`" in str(info.value)
    assert main(["weights", "download", "tips-v1-s14-hr", "--force", "-q"]) == 0
    assert create_tips("tips-v1-s14-hr").embed_dim > 0
