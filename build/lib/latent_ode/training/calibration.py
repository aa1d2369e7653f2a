"""The predictive noise per channel and regime, fitted on validation residuals after training."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from latent_ode.baselines import channel_baselines
from latent_ode.config import TrainConfig
from latent_ode.data import Observations
from latent_ode.forecaster import (
    BACKCAST,
    EXTRAPOLATION,
    INTERPOLATION,
    Forecaster,
    window_position,
)
from latent_ode.tasks import TASKS, seen_in_context, task_batches

__all__ = ["NoiseCalibration", "calibrate_noise"]

# Fewer held-out validation points than this in a regime and channel: too few to estimate a
# variance from; the regime takes the pooled value.
_MIN_CALIBRATION_POINTS = 20

# Offsets the calibration's context draws from the training seed.
_SEED_OFFSET = 104729


@dataclass(frozen=True)
class NoiseCalibration:
    """The predictive noise :func:`calibrate_noise` fits, in :class:`Forecaster`'s terms.

    Attributes:
        inside, after, before: (D,) noise std at gap 0 inside, after and before the window
            (``noise_std``, ``extrap_noise_std``, ``backcast_noise_std``).
        growth: (3, D) extra variance per unit of gap, regimes in :func:`window_position`'s
            order (``noise_growth``).
    """

    inside: np.ndarray
    after: np.ndarray
    before: np.ndarray
    growth: np.ndarray

    def apply(self, forecaster: Forecaster) -> None:
        """Set the forecaster's noise to this calibration."""
        forecaster.noise_std, forecaster.extrap_noise_std = self.inside, self.after
        forecaster.backcast_noise_std, forecaster.noise_growth = self.before, self.growth


def _fit_growth(r: torch.Tensor, g: torch.Tensor, floor: float) -> tuple[float, float]:
    """Least squares ``r ≈ a + b g`` with ``a >= floor**2`` and ``b >= 0`` (r: residual
    variances, g: gaps, both (N,)); returns (a, b)."""
    gm, rm = g.mean(), r.mean()
    var_g = ((g - gm) ** 2).mean()
    b = float(((g - gm) * (r - rm)).mean() / var_g) if var_g > 0 else 0.0
    if b <= 0:
        return max(float(rm), floor**2), 0.0
    a = float(rm) - b * float(gm)
    if a < floor**2:  # refit the slope through the floor
        a = floor**2
        b = max(0.0, float((g * (r - a)).sum() / (g * g).sum()))
    return a, b


@torch.no_grad()
def calibrate_noise(forecaster: Forecaster, val: Observations, config: TrainConfig,
                    *, num_samples: int = 8) -> NoiseCalibration:
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

    Within a regime the residual variance is fitted as a line in the gap to the channel's
    nearest observation (:meth:`~latent_ode.baselines.ChannelBaselines.data_gap`), intercept at least
    ``obs_std**2`` and slope at least 0: a forecast 24 hours out errs more than one an hour out,
    and its interval should say so (on PhysioNet the validation MSE grows from 0.0041 in the
    first fifth of horizons to 0.0052 in the last).

    Returns:
        :class:`NoiseCalibration`: the noise at gap 0 inside the window, after it and before it,
        each (D,), and the growth per unit of gap, (3, D).

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
    # Per regime and channel: the held-out points' residual variances and gaps, for the slope.
    points: list[list[list[tuple[torch.Tensor, torch.Tensor]]]] = [[[] for _ in range(d)]
                                                                     for _ in range(3)]
    for item in task_batches(val, TASKS, batch_size=config.batch_size,
                             interp_fraction=config.interp_fraction,
                             extrap_split=config.extrap_split, generator=gen):
        context, target = item.context, item.target
        base = channel_baselines(context, target.times)  # once: the anchor and the gaps
        samples, _ = forecaster.sample_normalised(context, target.times,
                                                  num_samples=num_samples, seed=config.seed,
                                                  baselines=base)
        heldout = target.mask & ~seen_in_context(context, target)
        position = window_position(target.times, context.first_time,
                                   context.last_time)[..., None]
        resid = (samples.mean(0) - target.values) ** 2
        spread = samples.var(0, unbiased=False)
        # On the host once per batch: the per-channel selections below would each sync a device.
        excess, gap = (resid - spread).double().cpu(), base.data_gap().double().cpu()
        for k in range(3):
            m = heldout & (position == k)
            sq[k] += (resid * m).sum((0, 1)).double().cpu()
            var[k] += (spread * m).sum((0, 1)).double().cpu()
            count[k] += m.sum((0, 1)).double().cpu()
            m = m.cpu()
            for j in range(d):
                mj = m[..., j]
                if bool(mj.any()):
                    points[k][j].append((excess[..., j][mj], gap[..., j][mj]))
    floor = forecaster.model.config.obs_std

    def noise(sq: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(((sq - var) / count.clamp_min(1.0)).clamp_min(floor**2))

    pooled = torch.where(count.sum(0) > 0, noise(sq.sum(0), var.sum(0), count.sum(0)),
                         torch.full((d,), floor, dtype=torch.float64))
    each = [torch.where(count[k] >= _MIN_CALIBRATION_POINTS, noise(sq[k], var[k], count[k]),
                        pooled).numpy() for k in range(3)]
    growth = np.zeros((3, d))
    for k in range(3):
        for j in range(d):
            if count[k, j] < _MIN_CALIBRATION_POINTS:
                continue  # too few to fit a slope: the regime's (or pooled) constant
            r = torch.cat([p[0] for p in points[k][j]])
            g = torch.cat([p[1] for p in points[k][j]])
            a, b = _fit_growth(r, g, floor)
            each[k][j], growth[k, j] = np.sqrt(a), b
    return NoiseCalibration(inside=each[INTERPOLATION], after=each[EXTRAPOLATION],
                            before=each[BACKCAST], growth=growth)
