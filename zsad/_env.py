"""Environment variables zsad reads, each parsed in one place.

* ``ZSAD_OFFLINE``: never touch the network (a true value is ``1``, ``true``, ``yes`` or ``on``, any case).

Example:
    >>> offline(True), offline(False)
    (True, False)
"""

from __future__ import annotations

import os

__all__ = ["offline"]

_TRUE = frozenset({"1", "true", "yes", "on"})


def offline(value: bool | None = None) -> bool:
    """*value* if given, else whether ``ZSAD_OFFLINE`` is set to a true value (``1``, ``true``, ``yes``, ``on``)."""
    if value is not None:
        return bool(value)
    return os.environ.get("ZSAD_OFFLINE", "").strip().lower() in _TRUE
