"""Fair scheduling in the micro-batcher: a large request is answered in pieces, and pieces of
other requests and clients are interleaved with it (counted in the worker's calls, not timed)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from latent_ode import SolverConfig
from service.batching import MicroBatcher
from tests.service.test_batching import Worker, _settle, _wait_entered


@dataclass(frozen=True)
class Piece:
    """A job or one of its pieces: ``name`` is ``job#k`` for the k-th piece."""

    name: str
    pieces: int = 1
    key: tuple[int, int, int] = (0, 16, 0)
    series: tuple[int, ...] = (0,)


def split(job: Piece) -> list[Piece]:
    if job.pieces == 1:
        return [job]
    return [Piece(f"{job.name}#{k}", key=job.key) for k in range(job.pieces)]


def merge(job: Piece, pieces: Sequence[Piece], answers: Sequence[list[str]]) -> list[str]:
    return [name for answer in answers for name in answer]


def _batcher(worker: Worker, *, max_series: int = 64, max_work: float | None = None
             ) -> MicroBatcher:
    return MicroBatcher(worker, enabled=True, max_series=max_series, max_wait_s=0.0,
                        max_work=max_work, split=split, merge=merge)


def test_a_small_request_waits_behind_at_most_one_piece_of_a_large_one() -> None:
    async def main() -> tuple[list[Any], list[list[str]]]:
        worker = Worker(hold=threading.Event())
        batcher = _batcher(worker)
        await batcher.start()
        try:
            heavy = asyncio.create_task(batcher.submit(Piece("heavy", pieces=6)))
            await _wait_entered(worker)  # the worker holds heavy#0: the small one queues
            small = asyncio.create_task(batcher.submit(Piece("small")))
            await _settle()
            worker.hold.set()
            answers = await asyncio.wait_for(asyncio.gather(heavy, small), 5)
        finally:
            await batcher.stop()
        return answers, worker.calls

    (heavy, small), calls = asyncio.run(main())
    assert heavy == [f"heavy#{k}" for k in range(6)]  # merged in order
    assert small == ["small"]
    # The small request rode in the very next batch (with the next piece of the heavy one: one
    # piece per request per batch), long before the heavy one's last piece.
    assert calls[0] == ["heavy#0"] and sorted(calls[1]) == ["heavy#1", "small"]
    assert calls[2:] == [["heavy#2"], ["heavy#3"], ["heavy#4"], ["heavy#5"]]


def test_without_a_split_a_large_request_runs_whole_and_others_wait_for_it() -> None:
    """The behaviour the pieces fix: the same scenario with the default (no split)."""

    async def main() -> list[list[str]]:
        worker = Worker(hold=threading.Event())
        batcher = MicroBatcher(worker, enabled=True, max_series=64, max_wait_s=0.0)
        await batcher.start()
        try:
            heavy = asyncio.create_task(batcher.submit(Piece("heavy", pieces=6)))
            await _wait_entered(worker)
            small = asyncio.create_task(batcher.submit(Piece("small")))
            await _settle()
            worker.hold.set()
            await asyncio.wait_for(asyncio.gather(heavy, small), 5)
        finally:
            await batcher.stop()
        return worker.calls

    assert asyncio.run(main()) == [["heavy"], ["small"]]


def test_clients_take_turns_however_many_requests_each_sends() -> None:
    """Client A sends three 4-piece requests, then client B one: B gets every other batch."""

    async def main() -> tuple[list[list[str]], list[Any]]:
        worker = Worker(hold=threading.Event())
        batcher = _batcher(worker, max_series=1)  # one piece per batch: the order is visible
        await batcher.start()
        try:
            a = [asyncio.create_task(batcher.submit(Piece(f"a{k}", pieces=4), client="A"))
                 for k in range(3)]
            await _wait_entered(worker)  # a0#0 is running
            b = asyncio.create_task(batcher.submit(Piece("b", pieces=4), client="B"))
            await _settle()
            worker.hold.set()
            answers = await asyncio.wait_for(asyncio.gather(*a, b), 5)
        finally:
            await batcher.stop()
        return worker.calls, answers

    calls, answers = asyncio.run(main())
    order = [names[0] for names in calls]
    assert len(order) == 16 and answers[3] == [f"b#{k}" for k in range(4)]
    # B's four pieces alternate with A's (A had served one piece when B came: a tie, which the
    # earlier client wins): B is done after 9 batches, not after A's 12 pieces; within A its
    # three requests take turns too.
    assert order[:9] == ["a0#0", "a1#0", "b#0", "a2#0", "b#1", "a0#1", "b#2", "a1#1", "b#3"]


def test_a_batch_stops_at_its_work_bound_and_the_rest_runs_next() -> None:
    async def main() -> list[list[str]]:
        worker = Worker(hold=threading.Event())
        batcher = _batcher(worker, max_work=2)  # work of a piece: its number of series
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.submit(Piece("first")))
            await _wait_entered(worker)
            rest = [asyncio.create_task(batcher.submit(Piece(n))) for n in ("p", "q", "r")]
            await _settle()
            worker.hold.set()
            await asyncio.wait_for(asyncio.gather(first, *rest), 5)
        finally:
            await batcher.stop()
        return worker.calls

    assert asyncio.run(main()) == [["first"], ["p", "q"], ["r"]]


def test_a_failed_piece_fails_its_request_and_its_other_pieces_are_not_computed() -> None:
    async def main() -> tuple[Any, Any, list[list[str]]]:
        worker = Worker(fail_jobs=frozenset({"heavy#1"}), hold=threading.Event())
        batcher = _batcher(worker, max_series=1)
        await batcher.start()
        try:
            heavy = asyncio.create_task(batcher.submit(Piece("heavy", pieces=4)))
            await _wait_entered(worker)
            other = asyncio.create_task(batcher.submit(Piece("other", pieces=2)))
            await _settle()
            worker.hold.set()
            failed, fine = await asyncio.wait_for(
                asyncio.gather(heavy, other, return_exceptions=True), 5)
        finally:
            await batcher.stop()
        return failed, fine, worker.calls

    failed, fine, calls = asyncio.run(main())
    assert isinstance(failed, ValueError) and str(failed) == "bad heavy#1"
    assert fine == ["other#0", "other#1"]
    assert [c[0] for c in calls if c[0].startswith("heavy")] == ["heavy#0", "heavy#1"]


# --------------------------------------------------------------------------------------------
# The real pieces: service.predictor.split_job and merge_pieces on a real forecaster.

def _job(queries: list[np.ndarray], num_samples: int = 8) -> Any:
    from service.predictor import Job
    from tests.service.test_predictor import _item, _prepare

    items = [_item(id=f"s{k}", query_times=q.tolist()) for k, q in enumerate(queries)]
    return Job(model=None, series=_prepare(items), num_samples=num_samples, seed=3,  # type: ignore[arg-type]
               quantiles=(0.1, 0.5), solver=SolverConfig())


def _answer(forecaster: Any, job: Any) -> list[Any]:
    return forecaster.predict([p.series for p in job.series], [p.query_times for p in job.series],
                              num_samples=job.num_samples, quantiles=job.quantiles, seed=job.seed,
                              solver=job.solver)


def test_split_pieces_are_within_the_bound_and_merge_to_the_whole_answer() -> None:
    from service.predictor import merge_pieces, run_jobs, split_job
    from tests.service.service_helpers import make_forecaster

    rng = np.random.default_rng(0)
    # A long series whose queries are out of order (with a duplicate), between two short ones.
    long_q = np.concatenate([rng.uniform(-1.0, 9.0, 97), [4.0, 4.0, 8.5]])
    job = _job([np.array([0.5, 3.0]), long_q, np.array([2.5, 1.0, 6.0])])
    pieces = split_job(job, 8 * 100)  # about 30 query times per slice
    assert len(pieces) > 3
    assert all(piece.work <= 8 * 100 for piece in pieces)
    assert [p.index for p in pieces[0].series] == [0]  # the short one before the long one
    sliced = [p for piece in pieces for p in piece.series if p.positions is not None]
    assert sorted(np.concatenate([p.positions for p in sliced]).tolist()) == list(range(100))
    assert all(p.query_times[-2:].tolist() == [long_q.min(), long_q.max()] for p in sliced)

    forecaster = make_forecaster()
    results = run_jobs(forecaster, pieces, solver=SolverConfig(rtol=0.5))  # the jobs' own wins
    merged = merge_pieces(job, pieces, results)
    whole = _answer(forecaster, job)
    assert [fc.query_times.tolist() for fc in merged] == [fc.query_times.tolist() for fc in whole]
    for got, want in zip(merged, whole, strict=True):
        assert got.mode == want.mode and got.ok
        # The same span solved from the same encoding: only float32 rounding of the different
        # batch shapes differs.
        np.testing.assert_allclose(got.mean, want.mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.std, want.std, rtol=1e-5, atol=1e-5)
        for level in (0.1, 0.5):
            np.testing.assert_allclose(got.quantiles[level], want.quantiles[level],
                                       rtol=1e-5, atol=1e-5)
        assert got.stats.rtol == SolverConfig().rtol


def test_a_job_within_the_bound_is_one_piece_and_merges_to_itself() -> None:
    from service.predictor import merge_pieces, split_job

    job = _job([np.array([0.5, 3.0])])
    assert split_job(job, job.work) == [job]
    assert merge_pieces(job, [job], [["answer"]]) == ["answer"]  # type: ignore[list-item]


def test_a_long_request_answers_the_same_in_pieces_through_the_service(make_settings: Any) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.service.service_helpers import make_series, series_json

    series = make_series(3, seed=5)
    body = {"series": [series_json(s, np.linspace(-1.0, s.times[-1] + 3.0, n))
                       for s, n in zip(series, (7, 400, 3), strict=True)],
            "num_samples": 8, "seed": 1}
    answers = {}
    for chunk in (10**9, 8 * 120):  # whole; pieces of about 50 query times
        with TestClient(create_app(make_settings(batch_chunk_work=chunk))) as client:
            response = client.post("/v1/predict", json=body)
        assert response.status_code == 200, response.text
        answers[chunk] = response.json()["series"]
    for whole, pieces in zip(answers[10**9], answers[8 * 120], strict=True):
        assert pieces["query_times"] == whole["query_times"] and pieces["mode"] == whole["mode"]
        for key in ("mean", "std"):
            np.testing.assert_allclose(pieces[key], whole[key], rtol=1e-5, atol=1e-5)
