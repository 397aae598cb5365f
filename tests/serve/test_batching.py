"""Dynamic batching on one model: concurrent requests share forward passes; a full queue answers 503."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from serve.conftest import IMAGES, GatedDetector, hold_model, png_bytes, post_image, queue_up, running
from zsad.serve.batching import BatchQueue, QueueClosed, QueueFull


def test_waiting_requests_are_scored_in_one_batch_with_the_same_results(detector):
    gated = GatedDetector(detector)
    with running(gated, max_batch=8, max_wait_ms=50) as (app, client), ThreadPoolExecutor(8) as pool:
        first = hold_model(app, gated, pool, client, IMAGES[0])
        rest = queue_up(app, pool, client, IMAGES[1:])
        gated.gate.set()
        replies = [first.result(), *(f.result() for f in rest)]
        assert [r.status_code for r in replies] == [200] * 6
        assert gated.calls[1:] == [1, 5]  # after the warm-up: the first alone, then the five together
        assert client.get("/v1/stats").json()["batch_sizes"] == {"1": 1, "5": 1}
    for path, reply in zip(IMAGES, replies):
        expected = detector.predict(path, class_name="metal_nut")
        assert reply.json()["scores"] == pytest.approx(expected.scores, rel=1e-6, abs=1e-7)
        assert reply.json()["original_size"] == list(expected.original_size)


def test_a_full_queue_answers_503_with_retry_after(detector):
    gated = GatedDetector(detector)
    with running(gated, max_batch=2, max_queue=2) as (app, client), ThreadPoolExecutor(4) as pool:
        running_one = hold_model(app, gated, pool, client)
        waiting = queue_up(app, pool, client, [IMAGES[1]] * 2)
        refused = post_image(client, IMAGES[1])
        assert refused.status_code == 503
        assert int(refused.headers["Retry-After"]) >= 1 and "busy" in refused.json()["error"]
        gated.gate.set()
        assert [f.result().status_code for f in [running_one, *waiting]] == [200, 200, 200]
        assert post_image(client, IMAGES[1]).status_code == 200  # room again
        stats = client.get("/v1/stats").json()
        assert stats["rejected"] == 1 and stats["processed"] == 4 and stats["batch_sizes"] == {"1": 2, "2": 1}


def test_a_bad_image_fails_alone_in_its_batch(detector):
    gated = GatedDetector(detector)
    with running(gated, max_batch=8, max_wait_ms=50) as (app, client), ThreadPoolExecutor(4) as pool:
        blocker = hold_model(app, gated, pool, client)
        *good, bad = queue_up(app, pool, client, [IMAGES[2], IMAGES[3], png_bytes(mode="I;16")])  # 16-bit: refused
        gated.gate.set()
        assert blocker.result().status_code == 200
        assert [f.result().status_code for f in good] == [200, 200]
        assert bad.result().status_code == 422 and "high_bit_depth" in bad.result().json()["error"]
        # the batch of three failed as a whole, then each image was scored alone
        assert gated.calls[-4:] == [3, 1, 1, 1]
        expected = detector.predict(IMAGES[2], class_name="metal_nut")
        assert good[0].result().json()["pred_score"] == pytest.approx(expected.pred_score, rel=1e-6)


def test_batch_queue_waits_at_most_max_wait_and_drops_abandoned_items():
    batches = []

    def process(items):
        batches.append(list(items))
        return [x * 2 for x in items]

    async def scenario():
        queue = BatchQueue(process, max_batch=4, max_wait_s=0.02, max_pending=3)
        with pytest.raises(QueueClosed):
            await queue.submit(1)
        await queue.start()
        assert await queue.submit(1) == 2  # alone: runs after max_wait, without waiting for a full batch
        abandoned = asyncio.ensure_future(queue.submit(99))
        await asyncio.sleep(0)
        abandoned.cancel()
        results = await asyncio.gather(queue.submit(2), queue.submit(3))
        full = [asyncio.ensure_future(queue.submit(i)) for i in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull) as refused:
            await queue.submit(7)
        assert refused.value.retry_after >= 1
        done = await asyncio.gather(*full)
        await queue.stop()
        return results, done, queue.stats

    results, done, stats = asyncio.run(scenario())
    assert results == [4, 6] and done == [0, 2, 4]
    assert [1] in batches and [2, 3] in batches and all(99 not in b for b in batches)
    assert stats.abandoned == 1 and stats.rejected == 1 and stats.processed == 6
