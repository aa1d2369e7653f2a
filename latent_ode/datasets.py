"""Synthetic data sets with seeds.

- :func:`periodic`: the toy problem of Rubanova et al. 2019 (Sec. 4.1): sinusoids with a random
  frequency and offset, observed with noise at irregular times on [0, 5].
- :func:`spirals`: the 2-D spirals of Chen et al. 2018 (Sec. 5.1), clockwise and
  counter-clockwise, observed at irregular times.
"""

from __future__ import annotations

import numpy as np

from latent_ode.data import Series
from latent_ode.errors import ConfigError

__all__ = ["periodic", "spirals"]


def _check_positive(**kwargs: float) -> None:
    for name, value in kwargs.items():
        if not value > 0:
            raise ConfigError(f"`{name}` must be positive; got {value!r}.")


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
        n_series: number of series.
        n_times: time points per series.
        t_max: end of the time window.
        noise_weight: scale of the additive noise.
        shared_grid: one time grid for all series (the reference protocol) or one per series.
        seed: makes the data set reproducible.

    Returns:
        ``n_series`` one-channel series.
    """
    _check_positive(n_series=n_series, n_times=n_times, t_max=t_max)
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

    Returns:
        ``n_series`` two-channel series (x, y), times on the dense grid's scale.
    """
    _check_positive(n_series=n_series, n_times=n_times, n_total=n_total, stop=stop)
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
