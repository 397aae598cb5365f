"""Serving limits and defaults: :class:`ServeSettings` (a strict, frozen pydantic model).

Example:
    >>> s = ServeSettings(max_batch=16, class_name="screw")
    >>> s.max_batch, s.max_wait_ms, s.max_upload_bytes
    (16, 10.0, 20000000)
    >>> ServeSettings(max_batch=0)
    Traceback (most recent call last):
    ...
    zsad.errors.ConfigError: Invalid configuration in serve settings: max_batch: Input should be greater than or equal to 1 (got 0)
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from zsad.config import format_validation_error
from zsad.errors import ConfigError

__all__ = ["ServeSettings"]


class ServeSettings(BaseModel):
    """What the server accepts and how it batches: the ``zsad serve`` options, as data.

    Attributes:
        class_name: class used when a request names none (``--class-name``; default: requests must name it).
        max_batch: most images scored in one forward pass (``--max-batch``).
        max_wait_ms: how long the first waiting request may wait for others to fill its batch (``--max-wait-ms``).
        max_queue: most requests waiting for the model; more are answered 503 with ``Retry-After``.
        max_upload_mb: largest request body in MB (10^6 bytes); larger: 413.
        max_pixels: decompression-bomb limit, the largest ``width * height`` decoded; larger: 413.
        timeout_s: per-request time limit (upload, queue, model, reply); over it: 504.
        api_key: when set, every ``/v1/*`` request needs ``Authorization: Bearer <key>`` (else 401); at least 8
            characters.
        map_range: the fixed colour scale ``(vmin, vmax)`` of the overlay PNGs, the same for every image.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    class_name: str | None = None
    max_batch: int = Field(8, ge=1, le=4096)
    max_wait_ms: float = Field(10.0, ge=0.0, le=60_000.0)
    max_queue: int = Field(64, ge=1)
    max_upload_mb: float = Field(20.0, gt=0.0)
    max_pixels: int = Field(40_000_000, ge=1)
    timeout_s: float = Field(30.0, gt=0.0)
    api_key: str | None = Field(None, min_length=8, repr=False)
    map_range: tuple[float, float] = (0.0, 1.0)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "serve settings")) from None

    @model_validator(mode="after")
    def _check(self) -> ServeSettings:
        if not self.map_range[0] < self.map_range[1]:
            raise ValueError(f"map_range must be (vmin, vmax) with vmin < vmax, got {self.map_range}")
        if self.class_name is not None and not self.class_name.strip():
            raise ValueError("class_name must not be blank (leave it unset to require a class per request)")
        return self

    @property
    def max_upload_bytes(self) -> int:
        """The request body limit in bytes."""
        return int(self.max_upload_mb * 1_000_000)
