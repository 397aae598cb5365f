"""Checkpoints in the cache: ensure (download), verify, import, list, and resolve a backbone setting.

Example:
    >>> verify_checkpoint("tips-v2-b14")["vision.npz"] in {"missing", "ok", "mismatch", "unverified"}
    True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from zsad._files import sha256_file, write_bytes, write_text
from zsad.errors import CheckpointError, DownloadError, WeightsError
from zsad.weights.download import (
    _discard,
    _download,
    _fetch_optional,
    _file_lock,
    _mkdir,
    _part_paths,
    _place,
    _Unreachable,
    cache_dir,
    is_offline,
    weights_base_url,
)
from zsad.weights.table import (
    _BY_NAME,
    CHECKPOINTS,
    GCS_PREFIX,
    INDEX_NAME,
    TRY_WITHOUT_WEIGHTS,
    Checkpoint,
    WeightFile,
    _unknown_message,
    get_checkpoint,
    known_checkpoint_names,
)
from zsad.weights.transport import timeout

logger = logging.getLogger("zsad.weights")
MANIFEST_NAME = ".zsad-manifest.json"
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt"]  # configs, weights, tokenizers; never code
Status = Literal["ok", "missing", "mismatch", "unverified"]


# ----------------------------------------------------------------------------------------------------------------
# Mirror index, manifest
# ----------------------------------------------------------------------------------------------------------------
def _fetch_index(base: str) -> dict[str, dict[str, Any]] | None:
    url = base + INDEX_NAME
    raw = _fetch_optional(url)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("the top level is not an object")
        index: dict[str, dict[str, Any]] = {}
        for rel, entry in data.items():
            if not isinstance(entry, dict):
                raise ValueError(f"entry {rel!r} is not an object")
            sha, size = entry.get("sha256"), entry.get("size")
            if sha is not None and not (isinstance(sha, str) and len(sha) == 64 and all(
                    c in "0123456789abcdefABCDEF" for c in sha)):
                raise ValueError(f"entry {rel!r}: sha256 must be 64 hex digits")
            if size is not None and not (isinstance(size, int) and size >= 0):
                raise ValueError(f"entry {rel!r}: size must be a non-negative integer")
            index[rel.lstrip("/")] = {"sha256": sha.lower() if sha else None, "size": size}
    except ValueError as exc:
        raise DownloadError(f"The mirror index {url} is invalid ({exc}); expected "
                            '{"<relative path>": {"sha256": "<hex>", "size": <bytes>}, ...}.') from exc
    return index


def _expected(
    wf: WeightFile, rel: str | None, index: dict[str, dict[str, Any]] | None
) -> tuple[str | None, int | None]:
    entry = (index or {}).get(rel or "")
    if entry is not None:
        return entry.get("sha256") or wf.sha256, entry.get("size")
    return wf.sha256, wf.size


def _read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_manifest(folder: Path, update: dict[str, dict[str, Any]]) -> None:
    with _file_lock(folder / MANIFEST_NAME):
        manifest = _read_manifest(folder)
        manifest.update(update)
        write_text(folder / MANIFEST_NAME, json.dumps(manifest, indent=1, sort_keys=True))


def _record(folder: Path, filename: str, sha256: str, source: str, verified: bool) -> None:
    """Remember size, modification time and sha256 of a stored file, and whether it matched a known checksum."""
    st = (folder / filename).stat()
    _write_manifest(folder, {filename: {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                        "source": source, "verified": verified}})


def _changed(folder: Path, filename: str, entry: dict[str, Any], known_sha: str | None) -> str | None:
    """Why the stored file differs from what was recorded (or from its known checksum), or None if it does not.

    Size and modification time are compared first (a ``stat``); the file is hashed only when they differ from the
    record, or when there is no record yet (a file copied in by hand), which is then written.
    """
    path = folder / filename
    st = path.stat()
    if entry.get("sha256") and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return None
    if entry.get("size") is not None and entry["size"] != st.st_size:
        return f"its size is {st.st_size} bytes, {entry['size']} were stored"
    actual = sha256_file(path)
    reference = known_sha or entry.get("sha256")
    if reference and actual != reference:
        return f"its sha256 is {actual}, {'expected' if known_sha else 'stored was'} {reference}"
    try:  # same content (e.g. touched, or copied in by hand): remember it so the next load is a stat
        verified = bool(known_sha) or bool(entry.get("verified"))
        _record(folder, filename, actual, entry.get("source") or str(path), verified)
    except OSError:  # a read-only shared cache: verifying is all we can do
        pass
    return None


def _reuse_cached_copy(ckpt: Checkpoint, wf: WeightFile, folder: Path) -> bool:
    """Link a file shared between checkpoints (the tokenizer) from another cached checkpoint folder."""
    for other in CHECKPOINTS:
        if other.name == ckpt.name:
            continue
        for owf in other.files:
            src = cache_dir() / other.name / owf.filename
            if owf.url == wf.url and src.is_file():
                entry = _read_manifest(src.parent).get(owf.filename, {})
                _mkdir(folder, folder / wf.filename)
                _place(src, folder / wf.filename)
                sha = entry.get("sha256") or sha256_file(src)
                _record(folder, wf.filename, sha, str(src), bool(entry.get("verified")))
                return True
    return False


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------
def ensure_checkpoint(
    name: str, *, progress: bool = True, offline: bool | None = None, repair: bool = False, force: bool = False
) -> Path:
    """Return the local folder of checkpoint *name*, downloading what is missing.

    For ``"tips"`` checkpoints the folder is ``cache_dir()/name`` with ``vision.npz``, ``text.npz``,
    ``tokenizer.model`` (and ``model.json`` when a mirror provides one). Every stored file has its size,
    modification time and sha256 recorded in the folder's manifest when it is stored (or first seen); each call
    compares the files with that record (a ``stat``; the file is hashed again only when it changed) and raises
    :class:`~zsad.errors.CheckpointError` for a file that is no longer what was stored. ``repair=True`` (what
    ``zsad weights download`` does) downloads such files again instead; ``force=True`` downloads every file
    again. The tokenizer is copied from another cached TIPS checkpoint when possible. Hub kinds return the
    snapshot folder in the Hugging Face cache.

    *offline* (default: ``ZSAD_OFFLINE``) forbids network access: missing files raise
    :class:`~zsad.errors.WeightsError` with instructions, as does an unreachable server. Other download
    failures raise :class:`~zsad.errors.DownloadError`.

    Example (a local mirror through ``file://``, so no network is needed):
        >>> import os, pathlib, tempfile, unittest.mock
        >>> mirror = pathlib.Path(tempfile.mkdtemp())
        >>> for f in get_checkpoint("tips-v1-s14-hr").files:
        ...     (mirror / f.relpath).parent.mkdir(parents=True, exist_ok=True)
        ...     _ = (mirror / f.relpath).write_bytes(b"fake " + f.name.encode())
        >>> env = {"ZSAD_CACHE": tempfile.mkdtemp(), "ZSAD_WEIGHTS_URL": str(mirror)}
        >>> with unittest.mock.patch.dict(os.environ, env):
        ...     folder = ensure_checkpoint("tips-v1-s14-hr", progress=False)
        ...     sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        ['text.npz', 'tokenizer.model', 'vision.npz']
    """
    ckpt = get_checkpoint(name)
    if not ckpt.stored_by_zsad:
        return _ensure_hub(ckpt, is_offline(offline), force=force)
    folder = cache_dir() / ckpt.name
    manifest = _read_manifest(folder)
    stale: dict[str, str] = {}
    if not force:
        for wf in ckpt.files:
            if (folder / wf.filename).is_file():
                why = _changed(folder, wf.filename, manifest.get(wf.filename, {}), wf.sha256)
                if why:
                    stale[wf.filename] = why
    if stale and not repair:
        raise CheckpointError(_stale_message(ckpt, folder, stale))
    todo = [wf for wf in ckpt.files if force or wf.filename in stale or not (folder / wf.filename).is_file()]
    todo = [wf for wf in todo if force or wf.filename in stale or not _reuse_cached_copy(ckpt, wf, folder)]
    base = weights_base_url()
    rel = ckpt.model_json_relpath
    want_model_json = base != GCS_PREFIX and rel is not None and (force or not _model_json_known(folder, manifest))
    if is_offline(offline):
        if todo:
            why = "ZSAD_OFFLINE is set" if offline is None else "offline=True was given"
            raise WeightsError(_missing_message(ckpt, folder, todo, f"{why}, so nothing was downloaded"))
        return folder
    if not todo and not want_model_json:
        return folder
    _mkdir(folder, folder / (todo[0].filename if todo else "model.json"))
    remaining = list(todo)
    try:
        index = _fetch_index(base) if base != GCS_PREFIX else None
        for wf in todo:
            dest = folder / wf.filename
            url = base + wf.relpath if wf.relpath is not None else wf.url
            sha, size = _expected(wf, wf.relpath, index)
            with _file_lock(dest):
                fresh = not force and wf.filename not in stale
                if fresh and dest.is_file():  # another process finished it while we waited
                    remaining.remove(wf)
                    continue
                if force:
                    _discard(*_part_paths(dest))
                actual = _download(url, dest, sha256=sha, size=size, progress=progress,
                                   desc=f"{ckpt.name}/{wf.filename}")
            _record(folder, wf.filename, actual, url, verified=sha is not None)
            remaining.remove(wf)
        if want_model_json:
            _fetch_model_json(base + rel, folder, index.get(rel) if index else None)
    except _Unreachable as exc:
        if not remaining:
            raise
        raise WeightsError(_missing_message(ckpt, folder, remaining, exc.why)) from exc
    return folder


def _model_json_known(folder: Path, manifest: dict[str, dict[str, Any]]) -> bool:
    """Whether the mirror's optional model.json was fetched, or found not to exist (a 404 recorded)."""
    return (folder / "model.json").is_file() or bool(manifest.get("model.json", {}).get("absent"))


def _fetch_model_json(url: str, folder: Path, entry: dict[str, Any] | None) -> None:
    raw = _fetch_optional(url)
    if raw is None:
        _write_manifest(folder, {"model.json": {"absent": True, "source": url}})
        return
    actual = hashlib.sha256(raw).hexdigest()
    expected = (entry or {}).get("sha256")
    if expected and actual != expected:
        raise DownloadError(f"Checksum mismatch for {url}: expected sha256 {expected}, got {actual}; not kept.")
    write_bytes(folder / "model.json", raw, durable=True)
    _record(folder, "model.json", actual, url, verified=bool(expected))


def _stale_message(ckpt: Checkpoint, folder: Path, stale: dict[str, str]) -> str:
    files = "; ".join(f"{folder / f}: {why}" for f, why in stale.items())
    return (
        f"Cached file(s) of checkpoint {ckpt.name!r} changed since they were stored ({files}): they "
        f"are corrupt or were modified. Run `zsad weights download {ckpt.name}` to download them again."
    )


def _missing_message(ckpt: Checkpoint, folder: Path, missing: list[WeightFile], why: str) -> str:
    base = weights_base_url()
    width = max(len(wf.filename) for wf in missing)
    rows = "\n".join(
        f"  {wf.filename:<{width}}  from {base + wf.relpath if wf.relpath else wf.url}" for wf in missing
    )
    return (
        f"Checkpoint {ckpt.name!r} is incomplete in the zsad cache and {why}.\n"
        f"Missing {len(missing)} file(s). Put them in the folder {folder} under exactly these names:\n{rows}\n"
        "To fix it, either:\n"
        f"  - with network access (ZSAD_OFFLINE unset), run `zsad weights download {ckpt.name}`, which fills that "
        "folder, or\n"
        f"  - download the files anywhere and run `zsad weights import {ckpt.name} "
        f"{' '.join('PATH/' + wf.name for wf in missing)}`, or\n"
        "  - copy them yourself into that folder under the names above.\n"
        f"{TRY_WITHOUT_WEIGHTS}"
    )


def replace_hint(path: str | os.PathLike[str]) -> str:
    """How to replace a bad weight file: the exact ``zsad weights download`` command when it is in the cache.

    Example:
        >>> replace_hint(cache_dir() / "tips-v1-l14-hr" / "vision.npz")
        'It is in the zsad cache: `zsad weights download tips-v1-l14-hr --force` fetches a fresh copy.'
    """
    folder = Path(path).absolute().parent
    if folder.parent == cache_dir().absolute() and folder.name in known_checkpoint_names("tips"):
        return f"It is in the zsad cache: `zsad weights download {folder.name} --force` fetches a fresh copy."
    return "Replace it with a good copy (e.g. the official file from `zsad weights list`)."


def _ensure_hub(ckpt: Checkpoint, offline: bool, *, force: bool = False) -> Path:
    import huggingface_hub as hub  # a core dependency, imported only when needed
    from huggingface_hub import errors

    label = ckpt.name if ckpt.name == ckpt.repo_id else f"{ckpt.name} ({ckpt.repo_id})"
    if not offline and not _hub_cached(ckpt):
        check_hub_reachable(str(ckpt.repo_id), _hub_files(ckpt))
    try:
        if ckpt.kind == "open_clip":
            return Path(_open_clip_file(hub, ckpt, offline, force)).parent
        return Path(hub.snapshot_download(ckpt.repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=offline,
                                          **({"force_download": True} if force else {})))
    except errors.LocalEntryNotFoundError as exc:
        if offline:
            raise WeightsError(
                f"{label} is not in the Hugging Face cache and offline mode is on, so nothing was downloaded."
                f" With network access run `zsad weights download {ckpt.name}` (or "
                f"`hf download {ckpt.repo_id}`); the Hugging Face cache is set by HF_HOME / HF_HUB_CACHE. "
                f"{TRY_WITHOUT_WEIGHTS}."
            ) from exc
        raise DownloadError(
            f"Could not download {ckpt.repo_id} from the Hugging Face hub ({exc}). Check your network connection "
            "or HF_ENDPOINT, or set HF_HOME to a cache that already holds it."
        ) from exc
    except (errors.HfHubHTTPError, errors.HFValidationError, OSError) as exc:
        raise DownloadError(f"Could not download {ckpt.repo_id} from the Hugging Face hub: {exc}") from exc


def _open_clip_file(hub: Any, ckpt: Checkpoint, offline: bool, force: bool = False) -> str:
    """The open_clip weight file, safetensors preferred, as ``open_clip.pretrained`` looks for it."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    for filename in _OPEN_CLIP_FILES:
        try:
            return hub.hf_hub_download(ckpt.repo_id, filename, local_files_only=offline,
                                       **({"force_download": True} if force else {}))
        except EntryNotFoundError as exc:  # not in the repository (online) or not in the cache (offline)
            if isinstance(exc, LocalEntryNotFoundError) and not offline:
                raise  # the hub is unreachable: trying the other file name would only wait again
            last: Exception = exc
    raise last


_OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _hub_files(ckpt: Checkpoint) -> tuple[str, ...]:
    return _OPEN_CLIP_FILES if ckpt.kind == "open_clip" else ("config.json",)


def _hub_cached(ckpt: Checkpoint) -> bool:
    return _cached_in_hub(str(ckpt.repo_id), _hub_files(ckpt))


def _cached_in_hub(repo_id: str, filenames: Sequence[str]) -> bool:
    try:
        import huggingface_hub as hub
    except ImportError:  # pragma: no cover
        return False
    try:
        return any(isinstance(hub.try_to_load_from_cache(repo_id, n), str) for n in filenames)
    except ValueError:  # not a valid repository id (e.g. a local path): nothing of it is cached
        return False


def check_hub_reachable(
    repo_id: str, filenames: Sequence[str] = ("config.json",), *, offline: bool | None = None
) -> None:
    """Fail fast, in one line, when *repo_id* is not cached and the Hugging Face hub cannot be reached.

    ``huggingface_hub`` retries an unreachable hub for up to a minute, with log noise, before it gives up. This
    sends one request instead (a HEAD of the first of *filenames*, at most ``min(ZSAD_DOWNLOAD_TIMEOUT, 10)``
    seconds) and raises :class:`~zsad.errors.WeightsError` saying what to do. It does nothing when one of
    *filenames* is cached, in offline mode (``ZSAD_OFFLINE``, ``HF_HUB_OFFLINE``) or when the hub answers at all
    (even with an HTTP error, which the download itself then reports).

    Example:
        >>> check_hub_reachable("google/siglip2-base-patch16-224", offline=True)  # offline: nothing to check
    """
    import huggingface_hub as hub
    from huggingface_hub import constants, errors

    if is_offline(offline) or constants.HF_HUB_OFFLINE or _cached_in_hub(repo_id, filenames):
        return
    try:
        hub.get_hf_file_metadata(hub.hf_hub_url(repo_id, filenames[0]), timeout=min(timeout(), 10.0))
    except (errors.HfHubHTTPError, errors.HFValidationError):
        return  # the hub answered: it is reachable
    except Exception as exc:  # noqa: BLE001 - transport errors of whichever HTTP client huggingface_hub uses
        raise WeightsError(
            f"Cannot reach the Hugging Face hub ({constants.ENDPOINT}) to download {repo_id} "
            f"({type(exc).__name__}: {exc}). Check your network connection or HF_ENDPOINT; or, on a machine with "
            f"network access, run `hf download {repo_id}` and copy its Hugging Face cache (HF_HOME) here, then "
            f"set ZSAD_OFFLINE=1. {TRY_WITHOUT_WEIGHTS}."
        ) from None


def verify_checkpoint(name: str) -> dict[str, Status]:
    """Check the cached files of *name* against their known sha256, without any network access.

    Returns ``{filename: status}`` with status ``"ok"`` (matches a known checksum: the table's, or a mirror
    index's recorded at download), ``"missing"``, ``"mismatch"`` (differs from the known or the recorded
    checksum: the file is corrupt or was changed), or ``"unverified"`` (present, no checksum known). An optional
    ``model.json`` is listed only when present. Hub kinds report their repository id (``"unverified"`` when cached,
    the hub client checks its own downloads).

    Example:
        >>> import os, tempfile, unittest.mock
        >>> with unittest.mock.patch.dict(os.environ, {"ZSAD_CACHE": tempfile.mkdtemp()}):  # an empty cache
        ...     verify_checkpoint("tips-v1-l14-hr")
        {'vision.npz': 'missing', 'text.npz': 'missing', 'tokenizer.model': 'missing'}
    """
    ckpt = get_checkpoint(name)
    if not ckpt.stored_by_zsad:
        return {str(ckpt.repo_id): "unverified" if _hub_cached(ckpt) else "missing"}
    folder = cache_dir() / ckpt.name
    manifest = _read_manifest(folder)
    expected = {wf.filename: wf.sha256 for wf in ckpt.files}
    if (folder / "model.json").is_file():
        expected["model.json"] = None
    report: dict[str, Status] = {}
    for filename, sha in expected.items():
        path = folder / filename
        if not path.is_file():
            report[filename] = "missing"
            continue
        entry = manifest.get(filename, {})
        trusted = sha or (entry.get("sha256") if entry.get("verified") else None)
        reference = trusted or entry.get("sha256")
        actual = sha256_file(path)
        if reference is None:
            report[filename] = "unverified"
        elif actual != reference:
            report[filename] = "mismatch"
        else:
            report[filename] = "ok" if trusted else "unverified"
    return report


def _standard_name(path: Path) -> str | None:
    n = path.name
    for std in ("vision.npz", "text.npz"):
        if n == std or n.endswith("_" + std):
            return std
    if n.endswith("tokenizer.model"):
        return "tokenizer.model"
    if n == "model.json" or n.endswith("_model.json"):
        return "model.json"
    return None


def import_files(name: str, paths: Iterable[str | os.PathLike[str]]) -> Path:
    """Add local files to the cache of checkpoint *name* (``"tips"`` or ``"prompts"``); return its folder.

    Files are mapped to the standard names by suffix: ``*_vision.npz`` → ``vision.npz``, ``*_text.npz`` →
    ``text.npz``, ``*tokenizer.model`` → ``tokenizer.model``, ``*_model.json`` → ``model.json`` (the standard names
    themselves are accepted too). A folder stands for the matching files in it. A ``"prompts"`` checkpoint is one
    file (e.g. the official ``epoch_15.pth``), stored under its standard name whatever it is called. Files are copied (never linked:
    editing or deleting the source later does not change the cache) and atomically put in place; a file whose
    sha256 is known must match it (:class:`~zsad.errors.CheckpointError` otherwise, and nothing is changed).

    Example:
        >>> import os, pathlib, tempfile, unittest.mock
        >>> src = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (src / "tips_oss_s14_highres_distilled_text.npz").write_bytes(b"text")
        >>> with unittest.mock.patch.dict(os.environ, {"ZSAD_CACHE": tempfile.mkdtemp()}):
        ...     folder = import_files("tips-v1-s14-hr", [src])
        ...     (folder / "text.npz").read_bytes(), verify_checkpoint("tips-v1-s14-hr")["text.npz"]
        (b'text', 'unverified')
    """
    ckpt = get_checkpoint(name)
    if not ckpt.stored_by_zsad:
        raise WeightsError(f"{ckpt.name} is a {ckpt.kind} checkpoint, kept in the Hugging Face cache; import_files "
                           "only handles checkpoints zsad stores itself. Use `zsad weights download` or the `hf` "
                           "command.")
    chosen = _single_file(ckpt, paths) if ckpt.kind == "prompts" else _tips_files(paths)
    by_std = {wf.filename: wf for wf in ckpt.files}
    checked: list[tuple[str, Path, str, bool]] = []
    for std, src in chosen.items():
        wf = by_std.get(std)
        if wf is not None and src.name not in (wf.name, std):
            logger.warning("importing %s as %s of %s, which is normally named %s", src, std, ckpt.name, wf.name)
        actual = sha256_file(src)
        if wf is not None and wf.sha256 and actual != wf.sha256:
            raise CheckpointError(f"{src} is not the {std} of {ckpt.name}: its sha256 is {actual}, expected "
                                  f"{wf.sha256}. Nothing was imported.")
        checked.append((std, src, actual, bool(wf is not None and wf.sha256)))
    folder = cache_dir() / ckpt.name
    _mkdir(folder, folder)
    for std, src, actual, verified in checked:
        with _file_lock(folder / std):
            _place(src, folder / std)
        _record(folder, std, actual, str(src.resolve()), verified)
    return folder


def _single_file(ckpt: Checkpoint, paths: Iterable[str | os.PathLike[str]]) -> dict[str, Path]:
    """The one file of a single-file checkpoint (a released prompt file), under its standard name."""
    given = [Path(p).expanduser() for p in paths]
    if len(given) != 1 or not given[0].is_file():
        raise WeightsError(f"{ckpt.name} is one file ({ckpt.files[0].name}); give exactly that file, got "
                           f"{[str(p) for p in given]}.")
    return {ckpt.files[0].filename: given[0]}


def _tips_files(paths: Iterable[str | os.PathLike[str]]) -> dict[str, Path]:
    """TIPS files by standard name (the suffix rules of :func:`import_files`); a folder stands for its files."""
    chosen: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and _standard_name(p))
            if not found:
                raise WeightsError(f"{path} holds no *_vision.npz, *_text.npz, tokenizer.model or *_model.json.")
        elif path.is_file():
            if _standard_name(path) is None:
                raise WeightsError(f"Cannot tell what {path.name} is: name it *_vision.npz, *_text.npz, "
                                   "tokenizer.model or *_model.json.")
            found = [path]
        else:
            raise WeightsError(f"{path} does not exist.")
        for p in found:
            std = _standard_name(p)
            assert std is not None
            if std in chosen and chosen[std] != p:
                raise WeightsError(f"Both {chosen[std]} and {p} would become {std}; give only one.")
            chosen[std] = p
    return chosen


def list_checkpoints() -> list[dict[str, Any]]:
    """One row per known checkpoint, for the ``zsad weights`` table (no network access).

    Keys: ``name``, ``kind``, ``files`` (standard file names, or the hub repository), ``size`` (exact bytes or
    None), ``approx_size`` (bytes for display, or None), ``sha256_known`` (every file has a known checksum),
    ``licence``, ``description``, ``cached`` (all files present locally), ``path`` (the cache folder of TIPS
    checkpoints, else None).

    Example:
        >>> row = next(r for r in list_checkpoints() if r["name"] == "tips-v1-l14-hr")
        >>> row["kind"], row["files"], row["licence"], row["approx_size"] > 10**9
        ('tips', ['vision.npz', 'text.npz', 'tokenizer.model'], 'CC-BY-4.0', True)
    """
    rows = []
    for ckpt in CHECKPOINTS:
        tips = ckpt.stored_by_zsad
        folder = cache_dir() / ckpt.name if tips else None
        rows.append({
            "name": ckpt.name,
            "kind": ckpt.kind,
            "files": [f.filename for f in ckpt.files] if tips else [str(ckpt.repo_id)],
            "size": ckpt.size,
            "approx_size": ckpt.approx_size,
            "sha256_known": bool(ckpt.files) and all(f.sha256 for f in ckpt.files),
            "licence": ckpt.licence,
            "description": ckpt.description,
            "cached": all((folder / f.filename).is_file() for f in ckpt.files) if folder else _hub_cached(ckpt),
            "path": str(folder) if folder else None,
        })
    return rows


def resolve_backbone_checkpoint(
    spec: str | os.PathLike[str], *, progress: bool = True, offline: bool | None = None
) -> Path:
    """Turn a backbone ``checkpoint`` setting into a local folder.

    *spec* is either a local folder, returned as is when it holds ``vision.npz`` and ``text.npz`` (or a Hugging
    Face ``config.json``), or a known checkpoint name, ensured in the cache (:func:`ensure_checkpoint`). Anything
    else raises :class:`~zsad.errors.WeightsError` with close matches and the known names.

    Example:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> for n in ("vision.npz", "text.npz"):
        ...     _ = (folder / n).write_bytes(b"")
        >>> resolve_backbone_checkpoint(folder) == folder
        True
        >>> try:
        ...     resolve_backbone_checkpoint("tips-v1-l14-h")
        ... except WeightsError as e:
        ...     print(str(e).split(" Did you")[0], "tips-v1-l14-hr" in str(e))
        'tips-v1-l14-h' is neither a folder nor a known checkpoint. True
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        if all((path / n).is_file() for n in ("vision.npz", "text.npz")) or (path / "config.json").is_file():
            return path
        raise CheckpointError(
            f"The folder {path} is not a checkpoint: a TIPS checkpoint folder holds vision.npz, text.npz and "
            "tokenizer.model (optionally model.json); a Hugging Face one holds config.json."
        )
    if str(spec) in _BY_NAME:
        return ensure_checkpoint(str(spec), progress=progress, offline=offline)
    raise WeightsError(_unknown_message(str(spec), "neither a folder nor a known checkpoint"))
