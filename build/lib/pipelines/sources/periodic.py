"""``periodic``: the toy problem of Rubanova et al. 2019 (Sec. 4.1).

Sinusoids with a random frequency and offset, observed with noise at irregular times on
[0, t_max]; one channel ``x``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from latent_ode.data import Series
from latent_ode.errors import ConfigError
from pipelines.longformat import SeriesTable
from pipelines.sources.base import GeneratedSource, options_from_signature, require_positive

__all__ = ["SOURCE", "PeriodicSource", "periodic"]


def periodic(
    n_series: int = 1000,
    *,
    n_times: int = 100,
    t_max: float = 5.0,
    noise_weight: float = 0.01,
    shared_grid: bool = True,
    seed: int = 0,
) -> list[Series]:
    """Noisy sinusoids ``sin(2 pi f t) + c`` with f ~ U(0.4, 0.8) and c ~ N(1, 0.1²).

    Follows the reference generator: one irregular grid of ``n_times`` points (0 and sorted
    uniform draws on [0, t_max]) shared by every series, noise ``noise_weight * U(0, 1)`` added to
    every point but the first. With ``shared_grid=False`` each series draws its own times.

    Args:
        n_series: number of series B.
        n_times: time points T per series.
        t_max: end of the time window.
        noise_weight: scale of the additive noise.
        shared_grid: one time grid for all series (the reference protocol) or one per series.
        seed: makes the data set reproducible.

    Returns:
        ``n_series`` one-channel series: times (T,), values (T, 1), ids ``periodic-0``, ...

    Raises:
        ConfigError: a size or ``t_max`` that is not positive, or a negative ``noise_weight``.
    """
    require_positive(n_series=n_series, n_times=n_times, t_max=t_max)
    if noise_weight < 0:
        raise ConfigError(f"`noise_weight` must be non-negative; got {noise_weight!r}.")
    rng = np.random.default_rng(seed)

    def grid() -> np.ndarray:
        return np.concatenate([[0.0], np.sort(rng.uniform(0.0, t_max, n_times - 1))])

    shared = grid()
    out = []
    for i in range(n_series):
        times = shared if shared_grid else grid()
        freq = rng.uniform(0.4, 0.8)
        offset = 1.0 + rng.normal(0.0, 0.1)
        y = np.sin(2 * np.pi * freq * times) + offset
        y[1:] += noise_weight * rng.uniform(0.0, 1.0, n_times - 1)
        out.append(Series(times=times.copy(), values=y[:, None], id=f"periodic-{i}"))
    return out


class PeriodicSource(GeneratedSource):
    """The registry's ``periodic`` entry: :func:`periodic` with its keyword arguments as options."""

    name: ClassVar[str] = "periodic"
    description: ClassVar[str] = (
        "noisy sinusoids of random frequency and offset (Rubanova et al. 2019), 1 channel"
    )
    options_model = options_from_signature(periodic, name="PeriodicOptions")
    channels: ClassVar[tuple[str, ...]] = ("x",)

    def generate(self, options: Any, *, n_series: int, seed: int, time_unit: str) -> SeriesTable:
        """The :func:`periodic` series as a table in ``time_unit``."""
        series = periodic(n_series, seed=seed, **options.model_dump())
        return SeriesTable(series=series, channels=list(self.channels), time_unit=time_unit)


SOURCE = PeriodicSource()
