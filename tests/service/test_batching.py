"""The micro-batcher's paths: batching off, a failing batch, a client that went away, shutdown
with requests queued, and the same answers through the service with batching on or off."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.batching import MicroBatcher
from service.errors import ModelNotReadyError
from tests.service.service_helpers import make_series, series_json


@dataclass(frozen=True)
class FakeJob:
    """What the batcher reads of a job: its grouping key and its series."""

    name: str
    key: tuple[int, int, int] = (0, 16, 0)
    series: tuple[int, ...] = (0,)


@dataclass
class Worker:
    """A RunJobs that records each call, can be held at its start, and fails where told."""

    fail_batch: bool = False
    fail_jobs: frozenset[str] = frozenset()
    calls: list[list[str]] = field(default_factory=list)
    hold: threading.Event | None = None
    entered: threading.Event = field(default_factory=threading.Event)

    def __call__(self, jobs: Sequence[Any]) -> list[Any]:
        self.calls.append([job.name for job in jobs])
        self.entered.set()
        if self.hold is not None:
            assert self.hold.wait(10), "the test never released the worker"
        if self.fail_batch:
            raise RuntimeError("the solver crashed")
        return [ValueError(f"bad {job.name}") if job.name in self.fail_jobs else [job.name]
                for job in jobs]


async def _wait_entered(worker: Worker) -> None:
    """Until the worker thread has taken a batch (it is then busy until released)."""
    for _ in range(1000):
        if worker.entered.is_set():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the worker never started a batch")


async def _settle() -> None:
    """Let the event loop run the collector until it waits again."""
    for _ in range(20):
        await asyncio.sleep(0)


def _batcher(worker: Worker, *, enabled: bool = True, max_wait_s: float = 0.05) -> MicroBatcher:
    return MicroBatcher(worker, enabled=enabled, max_series=64, max_wait_s=max_wait_s)


def test_concurrent_jobs_with_one_key_share_a_call_and_other_keys_get_their_own() -> None:
    async def main() -> tuple[list[Any], list[list[str]]]:
        worker = Worker()
        batcher = _batcher(worker)
        await batcher.start()
        try:
            jobs = [FakeJob("a"), FakeJob("b"), FakeJob("c", key=(0, 32, 0))]
            answers = await asyncio.gather(*(batcher.submit(j) for j in jobs))
        finally:
            await batcher.stop()
        return answers, worker.calls

    answers, calls = asyncio.run(main())
    assert answers == [["a"], ["b"], ["c"]]
    assert calls == [["a", "b"], ["c"]]


def test_batching_off_runs_every_job_on_its_own() -> None:
    async def main() -> tuple[list[Any], list[list[str]]]:
        worker = Worker()
        batcher = _batcher(worker, enabled=False)
        await batcher.start()
        try:
            answers = await asyncio.gather(*(batcher.submit(FakeJob(n)) for n in "abc"))
        finally:
            await batcher.stop()
        return answers, worker.calls

    answers, calls = asyncio.run(main())
    assert answers == [["a"], ["b"], ["c"]]
    assert sorted(calls) == [["a"], ["b"], ["c"]]


@pytest.mark.parametrize("enabled", [True, False])
def test_a_failing_batch_fails_each_of_its_requests_and_the_next_batch_runs(enabled: bool) -> None:
    async def main() -> tuple[list[Any], Any]:
        worker = Worker(fail_batch=True)
        batcher = _batcher(worker, enabled=enabled)
        await batcher.start()
        try:
            failed = await asyncio.gather(*(batcher.submit(FakeJob(n)) for n in "ab"),
                                          return_exceptions=True)
            worker.fail_batch = False
            after = await batcher.submit(FakeJob("c"))
        finally:
            await batcher.stop()
        return failed, after

    failed, after = asyncio.run(main())
    assert [str(e) for e in failed] == ["the solver crashed"] * 2
    assert all(isinstance(e, RuntimeError) for e in failed)
    assert after == ["c"]


@pytest.mark.parametrize("enabled", [True, False])
def test_one_failing_job_fails_only_its_own_request(enabled: bool) -> None:
    async def main() -> list[Any]:
        batcher = _batcher(Worker(fail_jobs=frozenset({"b"})), enabled=enabled)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(FakeJob(n)) for n in "abc"),
                                        return_exceptions=True)
        finally:
            await batcher.stop()

    a, b, c = asyncio.run(main())
    assert (a, c) == (["a"], ["c"])
    assert isinstance(b, ValueError) and str(b) == "bad b"


def test_a_client_that_went_away_is_not_computed() -> None:
    async def main() -> tuple[Any, list[list[str]]]:
        worker = Worker(hold=threading.Event())
        batcher = _batcher(worker, max_wait_s=0.0)
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.submit(FakeJob("first")))
            await _wait_entered(worker)  # the worker is busy: the next jobs queue
            gone = asyncio.create_task(batcher.submit(FakeJob("gone")))
            stays = asyncio.create_task(batcher.submit(FakeJob("stays")))
            await _settle()
            gone.cancel()  # the client disconnected while its job waited
            await _settle()
            worker.hold.set()
            answers = await asyncio.wait_for(asyncio.gather(first, stays), 5)
            with pytest.raises(asyncio.CancelledError):
                await gone
        finally:
            await batcher.stop()
        return answers, worker.calls

    answers, calls = asyncio.run(main())
    assert answers == [["first"], ["stays"]]
    assert calls == [["first"], ["stays"]]


def test_shutdown_answers_queued_requests_with_not_ready() -> None:
    async def main() -> tuple[list[Any], list[list[str]]]:
        worker = Worker(hold=threading.Event())
        batcher = _batcher(worker, max_wait_s=0.0)
        await batcher.start()
        running = asyncio.create_task(batcher.submit(FakeJob("running")))
        await _wait_entered(worker)
        queued = [asyncio.create_task(batcher.submit(FakeJob(n))) for n in ("q1", "q2")]
        await _settle()
        await batcher.stop()
        # A bound, so a batcher that forgot them fails here instead of hanging.
        outcomes = await asyncio.wait_for(asyncio.gather(*queued, return_exceptions=True), 5)
        worker.hold.set()
        running.cancel()  # its worker thread was let go by stop(); the server cancels it
        await asyncio.gather(running, return_exceptions=True)
        # After stop, a new request is refused the same way, not queued for ever.
        outcomes.append((await asyncio.gather(batcher.submit(FakeJob("late")),
                                              return_exceptions=True))[0])
        return outcomes, worker.calls

    outcomes, calls = asyncio.run(main())
    assert [type(e) for e in outcomes] == [ModelNotReadyError] * 3
    assert [str(e) for e in outcomes[:2]] == ["the service is shutting down; retry"] * 2
    assert str(outcomes[2]) == "the inference worker is not running; retry shortly"
    assert calls == [["running"]]  # the queued jobs were never computed


def test_submit_before_start_is_not_ready() -> None:
    with pytest.raises(ModelNotReadyError, match=r"^the inference worker is not running; retry "
                                                 r"shortly$"):
        asyncio.run(_batcher(Worker()).submit(FakeJob("a")))


def test_the_service_answers_the_same_with_batching_off(make_settings) -> None:
    from service.app import create_app

    series = make_series(3, seed=4)
    body = {"series": [series_json(s, [s.times[-1] + 0.5, s.times[-1] + 1.0]) for s in series],
            "num_samples": 8, "seed": 3}
    answers = {}
    for enabled in (True, False):
        settings = make_settings(batching_enabled=enabled)
        assert settings.batching_enabled is enabled
        with TestClient(create_app(settings)) as client:
            response = client.post("/v1/predict", json=body)
            assert response.status_code == 200, response.text
            answers[enabled] = response.json()["series"]
    on, off = answers[True], answers[False]
    assert len(on) == len(off) == 3
    for a, b in zip(on, off, strict=True):
        for key in ("mean", "std"):
            np.testing.assert_allclose(np.asarray(a[key], dtype=float),
                                       np.asarray(b[key], dtype=float), rtol=1e-6)
