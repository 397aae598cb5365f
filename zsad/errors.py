"""The zsad exception hierarchy.

Every error zsad raises on purpose derives from :class:`ZsadError` and says what was wrong *and* how to fix it.
The subclasses also derive from the closest built-in exception so that generic ``except ValueError`` code keeps
working.

Example:
    >>> from zsad.errors import ZsadError, ConfigError
    >>> issubclass(ConfigError, ZsadError) and issubclass(ConfigError, ValueError)
    True
"""

from __future__ import annotations

__all__ = [
    "ZsadError",
    "ConfigError",
    "UnknownComponentError",
    "DuplicateComponentError",
    "PluginError",
    "CheckpointError",
    "ImageError",
    "DatasetError",
    "WeightsError",
    "DownloadError",
    "MissingDependencyError",
    "MetricError",
    "NumericalError",
    "ExportError",
]


class ZsadError(Exception):
    """Base class of every error raised by zsad."""


class ConfigError(ZsadError, ValueError):
    """A configuration value is invalid; the message names the field."""


class UnknownComponentError(ZsadError, LookupError):
    """A registry has no component of that name; the message lists close matches."""

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(ZsadError, ValueError):
    """A component name is registered twice without ``override=True``."""


class PluginError(ZsadError, ImportError):
    """A third-party plugin failed to import or broke the component contract."""


class CheckpointError(ZsadError, ValueError):
    """A weight or prompt file is missing, corrupt, or does not match the model."""


class ImageError(ZsadError, ValueError):
    """An input image cannot be read or has an unsupported format or size."""


class DatasetError(ZsadError, ValueError):
    """A dataset description or a file it names is missing or invalid."""


class WeightsError(ZsadError, FileNotFoundError):
    """Model weights are not available locally (and cannot or may not be downloaded)."""


class DownloadError(ZsadError, OSError):
    """A download failed (unreachable host, HTTP error, checksum mismatch, full disk)."""


class MissingDependencyError(ZsadError, ImportError):
    """An optional dependency is not installed; the message names the pip extra."""


class MetricError(ZsadError, ValueError):
    """Metric inputs are inconsistent (shapes, non-finite scores, non-binary masks)."""


class NumericalError(ZsadError, ArithmeticError):
    """A model produced NaN or infinite scores or maps; the message names the input and the likely cause."""
class ExportError(ZsadError, RuntimeError):
    """A detector cannot be exported to a graph; the message names the component and the reason."""


def require(module: str, extra: str, purpose: str):
    """Import *module* or raise :class:`MissingDependencyError` naming the pip extra.

    Example:
        >>> require("math", "dev", "arithmetic").sqrt(4.0)
        2.0
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{purpose} needs the Python package '{module}', which is not installed. "
            f"Install it with: pip install 'zsad[{extra}]'"
        ) from exc
