"""Engines: where the model of a workflow runs.

* ``"local"`` (default): in this process (:class:`~zsad.engines.local.LocalEngine`);
* ``"ray"``: on Ray workers, one detector each (:class:`~zsad.engines.ray_engine.RayEngine`; needs
  ``pip install "zsad[ray]"``).

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
    from zsad.runtime import RuntimeOptions

__all__ = ["ENGINES", "Engine", "Runner", "get_engine"]


class _Borrowed(Engine):
    """An engine the caller made and still owns: used, but not closed, by the workflow it was given to."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.name = engine.name

    def runner(self, config):  # type: ignore[no-untyped-def]
        return self.engine.runner(config)

    def connect(self) -> None:
        self.engine.connect()

    def describe(self) -> dict:
        return self.engine.describe()

ENGINES = ("local", "ray")
"""The engine names :func:`get_engine` knows."""


def get_engine(name: str | Engine | None = "local", *, device: Any = None, dtype: Any = None,
               detector: Detector | None = None, workers: int | None = None, address: str | None = None,
               runtime: RuntimeOptions | dict | None = None) -> Engine:
    """The engine called ``name`` (``None`` = ``"local"``). An :class:`Engine` instance is used as it is and left
    open when the workflow closes its engine (its owner closes it).

    Args:
        device, dtype: where and in which precision the model runs.
        detector: an already built detector (the in-process engine reuses it).
        workers, address: for ``"ray"`` only (see :class:`~zsad.engines.ray_engine.RayEngine`).
        runtime: the runtime options of the detectors the engine builds (:class:`~zsad.runtime.RuntimeOptions`
            or its fields as a dict; ``None``: the given detector's, else the defaults).

    Raises:
        MissingDependencyError: ``"ray"`` without Ray installed (the message names the ``pip install``).
        ConfigError: runtime options for an engine instance (give them to the engine when building it).
    """
    if runtime is not None:
        from zsad.runtime import RuntimeOptions

        runtime = RuntimeOptions.coerce(runtime)
    if isinstance(name, Engine):
        if runtime is not None:
            raise ConfigError(f"Runtime options {runtime.describe()} cannot change an engine that is already built "
                              f"({type(name).__name__}); pass runtime=... when you build it.")
        return _Borrowed(name)
    name = name or "local"
    if name == "local":
        if workers is not None or address is not None:
            raise ConfigError("workers and ray_address (--workers, --ray-address) apply to engine='ray' "
                              "(--engine ray) only.")
        from zsad.engines.local import LocalEngine

        return LocalEngine(device, dtype, detector, runtime)
    if name == "ray":
        from zsad.engines.ray_engine import RayEngine, _ray

        _ray()  # fail now, in one line, when the extra is missing
        return RayEngine(workers, address, device, dtype, detector, runtime=runtime)
    raise ConfigError(f"Unknown engine {name!r}; choose one of {', '.join(ENGINES)}.")
