"""Run bookkeeping shared by the workflows (evaluation, training, batch prediction).

A *run* writes into one output folder and records how its results were made, so that a rerun can resume it and
nobody mixes results of different settings. The pieces every workflow needs live here once:

* :func:`jsonable` / :func:`write_json` / :func:`sha256_json`: one JSON cleaning rule (NaN and infinities become
  ``null``, numpy scalars become Python numbers, paths become strings), atomic writes, and a stable hash of a
  JSON document (the *fingerprint* of a run's settings);
* :func:`diff_keys` and :func:`describe_diff`: which settings differ between a saved run and this one, for the
  error that refuses to mix them;
* :func:`versions`, :func:`now`, :func:`command_line`: what a manifest records;
* :func:`checkpoint_info`: sha256 of the local checkpoint files a configuration uses;
* :class:`RunManifest`: ``manifest.json`` with ``status`` ``running`` -> ``complete``, rewritten atomically;
* :class:`OutputLock`: one run at a time per output folder (a second one stops with an error naming the first).

Example:
    >>> import math
    >>> from pathlib import Path
    >>> jsonable({"auroc": math.nan, "n": np.int64(3), "path": Path("a/b")})
    {'auroc': None, 'n': 3, 'path': 'a/b'}
    >>> diff_keys({"heads": {"sigma": 4, "k": 1}}, {"heads": {"sigma": 2, "k": 1}})
    ['heads.sigma']
    >>> import tempfile
    >>> with OutputLock(tempfile.mkdtemp(), "evaluation") as lock:
    ...     lock.path.name
    '.zsad-run.lock'
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

from zsad._files import sha256_file, write_text
from zsad.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from zsad.config import DetectorConfig

__all__ = [
    "OutputLock",
    "RunManifest",
    "checkpoint_info",
    "command_line",
    "describe_diff",
    "diff_keys",
    "jsonable",
    "now",
    "read_json",
    "sha256_json",
    "versions",
    "write_json",
]

LOCK_FILE = ".zsad-run.lock"
_VERSION_PACKAGES = ("zsad", "torch", "transformers", "numpy", "scipy", "pillow")


# ------------------------------------------------------------------------------------------------------- JSON


def jsonable(value: Any) -> Any:
    """The one JSON cleaning rule: NaN/inf -> ``None``, numpy scalars and arrays -> Python, paths -> ``str``,
    tuples -> lists, mapping keys -> ``str``; anything else JSON does not know -> ``str(value)``.

    Example:
        >>> jsonable([np.float32(0.5), float("inf"), (1, np.bool_(True))])
        [0.5, None, [1, True]]
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, PurePath):
        return str(value)
    return str(value)


def write_json(path: str | os.PathLike, data: Any, *, durable: bool = False) -> Path:
    """Write ``jsonable(data)`` as indented JSON atomically (never ``NaN`` in the file: it is not JSON)."""
    return write_text(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n", durable=durable)


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read a JSON file written by a run; an unreadable one raises :class:`ConfigError` naming it."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"The {what} {path} cannot be read ({exc}); use a new output folder or start over.") from exc


def sha256_json(data: Any) -> str:
    """sha256 of the canonical JSON of ``jsonable(data)`` (sorted keys): a fingerprint of settings.

    Example:
        >>> sha256_json({"b": 1, "a": 2}) == sha256_json({"a": 2, "b": 1})
        True
    """
    import hashlib

    return hashlib.sha256(json.dumps(jsonable(data), sort_keys=True).encode()).hexdigest()


def diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like documents (nested mappings are compared per key)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out += diff_keys(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if old == new else [prefix or "(root)"]


def _lookup(doc: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(part)
    return doc


def describe_diff(old: Any, new: Any, *, limit: int = 8, values: tuple[str, str] | None = None) -> str:
    """The differing keys as one phrase: ``"a.b, c and 3 more"``; with ``values=("then", "now")`` each key shows
    both values (``"lr: then 0.001, now 0.002"``).

    Example:
        >>> describe_diff({"lr": 1e-3, "seed": 1}, {"lr": 2e-3, "seed": 1}, values=("checkpoint", "now"))
        'lr: checkpoint 0.001, now 0.002'
    """
    keys = diff_keys(old, new)
    if values is not None:
        shown = [f"{k}: {values[0]} {_lookup(old, k)!r}, {values[1]} {_lookup(new, k)!r}" for k in keys[:limit]]
        sep = "; "
    else:
        shown, sep = keys[:limit], ", "
    more = f"{sep}... {len(keys) - limit} more" if values is not None and len(keys) > limit else (
        f" and {len(keys) - limit} more" if len(keys) > limit else "")
    return sep.join(shown) + more


# ------------------------------------------------------------------------------------------------ what ran


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def command_line() -> str | None:
    """The command that started this process (``None`` inside an interpreter)."""
    return " ".join(sys.argv) if sys.argv and sys.argv[0] else None


def versions(packages: tuple[str, ...] = _VERSION_PACKAGES) -> dict[str, str | None]:
    """Python and package versions (``None`` = not installed)."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in packages:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    if "zsad" in packages and out.get("zsad") is None:
        import zsad

        out["zsad"] = zsad.__version__
    return out


def _folder_hashes(folder: Path) -> dict[str, str]:
    """sha256 of the visible files directly in a checkpoint folder (weights, tokenizer, model.json, config)."""
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and not p.name.endswith((".lock", ".part", ".tmp"))
    )
    return {p.name: sha256_file(p) for p in files}


def _backbone_folder(spec: str | None, source: str | None = None) -> Path | None:
    for candidate in (source, spec):
        if candidate and Path(candidate).expanduser().is_dir():
            return Path(candidate).expanduser()
    if spec:
        try:
            from zsad.weights import checkpoint_dir, known_checkpoint_names

            if spec in known_checkpoint_names() and checkpoint_dir(spec).is_dir():
                return checkpoint_dir(spec)
        except Exception:  # noqa: BLE001 - hub specs etc.: nothing local to hash
            return None
    return None


def checkpoint_info(config: DetectorConfig, backbone_source: str | None = None) -> dict[str, Any]:
    """sha256 of the checkpoint files a config uses, when they are local (no download is triggered).

    ``backbone_source`` is the folder the built backbone was loaded from (known once a detector exists).
    """
    spec = config.backbone.checkpoint
    folder = _backbone_folder(spec, backbone_source)
    backbone: dict[str, Any] = {"checkpoint": spec, "folder": str(folder.resolve()) if folder else None,
                                "files_sha256": _folder_hashes(folder) if folder else None}
    if folder is None:
        backbone["note"] = ("not a local folder (yet): a hub model or a checkpoint not downloaded when the run "
                            "started" if spec else "no checkpoint (random weights)")
    prompts: dict[str, Any] = {"checkpoint": config.prompts.checkpoint, "file": None, "sha256": None}
    if config.prompts.checkpoint:
        from zsad.prompts.checkpoint import BUILTIN_PROMPTS

        p = Path(BUILTIN_PROMPTS.get(str(config.prompts.checkpoint), Path(config.prompts.checkpoint).expanduser()))
        if p.is_file():
            prompts.update(file=str(p.resolve()), sha256=sha256_file(p))
    return {"backbone": backbone, "prompts": prompts}


# ----------------------------------------------------------------------------------------------- manifest


class RunManifest:
    """``manifest.json`` of a run folder, rewritten atomically whenever it changes.

    It starts with ``status: "running"``, the start time (and the first start time across resumed runs), the
    command, the versions and whatever the workflow records; :meth:`complete` sets ``status: "complete"``, the
    end time and the elapsed seconds.

    Example:
        >>> import tempfile
        >>> m = RunManifest(Path(tempfile.mkdtemp()) / "manifest.json", {"format_version": 1, "fingerprint": {}})
        >>> _ = m.complete(elapsed_s=0.1)
        >>> read_json(m.path)["status"]
        'complete'
    """

    def __init__(self, path: str | os.PathLike, fields: Mapping[str, Any], previous: Mapping[str, Any] | None = None):
        self.path = Path(path)
        started = now()
        prev = previous or {}
        self.data: dict[str, Any] = {
            "format_version": fields.get("format_version", 1),
            "status": "running",
            "started_at": started,
            "first_started_at": prev.get("first_started_at") or prev.get("started_at") or started,
            "finished_at": None,
            "command": command_line(),
            "versions": versions(),
        }
        self.data.update(fields)
        self.write()

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value

    def write(self) -> Path:
        return write_json(self.path, self.data)

    def update(self, **fields: Any) -> Path:
        self.data.update(fields)
        return self.write()

    def complete(self, **fields: Any) -> Path:
        return self.update(status="complete", finished_at=now(), **fields)


# ---------------------------------------------------------------------------------------------------- lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    except OSError:  # pragma: no cover - e.g. Windows without the signal
        return True
    return True


class OutputLock:
    """Hold ``folder/.zsad-run.lock`` while a run writes into ``folder``: two runs never write one folder at once.

    The lock file names its holder (process id, host, command, start time). A second run into the same folder
    raises :class:`ConfigError` naming the first; a lock left behind by a process that no longer exists (same
    host) is taken over. Use as a context manager; the lock is removed on exit.
    """

    def __init__(self, folder: str | os.PathLike, what: str = "run"):
        self.folder = Path(folder)
        self.what = what
        self.path = self.folder / LOCK_FILE
        self._held = False

    def _holder(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "what": self.what, "command": command_line(),
                "started_at": now()}

    def acquire(self) -> OutputLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                other = self._read_other()
                if other is None:  # stale: its process is gone; take it over
                    self.path.unlink(missing_ok=True)
                    continue
                raise ConfigError(
                    f"Another zsad {other.get('what', 'run')} is writing into {self.folder} "
                    f"(process {other.get('pid')} on {other.get('host')}, started {other.get('started_at')}: "
                    f"{other.get('command') or '?'}). "
                    "Wait for it to finish or use another output folder; if that process is gone, delete "
                    f"{self.path}."
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(self._holder(), f)
            self._held = True
            return self
        raise ConfigError(f"Cannot take the lock {self.path}; delete it if no zsad run uses {self.folder}.")

    def _read_other(self) -> dict[str, Any] | None:
        """The holder of an existing lock, or ``None`` when it is stale (its process is gone on this host)."""
        try:
            other = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            other = {}
        if not isinstance(other, dict):
            other = {}
        pid, host = other.get("pid"), other.get("host")
        if isinstance(pid, int) and host == socket.gethostname() and not _pid_alive(pid):
            return None
        if pid == os.getpid() and host == socket.gethostname():
            raise ConfigError(
                f"This process already writes into {self.folder} (a nested zsad run into the same output folder); "
                "give the inner run its own folder."
            )
        return other

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
