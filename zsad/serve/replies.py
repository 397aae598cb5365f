"""The JSON bodies of the API (pydantic models, so ``/docs`` shows them) and how a result becomes one.

Example:
    >>> import numpy as np
    >>> from zsad.results import AnomalyResult
    >>> r = AnomalyResult(pred_score=0.7, scores={"S1": 0.4, "S5": 0.7}, anomaly_map=np.zeros((3, 4), np.float32),
    ...                   class_name="screw", original_size=(3, 4))
    >>> reply = prediction_reply(r, None, image_score="S5", return_map="npy", map_range=(0.0, 1.0))
    >>> reply.pred_score, reply.original_size, reply.map_format
    (0.7, [3, 4], 'npy')
    >>> decode_npy(reply.anomaly_map).shape
    (3, 4)
"""

from __future__ import annotations

import base64
import io
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from zsad.results import AnomalyResult

__all__ = ["ErrorReply", "Health", "Prediction", "decode_npy", "prediction_reply"]

MapFormat = Literal["png", "npy"]


class Prediction(BaseModel):
    """The answer of ``POST /v1/predict``."""

    pred_score: float = Field(description="The recipe's image score (higher = more anomalous).")
    image_score: str = Field(description="Which score pred_score is (e.g. 'S5').")
    scores: dict[str, float] = Field(description="Every image score by name (S1 ... S5).")
    class_name: str = Field(description="The class the prompts were built for.")
    original_size: list[int] = Field(description="[height, width] of the uploaded image.")
    map_max: float = Field(description="Largest value of the anomaly map.")
    map_format: MapFormat | None = Field(None, description="Format of anomaly_map, when return_map was given.")
    anomaly_map: str | None = Field(
        None,
        description="base64: with return_map=png the overlay of the map on the image (PNG, original size, coloured "
        "on map_range); with return_map=npy the float32 map at the original size as a .npy file.",
    )
    map_range: list[float] | None = Field(None, description="[vmin, vmax]: the colour scale of the PNG overlay.")


class ErrorReply(BaseModel):
    """Every error answer (4xx, 5xx)."""

    error: str = Field(description="What went wrong and how to fix it.")


class Health(BaseModel):
    """The answer of ``GET /healthz``: 200 when the model is ready, 503 while it loads or after it failed."""

    status: Literal["ok", "loading", "failed"]
    model: dict[str, Any] | None = Field(None, description="Recipe, input size, image score, predictor type.")
    class_name: str | None = Field(None, description="The server's default class name, if any.")
    auth: bool = Field(description="Whether /v1/* requests need 'Authorization: Bearer <key>'.")
    max_upload_mb: float
    error: str | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_npy(array: np.ndarray) -> str:
    """A float32 array as a base64 ``.npy`` file (see :func:`decode_npy`)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return _b64(buf.getvalue())


def decode_npy(data: str) -> np.ndarray:
    """The array of a base64 ``.npy`` string (what ``return_map=npy`` sends), never unpickling."""
    return np.load(io.BytesIO(base64.b64decode(data)), allow_pickle=False)


def encode_overlay(image: Any, anomaly_map: np.ndarray, map_range: tuple[float, float]) -> str:
    """The map blended over the image on the fixed scale ``map_range``, as a base64 PNG."""
    from zsad.viz import overlay

    buf = io.BytesIO()
    overlay(image, anomaly_map, map_range[0], map_range[1]).save(buf, format="PNG")
    return _b64(buf.getvalue())


def prediction_reply(
    result: AnomalyResult,
    image: Any,
    *,
    image_score: str,
    return_map: MapFormat | None,
    map_range: tuple[float, float],
) -> Prediction:
    """The reply for one result; ``image`` (the decoded upload) is needed for ``return_map="png"`` only."""
    reply = Prediction(
        pred_score=result.pred_score,
        image_score=image_score,
        scores=result.scores,
        class_name=result.class_name,
        original_size=list(result.original_size or result.anomaly_map.shape),
        map_max=float(result.anomaly_map.max()),
    )
    if return_map == "npy":
        return reply.model_copy(update={"map_format": "npy", "anomaly_map": encode_npy(result.anomaly_map)})
    if return_map == "png":
        return reply.model_copy(update={
            "map_format": "png",
            "anomaly_map": encode_overlay(image, result.anomaly_map, map_range),
            "map_range": list(map_range),
        })
    return reply
