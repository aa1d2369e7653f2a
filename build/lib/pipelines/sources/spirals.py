"""``spirals``: the 2-D spirals of Chen et al. 2018 (Sec. 5.1).

Clockwise and counter-clockwise Archimedean spirals observed with noise at irregular times;
two channels ``x``, ``y``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from latent_ode.data import Series
from latent_ode.errors import ConfigError
from pipelines.longformat import SeriesTable
from pipelines.sources.base import GeneratedSource, options_from_signature, require_positive

__all__ = ["SOURCE", "SpiralsSource", "spirals"]


def spirals(
    n_series: int = 1000,
    *,
    n_times: int = 100,
    n_total: int = 1000,
    stop: float = 6 * np.pi,
    a: float = 0.0,
    b: float = 0.3,
    noise_std: float = 0.1,
    seed: int = 0,
) -> list[Series]:
    """Archimedean spirals, half clockwise and half counter-clockwise (Chen et al. 2018).

    Each series is ``n_times`` irregularly chosen points of a window of ``2 * n_times`` steps of a
    dense grid of ``n_total`` points on [0, stop], with Gaussian noise of ``noise_std``.

    Args:
        n_series: number of series B (even indices counter-clockwise, odd clockwise).
        n_times: time points T per series.
        n_total: points of the dense grid the times are drawn from.
        stop: end of the dense grid (the largest angle).
        a: radius at angle 0.
        b: growth of the radius per radian.
        noise_std: standard deviation of the observation noise.
        seed: makes the data set reproducible.

    Returns:
        ``n_series`` two-channel series (x, y): times (T,) on the dense grid's scale, starting at
        0; values (T, 2); ids ``spiral-0``, ...

    Raises:
        ConfigError: a size or ``stop`` that is not positive, or ``n_total < 4 * n_times``.
    """
    require_positive(n_series=n_series, n_times=n_times, n_total=n_total, stop=stop)
    if n_total < 4 * n_times:
        raise ConfigError(f"`n_total` must be at least 4 * n_times = {4 * n_times}; got {n_total}.")
    rng = np.random.default_rng(seed)
    ts = np.linspace(0.0, stop, n_total)
    # Counter-clockwise: radius grows with the angle; clockwise: the reference's mirror form.
    r_cc = a + b * ts
    cc = np.stack([r_cc * np.cos(ts) - 5.0, r_cc * np.sin(ts)], axis=1)
    zs_cw = stop + 1.0 - ts
    r_cw = a + b * 50.0 / zs_cw
    cw = np.stack([r_cw * np.cos(zs_cw) + 5.0, r_cw * np.sin(zs_cw)], axis=1)
    window = 2 * n_times
    out = []
    for i in range(n_series):
        curve = cw if i % 2 else cc
        start = rng.integers(0, n_total - window)
        idx = np.sort(rng.choice(np.arange(start, start + window), size=n_times, replace=False))
        values = curve[idx] + rng.normal(0.0, noise_std, size=(n_times, 2))
        out.append(Series(times=ts[idx] - ts[idx[0]], values=values, id=f"spiral-{i}"))
    return out


class SpiralsSource(GeneratedSource):
    """The registry's ``spirals`` entry: :func:`spirals` with its keyword arguments as options."""

    name: ClassVar[str] = "spirals"
    description: ClassVar[str] = (
        "2-D Archimedean spirals, clockwise and counter-clockwise (Chen et al. 2018), 2 channels"
    )
    options_model = options_from_signature(spirals, name="SpiralsOptions")
    channels: ClassVar[tuple[str, ...]] = ("x", "y")

    def generate(self, options: Any, *, n_series: int, seed: int, time_unit: str) -> SeriesTable:
        """The :func:`spirals` series as a table in ``time_unit``."""
        series = spirals(n_series, seed=seed, **options.model_dump())
        return SeriesTable(series=series, channels=list(self.channels), time_unit=time_unit)


SOURCE = SpiralsSource()
