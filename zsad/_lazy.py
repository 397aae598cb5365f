"""Lazy package attributes: a name is imported from its module on first access (PEP 562).

Example:
    >>> getattr_, dir_ = lazy_attributes("zsad", {"AnomalyResult": "zsad.results"})
    >>> getattr_("AnomalyResult").__name__, dir_()
    ('AnomalyResult', ['AnomalyResult'])
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(
    package: str, names: dict[str, str], public: Sequence[str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for *package*: each of *names* comes from the module it maps to, then is cached.

    ``__dir__`` lists ``public`` (default: the lazy names).
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(public if public is not None else names)

    return __getattr__, __dir__
