"""zsad.metrics vs the official Tipsomaly metric code on one synthetic 150-image class at 518x518 (40M pixels).

Six numbers per class: image AUROC, AP, F1-max and pixel AUROC, AUPRO, F1-max. The fast path is
``image_metrics`` + ``pixel_metrics(aupro="legacy")`` (one sort of all pixels; the legacy AUPRO reproduces the
official 200-threshold grid value for value), timed against ``_legacy_metrics.legacy_all_metrics`` (scikit-learn +
the official threshold/region loop). The exact MVTec AUPRO path is timed too. Values must be identical (AUPRO) or
agree to 1e-9 (AUROC/AP/F1-max, summation order only).

Run either way::

    python benchmarks/bench_metrics.py [--images 150] [--size 518]
    pytest benchmarks/bench_metrics.py --benchmark-enable -s

The legacy loop takes minutes at full size (ZSAD_BENCH_IMAGES / ZSAD_BENCH_SIZE shrink the class for a quick
check); the target is a >= 50x speed-up.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _legacy_metrics sits beside this file

from _legacy_metrics import legacy_all_metrics

from zsad.metrics import image_metrics, pixel_metrics

N_IMAGES = int(os.environ.get("ZSAD_BENCH_IMAGES", "150"))  # env overrides for a quick pytest run
SIZE = int(os.environ.get("ZSAD_BENCH_SIZE", "518"))
TOLERANCE = {"pixel_aupro": 1e-12, "image_auroc": 1e-12, "image_ap": 1e-12, "image_f1_max": 1e-12}


def make_class(n: int = N_IMAGES, size: int = SIZE, seed: int = 0):
    """(image scores, labels, maps float32 (n, size, size), masks bool) of one synthetic class.

    About 60 % of the images get 1-4 random ellipses (semi-axes 1-10 % of the side); maps are a sigmoid of smoothed
    noise plus a smoothed mask bump (sigma 4, like the ZSAD post-processing), so they are smooth and in (0, 1).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    maps = np.empty((n, size, size), dtype=np.float32)
    masks = np.zeros((n, size, size), dtype=bool)
    labels = (rng.random(n) < 0.6).astype(np.int64)
    for i in range(n):
        for _ in range(int(rng.integers(1, 5)) * int(labels[i])):
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(0.01, 0.1, 2) * size
            angle = rng.uniform(0, np.pi)
            u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
            v = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
            masks[i] |= (u / ry) ** 2 + (v / rx) ** 2 <= 1
        noise = ndimage.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), 4) * 8
        bump = ndimage.gaussian_filter(masks[i].astype(np.float32), 4) * rng.uniform(1.0, 3.0)
        maps[i] = 1 / (1 + np.exp(-4 * (noise + bump - 0.5)))
    scores = np.round(rng.random(n) + 0.8 * labels * rng.random(n), 2)  # image scores with ties
    return scores, labels, maps, masks


def fast_all_metrics(scores, labels, maps, masks, aupro: str = "legacy") -> dict:
    """The same six numbers with zsad.metrics."""
    img = image_metrics(scores, labels)
    px = pixel_metrics(maps, masks, aupro=aupro)
    return {
        "image_auroc": img["auroc"],
        "image_ap": img["ap"],
        "image_f1_max": img["f1_max"],
        "pixel_auroc": px["auroc"],
        "pixel_aupro": px["aupro"],
        "pixel_f1_max": px["f1_max"],
    }


def measured(fn, *args, **kwargs):
    """(result, seconds, traced peak bytes of numpy/Python allocations during the call, process peak RSS bytes)."""
    tracemalloc.start()
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def check_identical(fast: dict, legacy: dict) -> dict:
    """Absolute differences per metric; raise AssertionError beyond the tolerances."""
    diffs = {k: abs(fast[k] - legacy[k]) for k in legacy}
    for k, d in diffs.items():
        assert d <= TOLERANCE.get(k, 1e-9), f"{k}: zsad {fast[k]!r} vs legacy {legacy[k]!r}"
    return diffs


def run(n: int = N_IMAGES, size: int = SIZE, seed: int = 0, out=print) -> dict:
    """Build the class, time the three paths once each (fast ones warmed up first), print and return the table."""
    data = make_class(n, size, seed)
    out(
        f"class: {n} images of {size}x{size} = {data[2].size / 1e6:.1f}M pixels, {int(data[3].sum())} anomalous, "
        f"{int(data[1].sum())} anomalous images"
    )
    fast_all_metrics(*make_class(4, 64, seed + 1))  # warm-up: imports (torch for the grid), caches
    rows = {
        "zsad (aupro=legacy)": measured(fast_all_metrics, *data, aupro="legacy"),
        "zsad (aupro=exact)": measured(fast_all_metrics, *data, aupro="exact"),
        "official loop": measured(legacy_all_metrics, *data),
    }
    legacy_seconds = rows["official loop"][1]
    out(f"{'path':<22}{'seconds':>10}{'speed-up':>10}{'traced peak MB':>16}{'process peak RSS MB':>21}")
    for name, (_, seconds, peak, rss) in rows.items():
        out(f"{name:<22}{seconds:>10.2f}{legacy_seconds / seconds:>9.1f}x{peak / 2**20:>16.0f}{rss / 2**20:>21.0f}")
    out(
        "(traced = numpy/Python allocations seen by tracemalloc, not torch's; process RSS is cumulative: each row is "
        "the peak so far, and the input data alone takes about 0.2 GB)"
    )
    diffs = check_identical(rows["zsad (aupro=legacy)"][0], rows["official loop"][0])
    for key, value in rows["official loop"][0].items():
        exact = rows["zsad (aupro=exact)"][0][key]
        out(
            f"  {key:<14} official {value:.10f}   zsad {rows['zsad (aupro=legacy)'][0][key]:.10f}"
            f"  |diff| {diffs[key]:.1e}" + (f"   exact MVTec AUPRO {exact:.10f}" if key == "pixel_aupro" else "")
        )
    return {"rows": rows, "diffs": diffs, "speedup": legacy_seconds / rows["zsad (aupro=legacy)"][1]}


# ---- pytest-benchmark entry points (pytest benchmarks/bench_metrics.py --benchmark-enable) ----

_RESULTS: dict = {"seconds": {"fast": [], "legacy": []}}


def _data():
    if "data" not in _RESULTS:
        _RESULTS["data"] = make_class()
    return _RESULTS["data"]


def _timed(key, fn):
    def call(*args):
        start = time.perf_counter()
        result = fn(*args)
        _RESULTS["seconds"][key].append(time.perf_counter() - start)
        return result

    return call


def test_bench_zsad_metrics(benchmark):
    call = _timed("fast", fast_all_metrics)
    _RESULTS["fast"] = benchmark.pedantic(call, args=_data(), rounds=3, iterations=1, warmup_rounds=1)


def test_bench_official_loop(benchmark):
    _RESULTS["legacy"] = benchmark.pedantic(_timed("legacy", legacy_all_metrics), args=_data(), rounds=1)


def test_values_identical_and_speedup():
    """The stored values must agree; report the speed-up and the peak memory of the zsad path."""
    data = _data()
    fast = _RESULTS.get("fast") or _timed("fast", fast_all_metrics)(*data)
    legacy = _RESULTS.get("legacy") or _timed("legacy", legacy_all_metrics)(*data)
    check_identical(fast, legacy)
    _, _, fast_peak, rss = measured(fast_all_metrics, *data)
    seconds = {k: min(v) for k, v in _RESULTS["seconds"].items()}
    print(
        f"\nzsad {seconds['fast']:.2f} s vs official {seconds['legacy']:.2f} s: "
        f"{seconds['legacy'] / seconds['fast']:.0f}x faster; zsad traced peak {fast_peak / 2**20:.0f} MB, "
        f"process peak RSS {rss / 2**20:.0f} MB (whole session)"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=N_IMAGES)
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run(args.images, args.size, args.seed)
    print(f"speed-up of zsad over the official code: {result['speedup']:.0f}x (target >= 50x)")


if __name__ == "__main__":
    main()
