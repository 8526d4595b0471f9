"""Micro-batching: concurrent embed requests share one forward pass.

Requests go into a bounded asyncio queue (full: QueueFullError, which the app answers with 503). One
task takes the first waiting request, gathers more for up to `max_wait_ms` or until `max_batch` objects,
groups them by modality and runs one forward pass per modality in a single worker thread, so the event
loop stays free and the model is never run by two threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.config import BatcherConfig

EmbedFn = Callable[[str, Sequence[Any]], np.ndarray]  # (modality, samples) -> (len(samples), D)


class QueueFullError(RuntimeError):
    """More requests wait for the model than the queue holds."""


class BatcherStoppedError(RuntimeError):
    """The batcher is not running (the server is starting or shutting down)."""


@dataclass
class _Job:
    modality: str
    samples: Sequence[Any]
    future: asyncio.Future = field(repr=False)


@dataclass
class BatcherStats:
    batches: int = 0
    objects: int = 0
    largest: int = 0


class MicroBatcher:
    def __init__(self, embed: EmbedFn, config: BatcherConfig | None = None):
        self.embed = embed
        self.config = config or BatcherConfig()
        self.stats = BatcherStats()
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._carry: _Job | None = None  # a job that did not fit in the last batch: first in the next
        self._inflight: list[_Job] = []  # the jobs of the batch being computed

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.running:
            return
        self._queue = asyncio.Queue(maxsize=self.config.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="astrofm-embed")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="astrofm-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        pending = [*self._inflight, *([self._carry] if self._carry else [])]
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for job in pending:
            if not job.future.done():
                job.future.set_exception(BatcherStoppedError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)  # a running pass ends on its own
        self._task, self._queue, self._executor, self._carry, self._inflight = None, None, None, None, []

    async def submit(self, modality: str, samples: Sequence[Any]) -> np.ndarray:
        """The (len(samples), D) embeddings of `samples`, computed in some batch."""
        if not self.running:
            raise BatcherStoppedError("the embedding worker is not running")
        job = _Job(modality, samples, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFullError(f"{self.config.max_queue} requests are waiting for the model") from None
        return await job.future  # a client that goes away cancels the future; the batch skips it

    async def _gather(self) -> list[_Job]:
        first = self._carry or await self._queue.get()
        self._carry = None
        jobs, size = [first], len(first.samples)
        deadline = time.monotonic() + self.config.max_wait_ms / 1000
        while size < self.config.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
            if size + len(job.samples) > self.config.max_batch:
                self._carry = job
                break
            jobs.append(job)
            size += len(job.samples)
        return [job for job in jobs if not job.future.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = self._inflight = await self._gather()
            for modality in dict.fromkeys(job.modality for job in jobs):
                group = [job for job in jobs if job.modality == modality]
                samples = [sample for job in group for sample in job.samples]
                try:
                    vectors = await loop.run_in_executor(self._executor, self.embed, modality, samples)
                except Exception as error:  # noqa: BLE001  (each waiting request gets the error)
                    for job in group:
                        if not job.future.done():
                            job.future.set_exception(error)
                    continue
                self.stats.batches += 1
                self.stats.objects += len(samples)
                self.stats.largest = max(self.stats.largest, len(samples))
                start = 0
                for job in group:
                    stop = start + len(job.samples)
                    if not job.future.done():
                        job.future.set_result(vectors[start:stop])
                    start = stop
