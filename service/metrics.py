"""Prometheus metrics of one app instance, in its own registry (so tests can build many apps).

Exposed at ``GET /metrics``: request counts and latencies by route and status, batch sizes,
solver function evaluations, the model served, reloads.

With several worker processes (``LATENT_ODE_WORKERS``), :func:`service.server.run` sets
``PROMETHEUS_MULTIPROC_DIR`` before the workers start: prometheus-client's multiprocess mode
then keeps each worker's values in files there, and ``/metrics``, whichever worker answers it,
adds up every worker's counters and histograms. ``latent_ode_model_info`` carries a ``pid``
label per live worker (its ``liveall`` mode), so it shows what each worker serves.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "KNOWN_METHODS", "MetricsMiddleware", "ServiceMetrics",
           "multiprocess_dir"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_NFE_BUCKETS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def multiprocess_dir() -> str | None:
    """prometheus-client's multiprocess directory when this process runs in that mode."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class ServiceMetrics:
    """The service's metric families, registered in :attr:`registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._model_labels: dict[str, str] | None = None
        self.requests = Counter(
            "latent_ode_http_requests", "HTTP requests answered.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "latent_ode_http_request_duration_seconds", "Time to answer an HTTP request.",
            ["method", "route", "status"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_series = Histogram(
            "latent_ode_batch_series", "Series per Forecaster.predict call.",
            buckets=_SIZE_BUCKETS, registry=self.registry,
        )
        self.batch_requests = Histogram(
            "latent_ode_batch_requests", "Requests sharing one Forecaster.predict call.",
            buckets=_SIZE_BUCKETS, registry=self.registry,
        )
        self.predict_seconds = Histogram(
            "latent_ode_predict_duration_seconds", "Time of one Forecaster.predict call.",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.solver_nfe = Histogram(
            "latent_ode_solver_nfe", "ODE right-hand-side evaluations per predict call.",
            buckets=_NFE_BUCKETS, registry=self.registry,
        )
        self.solver_failures = Counter(
            "latent_ode_solver_failures", "Series whose solve failed or exceeded its budget.",
            registry=self.registry,
        )
        self.model_info = Gauge(
            "latent_ode_model_info", "The model served (value 1).",
            ["name", "version", "source"], registry=self.registry,
            multiprocess_mode="liveall",  # one sample per live worker, labelled with its pid
        )
        self.reloads = Counter(
            "latent_ode_model_reloads", "Admin reloads by outcome.", ["outcome"],
            registry=self.registry,
        )

    def set_model(self, name: str, version: str, source: str) -> None:
        """Point ``latent_ode_model_info`` at the model now served."""
        if multiprocess_dir():
            # No clear() there: the files keep the last value written, and 0 says "no longer
            # served" (left out of /metrics by exposition()).
            if self._model_labels is not None:
                self.model_info.labels(**self._model_labels).set(0)
        else:
            self.model_info.clear()
        self._model_labels = {"name": name, "version": version, "source": source}
        self.model_info.labels(**self._model_labels).set(1)

    def exposition(self) -> bytes:
        """``/metrics``: this app's registry, or every worker's values added up in
        multiprocess mode (the samples of models no longer served, value 0, left out)."""
        if not multiprocess_dir():
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        lines = [line for line in generate_latest(registry).decode().splitlines(keepends=True)
                 if not (line.startswith("latent_ode_model_info{") and line.rstrip().endswith(" 0.0"))]
        return "".join(lines).encode()

    def mark_process_dead(self) -> None:
        """At a worker's exit: drop its live gauges from the multiprocess directory."""
        if multiprocess_dir():
            multiprocess.mark_process_dead(os.getpid())


#: Methods labelled by name; any other (a client may send any token) is labelled "other", so
#: that made-up methods cannot grow /metrics without bound.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Counts and times every HTTP request, labelled by route template (not the raw path; paths
    of no route share "unmatched") and by method (unknown methods share "other")."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            labels = {"method": method, "route": label, "status": str(status)}
            self.metrics.requests.labels(**labels).inc()
            self.metrics.latency.labels(**labels).observe(time.perf_counter() - started)
