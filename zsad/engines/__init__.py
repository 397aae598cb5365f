"""Engines: where the model of a workflow runs.

* ``"local"`` (default): in this process (:class:`~zsad.engines.local.LocalEngine`).

Every engine runs the same per-batch functions, and the calling process turns their outputs into metrics and
files the same way, so results do not depend on the engine (see :mod:`zsad.engines.base`).

Example:
    >>> with get_engine("local", device="cpu") as engine:
    ...     engine.describe()
    {'name': 'local'}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zsad.engines.base import Engine, Runner
from zsad.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from zsad.detector import Detector

__all__ = ["ENGINES", "Engine", "Runner", "get_engine"]

ENGINES = ("local",)
"""The engine names :func:`get_engine` knows."""


def get_engine(name: str | None = "local", *, device: Any = None, dtype: Any = None,
               detector: Detector | None = None) -> Engine:
    """The engine called ``name`` (``None`` = ``"local"``).

    Args:
        device, dtype: where and in which precision the model runs.
        detector: an already built detector (the in-process engine reuses it).
    """
    name = name or "local"
    if name == "local":
        from zsad.engines.local import LocalEngine

        return LocalEngine(device, dtype, detector)
    raise ConfigError(f"Unknown engine {name!r}; choose one of {', '.join(ENGINES)}.")
