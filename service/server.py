"""Run the service with uvicorn: ``run(host, port, settings)``.

``latent-ode serve --host --port`` (pipelines/cli.py) calls :func:`run`. For a process manager,
``uvicorn service.app:create_app --factory`` works too; settings then come from the environment.
"""

from __future__ import annotations

import logging

import uvicorn

from service.app import create_app
from service.config import Settings, get_settings

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
    logger.info("starting the latent-ode service on http://%s:%d", host, port)
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        timeout_graceful_shutdown=30,
    )
