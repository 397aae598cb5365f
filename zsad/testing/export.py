"""Export check: a detector on a backbone exports to ONNX and ONNX Runtime / OpenVINO reproduce its outputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zsad.testing._common import _expect
from zsad.testing.backbones import _as_backbone


def check_export(
    backbone_or_factory: Any,
    image_size: int | None = None,
    *,
    runtimes: Sequence[str] | None = None,
    atol: float = 1e-4,
) -> dict[str, float]:
    """Export a detector on the backbone and check that each runtime predicts what PyTorch predicts.

    The detector uses fixed prompts, the five image scores and the smoothed pixel map; it is exported to ONNX for
    two classes, and every runtime in ``runtimes`` (default: the installed ones of ``onnxruntime`` and
    ``openvino``) predicts three images of other sizes than the model input. Scores and maps (at the images' own
    sizes) must agree with :meth:`zsad.Detector.predict` within ``atol``. Returns runtime -> max deviation.

    Example:
        >>> deviation = check_export("tips", runtimes=["onnxruntime"])
        >>> list(deviation), deviation["onnxruntime"] < 1e-4
        (['onnxruntime'], True)
    """
    import tempfile
    from pathlib import Path

    import numpy as np

    from zsad.config import DetectorConfig
    from zsad.detector import Detector
    from zsad.export.runners import available_runtimes
    from zsad.export.runtime import ExportedDetector

    bb = _as_backbone(backbone_or_factory)
    size = image_size or bb.default_image_size
    config = DetectorConfig(name="check_export", backbone={"name": type(bb).__name__},
                            prompts={"strategy": "fixed", "checkpoint": None}, preprocess={"image_size": size})
    det = Detector(config, device="cpu", backbone=bb)
    runtimes = list(runtimes) if runtimes is not None else available_runtimes()
    _expect(bool(runtimes), "check_export needs onnxruntime or openvino: pip install 'zsad[onnxruntime]'")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((size // 2 + 3, size + 5, 3), (size + 9, size, 3),
                                                                         (size - 1, size // 3 + 2, 3))]
    names = ["metal_nut", "screw", "metal_nut"]
    expected = det.predict(images, class_name=names)
    deviation: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "check.onnx"
        det.export(path, ["metal_nut", "screw"], verify=False)
        for runtime in runtimes:
            got = ExportedDetector.load(path, runtime).predict(images, class_name=names)
            worst = 0.0
            for i, (a, b) in enumerate(zip(expected, got)):
                _expect(a.anomaly_map.shape == b.anomaly_map.shape and a.scores.keys() == b.scores.keys(),
                        f"{runtime}: image {i} gives a map of {b.anomaly_map.shape} and scores {sorted(b.scores)}; "
                        f"PyTorch gives {a.anomaly_map.shape} and {sorted(a.scores)}.")
                worst = max(worst, float(np.abs(a.anomaly_map - b.anomaly_map).max()),
                            *(abs(a.scores[k] - b.scores[k]) for k in a.scores))
            _expect(worst <= atol, f"{runtime} deviates from PyTorch by {worst:.3g} (> {atol:g}) on the exported "
                                   f"{type(bb).__name__} detector: a component traces differently than it runs.")
            deviation[runtime] = worst
    return deviation
