"""Tests of zsad.weights: the checkpoint table, the cache, downloads, mirrors, offline mode.

Everything runs against a local HTTP server (tests/http_server.py) or file:// URLs, never the network.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import sys
import threading
from pathlib import Path

import pytest
from http_server import point_hub_at, unused_url

import zsad.weights as w
from zsad.errors import CheckpointError, DownloadError, WeightsError
from zsad.weights import download as dl


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


BLOB = bytes(range(256)) * 400  # 102,400 bytes: several chunks are not needed, but resumes at odd offsets are


def publish(server, name, *, index=True, model_json=None, contents=None, prefix=""):
    """Serve fake files of checkpoint *name* as a mirror would (same relative paths), with an index."""
    ckpt = w.get_checkpoint(name)
    entries = {}
    for wf in ckpt.files:
        data = (contents or {}).get(wf.filename, f"{name}/{wf.filename}".encode() * 50)
        server.put(prefix + wf.relpath, data)
        entries[wf.relpath] = {"sha256": sha(data), "size": len(data)}
    if model_json is not None:
        server.put(prefix + ckpt.model_json_relpath, model_json)
        entries[ckpt.model_json_relpath] = {"sha256": sha(model_json.encode()), "size": len(model_json)}
    if index:
        server.put(prefix + w.INDEX_NAME, json.dumps(entries))
    return entries


@pytest.fixture
def mirror(http_server, monkeypatch):
    monkeypatch.setenv("ZSAD_WEIGHTS_URL", http_server.url)
    return http_server


# ------------------------------------------------------------------------------------------------ the table
def test_table_covers_the_documented_checkpoints():
    names = {c.name for c in w.CHECKPOINTS}
    for n in ["tips-v1-s14-hr", "tips-v1-b14-hr", "tips-v1-l14-hr", "tips-v1-so400m14-hr", "tips-v1-g14-hr",
              "tips-v1-g14-lr", "tips-v2-b14", "tips-v2-l14", "tips-v2-so400m14", "tips-v2-g14",
              "google/tipsv2-b14", "google/tipsv2-l14", "google/tipsv2-so400m14", "google/tipsv2-g14",
              "google/siglip2-base-patch16-224", "google/siglip2-large-patch16-512",
              "google/siglip2-so400m-patch14-384", "google/siglip2-base-patch16-naflex",
              "ViT-L-14-336.openai", "ViT-B-16.openai"]:
        assert n in names
    l14 = w.get_checkpoint("tips-v1-l14-hr")
    assert [f.url for f in l14.files] == [
        "https://storage.googleapis.com/tips_data/v1_0/checkpoints/pytorch/tips_oss_l14_highres_distilled_vision.npz",
        "https://storage.googleapis.com/tips_data/v1_0/checkpoints/pytorch/tips_oss_l14_highres_distilled_text.npz",
        "https://storage.googleapis.com/tips_data/v1_0/checkpoints/tokenizer.model",
    ]
    assert l14.files[0].sha256 == "3421b4e0d473cafe5e9cdbd2bf05b5c346270b6be05a27b0af7eca0734639c80"
    assert l14.files[0].approx_size == 304_016_384 * 4 and l14.files[0].size is None and l14.size is None
    assert l14.model_json_relpath == "v1_0/checkpoints/pytorch/tips_oss_l14_highres_distilled_model.json"
    so2 = w.get_checkpoint("tips-v2-so400m14")
    assert so2.files[0].url.endswith("v2_0/checkpoints/pytorch/tips_v2_oss_so14_vision.npz")
    assert so2.files[2] == l14.files[2]  # one shared tokenizer
    so1 = w.get_checkpoint("tips-v1-so400m14-hr")
    assert so1.files[1].name == "tips_oss_so400m14_highres_largetext_distilled_text.npz"
    assert w.get_checkpoint("tips-v1-g14-lr").files[0].name == "tips_oss_g14_lowres_vision.npz"
    for c in w.CHECKPOINTS:
        assert c.licence and c.attribution and c.description
        if c.kind == "tips":
            assert c.licence == "CC-BY-4.0" and "ICLR 2025" in c.attribution
            assert all(f.licence == "CC-BY-4.0" and f.relpath for f in c.files)
        elif c.kind == "prompts":  # a method's released prompts: files from the method's repository
            assert c.licence == "MIT" and c.files and all(f.url.startswith("https://") for f in c.files)
        else:
            assert c.repo_id and not c.files
    assert w.get_checkpoint("google/siglip2-base-patch16-224").licence == "Apache-2.0"
    oc = w.get_checkpoint("ViT-L-14-336.openai")
    assert (oc.kind, oc.arch, oc.tag) == ("open_clip", "ViT-L-14-336", "openai")


def test_known_checkpoint_names():
    assert w.known_checkpoint_names() == tuple(c.name for c in w.CHECKPOINTS)
    assert all(w.get_checkpoint(n).kind == "open_clip" for n in w.known_checkpoint_names("open_clip"))
    assert len(w.known_checkpoint_names("tips")) == 10


def test_unknown_name_suggests_close_matches():
    with pytest.raises(WeightsError) as info:
        w.get_checkpoint("tips-v2-l14x")
    assert "'tips-v2-l14'" in str(info.value) and "Known checkpoints" in str(info.value)


# ------------------------------------------------------------------------------------------------ environment
def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("ZSAD_CACHE", str(tmp_path / "zc"))
    assert w.cache_dir() == tmp_path / "zc"
    monkeypatch.delenv("ZSAD_CACHE")
    assert w.cache_dir() == tmp_path / "xdg" / "zsad"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert w.cache_dir() == tmp_path / "home" / ".cache" / "zsad"
    monkeypatch.setenv("ZSAD_CACHE", "~/elsewhere")
    assert w.cache_dir() == tmp_path / "home" / "elsewhere"
    assert w.checkpoint_dir("tips-v2-l14") == tmp_path / "home" / "elsewhere" / "tips-v2-l14"


def test_offline_flag_and_base_url(monkeypatch, tmp_path):
    assert not w.is_offline() and w.weights_base_url() == w.GCS_PREFIX
    for value, expected in [("1", True), ("true", True), ("ON", True), ("0", False), ("", False)]:
        monkeypatch.setenv("ZSAD_OFFLINE", value)
        assert w.is_offline() is expected
    assert w.is_offline(False) is False
    monkeypatch.setenv("ZSAD_WEIGHTS_URL", "https://mirror.example/tips")
    assert w.weights_base_url() == "https://mirror.example/tips/"
    monkeypatch.setenv("ZSAD_WEIGHTS_URL", str(tmp_path))
    assert w.weights_base_url() == tmp_path.as_uri() + "/"


# ------------------------------------------------------------------------------------------------ download_file
def test_download_verifies_sha_and_leaves_no_partial(http_server, tmp_path):
    http_server.put("f.bin", BLOB)
    dest = tmp_path / "out" / "f.bin"
    assert w.download_file(http_server.url_for("f.bin"), dest, sha256=sha(BLOB), size=len(BLOB),
                           progress=False) == dest
    assert dest.read_bytes() == BLOB
    assert not dest.with_suffix(".bin.part").exists()
    assert http_server.requests[-1].range is None


def test_progress_bar_with_non_tty_stderr(http_server, tmp_path, monkeypatch):
    http_server.put("f.bin", BLOB)
    fake = io.StringIO()
    monkeypatch.setattr(sys, "stderr", fake)
    w.download_file(http_server.url_for("f.bin"), tmp_path / "f.bin", progress=True)
    assert (tmp_path / "f.bin").read_bytes() == BLOB
    assert "f.bin" in fake.getvalue()  # the bar was drawn (and closed) on a plain stream
    monkeypatch.setattr(sys, "stderr", None)  # e.g. pythonw: no stream at all
    w.download_file(http_server.url_for("f.bin"), tmp_path / "g.bin", progress=True)


def test_resume_with_range(http_server, tmp_path):
    http_server.put("f.bin", BLOB)
    dest = tmp_path / "f.bin"
    dest.with_suffix(".bin.part").write_bytes(BLOB[:40_001])
    w.download_file(http_server.url_for("f.bin"), dest, sha256=sha(BLOB), progress=False)
    assert dest.read_bytes() == BLOB
    last = http_server.requests[-1]
    assert (last.range, last.status) == ("bytes=40001-", 206)


def test_resume_when_server_ignores_range(http_server, tmp_path):
    http_server.put("f.bin", BLOB)
    http_server.ignore_range = True
    dest = tmp_path / "f.bin"
    dest.with_suffix(".bin.part").write_bytes(b"x" * 5000)  # even a wrong prefix is discarded
    w.download_file(http_server.url_for("f.bin"), dest, sha256=sha(BLOB), progress=False)
    assert dest.read_bytes() == BLOB
    assert (http_server.requests[-1].range, http_server.requests[-1].status) == ("bytes=5000-", 200)


def test_partial_longer_than_file_restarts(http_server, tmp_path):
    http_server.put("f.bin", BLOB[:1000])
    dest = tmp_path / "f.bin"
    dest.with_suffix(".bin.part").write_bytes(b"y" * 2000)
    w.download_file(http_server.url_for("f.bin"), dest, sha256=sha(BLOB[:1000]), progress=False)
    assert dest.read_bytes() == BLOB[:1000]
    assert [r.status for r in http_server.requests] == [416, 200]


def test_truncated_transfer_keeps_partial_and_resumes(http_server, tmp_path):
    http_server.put("f.bin", BLOB)
    http_server.fail("f.bin", truncate_at=30_000, times=1)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError, match="interrupted") as info:
        w.download_file(http_server.url_for("f.bin"), dest, sha256=sha(BLOB), progress=False)
    part = dest.with_suffix(".bin.part")
    assert str(part) in str(info.value)
    assert part.stat().st_size == 30_000 and not dest.exists()
    w.download_file(http_server.url_for("f.bin"), dest, sha256=sha(BLOB), progress=False)
    assert dest.read_bytes() == BLOB and not part.exists()
    assert http_server.requests[-1].range == "bytes=30000-"


def test_checksum_mismatch_keeps_nothing(http_server, tmp_path):
    http_server.put("f.bin", BLOB)
    dest = tmp_path / "f.bin"
    with pytest.raises(DownloadError) as info:
        w.download_file(http_server.url_for("f.bin"), dest, sha256="0" * 64, progress=False)
    msg = str(info.value)
    assert "0" * 64 in msg and sha(BLOB) in msg and "nothing was kept" in msg
    assert not dest.exists() and not dest.with_suffix(".bin.part").exists()


def test_size_mismatch_is_refused(http_server, tmp_path):
    http_server.put("f.bin", BLOB)
    with pytest.raises(DownloadError, match="expected 10"):
        w.download_file(http_server.url_for("f.bin"), tmp_path / "f.bin", size=10, progress=False)
    assert not (tmp_path / "f.bin").exists()


@pytest.mark.parametrize("status", [404, 500])
def test_http_errors_name_status_and_url(http_server, tmp_path, status):
    http_server.put("f.bin", BLOB)
    http_server.fail("f.bin", status=status)
    url = http_server.url_for("f.bin")
    with pytest.raises(DownloadError) as info:
        w.download_file(url, tmp_path / "f.bin", progress=False)
    assert f"HTTP {status}" in str(info.value) and url in str(info.value)
    assert not (tmp_path / "f.bin").exists()


def test_unreachable_host(tmp_path):
    url = unused_url("f.bin")
    with pytest.raises(DownloadError) as info:
        w.download_file(url, tmp_path / "f.bin", progress=False)
    msg = str(info.value)
    assert url in msg and "ZSAD_WEIGHTS_URL" in msg and "zsad weights import" in msg and "network" in msg


def test_full_disk_names_cache_and_env(http_server, tmp_path, monkeypatch):
    http_server.put("f.bin", BLOB)

    def no_space(fh, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dl, "_write_chunk", no_space)
    dest = w.cache_dir() / "x" / "f.bin"
    with pytest.raises(DownloadError) as info:
        w.download_file(http_server.url_for("f.bin"), dest, progress=False)
    msg = str(info.value)
    assert "ZSAD_CACHE" in msg and str(w.cache_dir()) in msg and "No space" in msg
    assert not dest.exists()


def test_file_url_download(tmp_path):
    (tmp_path / "src.bin").write_bytes(BLOB)
    w.download_file((tmp_path / "src.bin").as_uri(), tmp_path / "dst.bin", progress=False)
    assert (tmp_path / "dst.bin").read_bytes() == BLOB
    with pytest.raises(DownloadError, match="does not exist"):
        w.download_file((tmp_path / "nope.bin").as_uri(), tmp_path / "n.bin", progress=False)


# ------------------------------------------------------------------------------------------------ ensure_checkpoint
def test_ensure_from_mirror_with_index(mirror):
    publish(mirror, "tips-v1-s14-hr")
    folder = w.ensure_checkpoint("tips-v1-s14-hr", progress=False)
    assert folder == w.cache_dir() / "tips-v1-s14-hr"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "text.npz", "tokenizer.model", "vision.npz"]
    assert w.verify_checkpoint("tips-v1-s14-hr") == {"vision.npz": "ok", "text.npz": "ok", "tokenizer.model": "ok"}
    requested = mirror.paths_requested()
    assert requested[0] == w.INDEX_NAME
    assert requested[-1].endswith("tips_oss_s14_highres_distilled_model.json")  # probed, 404, silent
    # a second call trusts the cache and makes no request at all
    n = len(mirror.requests)
    assert w.ensure_checkpoint("tips-v1-s14-hr", progress=False) == folder
    assert len(mirror.requests) == n


def test_mirror_with_sub_path_and_model_json(http_server, monkeypatch):
    publish(http_server, "tips-v2-b14", model_json='{"arch": "tiny"}', prefix="mirror/")
    monkeypatch.setenv("ZSAD_WEIGHTS_URL", http_server.url + "mirror")  # no trailing slash
    folder = w.ensure_checkpoint("tips-v2-b14", progress=False)
    assert json.loads((folder / "model.json").read_text()) == {"arch": "tiny"}
    assert w.verify_checkpoint("tips-v2-b14")["model.json"] == "ok"


def test_mirror_index_overrides_and_catches_bad_files(mirror):
    entries = publish(mirror, "tips-v1-b14-hr")
    rel = w.get_checkpoint("tips-v1-b14-hr").files[1].relpath
    entries[rel]["sha256"] = "ab" * 32
    mirror.put(w.INDEX_NAME, json.dumps(entries))
    with pytest.raises(DownloadError, match="Checksum mismatch"):
        w.ensure_checkpoint("tips-v1-b14-hr", progress=False)
    folder = w.cache_dir() / "tips-v1-b14-hr"
    assert (folder / "vision.npz").is_file() and not (folder / "text.npz").exists()
    assert not (folder / "text.npz.part").exists()


def test_mirror_without_index_uses_table_sha(mirror):
    publish(mirror, "tips-v1-l14-hr", index=False)  # fake vision.npz cannot match the known sha256
    with pytest.raises(DownloadError) as info:
        w.ensure_checkpoint("tips-v1-l14-hr", progress=False)
    assert "3421b4e0d473cafe" in str(info.value)
    assert not (w.cache_dir() / "tips-v1-l14-hr" / "vision.npz").exists()


def test_mirror_index_overrides_table_sha(mirror):
    publish(mirror, "tips-v1-l14-hr", index=False)
    mirror.put(w.get_checkpoint("tips-v1-l14-hr").model_json_relpath, '{"tiny": true}')
    entries = mirror.write_index()  # the index vouches for the tiny fake vision.npz (and the model.json)
    assert len(entries) == 4
    folder = w.ensure_checkpoint("tips-v1-l14-hr", progress=False)
    assert (folder / "model.json").read_text() == '{"tiny": true}'
    assert w.verify_checkpoint("tips-v1-l14-hr")["model.json"] == "ok"
    # ... but the table's known checksum still flags it afterwards
    assert w.verify_checkpoint("tips-v1-l14-hr")["vision.npz"] == "mismatch"


def test_invalid_index_is_reported(mirror):
    publish(mirror, "tips-v1-s14-hr")
    mirror.put(w.INDEX_NAME, '{"a": {"sha256": "xyz"}}')
    with pytest.raises(DownloadError, match="index .* is invalid"):
        w.ensure_checkpoint("tips-v1-s14-hr", progress=False)


def test_missing_file_on_mirror(mirror):
    publish(mirror, "tips-v1-s14-hr")
    mirror.fail(w.get_checkpoint("tips-v1-s14-hr").files[0].relpath, status=404)
    with pytest.raises(DownloadError, match="HTTP 404.*ZSAD_WEIGHTS_URL"):
        w.ensure_checkpoint("tips-v1-s14-hr", progress=False)


def test_local_folder_as_mirror(tmp_path, monkeypatch):
    ckpt = w.get_checkpoint("tips-v2-g14")
    for wf in ckpt.files:
        (tmp_path / "m" / wf.relpath).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "m" / wf.relpath).write_bytes(wf.name.encode())
    monkeypatch.setenv("ZSAD_WEIGHTS_URL", str(tmp_path / "m"))
    folder = w.ensure_checkpoint("tips-v2-g14", progress=False)
    assert (folder / "vision.npz").read_bytes() == b"tips_v2_oss_g14_vision.npz"


def test_concurrent_ensure_downloads_each_file_once(mirror):
    publish(mirror, "tips-v1-s14-hr")
    results, errors = [], []

    def run():
        try:
            results.append(w.ensure_checkpoint("tips-v1-s14-hr", progress=False))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    npz = [p for p in mirror.paths_requested() if p.endswith(".npz")]
    assert sorted(npz) == sorted(set(npz)) and len(npz) == 2


def test_tokenizer_is_reused_from_another_checkpoint(mirror, monkeypatch):
    publish(mirror, "tips-v1-s14-hr")
    w.ensure_checkpoint("tips-v1-s14-hr", progress=False)
    publish(mirror, "tips-v2-l14")
    before = len(mirror.requests)
    folder = w.ensure_checkpoint("tips-v2-l14", progress=False)
    fetched = mirror.paths_requested()[before:]
    assert not any(p.endswith("tokenizer.model") for p in fetched)
    shared = w.cache_dir() / "tips-v1-s14-hr" / "tokenizer.model"
    assert (folder / "tokenizer.model").read_bytes() == shared.read_bytes()
    assert w.verify_checkpoint("tips-v2-l14")["tokenizer.model"] == "ok"


@pytest.mark.parametrize("how", ["env", "argument"])
def test_offline_mode_explains_what_to_do(mirror, monkeypatch, how):
    publish(mirror, "tips-v1-l14-hr")
    if how == "env":
        monkeypatch.setenv("ZSAD_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        w.ensure_checkpoint("tips-v1-l14-hr", progress=False, offline=True if how == "argument" else None)
    msg = str(info.value)
    folder = w.cache_dir() / "tips-v1-l14-hr"
    assert str(folder) in msg
    for wf in w.get_checkpoint("tips-v1-l14-hr").files:
        assert wf.filename in msg and mirror.url + wf.relpath in msg
    assert "zsad weights download tips-v1-l14-hr" in msg and "zsad weights import tips-v1-l14-hr" in msg
    assert ("ZSAD_OFFLINE is set" in msg) == (how == "env")
    assert mirror.requests == []  # the network was never touched


def test_offline_lists_only_missing_files(monkeypatch, tmp_path):
    (tmp_path / "tips_oss_b14_highres_distilled_vision.npz").write_bytes(b"v")
    w.import_files("tips-v1-b14-hr", [tmp_path / "tips_oss_b14_highres_distilled_vision.npz"])
    with pytest.raises(WeightsError) as info:
        w.ensure_checkpoint("tips-v1-b14-hr", offline=True)
    assert "Missing 2 file(s)" in str(info.value) and "vision.npz " not in str(info.value)


# ---------------------------------------------------------------------------------------- import / verify / list
def test_import_files_maps_suffixes(tmp_path):
    src = tmp_path / "dl"
    src.mkdir()
    (src / "tips_oss_s14_highres_distilled_vision.npz").write_bytes(b"vision")
    (src / "tips_oss_s14_highres_distilled_text.npz").write_bytes(b"text")
    (src / "tokenizer.model").write_bytes(b"spm")
    (src / "tips_oss_s14_highres_distilled_model.json").write_text("{}")
    (src / "README.txt").write_text("ignored in a folder")
    folder = w.import_files("tips-v1-s14-hr", [src])
    assert {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")} == {
        "vision.npz": b"vision", "text.npz": b"text", "tokenizer.model": b"spm", "model.json": b"{}"}
    assert w.verify_checkpoint("tips-v1-s14-hr") == {
        "vision.npz": "unverified", "text.npz": "unverified", "tokenizer.model": "unverified",
        "model.json": "unverified"}
    assert w.ensure_checkpoint("tips-v1-s14-hr", offline=True) == folder
    (folder / "text.npz").unlink()
    (folder / "text.npz").write_bytes(b"changed")  # differs from the sha recorded at import
    assert w.verify_checkpoint("tips-v1-s14-hr")["text.npz"] == "mismatch"


def test_import_files_errors(tmp_path):
    bad = tmp_path / "weights.bin"
    bad.write_bytes(b"?")
    with pytest.raises(WeightsError, match="Cannot tell"):
        w.import_files("tips-v1-s14-hr", [bad])
    with pytest.raises(WeightsError, match="does not exist"):
        w.import_files("tips-v1-s14-hr", [tmp_path / "nope_vision.npz"])
    fake = tmp_path / "tips_oss_l14_highres_distilled_vision.npz"
    fake.write_bytes(b"not the real one")
    with pytest.raises(CheckpointError, match="3421b4e0"):
        w.import_files("tips-v1-l14-hr", [fake])
    assert not (w.cache_dir() / "tips-v1-l14-hr" / "vision.npz").exists()
    with pytest.raises(WeightsError, match="Hugging Face"):
        w.import_files("google/tipsv2-l14", [fake])


def test_list_checkpoints(tmp_path):
    rows = {r["name"]: r for r in w.list_checkpoints()}
    assert set(rows) == {c.name for c in w.CHECKPOINTS}
    row = rows["tips-v1-s14-hr"]
    assert row["cached"] is False and row["sha256_known"] is False and row["licence"] == "CC-BY-4.0"
    assert row["path"] == str(w.cache_dir() / "tips-v1-s14-hr")
    assert rows["google/siglip2-base-patch16-224"]["files"] == ["google/siglip2-base-patch16-224"]
    for part in ("vision", "text"):
        (tmp_path / f"x_{part}.npz").write_bytes(b"")
    (tmp_path / "tokenizer.model").write_bytes(b"")
    w.import_files("tips-v1-s14-hr", [tmp_path])
    assert {r["name"]: r for r in w.list_checkpoints()}["tips-v1-s14-hr"]["cached"] is True


# ------------------------------------------------------------------------------------------------ resolve
def test_resolve_backbone_checkpoint(mirror, tmp_path):
    local = tmp_path / "my-ckpt"
    local.mkdir()
    with pytest.raises(CheckpointError, match="vision.npz"):
        w.resolve_backbone_checkpoint(local)
    (local / "vision.npz").write_bytes(b"")
    (local / "text.npz").write_bytes(b"")
    assert w.resolve_backbone_checkpoint(str(local)) == local
    publish(mirror, "tips-v1-s14-hr")
    assert w.resolve_backbone_checkpoint("tips-v1-s14-hr", progress=False) == w.cache_dir() / "tips-v1-s14-hr"
    with pytest.raises(WeightsError) as info:
        w.resolve_backbone_checkpoint("tips-v1-s14")
    assert "'tips-v1-s14-hr'" in str(info.value) and "tips-v2-l14" in str(info.value)


# ------------------------------------------------------------------------------------------------ hub kinds
def test_hub_checkpoints_use_snapshot_download(monkeypatch, tmp_path, http_server):
    import huggingface_hub

    point_hub_at(monkeypatch, http_server.url)  # the probe before a download gets a 404 there: reachable
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(tmp_path / "snap")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert w.ensure_checkpoint("google/tipsv2-l14") == tmp_path / "snap"
    monkeypatch.setenv("ZSAD_OFFLINE", "1")
    w.ensure_checkpoint("google/siglip2-base-patch16-224")
    assert [c[0] for c in calls] == ["google/tipsv2-l14", "google/siglip2-base-patch16-224"]
    assert [c[1]["local_files_only"] for c in calls] == [False, True]
    assert "*.safetensors" in calls[0][1]["allow_patterns"] and "*.py" not in calls[0][1]["allow_patterns"]


@pytest.mark.parametrize("name", ["google/tipsv2-b14", "ViT-B-16.openai"])
def test_hub_checkpoint_offline_and_not_cached(monkeypatch, tmp_path, name):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(WeightsError, match="not in the Hugging Face cache"):
        w.ensure_checkpoint(name, offline=True)  # local_files_only=True: no network access
    assert w.verify_checkpoint(name) == {w.get_checkpoint(name).repo_id: "missing"}


def test_module_stays_light():
    import subprocess

    code = "import sys, zsad.weights; print('torch' in sys.modules, 'tqdm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PYTHONPATH": "."})
    assert out.stdout.split() == ["False", "False"]
