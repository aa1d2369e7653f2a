"""Run the service with uvicorn: ``run(host, port, settings)``.

``latent-ode serve --host --port`` (pipelines/cli.py) calls :func:`run`. For a process manager,
``uvicorn service.app:create_app --factory`` works too; settings then come from the environment.

With ``LATENT_ODE_WORKERS=N`` (N > 1), :func:`run` starts N uvicorn worker processes on the one
socket (uvicorn's supervisor restarts a worker that dies). Before they start it makes a
directory for the group: prometheus-client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``,
unless set already) and the reload announcements (:mod:`service.workers`); the workers read
their settings from the environment, into which :func:`run` writes the settings it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import shutil
import socket
import tempfile
from pathlib import Path

import uvicorn
from pydantic import SecretStr
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.app import create_app
from service.config import Settings, get_settings
from service.middleware import RateLimitedLogFilter
from service.redaction import RedactingFilter

__all__ = ["run", "settings_environment", "worker_app"]

_WORKER_HEALTHCHECK_S = 60

logger = logging.getLogger(__name__)


def run(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Serve the API until interrupted (blocking).

    Args:
        host: interface to bind (``0.0.0.0`` for every interface, e.g. in a container).
        port: TCP port.
        settings: defaults to the environment (``LATENT_ODE_*``).
    """
    settings = settings or get_settings()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    configure_logging()
    limit = settings.max_connections or default_max_connections()
    logger.info(
        "starting the latent-ode service on http://%s:%d (at most %d connections, %d worker%s)",
        host, port, limit, settings.workers, "s" if settings.workers > 1 else "",
    )
    options = {
        "host": host,
        "port": port,
        "log_level": "info",
        "access_log": False,  # service.access logs one JSON line per request, with its id
        "timeout_graceful_shutdown": settings.shutdown_grace_s,
        "limit_concurrency": limit,
        "backlog": settings.backlog,
        "http": NoDelayH11Protocol,
    }
    if settings.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return
    group = Path(tempfile.mkdtemp(prefix="latent-ode-workers-"))
    try:
        metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not metrics_dir:
            metrics_dir = str(group / "metrics")
            os.mkdir(metrics_dir)
        else:  # values left by an earlier run would be added to this one's
            for stale in Path(metrics_dir).glob("*.db"):
                stale.unlink()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        env = settings_environment(settings)
        for name in type(settings).model_fields:
            os.environ.pop(f"LATENT_ODE_{name.upper()}", None)  # unset ones stay unset
        os.environ.update(env)
        os.environ["LATENT_ODE_WORKER_DIR"] = str(group)
        # A worker that does not answer the supervisor's ping in time is killed and restarted:
        # uvicorn's 5 s default killed workers still importing torch on a busy machine, for
        # minutes on end (measured at load average 20-30).
        uvicorn.run("service.server:worker_app", factory=True, workers=settings.workers,
                    timeout_worker_healthcheck=_WORKER_HEALTHCHECK_S, **options)
    finally:
        shutil.rmtree(group, ignore_errors=True)


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with ``TCP_NODELAY`` set on every connection.

    With several workers, uvicorn's parent binds the socket (protocol number 0) and asyncio
    then does not set ``TCP_NODELAY`` on the connections it accepts: a response's header and
    body segments met the client's delayed ACK and every request took 40 ms longer (measured:
    one-client p50 108 ms against 66 ms inside the service). Set here, it holds for one worker
    and many alike.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)


def worker_app():  # noqa: ANN201 - uvicorn's factory; the type would import FastAPI here
    """The app of one worker process: settings from the environment :func:`run` prepared."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    configure_logging()
    return create_app(get_settings())


def settings_environment(settings: Settings) -> dict[str, str]:
    """``LATENT_ODE_*`` variables that make :func:`get_settings` in a worker process equal
    ``settings`` (fields left unset are not written)."""
    env = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str | int | float | Path):
            text = str(value)
        else:
            text = json.dumps(value)
        env[f"LATENT_ODE_{name.upper()}"] = text
    return env


#: File descriptors kept for everything but client connections (model files, the registry,
#: logs, torch's libraries).
_RESERVED_FDS = 128


def default_max_connections() -> int:
    """The open-file limit less a reserve: past it, uvicorn answers 503 instead of accept()
    failing with "Too many open files" (and normal requests timing out)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(soft - _RESERVED_FDS, 16)


def configure_logging() -> None:
    """JSON access lines as they are (no prefix), credentials redacted from every line, and at
    most one "out of system resource" line per 10 s from asyncio (it logs one per failed
    accept(), up to the backlog each second)."""
    access = logging.getLogger("service.access")
    if not access.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.propagate = False
        access.setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:  # credentials in any library's message
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    flood = logging.getLogger("asyncio")
    if not any(isinstance(f, RateLimitedLogFilter) for f in flood.filters):
        flood.addFilter(RateLimitedLogFilter("socket.accept() out of system resource", 10.0))
