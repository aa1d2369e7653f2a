"""The registry of data sources: every ``[data] dataset`` name, CLI choice and ingest path.

The config's ``dataset`` values, ``latent-ode data generate --dataset`` (its choices and help) and
the ingest step all read this mapping; none keeps its own list of names.

Adding a source is one file plus one entry:

1. ``pipelines/sources/NAME.py`` with a :class:`~pipelines.sources.base.Source` subclass
   (``name``, ``description``, ``kind``, ``options_model`` and ``load``; a generator subclasses
   :class:`~pipelines.sources.base.GeneratedSource` and gets its options model from its
   signature with :func:`~pipelines.sources.base.options_from_signature`) and an instance
   ``SOURCE``;
2. its ``SOURCE`` in ``_ALL`` below.

The contract test ``tests/pipelines/test_sources.py`` then checks it with every other source.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from latent_ode.errors import ConfigError
from pipelines.sources import hopper, periodic, physionet, spirals
from pipelines.sources.base import Source

__all__ = ["SOURCES", "get_source", "source_names"]

_ALL: tuple[Source, ...] = (periodic.SOURCE, spirals.SOURCE, hopper.SOURCE, physionet.SOURCE)

SOURCES: Mapping[str, Source] = MappingProxyType({s.name: s for s in _ALL})
"""Registered sources by name, in registration order (read-only)."""


def source_names() -> tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(SOURCES)


def get_source(name: str) -> Source:
    """The source registered as ``name``.

    Raises:
        ConfigError: no source has that name; the message lists the registered ones.
    """
    try:
        return SOURCES[name]
    except KeyError:
        raise ConfigError(
            f"unknown data source {name!r}; choose one of {', '.join(SOURCES)}."
        ) from None
