"""A plugin module that fails to import (on purpose)."""

raise RuntimeError("zsad-broken-plugin: this module fails to import on purpose")


def create(checkpoint=None, **options):  # pragma: no cover - never reached
    """Unreachable."""
