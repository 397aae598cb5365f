"""Dynamic batching: concurrent requests share forward passes of one model, through a bounded queue.

:class:`BatchQueue` collects submitted items and hands them to ``process`` in batches on one worker thread (so
the model is never called concurrently and the event loop never blocks). A batch starts when ``max_batch`` items
wait, or when the oldest waiting item has waited ``max_wait_s``; while the model runs, new items queue up and form
the next batch. At most ``max_pending`` items wait: :meth:`BatchQueue.submit` raises :class:`QueueFull` (with a
``retry_after`` estimate in seconds) instead of letting the queue grow. An item whose caller gave up (a timeout,
a closed connection) is dropped before it reaches the model.

``process(items)`` returns one entry per item: the result, or the exception to raise for that item alone.

Example:
    >>> import asyncio
    >>> async def demo():
    ...     queue = BatchQueue(lambda xs: [x * 10 for x in xs], max_batch=4, max_wait_s=0.05, max_pending=8)
    ...     await queue.start()
    ...     try:
    ...         results = await asyncio.gather(*(queue.submit(i) for i in range(6)))
    ...     finally:
    ...         await queue.stop()
    ...     return results, queue.stats.batch_sizes
    >>> asyncio.run(demo())
    ([0, 10, 20, 30, 40, 50], {4: 1, 2: 1})
"""

from __future__ import annotations

import asyncio
import collections
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from zsad.errors import ZsadError

__all__ = ["BatchQueue", "BatchStats", "QueueClosed", "QueueFull"]

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(ZsadError):
    """Too many requests wait for the model; retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QueueClosed(ZsadError):
    """The queue is not running (the server is starting or shutting down)."""


@dataclass
class BatchStats:
    """Counters of a :class:`BatchQueue` (read them from any thread; they only grow)."""

    batch_sizes: dict[int, int] = field(default_factory=dict)  # size -> number of batches of that size
    processed: int = 0  # items that went through the model
    rejected: int = 0  # submissions refused with QueueFull
    abandoned: int = 0  # items dropped before the model because their caller gave up
    model_seconds: float = 0.0  # time spent in process()

    def record_batch(self, size: int, seconds: float) -> None:
        self.batch_sizes[size] = self.batch_sizes.get(size, 0) + 1
        self.processed += size
        self.model_seconds += seconds

    @property
    def batches(self) -> int:
        return sum(self.batch_sizes.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
            "processed": self.processed,
            "rejected": self.rejected,
            "abandoned": self.abandoned,
            "model_seconds": round(self.model_seconds, 6),
        }


@dataclass
class _Job(Generic[T]):
    item: T
    future: asyncio.Future
    queued_at: float


class BatchQueue(Generic[T, R]):
    """A bounded queue that runs ``process`` on batches of submitted items (see the module docstring).

    Args:
        process: called on one worker thread with a list of items; returns one result or exception per item.
        max_batch: most items per call of ``process``.
        max_wait_s: how long the oldest waiting item may wait for the batch to fill.
        max_pending: most items waiting (not yet handed to ``process``).
    """

    def __init__(
        self,
        process: Callable[[Sequence[T]], Sequence[R | BaseException]],
        *,
        max_batch: int,
        max_wait_s: float,
        max_pending: int,
    ) -> None:
        self.process = process
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_pending = max_pending
        self.stats = BatchStats()
        self._pending: collections.deque[_Job[T]] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._runner: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._inflight: list[_Job[T]] = []
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start batching on the running event loop."""
        if self._runner is not None:
            return
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zsad-model")
        self._runner = asyncio.get_running_loop().create_task(self._run(), name="zsad-batcher")

    async def stop(self) -> None:
        """Stop batching: items not answered yet fail with :class:`QueueClosed`; a running batch still finishes."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            try:
                await runner
            except asyncio.CancelledError:
                pass
        for job in [*self._inflight, *self._pending]:
            if not job.future.done():
                job.future.set_exception(QueueClosed("The server is shutting down; retry on another instance."))
        self._pending.clear()
        self._inflight = []
        if self._executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)
            self._executor = None

    # -- submitting --------------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Items waiting for the model (not counting the batch it is running)."""
        return len(self._pending)

    @property
    def running(self) -> int:
        """Items in the batch the model is running now (0 when idle)."""
        return len(self._inflight)

    def retry_after(self) -> int:
        """Seconds after which a refused client may expect room: the queue's batches at the mean batch time."""
        batches = self.stats.batches
        per_batch = self.stats.model_seconds / batches if batches else 1.0
        return max(1, math.ceil((self.pending / self.max_batch + 1) * per_batch))

    async def submit(self, item: T) -> R:
        """Queue *item* and wait for its result (or its exception)."""
        if self._runner is None or self._arrived is None:
            raise QueueClosed("The model is not being served yet (starting up or shutting down); retry shortly.")
        if len(self._pending) >= self.max_pending:
            with self._lock:
                self.stats.rejected += 1
            raise QueueFull(
                f"The server is busy: {len(self._pending)} requests are waiting for the model (the limit is "
                f"{self.max_pending}); retry later.",
                self.retry_after(),
            )
        job = _Job(item, asyncio.get_running_loop().create_future(), time.monotonic())
        self._pending.append(job)
        self._arrived.set()
        try:
            return await job.future
        except asyncio.CancelledError:
            job.future.cancel()  # the batcher drops it if the model has not taken it yet
            raise

    # -- the batching loop -------------------------------------------------------------------------------------
    def _drop_abandoned(self) -> None:
        while self._pending and self._pending[0].future.done():
            self._pending.popleft()
            self.stats.abandoned += 1

    async def _next_batch(self) -> list[_Job[T]]:
        assert self._arrived is not None
        while True:
            self._drop_abandoned()
            if self._pending:
                break
            self._arrived.clear()
            await self._arrived.wait()
        deadline = self._pending[0].queued_at + self.max_wait_s
        while len(self._pending) < self.max_batch and (remaining := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        batch: list[_Job[T]] = []
        while self._pending and len(batch) < self.max_batch:
            job = self._pending.popleft()
            if job.future.done():
                self.stats.abandoned += 1
            else:
                batch.append(job)
        return batch

    def _process(self, items: list[T]) -> Sequence[R | BaseException]:
        start = time.perf_counter()
        try:
            out = self.process(items)
            if len(out) != len(items):
                raise RuntimeError(f"process() returned {len(out)} results for {len(items)} items")
        except Exception as exc:  # noqa: BLE001 - every item of the batch gets the error
            out = [exc] * len(items)
        seconds = time.perf_counter() - start
        with self._lock:
            self.stats.record_batch(len(items), seconds)
        return out

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            self._inflight = batch
            outputs = await loop.run_in_executor(self._executor, self._process, [j.item for j in batch])
            self._inflight = []
            for job, out in zip(batch, outputs):
                if job.future.done():
                    continue
                if isinstance(out, BaseException):
                    job.future.set_exception(out)
                else:
                    job.future.set_result(out)
