"""Data sources of the pipelines: real and generated data sets as :class:`SeriesTable`.

- :func:`read_physionet`: PhysioNet/CinC Challenge 2012 ICU records from the challenge archives.
- :func:`generate_hopper`: MuJoCo Hopper trajectories (needs the ``hopper`` extra).
"""

from pipelines.sources.hopper import generate_hopper
from pipelines.sources.physionet import read_physionet

__all__ = ["generate_hopper", "read_physionet"]
