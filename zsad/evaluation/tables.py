"""Metric names and the x100 tables of the papers (text for the terminal, Markdown for ``metrics.md``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from zsad.errors import ConfigError

__all__ = ["HEADERS", "IMAGE_METRICS", "METRIC_KEYS", "PIXEL_METRICS", "format_table"]

IMAGE_METRICS = ("image_auroc", "image_ap", "image_f1_max")
PIXEL_METRICS = ("pixel_auroc", "pixel_ap", "pixel_aupro", "pixel_f1_max")
METRIC_KEYS = IMAGE_METRICS + PIXEL_METRICS
"""The metric names of ``metrics.json`` (fractions in [0, 1]; NaN / ``null`` = n/a)."""

HEADERS = {
    "image_auroc": "I-AUROC",
    "image_ap": "I-AP",
    "image_f1_max": "I-F1max",
    "pixel_auroc": "P-AUROC",
    "pixel_ap": "P-AP",
    "pixel_aupro": "P-AUPRO",
    "pixel_f1_max": "P-F1max",
}
"""Column titles of the tables, per metric."""


def _fmt100(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100.0 * value:.2f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "text") -> str:
    """A table with numbers shown x100 with 2 decimals (NaN -> ``n/a``; strings as given).

    Example:
        >>> print(format_table(["class", "AUROC"], [["bottle", 0.98765], ["Mean", float("nan")]]))
        class   AUROC
        ------  -----
        bottle  98.77
        Mean      n/a
        >>> print(format_table(["class", "AUROC"], [["bottle", 0.5]], "markdown"))
        | class | AUROC |
        |:--|--:|
        | bottle | 50.00 |
    """
    cells = [[str(r[0]), *(_fmt100(v) for v in r[1:])] for r in rows]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|:--|" + "--:|" * (len(headers) - 1)]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    if fmt != "text":
        raise ConfigError(f"Table format must be 'text' or 'markdown', got {fmt!r}.")
    widths = [max(len(str(h)), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        first = values[0].ljust(widths[0])
        return "  ".join([first, *(v.rjust(w) for v, w in zip(values[1:], widths[1:]))]).rstrip()

    return "\n".join([line(list(headers)), line(["-" * w for w in widths]), *(line(c) for c in cells)])
