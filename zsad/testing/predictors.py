"""The predictor contract that ``zsad serve`` relies on (a :class:`~zsad.Detector` or an exported model)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from zsad.testing._common import _expect


def check_predictor(predictor: Any, class_names: Sequence[str] = ("metal_nut", "screw")) -> None:
    """Check the predictor contract that ``zsad serve`` relies on (a :class:`~zsad.Detector`, an exported model).

    * ``predictor.config`` is a :class:`~zsad.config.DetectorConfig` (recipe name, input size, image score);
    * ``predict(images, class_name=[one per image], map_size="original", batch_size=n, progress=False)`` on a
      list of ``PIL`` images (RGB, grayscale, RGBA; different sizes) returns one
      :class:`~zsad.results.AnomalyResult` per image, in order: finite scores, ``pred_score`` equal to
      ``scores[config.heads.image_score]``, a float32 map and ``original_size`` at the image's ``(h, w)``, the
      class name it was given;
    * one image (not in a list) gives one result, equal to its entry of the batch (within 1e-4).

    Example:
        >>> from zsad import Detector
        >>> det = Detector.from_recipe("tipsomaly", backbone_checkpoint=None, prompt_strategy="fixed",
        ...     prompt_checkpoint=None, image_size=56, backbone_options={"random_config": {}}, device="cpu")
        >>> check_predictor(det)
    """
    import numpy as np
    from PIL import Image

    from zsad.config import DetectorConfig
    from zsad.results import AnomalyResult

    name = type(predictor).__name__
    config = getattr(predictor, "config", None)
    _expect(isinstance(config, DetectorConfig), f"{name}.config must be a DetectorConfig, got {type(config).__name__}")
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)),
    ]
    names = [class_names[i % len(class_names)] for i in range(len(images))]
    out = predictor.predict(images, class_name=names, map_size="original", batch_size=len(images), progress=False)
    _expect(isinstance(out, list) and len(out) == len(images),
            f"{name}.predict(list of {len(images)} images) must return a list of {len(images)} results, got {out!r:.200}")
    main = config.heads.image_score
    for i, (image, result, cls) in enumerate(zip(images, out, names)):
        label = f"{name}.predict(...)[{i}]"
        _expect(isinstance(result, AnomalyResult), f"{label} must be an AnomalyResult, got {type(result).__name__}")
        hw = (image.height, image.width)
        _expect(result.anomaly_map.shape == hw and result.anomaly_map.dtype == np.float32,
                f"{label}.anomaly_map must be float32 {hw}, got {result.anomaly_map.dtype} {result.anomaly_map.shape}")
        _expect(tuple(result.original_size or ()) == hw, f"{label}.original_size must be {hw}, got {result.original_size}")
        _expect(main in result.scores and result.pred_score == result.scores[main],
                f"{label}.pred_score must equal scores[{main!r}] (the recipe's image score); scores={result.scores}")
        _expect(all(math.isfinite(v) for v in result.scores.values()), f"{label}.scores must be finite: {result.scores}")
        _expect(result.class_name == cls, f"{label}.class_name must be {cls!r}, got {result.class_name!r}")
    single = predictor.predict(images[0], class_name=names[0], map_size="original")
    _expect(isinstance(single, AnomalyResult), f"{name}.predict(one image) must return one AnomalyResult, got "
                                               f"{type(single).__name__}")
    gap = max(abs(single.scores[k] - out[0].scores[k]) for k in single.scores)
    _expect(gap <= 1e-4, f"{name}.predict: one image alone and in a batch differ by {gap:.3g} in the scores")
    gap = float(np.abs(single.anomaly_map - out[0].anomaly_map).max())
    _expect(gap <= 1e-4, f"{name}.predict: one image alone and in a batch differ by {gap:.3g} in the map")
