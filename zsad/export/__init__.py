"""Deploy without PyTorch: export a detector to ONNX / OpenVINO and run the graph behind the same results.

Two sides, one import direction:

* building (:mod:`zsad.export.graph`, needs torch and ``zsad[export]``): :func:`export_detector`, behind
  :meth:`zsad.Detector.export` and ``zsad export``; it traces the detector's own per-batch scoring with the text
  prototypes of the chosen classes baked in;
* running (:mod:`zsad.export.runtime`, :mod:`zsad.export.runners`, never imports torch):
  :class:`ExportedDetector`, behind :meth:`zsad.Detector.from_export` and ``zsad predict --model``.

The file format is described by :mod:`zsad.export.metadata`. Importing this package imports neither side.

Example:
    >>> import sys, zsad.export
    >>> zsad.export.FORMAT_VERSION
    1
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zsad._lazy import lazy_attributes

__all__ = ["FORMAT_VERSION", "ExportMetadata", "ExportReport", "ExportedDetector", "export_detector"]

_LAZY = {
    "export_detector": "zsad.export.graph",
    "ExportReport": "zsad.export.graph",
    "ExportedDetector": "zsad.export.runtime",
    "ExportMetadata": "zsad.export.metadata",
    "FORMAT_VERSION": "zsad.export.metadata",
}

if TYPE_CHECKING:  # pragma: no cover
    from zsad.export.graph import ExportReport, export_detector
    from zsad.export.metadata import FORMAT_VERSION, ExportMetadata
    from zsad.export.runtime import ExportedDetector


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
