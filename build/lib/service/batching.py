"""Micro-batching: concurrent requests share one ``Forecaster.predict`` call.

The first request of a batch waits at most ``max_wait_s`` for company; the batch closes early
when it holds ``max_series`` series. Requests are grouped by :attr:`service.predictor.Job.key`
(same model object, sample count and seed), because those must be equal within one predict call.
Inference runs in a single worker thread, so while one batch computes the next one fills up:
throughput grows with concurrency. ``Forecaster.predict`` answers every series independently of
the rest of the batch, so batching does not change answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from latent_ode import Forecast
from service.errors import ModelNotReadyError
from service.predictor import Job

__all__ = ["MicroBatcher", "RunJobs"]

logger = logging.getLogger(__name__)

#: Answers a list of jobs with one predict call per key: per job, forecasts or an exception.
RunJobs = Callable[[Sequence[Job]], list[list[Forecast] | Exception]]


class MicroBatcher:
    """Collects :class:`Job` s from concurrent requests and runs them in batches.

    Args:
        run: the blocking function that answers a group of jobs sharing a key; it runs in one
            worker thread owned by the batcher (started by :meth:`start`), so batches queue
            behind each other and the event loop never blocks.
        enabled: when False every job runs on its own (same executor), for comparison.
        max_series: close a batch once it holds this many series.
        max_wait_s: longest time the first job of a batch waits for others.
    """

    def __init__(
        self,
        run: RunJobs,
        *,
        enabled: bool,
        max_series: int,
        max_wait_s: float,
    ) -> None:
        self._run = run
        self._executor: ThreadPoolExecutor | None = None
        self.enabled = enabled
        self.max_series = max_series
        self.max_wait_s = max_wait_s
        self._queue: asyncio.Queue[tuple[Job, asyncio.Future[list[Forecast]]]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the inference thread and, when batching is enabled, the collector task."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="latent-ode-inference"
            )
        if self.enabled and self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._collect(), name="latent-ode-batcher")

    async def stop(self) -> None:
        """Stop collecting; requests still queued fail with 503."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                _, fut = self._queue.get_nowait()
                if not fut.done():
                    fut.set_exception(ModelNotReadyError("the service is shutting down; retry"))
            self._queue = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def submit(self, job: Job) -> list[Forecast]:
        """Answer one request's job (batched with others when enabled).

        Raises:
            whatever :data:`RunJobs` returned for this job (e.g. SolverBudgetError).
        """
        loop = asyncio.get_running_loop()
        if self._executor is None:
            raise ModelNotReadyError("the inference worker is not running; retry shortly")
        if not self.enabled or self._queue is None:
            (result,) = await loop.run_in_executor(self._executor, self._run, [job])
            if isinstance(result, Exception):
                raise result
            return result
        fut: asyncio.Future[list[Forecast]] = loop.create_future()
        await self._queue.put((job, fut))
        return await fut

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            size = len(batch[0][0].series)
            deadline = loop.time() + self.max_wait_s
            while size < self.max_series:
                if not self._queue.empty():
                    item = self._queue.get_nowait()
                else:
                    timeout = deadline - loop.time()
                    if timeout <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), timeout)
                    except TimeoutError:
                        break
                batch.append(item)
                size += len(item[0].series)
            await self._dispatch(batch)

    async def _dispatch(
        self, batch: list[tuple[Job, asyncio.Future[list[Forecast]]]]
    ) -> None:
        groups: dict[tuple[int, int, int], list[tuple[Job, asyncio.Future]]] = {}
        for job, fut in batch:
            if not fut.done():  # the client may have gone away while waiting
                groups.setdefault(job.key, []).append((job, fut))
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        for group in groups.values():
            jobs = [job for job, _ in group]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._run, jobs)
            except Exception as exc:  # noqa: BLE001 - handed to each request, logged there as 500
                results = [exc] * len(group)
            logger.debug(
                "batch of %d requests answered in %.1f ms",
                len(group), 1000 * (time.perf_counter() - started),
            )
            for (_, fut), result in zip(group, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
