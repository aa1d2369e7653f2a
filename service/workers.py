"""Several worker processes behind one port: an admin reload reaches every one of them.

``latent-ode serve`` with ``LATENT_ODE_WORKERS=N`` (N > 1) runs N uvicorn worker processes on
one listening socket (:func:`service.server.run`); each has its own model store, batcher and
inference thread, so N cores compute at once. An admin reload arrives at one worker only (the
one whose connection it came on). That worker reloads, then announces the version it now serves
in a small file of the group's directory (``LATENT_ODE_WORKER_DIR``, made by ``run``); every
worker polls the file, reloads to the announced version and acknowledges, and the announcing
worker answers the admin request once all N have acknowledged (or after
``LATENT_ODE_WORKER_SYNC_TIMEOUT_S``, with a warning in the log). A worker started later (a
restart) follows the latest announcement too, so the group serves one version.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

__all__ = ["ReloadBroadcast"]

logger = logging.getLogger(__name__)

_ANNOUNCEMENT = "reload.json"
_POLL_S = 0.2


class ReloadBroadcast:
    """One worker's end of the group's reload announcements.

    Args:
        directory: shared by the group's workers.
        workers: how many workers the group has.
        sync_timeout_s: how long :meth:`announce` waits for the others.
    """

    def __init__(self, directory: Path, workers: int, sync_timeout_s: float = 120.0) -> None:
        self.directory = directory
        self.workers = workers
        self.sync_timeout_s = sync_timeout_s
        self.seen = 0  # the last generation this worker has acted on
        self.pid = os.getpid()

    # ---------------------------------------------------------------------------------- files
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.directory / "reload.lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write(self, name: str, data: dict[str, Any]) -> None:
        tmp = self.directory / f".{name}.{self.pid}.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.directory / name)  # atomic: a reader sees the old or the new

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            data = json.loads((self.directory / name).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def latest(self) -> dict[str, Any] | None:
        """The latest announcement (``generation``, ``version``, ``origin``), or None."""
        return self._read(_ANNOUNCEMENT)

    def acknowledge(self, generation: int, version: str, error: str | None = None) -> None:
        """Record that this worker acted on ``generation`` (serving ``version``, or failed)."""
        self.seen = max(self.seen, generation)
        self._write(f"ack-{self.pid}.json",
                    {"generation": generation, "version": version, "error": error})

    def acknowledged(self, generation: int) -> list[dict[str, Any]]:
        """The acknowledgements of ``generation`` (or later) so far, one per worker."""
        acks = []
        for path in self.directory.glob("ack-*.json"):
            data = self._read(path.name)
            if data is not None and int(data.get("generation", 0)) >= generation:
                acks.append(data)
        return acks

    # ----------------------------------------------------------------------------- announcing
    async def announce(self, version: str) -> int:
        """Tell the other workers to serve ``version`` (this one already does) and wait until
        every worker has acknowledged or the timeout passed; returns how many acknowledged."""

        def write() -> int:
            with self._locked():
                previous = self.latest()
                generation = int(previous["generation"]) + 1 if previous else 1
                self._write(_ANNOUNCEMENT, {"generation": generation, "version": version,
                                            "origin": self.pid})
            self.acknowledge(generation, version)
            return generation

        generation = await anyio.to_thread.run_sync(write)
        deadline = time.monotonic() + self.sync_timeout_s
        while True:
            acks = await anyio.to_thread.run_sync(self.acknowledged, generation)
            if len(acks) >= self.workers:
                failed = [a for a in acks if a.get("error")]
                if failed:
                    logger.warning("reload to version %s failed in %d worker(s): %s", version,
                                   len(failed), failed[0]["error"])
                return len(acks) - len(failed)
            if time.monotonic() >= deadline:
                logger.warning("reload to version %s: %d of %d workers acknowledged within "
                               "%.0f s", version, len(acks), self.workers, self.sync_timeout_s)
                return len(acks)
            await asyncio.sleep(_POLL_S / 2)

    # ------------------------------------------------------------------------------ following
    async def follow(self, state: Any) -> None:
        """Forever: act on announcements of the other workers (a background task).

        Args:
            state: the worker's :class:`~service.state.ServiceState`.
        """
        while True:
            try:
                await self._follow_once(state)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - logged; the next announcement is tried again
                logger.exception("could not follow the workers' reload announcement")
            await asyncio.sleep(_POLL_S)

    async def _follow_once(self, state: Any) -> None:
        news = await anyio.to_thread.run_sync(self.latest)
        if news is None or int(news["generation"]) <= self.seen:
            return
        generation, version = int(news["generation"]), str(news["version"])
        async with state.reload_lock:
            current = state.store.current
            if current is not None and current.version == version and current.source == "registry":
                self.acknowledge(generation, version)
                return
            try:
                model, _ = await anyio.to_thread.run_sync(state.store.reload, version)
            except Exception as exc:  # noqa: BLE001 - acknowledged with the reason
                state.metrics.reloads.labels(outcome="failed").inc()
                self.acknowledge(generation, version, error=str(exc))
                logger.warning("could not follow the reload to version %s: %s", version, exc)
                return
        state.metrics.reloads.labels(outcome="ok").inc()
        state.metrics.set_model(model.name, model.version, model.source)
        self.acknowledge(generation, model.version)
        logger.info("worker %d follows the reload: now serving %s version %s", self.pid,
                    model.name, model.version)
