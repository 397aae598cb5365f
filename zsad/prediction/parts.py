"""The files of a prediction run: one part file per shard as results arrive, then the merged outputs.

* ``parts/part-NNNNN.csv``: the rows of shard ``NNNNN`` (columns :func:`~zsad.prediction.shards.part_columns`),
  written atomically when the shard is done: a part file on disk is a finished shard (a resumed run skips it);
* ``scores.csv``: the scored images, in input order: ``path, class, score, S1..S5, output_name``;
* ``errors.csv``: the images that could not be scored, with their error (only when there are any);
* ``scores.json``: ``{"recipe", "image_score", "results": [...]}`` with one entry per scored image.

Merging streams the part files one by one, so memory does not grow with the number of images.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from zsad._files import atomic_path

__all__ = ["PARTS_DIR", "merge_parts", "part_path", "read_part", "write_part"]

PARTS_DIR = "parts"


def part_path(out: Path, index: int) -> Path:
    """``out/parts/part-NNNNN.csv``."""
    return out / PARTS_DIR / f"part-{index:05d}.csv"


def _cell(value: Any) -> Any:
    return "" if value is None else value


def write_part(out: Path, index: int, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    """Write a shard's rows atomically (the shard counts as finished once this file exists)."""
    path = part_path(out, index)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _cell(r.get(k)) for k in columns} for r in rows)
    return path


def read_part(path: Path) -> Iterator[dict[str, str]]:
    """The rows of a part file, as strings."""
    with open(path, newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f)


def _result_json(row: dict[str, str], heads: Sequence[str]) -> dict[str, Any]:
    return {
        "image_path": row["path"],
        "class_name": row["class"],
        "pred_score": float(row["score"]),
        "scores": {h: float(row[h]) for h in heads},
        "pred_label": None,
        "original_size": [int(row["height"]), int(row["width"])],
        "map_max": float(row["map_max"]) if row["map_max"] else None,
        "output_name": row["output_name"],
    }


def merge_parts(out: Path, n_shards: int, heads: Sequence[str], header: dict[str, Any]) -> tuple[int, int]:
    """Write ``scores.csv``, ``scores.json`` and (when needed) ``errors.csv`` from the part files, in shard order.

    Returns:
        ``(scored, failed)`` image counts.
    """
    score_cols = ["path", "class", "score", *heads, "output_name"]
    error_cols = ["path", "class", "output_name", "error"]
    scored = failed = 0
    errors_path = out / "errors.csv"
    with atomic_path(out / "scores.csv") as scores_tmp, atomic_path(errors_path) as errors_tmp, \
            atomic_path(out / "scores.json") as json_tmp, \
            open(scores_tmp, "w", newline="", encoding="utf-8") as sf, \
            open(errors_tmp, "w", newline="", encoding="utf-8") as ef, open(json_tmp, "w", encoding="utf-8") as jf:
        scores = csv.DictWriter(sf, fieldnames=score_cols, extrasaction="ignore", lineterminator="\n")
        errors = csv.DictWriter(ef, fieldnames=error_cols, extrasaction="ignore", lineterminator="\n")
        scores.writeheader()
        errors.writeheader()
        head = json.dumps({**header, "results": []}, indent=2)
        jf.write(head[: head.rindex("[") + 1])
        for index in range(n_shards):
            for row in read_part(part_path(out, index)):
                if row["error"]:
                    errors.writerow(row)
                    failed += 1
                    continue
                scores.writerow(row)
                jf.write(("\n" if scored == 0 else ",\n") + "    " + json.dumps(_result_json(row, heads)))
                scored += 1
        jf.write("\n  ]\n}\n" if scored else "]\n}\n")
    if not failed:
        errors_path.unlink(missing_ok=True)
    return scored, failed
