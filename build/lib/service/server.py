"""Run the service with uvicorn: ``run(host, port, settings)``.

``latent-ode serve --host --port`` (pipelines/cli.py) calls :func:`run`. For a process manager,
``uvicorn service.app:create_app --factory`` works too; settings then come from the environment.
"""

from __future__ import annotations

import logging
import resource

import uvicorn

from service.app import create_app
from service.config import Settings, get_settings
from service.middleware import RateLimitedLogFilter
from service.redaction import RedactingFilter

__all__ = ["run"]

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
        "starting the latent-ode service on http://%s:%d (at most %d connections)", host, port,
        limit,
    )
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        access_log=False,  # service.access logs one JSON line per request, with its id
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        limit_concurrency=limit,
        backlog=settings.backlog,
    )


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
