"""What the routes need from the running service, and the dependency that hands it to them.

:func:`service.app.create_app` builds one :class:`ServiceState` and keeps it in
``app.state.service``; routes declare a parameter of type :data:`State` to receive it. Both the
app factory and the routes import this module, so neither imports the other's internals.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.batching import MicroBatcher
from service.config import Settings
from service.metrics import ServiceMetrics
from service.model_store import ModelStore, RegistryHealth
from service.predictor import Limits
from service.workers import ReloadBroadcast

__all__ = ["ServiceState", "State", "get_state"]


@dataclass
class ServiceState:
    """What the routes need, held in ``app.state.service``."""

    settings: Settings
    store: ModelStore
    batcher: MicroBatcher
    metrics: ServiceMetrics
    limits: Limits
    reload_lock: asyncio.Lock
    registry: RegistryHealth
    peers: ReloadBroadcast | None = None  # the other worker processes, when there are some


async def get_state(request: Request) -> ServiceState:
    """The service state of the app handling this request (async: a sync dependency would be
    run in a thread pool on every request).

    Args:
        request: the request being answered.

    Returns:
        The state :func:`service.app.create_app` stored on the app.
    """
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(get_state)]
"""A route parameter of this type receives the :class:`ServiceState`."""
