"""Load test of ``zsad serve`` on 127.0.0.1: throughput, latency and batching with 1, 8 and 32 concurrent clients.

Run from the repository root: ``python benchmarks/bench_serve.py`` (options: ``--help``). It

1. measures ``Detector.predict`` in-process on the fixture images (read from their files, ``batch_size`` =
   ``--max-batch``), the throughput the server is compared with;
2. starts ``zsad serve`` on the same tiny fixture model in a subprocess, on a free local port;
3. for each client count, sends a bounded number of requests (``--requests``, at most ``--seconds`` per level)
   from that many concurrent HTTP clients, each request one fixture image with ``class_name``;
4. prints requests/s, p50/p99 latency, the batch sizes the server formed (from ``GET /v1/stats``) and the ratio of
   the server's throughput to the in-process one (target: >= 0.8 at 32 clients), and checks that nothing was lost:
   every request answered with a result or an explicit 503 (exit status 1 otherwise).

Timings on shared machines are noisy; compare ratios within one run. The load generator shares the machine's cores
with the server, so on a small machine it takes part of the throughput it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "tipsomaly-parity"
IMAGES = sorted((FIXTURE / "dataset").glob("*/test/*/*.png"))
CLASS_NAME = "metal nut"


def overrides(image_size: int) -> dict:
    return {"backbone_checkpoint": str(FIXTURE), "prompt_checkpoint": str(FIXTURE / "learnable_params.pth"),
            "image_size": image_size}


class InProcess:
    """Detector.predict in this process on the fixture files, the throughput the server is compared with."""

    def __init__(self, image_size: int, batch_size: int, n: int) -> None:
        from zsad import Detector

        self.det = Detector.from_recipe("tipsomaly", device="cpu", **overrides(image_size))
        self.batch_size = batch_size
        self.paths = [IMAGES[i % len(IMAGES)] for i in range(n)]
        self.run()  # warm-up

    def run(self) -> None:
        self.det.predict(self.paths, class_name=CLASS_NAME, batch_size=self.batch_size, progress=False)

    def rate(self, repeats: int = 2) -> float:
        """Images/s, best of ``repeats`` passes over the files."""
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            self.run()
            best = min(best, time.perf_counter() - start)
        return len(self.paths) / best


@dataclass
class Level:
    clients: int
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    seconds: float = 0.0
    batch_sizes: Counter = field(default_factory=Counter)
    sent: int = 0
    in_process: list[float] = field(default_factory=list)  # Detector.predict images/s, before each round
    ratios: list[float] = field(default_factory=list)  # server requests/s / in-process images/s, per round
    client_cpu: float = 0.0  # CPU seconds the load generator itself used


async def run_round(url: str, level: Level, requests: int, seconds: float, payloads: list[bytes]) -> float:
    """Send ``requests`` requests from ``level.clients`` concurrent clients; add to ``level``; return requests/s."""
    clients = level.clients
    ok_before = level.statuses.get(200, 0)
    counter = iter(range(requests))
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        before = (await client.get("/v1/stats")).json()["batch_sizes"]

        async def worker() -> None:
            for i in counter:
                if time.monotonic() > deadline:
                    return
                start = time.perf_counter()
                level.sent += 1
                try:
                    reply = await client.post("/v1/predict", files={"image": ("img.png", payloads[i % len(payloads)])},
                                              data={"class_name": CLASS_NAME})
                except httpx.HTTPError as exc:  # no answer at all: lost
                    level.lost.append(f"{type(exc).__name__}: {exc}")
                    continue
                level.statuses[reply.status_code] += 1
                if reply.status_code == 200 and "pred_score" in reply.json():
                    level.latencies.append(time.perf_counter() - start)
                elif reply.status_code != 503:
                    level.lost.append(f"HTTP {reply.status_code}: {reply.text[:200]}")

        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker() for _ in range(clients)))
        seconds = time.perf_counter() - start
        level.client_cpu += time.process_time() - cpu
        after = (await client.get("/v1/stats")).json()["batch_sizes"]
    level.seconds += seconds
    level.batch_sizes.update({int(k): v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)})
    return (level.statuses.get(200, 0) - ok_before) / seconds


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "zsad", "serve", "--device", "cpu", "--port", "0", "--log-level", "warning",
           "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms), "--max-queue", str(args.max_queue)]
    for key, value in overrides(args.image_size).items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.torch_threads:
        env["OMP_NUM_THREADS"] = str(args.torch_threads)  # torch's intra-op threads in the server
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    assert proc.stderr is not None
    for line in proc.stderr:
        if "listening on " in line:
            url = line.split("listening on ")[1].split()[0]
            break
    else:
        raise SystemExit(f"zsad serve did not start (exit status {proc.wait()})")
    deadline = time.monotonic() + 300
    while httpx.get(url + "/healthz").status_code != 200:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("zsad serve did not load the model")
        time.sleep(0.2)
    return proc, url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=56, help="model input size (default 56, the fixture's tests)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=384, help="requests per client count (default 384)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="per client count, alternate this many in-process and server measurements (default 3)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit per round (default 60)")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads in-process and in the server (default: torch's); 1 avoids "
                             "thread oversubscription on a small or shared machine")
    args = parser.parse_args(argv)

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    per_round = max(1, args.requests // args.rounds)
    baseline = InProcess(args.image_size, args.max_batch, per_round)
    payloads = [p.read_bytes() for p in IMAGES]
    proc, url = start_server(args)
    levels = []
    try:
        asyncio.run(run_round(url, Level(4), 32, 30, payloads))  # warm-up: connections, allocator, thread pools
        for clients in args.clients:
            level = Level(clients)
            for _ in range(args.rounds):  # alternated, so that both see the same load from the rest of the machine
                level.in_process.append(baseline.rate(repeats=1))
                rate = asyncio.run(run_round(url, level, per_round, args.seconds, payloads))
                level.ratios.append(rate / level.in_process[-1])
            levels.append(level)
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    print(f"zsad serve, tiny fixture TIPS model at {args.image_size} px, {len(IMAGES)} fixture images "
          f"({min(p.stat().st_size for p in IMAGES) // 1000}-{max(p.stat().st_size for p in IMAGES) // 1000} kB PNG), "
          f"--max-batch {args.max_batch} --max-wait-ms {args.max_wait_ms:g}, {os.cpu_count()} CPU cores, "
          f"torch {torch.get_num_threads()} threads")
    print(f"in-proc: Detector.predict on the same files (batch_size {args.max_batch}), images/s, in {args.rounds} "
          f"rounds alternated with the server's; ratio: median over the rounds of server req/s / in-proc img/s")
    header = f"{'clients':>7} {'sent':>5} {'200':>5} {'503':>5} {'lost':>4} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} " \
             f"{'mean batch':>10} {'in-proc':>8} {'ratio':>6} {'client cpu':>10}  batch sizes (size: count)"
    print(header)
    lost = 0
    for lv in levels:
        ok = lv.statuses.get(200, 0)
        rate = ok / lv.seconds if lv.seconds else 0.0
        p50, p99 = (np.percentile(lv.latencies, [50, 99]) * 1e3) if lv.latencies else (float("nan"),) * 2
        batches = sum(lv.batch_sizes.values())
        mean_batch = sum(k * v for k, v in lv.batch_sizes.items()) / batches if batches else float("nan")
        sizes = ", ".join(f"{k}: {v}" for k, v in sorted(lv.batch_sizes.items()))
        print(f"{lv.clients:>7} {lv.sent:>5} {ok:>5} {lv.statuses.get(503, 0):>5} {len(lv.lost):>4} {rate:>7.1f} "
              f"{p50:>7.1f} {p99:>7.1f} {mean_batch:>10.2f} {np.mean(lv.in_process):>8.1f} "
              f"{np.median(lv.ratios):>6.2f} {lv.client_cpu / lv.seconds:>10.0%}  {sizes}")
        lost += len(lv.lost)
        for problem in lv.lost[:5]:
            print(f"        lost: {problem}")
    print("client cpu: the load generator's share of one core (it runs on the same machine as the server)")
    print("nothing lost: every request was answered with a result or a 503" if not lost else
          f"{lost} requests were lost (neither a result nor a 503)")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
