"""The predictive noise per channel and regime, fitted on validation residuals after training."""

from __future__ import annotations

import numpy as np
import torch

from latent_ode.config import TrainConfig
from latent_ode.data import Observations
from latent_ode.forecaster import BACKCAST, EXTRAPOLATION, INTERPOLATION, Forecaster, window_position
from latent_ode.tasks import TASKS, seen_in_context, task_batches

__all__ = ["calibrate_noise"]

# Fewer held-out validation points than this in a regime and channel: too few to estimate a
# variance from; the regime takes the pooled value.
_MIN_CALIBRATION_POINTS = 20

# Offsets the calibration's context draws from the training seed.
_SEED_OFFSET = 104729


@torch.no_grad()
def calibrate_noise(forecaster: Forecaster, val: Observations, config: TrainConfig,
                    *, num_samples: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel predictive noise std from validation residuals (normalised scale), before,
    inside and after each series' observed window.

    The targets are the held-out points of both tasks (those the encoder did not see), each
    counted where it lies against its context (:func:`~latent_ode.forecaster.window_position`).
    In each regime the predictive variance should match the mean squared residual of the
    predictive mean: noise² = mean(residual²) - mean(latent variance), floored at the model's
    ``obs_std``. The regimes differ (docs/library.md, Uncertainty): on the periodic demo one
    noise for all covered 0.84 of the held-out interpolation points and 0.98 of the forecast ones
    where 0.90 was asked.

    A channel with fewer than ``_MIN_CALIBRATION_POINTS`` held-out points in a regime (a
    backcast often has few: only interpolation contexts that miss a series' first points make
    them) takes the value of all regimes pooled; one with no held-out point at all keeps
    ``obs_std``.

    Args:
        forecaster: the trained model (in eval mode).
        val: the validation split (normalised), N series, D channels.
        config: ``batch_size``, the tasks' settings and ``seed``.
        num_samples: S latent samples per series.

    Returns:
        (inside the window, after it, before it), each (D,): ``Forecaster.noise_std``,
        ``extrap_noise_std`` and ``backcast_noise_std``.

    Raises:
        SolverError: the latent ODE solve failed on the validation split.
    """
    gen = torch.Generator().manual_seed(config.seed + _SEED_OFFSET)
    d = val.num_channels
    # Per regime (BACKCAST, INTERPOLATION, EXTRAPOLATION) and channel: squared residuals,
    # latent variance, counts.
    sq = torch.zeros(3, d, dtype=torch.float64)
    var = torch.zeros(3, d, dtype=torch.float64)
    count = torch.zeros(3, d, dtype=torch.float64)
    for item in task_batches(val, TASKS, batch_size=config.batch_size,
                             interp_fraction=config.interp_fraction,
                             extrap_split=config.extrap_split, generator=gen):
        context, target = item.context, item.target
        samples, _ = forecaster.sample_normalised(context, target.times,
                                                  num_samples=num_samples, seed=config.seed)
        heldout = target.mask & ~seen_in_context(context, target)
        position = window_position(target.times, context.first_time,
                                   context.last_time)[..., None]
        resid = (samples.mean(0) - target.values) ** 2
        spread = samples.var(0, unbiased=False)
        for k in range(3):
            m = heldout & (position == k)
            sq[k] += (resid * m).sum((0, 1)).double().cpu()
            var[k] += (spread * m).sum((0, 1)).double().cpu()
            count[k] += m.sum((0, 1)).double().cpu()
    floor = forecaster.model.config.obs_std

    def noise(sq: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(((sq - var) / count.clamp_min(1.0)).clamp_min(floor**2))

    pooled = torch.where(count.sum(0) > 0, noise(sq.sum(0), var.sum(0), count.sum(0)),
                         torch.full((d,), floor, dtype=torch.float64))
    each = [torch.where(count[k] >= _MIN_CALIBRATION_POINTS, noise(sq[k], var[k], count[k]),
                        pooled).numpy() for k in range(3)]
    return each[INTERPOLATION], each[EXTRAPOLATION], each[BACKCAST]
