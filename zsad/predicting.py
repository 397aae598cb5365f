"""What every predictor's ``predict`` / ``predict_iter`` shares: the inputs of one call as a list, one class name
per image, and each loaded batch paired with the class names of its images.

:class:`zsad.Detector` and :class:`zsad.export.ExportedDetector` differ only in how a batch is scored; the rules
for inputs and class names live here once.

Example:
    >>> batches = [(["a", "b"], 2), (["c"], 1)]  # (chunk, images) pairs, as a batch iterator yields them
    >>> [names for _, _, names in named_batches(batches, ["x", "y", "z"], count=lambda b: b)]
    [['x', 'y'], ['z']]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice, repeat
from typing import Any, TypeVar

from zsad.errors import ConfigError
from zsad.io import as_items, class_names_for

__all__ = ["check_map_size", "named_batches", "predict_all"]

B = TypeVar("B")


def check_map_size(map_size: str) -> None:
    """Raise :class:`~zsad.errors.ConfigError` unless ``map_size`` is ``"original"`` or ``"input"``."""
    if map_size not in ("original", "input"):
        raise ConfigError(f"map_size must be 'original' or 'input', got {map_size!r}.")


def predict_all(
    predict_iter: Callable[..., Iterable[Any]],
    inputs: Any,
    class_name: Any,
    *,
    map_size: str,
    batch_size: int | None,
    progress: bool | None,
    default_batch_size: int,
) -> Any:
    """``predict``: every result of ``predict_iter`` in a list, or the one result of a single input.

    The class names are checked against the number of images before any is loaded; the progress bar is shown by
    default when there is more than one batch.
    """
    check_map_size(map_size)
    items, single = as_items(inputs)
    names = class_names_for(class_name, items)
    show = progress if progress is not None else len(items) > (batch_size or default_batch_size)
    results = list(predict_iter(items, names, map_size=map_size, batch_size=batch_size, progress=show,
                                total=len(names)))
    return results[0] if single and len(results) == 1 else results


def named_batches(
    batches: Iterable[tuple[list[Any], B]], class_name: str | Iterable[str], count: Callable[[B], int]
) -> Iterator[tuple[list[Any], B, list[str]]]:
    """Pair each ``(chunk, batch)`` with the class names of its ``count(batch)`` images.

    ``class_name`` is one name for every image or an iterable with one per image, consumed alongside the batches
    (a generator works); each name is checked (:func:`zsad.prompts.templates.check_class_name`).
    """
    from zsad.prompts.templates import check_class_name

    if isinstance(class_name, (str, bytes)) or not isinstance(class_name, Iterable):
        names: Iterator[str] = repeat(check_class_name(class_name))
    else:
        names = map(check_class_name, iter(class_name))
    for chunk, batch in batches:
        n = count(batch)
        chunk_names = list(islice(names, n))
        if len(chunk_names) != n:
            raise ConfigError("class_name has fewer entries than there are images; give one name or one per image.")
        yield chunk, batch, chunk_names
