"""Micro-batching with fair scheduling: concurrent requests share ``Forecaster.predict`` calls,
and no request or client can hold the inference worker for long while others wait.

Each submitted job is split into *pieces* of bounded work (``split``, e.g.
:func:`service.predictor.split_job`: a few series, or a slice of one long series' query times),
so the worker is never busy for more than one piece of any request. Pieces wait in a two-level
weighted fair queue: clients (the API key or peer address the route names) take turns by the
work they have been served, and within a client its requests take turns the same way
(self-clocked fair queueing, Golestani 1994: the next piece is the one with the least finish tag,
work served plus its own work; a client or request that arrives starts at the finish tag of the
piece last handed out, so idle time earns no credit and a request waiting for its turn is not
overtaken for ever by newcomers). A batch takes at most one piece of each request: a small request
that arrives while a large one is being answered waits behind at most one piece of it.

The first piece of a batch waits at most ``max_wait_s`` for company; the batch closes early
when it holds ``max_series`` series or ``max_work`` units of work. Pieces are batched only with
pieces of the same :attr:`service.predictor.Job.key` (same model object, sample count, seed and
solver settings), because those must be equal within one predict call. Inference runs in a single
worker thread, so while one batch computes the next one fills up: throughput grows with
concurrency. ``Forecaster.predict`` answers every series independently of the rest of the batch,
so batching does not change answers; when all pieces of a job are answered, ``merge`` puts its
answer together.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from service.errors import ModelNotReadyError

__all__ = ["MicroBatcher", "RunJobs"]

logger = logging.getLogger(__name__)


class _Batchable(Protocol):
    """What the batcher reads of a job or piece: its grouping key and its series."""

    @property
    def key(self) -> Hashable: ...

    @property
    def series(self) -> Sequence[Any]: ...


J = TypeVar("J", bound=_Batchable)

#: Answers a list of pieces sharing a key with one predict call per key: per piece, its answer
#: (a list, one entry per series) or the exception to raise for its request.
RunJobs = Callable[[Sequence[Any]], list[Any]]


def _whole(job: J) -> list[J]:
    return [job]


def _only(job: Any, pieces: Sequence[Any], answers: Sequence[Any]) -> Any:
    (answer,) = answers
    return answer


def _series_count(piece: Any) -> int:
    return len(piece.series)


@dataclass(eq=False)
class _Request(Generic[J]):
    """One submitted job: its pieces still to run, the answers of those that ran."""

    job: J
    client: _Client
    future: asyncio.Future[Any]
    pieces: list[J]
    seq: int
    next_piece: int = 0
    answers: list[Any] = field(default_factory=list)
    outstanding: int = 0
    served: float = 0.0  # virtual time: work served to it, from the level it entered at

    @property
    def head(self) -> J:
        return self.pieces[self.next_piece]

    @property
    def waiting(self) -> bool:
        return self.next_piece < len(self.pieces) and not self.future.done()


@dataclass(eq=False)
class _Client:
    """A client's active requests and the work served to it (virtual time)."""

    name: str
    seq: int
    served: float = 0.0
    clock: float = 0.0  # its requests' virtual time: where a new request of it starts
    requests: list[_Request[Any]] = field(default_factory=list)


class MicroBatcher(Generic[J]):
    """Collects jobs from concurrent requests, splits them into pieces and runs the pieces in
    fair batches.

    Args:
        run: the blocking function that answers a group of pieces sharing a key; it runs in one
            worker thread owned by the batcher (started by :meth:`start`), so batches queue
            behind each other and the event loop never blocks.
        enabled: when False every job runs on its own, whole (same executor), for comparison.
        max_series: close a batch once it holds this many series.
        max_wait_s: longest time the first piece of a batch waits for others.
        max_work: close a batch once its pieces' work reaches this (``work``); None: no bound.
        split: a job's pieces, each of bounded work (default: the job itself).
        merge: a job's answer from its pieces' answers, in the pieces' order (default: the one
            piece's answer).
        work: a piece's work in the units of ``max_work`` and of the fair queue (default: its
            number of series).
    """

    def __init__(
        self,
        run: RunJobs,
        *,
        enabled: bool,
        max_series: int,
        max_wait_s: float,
        max_work: float | None = None,
        split: Callable[[J], Sequence[J]] = _whole,
        merge: Callable[[J, Sequence[J], Sequence[Any]], Any] = _only,
        work: Callable[[J], float] = _series_count,
    ) -> None:
        self._run = run
        self._executor: ThreadPoolExecutor | None = None
        self.enabled = enabled
        self.max_series = max_series
        self.max_wait_s = max_wait_s
        self.max_work = max_work
        self._split = split
        self._merge = merge
        self._work = work
        self._clients: dict[str, _Client] = {}
        self._clock = 0.0  # the clients' virtual time: where a new client starts
        self._seq = itertools.count()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the inference thread and, when batching is enabled, the collector task."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="latent-ode-inference"
            )
        if self.enabled and self._task is None:
            self._arrived = asyncio.Event()
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
        for client in self._clients.values():
            for request in client.requests:
                if not request.future.done():
                    request.future.set_exception(
                        ModelNotReadyError("the service is shutting down; retry"))
        self._clients.clear()
        self._arrived = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def submit(self, job: J, *, client: str = "") -> Any:
        """Answer one request's job (batched with others when enabled).

        Args:
            job: the request's work.
            client: who sent it (API key or peer address): clients take turns.

        Raises:
            whatever :data:`RunJobs` returned for a piece of this job (e.g. SolverBudgetError).
        """
        loop = asyncio.get_running_loop()
        if self._executor is None:
            raise ModelNotReadyError("the inference worker is not running; retry shortly")
        if not self.enabled or self._arrived is None:
            (result,) = await loop.run_in_executor(self._executor, self._run, [job])
            if isinstance(result, Exception):
                raise result
            return result
        pieces = list(self._split(job))
        owner = self._clients.get(client)
        if owner is None:
            # A client that arrives starts at the virtual time (self-clocked fair queueing): it
            # gets its share from now on, but no credit for the time it was idle.
            owner = self._clients[client] = _Client(client, next(self._seq), served=self._clock,
                                                    clock=self._clock)
        request: _Request[J] = _Request(
            job=job, client=owner, future=loop.create_future(), pieces=pieces,
            seq=next(self._seq), served=owner.clock,
        )
        owner.requests.append(request)
        self._arrived.set()
        return await request.future

    # ---------------------------------------------------------------------------- scheduling
    def _finish_tag(self, request: _Request[Any]) -> tuple[float, int]:
        return request.served + self._work(request.head), request.seq

    def _pick(self) -> _Request[Any] | None:
        """The request whose next piece comes first in the fair order (any key): the client
        with the least work served after that piece, then its request likewise."""
        best: tuple[tuple[float, int], tuple[float, int], _Request[Any]] | None = None
        for client in self._clients.values():
            for request in client.requests:
                if not request.waiting:
                    continue
                tag = (client.served + self._work(request.head), client.seq)
                candidate = (tag, self._finish_tag(request), request)
                if best is None or candidate[:2] < best[:2]:
                    best = candidate
        return None if best is None else best[2]

    def _take(self, request: _Request[Any]) -> tuple[_Request[Any], int, Any]:
        """Hand out the request's next piece and charge its work to the request and client."""
        index = request.next_piece
        piece = request.pieces[index]
        request.next_piece += 1
        request.outstanding += 1
        work = self._work(piece)
        request.served += work
        request.client.served += work
        # The virtual times advance to the finish tags just handed out, so that newcomers start
        # level with what is being served now, not with a request still waiting for its turn
        # (which would then wait for as long as newcomers keep arriving).
        self._clock = max(self._clock, request.client.served)
        request.client.clock = max(request.client.clock, request.served)
        return request, index, piece

    def _forget_idle(self) -> None:
        """Drop requests with nothing left to hand out, and clients without requests."""
        for name, client in list(self._clients.items()):
            client.requests = [r for r in client.requests if r.waiting]
            if not client.requests:
                del self._clients[name]

    def _ordered(self, key: Hashable, taken: set[int]) -> list[_Request[Any]]:
        """The requests that could join a batch of ``key``, in the fair order (computed once
        per pass: one sort, not a scan per piece taken)."""
        candidates = [
            (client.served + self._work(r.head), client.seq, *self._finish_tag(r), r)
            for client in self._clients.values() for r in client.requests
            if r.waiting and id(r) not in taken and r.head.key == key
        ]
        candidates.sort(key=lambda c: c[:4])
        return [c[4] for c in candidates]

    def _full(self, size: int, work: float) -> bool:
        return size >= self.max_series or (self.max_work is not None and work >= self.max_work)

    async def _collect(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            self._forget_idle()
            first = self._pick()
            if first is None:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            batch = [self._take(first)]
            key = batch[0][2].key
            taken = {id(first)}
            size = len(batch[0][2].series)
            work = self._work(batch[0][2])
            deadline = loop.time() + self.max_wait_s
            while not self._full(size, work):
                self._arrived.clear()
                for request in self._ordered(key, taken):
                    piece = request.head
                    if size + len(piece.series) > self.max_series or (
                            self.max_work is not None
                            and work + self._work(piece) > self.max_work):
                        continue
                    taken.add(id(request))
                    item = self._take(request)
                    batch.append(item)
                    size += len(piece.series)
                    work += self._work(piece)
                    if self._full(size, work):
                        break
                timeout = deadline - loop.time()
                if self._full(size, work) or timeout <= 0:
                    break
                try:  # wait for company: pieces that arrive before the deadline
                    await asyncio.wait_for(self._arrived.wait(), timeout)
                except TimeoutError:
                    break
            await self._dispatch(batch)

    async def _dispatch(self, batch: list[tuple[_Request[Any], int, Any]]) -> None:
        live = [(r, i, p) for r, i, p in batch if not r.future.done()]  # a client may have left
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        if live:
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self._executor, self._run, [p for _, _, p in live])
            except Exception as exc:  # noqa: BLE001 - handed to each request, logged there as 500
                results = [exc] * len(live)
            logger.debug("batch of %d pieces answered in %.1f ms", len(live),
                         1000 * (time.perf_counter() - started))
        else:
            results = []
        for (request, index, _), result in zip(live, results, strict=True):
            request.outstanding -= 1
            if request.future.done():
                continue
            if isinstance(result, Exception):
                request.future.set_exception(result)  # its other pieces are dropped
                continue
            request.answers.append((index, result))
            if request.outstanding == 0 and request.next_piece == len(request.pieces):
                self._complete(request)

    def _complete(self, request: _Request[Any]) -> None:
        answers = [a for _, a in sorted(request.answers, key=lambda pair: pair[0])]
        try:
            request.future.set_result(self._merge(request.job, request.pieces, answers))
        except Exception as exc:  # noqa: BLE001 - a merge bug is that request's 500, not the loop's
            request.future.set_exception(exc)
