"""Data sources of the pipelines, synthetic and real alike, one module per source.

- ``periodic``, ``spirals``: synthetic sets of the Latent ODE and Neural ODE papers;
- ``hopper``: MuJoCo Hopper trajectories (needs the ``hopper`` extra);
- ``physionet``: PhysioNet/CinC Challenge 2012 ICU stays read from the challenge archives.

:mod:`pipelines.sources.registry` maps each name to its source (and says how to add one);
:mod:`pipelines.sources.base` defines what a source is. A user's own long-format file is not a
source: the config names it with ``[data] path`` and :func:`pipelines.longformat.read_long`
reads it.
"""

from pipelines.sources.base import DataSource, Source, SourceData, SourceOptions
from pipelines.sources.registry import SOURCES, get_source, source_names

__all__ = [
    "SOURCES",
    "DataSource",
    "Source",
    "SourceData",
    "SourceOptions",
    "get_source",
    "source_names",
]
