"""The FastAPI application factory.

``create_app(settings)`` wires settings, the model store, the micro-batcher, metrics, error
handlers and routes. The model is loaded once, in the lifespan, in a worker thread; if neither the
registry nor the disk cache can provide one, the app still starts: ``/readyz`` and
``/v1/predict`` answer 503 with the reason until an admin reload succeeds. After a start from the
disk cache (or with no model because the registry failed), a background task retries the registry
with backoff and swaps in what the configured URI resolves to once the registry answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI

from latent_ode import Forecast, Forecaster, SolverConfig
from service.batching import MicroBatcher, RunJobs
from service.config import Settings, get_settings
from service.content import PredictContentMiddleware
from service.errors import BodySizeLimitMiddleware, install_error_handlers
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.middleware import ApiKeyMiddleware, BodyDeadlineMiddleware, RequestContextMiddleware
from service.model_store import ModelStore, RegistryHealth
from service.openapi import docs_router, install_openapi
from service.predictor import Job, merge_pieces, run_jobs, served_solver, split_job
from service.routes import BODY_COMPONENTS, router
from service.state import ServiceState
from service.ui import install_ui
from service.workers import ReloadBroadcast

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def _solver_for(forecaster: Forecaster, settings: Settings) -> SolverConfig:
    """The solver settings of a job that names none (see :func:`served_solver`)."""
    return served_solver(forecaster.model.config.solver, rtol=settings.solver_rtol,
                         atol=settings.solver_atol, max_steps=settings.solver_max_steps)


def _runner(state_metrics: ServiceMetrics, settings: Settings) -> RunJobs:
    """The blocking batch function the batcher calls: one predict per group, with metrics."""

    def run(jobs: Sequence[Job]) -> list[list[Forecast] | Exception]:
        forecaster = jobs[0].model.forecaster
        started = time.perf_counter()
        results = run_jobs(forecaster, jobs, solver=_solver_for(forecaster, settings))
        state_metrics.predict_seconds.observe(time.perf_counter() - started)
        state_metrics.batch_requests.observe(len(jobs))
        state_metrics.batch_series.observe(sum(len(job.series) for job in jobs))
        nfe = [r[0].stats.nfe for r in results if isinstance(r, list) and r]
        if nfe:
            state_metrics.solver_nfe.observe(max(nfe))
        failed = sum(len(getattr(r, "series", ())) for r in results if isinstance(r, Exception))
        if failed:
            state_metrics.solver_failures.inc(failed)
        return results

    return run


async def retry_registry(state: ServiceState) -> None:
    """Until the configured model comes from the registry, retry it with exponential backoff
    (``LATENT_ODE_REGISTRY_RETRY_INITIAL_S`` doubling up to ``..._MAX_S``), then swap it in.

    Meanwhile the cached model (``source: cache``) or the 503 keeps answering.
    """
    settings = state.settings
    delay = settings.registry_retry_initial_s
    while True:
        current = state.store.current
        if current is not None and current.source == "registry":
            return  # an admin reload got there first
        await asyncio.sleep(delay)
        try:
            async with state.reload_lock:
                model, _ = await anyio.to_thread.run_sync(state.store.reload)
        except Exception as exc:  # noqa: BLE001 - retried; the reason is logged and in /readyz
            delay = min(2 * delay, settings.registry_retry_max_s)
            logger.warning("the registry is still unusable (%s); next try in %.0f s", exc, delay)
            continue
        state.metrics.set_model(model.name, model.version, model.source)
        logger.info(
            "the registry is back: now serving %s version %s from the registry",
            model.name, model.version,
        )
        return


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service.

    Args:
        settings: defaults to :func:`service.config.get_settings` (the environment).
    """
    settings = settings or get_settings()
    metrics = ServiceMetrics()
    batcher = MicroBatcher(
        _runner(metrics, settings),
        enabled=settings.batching_enabled,
        max_series=settings.batch_max_series,
        max_wait_s=settings.batch_max_wait_ms / 1000.0,
        max_work=settings.batch_max_work,
        split=lambda job: split_job(job, settings.batch_chunk_work),
        merge=merge_pieces,
        work=lambda job: job.work,
    )
    store = ModelStore(settings)
    state = ServiceState(
        settings=settings,
        store=store,
        batcher=batcher,
        metrics=metrics,
        limits=settings,  # the settings have the shape of Limits: no copy
        reload_lock=asyncio.Lock(),
        registry=RegistryHealth(store, settings.registry_check_interval_s),
    )
    if settings.workers > 1 and settings.worker_dir is not None:
        state.peers = ReloadBroadcast(settings.worker_dir, settings.workers,
                                      settings.worker_sync_timeout_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.torch_threads > 0:
            import torch

            torch.set_num_threads(settings.torch_threads)
        model = await anyio.to_thread.run_sync(state.store.load_at_startup)
        if model is not None:
            metrics.set_model(model.name, model.version, model.source)
            logger.info(
                "serving %s version %s from the %s on %s",
                model.name, model.version, model.source, model.device,
            )
        await batcher.start()
        # What start-up built (torch, MLflow, pydantic, the model) lives as long as the
        # process: out of the cyclic collector's reach, a large answer's many small lists no
        # longer trigger full collections over it (a 10,000-query answer took 0.28 s to build
        # before, 0.03 s after; docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        tasks = []
        if model is None or model.source == "cache":
            tasks.append(asyncio.create_task(retry_registry(state), name="registry-retry"))
        if state.peers is not None:
            tasks.append(asyncio.create_task(state.peers.follow(state), name="reload-follow"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await batcher.stop()
            metrics.mark_process_dead()
            gc.unfreeze()  # an app built in a longer-lived process (tests) leaves nothing pinned

    app = FastAPI(
        title="latent-ode",
        summary="Forecasts for irregularly sampled, gappy multivariate time series (Latent ODE).",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # service.openapi serves /docs and /redoc on self-hosted assets
        redoc_url=None,
    )
    app.state.service = state
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document plus the schemas of bodies the routes parse themselves."""
        if app.openapi_schema is None:
            document = default_openapi()
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in BODY_COMPONENTS.items():
                schemas.setdefault(name, schema)
        return app.openapi_schema or document

    app.openapi = openapi  # type: ignore[method-assign]
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(docs_router)
    install_ui(app)
    install_openapi(app, state)
    # Added innermost first: content negotiation, body size, body deadline, API key, request
    # context, metrics (outermost).
    app.add_middleware(PredictContentMiddleware)  # inside the size limit: it reads the body
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(BodyDeadlineMiddleware, timeout_s=settings.body_timeout_s)
    api_key = settings.api_key.get_secret_value() if settings.api_key is not None else None
    app.add_middleware(ApiKeyMiddleware, key=api_key)
    app.add_middleware(RequestContextMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
