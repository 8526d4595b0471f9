"""The micro-batcher: concurrent requests share forward passes, results go back to the right caller,
one modality per pass, max_batch holds, a full queue is refused (503 through the app), errors reach
every caller of the failed pass, and stopping fails what still waits."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest

from serving.app import create_app
from serving.batcher import BatcherStoppedError, MicroBatcher, QueueFullError
from serving.config import BatcherConfig
from tests.serving.test_embed import _photometry


class Recorder:
    """An embed function that returns each sample's value as its vector and records every pass."""

    def __init__(self, fail: bool = False):
        self.passes: list[tuple[str, int]] = []
        self.fail = fail

    def __call__(self, modality, samples):
        self.passes.append((modality, len(samples)))
        if self.fail:
            raise RuntimeError("forward pass failed")
        return np.array([[float(s), 0.0] for s in samples])


def _run(coroutine_function, *args):
    return asyncio.run(asyncio.wait_for(coroutine_function(*args), timeout=30))


def test_concurrent_requests_share_passes_and_get_their_own_rows():
    async def scenario():
        embed = Recorder()
        batcher = MicroBatcher(embed, BatcherConfig(max_batch=8, max_wait_ms=200, max_queue=64))
        await batcher.start()
        try:
            results = await asyncio.gather(*[batcher.submit("spectrum", [i, i + 0.5]) for i in range(12)])
        finally:
            await batcher.stop()
        return embed, results

    embed, results = _run(scenario)
    for i, rows in enumerate(results):
        assert rows[:, 0].tolist() == [i, i + 0.5]
    assert sum(n for _, n in embed.passes) == 24
    assert len(embed.passes) < 12 and max(n for _, n in embed.passes) <= 8


def test_one_modality_per_pass():
    async def scenario():
        embed = Recorder()
        batcher = MicroBatcher(embed, BatcherConfig(max_batch=64, max_wait_ms=100))
        await batcher.start()
        try:
            jobs = [batcher.submit("spectrum" if i % 2 else "image", [i]) for i in range(6)]
            results = await asyncio.gather(*jobs)
        finally:
            await batcher.stop()
        return embed, results

    embed, results = _run(scenario)
    assert [r[0, 0] for r in results] == list(range(6))
    assert sorted(embed.passes) == [("image", 3), ("spectrum", 3)]


def test_a_failed_pass_reaches_every_caller_and_the_batcher_goes_on():
    async def scenario():
        embed = Recorder(fail=True)
        batcher = MicroBatcher(embed, BatcherConfig(max_wait_ms=50))
        await batcher.start()
        try:
            outcomes = await asyncio.gather(*[batcher.submit("spectrum", [i]) for i in range(3)],
                                            return_exceptions=True)
            embed.fail = False
            after = await batcher.submit("spectrum", [7])
        finally:
            await batcher.stop()
        return outcomes, after

    outcomes, after = _run(scenario)
    assert all(isinstance(o, RuntimeError) for o in outcomes) and after[0, 0] == 7


def test_full_queue_and_stopped_batcher_are_refused():
    release, started = threading.Event(), threading.Event()

    def slow(modality, samples):
        started.set()
        release.wait(10)
        return np.zeros((len(samples), 2))

    async def scenario():
        batcher = MicroBatcher(slow, BatcherConfig(max_batch=1, max_wait_ms=0, max_queue=1))
        with pytest.raises(BatcherStoppedError):
            await batcher.submit("spectrum", [0])
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit("spectrum", [1]))
        await asyncio.to_thread(started.wait, 10)  # the first is in the forward pass
        second = asyncio.ensure_future(batcher.submit("spectrum", [2]))  # waits in the queue
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFullError):
            await batcher.submit("spectrum", [3])
        release.set()
        done = await asyncio.gather(first, second)
        started.clear()
        release.clear()
        blocked = asyncio.ensure_future(batcher.submit("spectrum", [4]))
        await asyncio.to_thread(started.wait, 10)
        waiting = asyncio.ensure_future(batcher.submit("spectrum", [5]))
        await asyncio.sleep(0.05)
        await batcher.stop()
        release.set()
        return done, await asyncio.gather(blocked, waiting, return_exceptions=True)

    done, after_stop = _run(scenario)
    assert [d.shape for d in done] == [(1, 2), (1, 2)]
    assert all(isinstance(outcome, BatcherStoppedError) for outcome in after_stop)  # in the pass, and queued


def test_the_app_answers_503_when_the_queue_is_full(serve_config, service, monkeypatch):
    import dataclasses

    release, started = threading.Event(), threading.Event()
    embed = type(service).embed

    def slow(self, modality, samples):
        started.set()
        release.wait(10)
        return embed(self, modality, samples)

    # Apps made before keep their bound embed method: only this app's forward passes wait.
    monkeypatch.setattr(type(service), "embed", slow)
    config = dataclasses.replace(serve_config, batcher=BatcherConfig(max_batch=1, max_wait_ms=0, max_queue=1))
    app = create_app(config, service)
    body = {"modality": "photometry", "objects": [_photometry()]}

    async def scenario():
        await app.state.batcher.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
                first = asyncio.ensure_future(client.post("/v1/embed", json=body))
                await asyncio.to_thread(started.wait, 10)
                second = asyncio.ensure_future(client.post("/v1/embed", json=body))
                deadline = time.monotonic() + 10
                while app.state.batcher._queue.qsize() < 1 and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                refused = await client.post("/v1/embed", json=body)
                release.set()
                return refused, await asyncio.gather(first, second)
        finally:
            release.set()
            await app.state.batcher.stop()

    refused, served = _run(scenario)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["detail"][0]["type"] == "busy"
    assert [r.status_code for r in served] == [200, 200]
