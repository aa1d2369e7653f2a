"""Fitted on the validation split after training: the blend towards the baselines
(:mod:`latent_ode.blend`), then the predictive noise per channel and regime.

The order matters: the blend changes the predictive mean (and shrinks the samples' spread), so
the noise is fitted on the blended samples, after the blend (:func:`latent_ode.fit` does both,
in that order, when ``calibrate_blend`` and ``calibrate_noise`` are set).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from latent_ode.baselines import channel_baselines
from latent_ode.blend import BLEND_BINS, BaselineBlend, fit_weight
from latent_ode.config import TrainConfig
from latent_ode.coverage import NoiseScale
from latent_ode.data import Observations
from latent_ode.forecaster import (
    BACKCAST,
    EXTRAPOLATION,
    INTERPOLATION,
    Forecaster,
    window_position,
)
from latent_ode.tasks import TASKS, Task, seen_in_context, split_raw, task_batches, with_raw

__all__ = ["NoiseCalibration", "calibrate_blend", "calibrate_noise"]

# Fewer held-out validation points than this in a regime and channel: too few to estimate a
# variance from; the regime takes the pooled value.
_MIN_CALIBRATION_POINTS = 20

# Offsets the calibration's context draws from the training seed.
_SEED_OFFSET = 104729

# The noise scale (latent_ode/coverage.py): equal-count gap bins per regime, bounds on a factor
# (a bin whose points all sit inside the samples' spread would ask for 0), and the bisection
# steps of each point's least factor (2^-20 of the bracket).
COVERAGE_BINS = 10
# The noise scale draws the validation split's interpolation contexts this many times over at
# least (``passes``, up to _MAX_SCALE_PASSES): one draw of a small split (the demo's 100 series)
# moved a bin's coverage by +-0.03 on other draws of the same series.
_SCALE_SERIES = 800
_MAX_SCALE_PASSES = 8
_MIN_SCALE, _MAX_SCALE = 0.2, 5.0
_SCALE_BISECTIONS = 20

# Fewer held-out validation points than this in a regime and channel: the blend weight is not
# fitted there; the model keeps its answer (weight 1).
_MIN_BLEND_POINTS = 20
# Fewer than this in a gap bin: the bin takes its regime and channel's single weight.
_MIN_BIN_POINTS = 50


def _validation_pairs(val: Observations, raw: Observations | None, config: TrainConfig,
                      generator: torch.Generator
                      ) -> Iterator[tuple[Task, Observations, Observations, Observations,
                                          Observations]]:
    """Both tasks' (context, target) pairs over the validation split, each as the model reads
    it and as the user wrote it (``raw``, unclipped; ``val`` itself when ``None``):
    ``(task, context, raw_context, target, raw_target)``."""
    for item in task_batches(val if raw is None else with_raw(val, raw), TASKS,
                             batch_size=config.batch_size, interp_fraction=config.interp_fraction,
                             extrap_split=config.extrap_split, generator=generator):
        if raw is None:
            yield item.task, item.context, item.context, item.target, item.target
        else:
            (context, raw_context), (target, raw_target) = (split_raw(item.context),
                                                            split_raw(item.target))
            yield item.task, context, raw_context, target, raw_target


@dataclass(frozen=True)
class NoiseCalibration:
    """The predictive noise :func:`calibrate_noise` fits, in :class:`Forecaster`'s terms.

    Attributes:
        inside, after, before: (D,) noise std at gap 0 inside, after and before the window
            (``noise_std``, ``extrap_noise_std``, ``backcast_noise_std``).
        growth: (3, D) extra variance per unit of gap, regimes in :func:`window_position`'s
            order (``noise_growth``).
        scale: per regime and gap bin, the factor that makes the 90% intervals cover 90% of
            the validation points in each bin (``noise_scale``, :mod:`latent_ode.coverage`).
    """

    inside: np.ndarray
    after: np.ndarray
    before: np.ndarray
    growth: np.ndarray
    scale: NoiseScale | None = None

    def apply(self, forecaster: Forecaster) -> None:
        """Set the forecaster's noise to this calibration."""
        forecaster.noise_std, forecaster.extrap_noise_std = self.inside, self.after
        forecaster.backcast_noise_std, forecaster.noise_growth = self.before, self.growth
        forecaster.noise_scale = self.scale


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
                    *, raw: Observations | None = None, num_samples: int = 8,
                    passes: int | None = None) -> NoiseCalibration:
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
        raw: the same split unclipped (``to_model_batch(..., clip=False)``): the truth the
            residuals are taken against and the lines the blend shrinks towards, as
            :meth:`Forecaster.predict` answers; ``None``: ``val`` itself.
        num_samples: S latent samples per series.
        passes: draws of the interpolation contexts over the split (each with its own latent
            samples); ``None``: :func:`scale_passes` of the split's size (1 for PhysioNet's
            1,598 validation stays, 8 for the demo's 100 series).

    Within a regime the residual variance is fitted as a line in the gap to the channel's
    nearest observation (:meth:`~latent_ode.baselines.ChannelBaselines.data_gap`), intercept at least
    ``obs_std**2`` and slope at least 0: a forecast 24 hours out errs more than one an hour out,
    and its interval should say so (on PhysioNet the validation MSE grows from 0.0041 in the
    first fifth of horizons to 0.0052 in the last).

    On top of the line, the noise scale (:mod:`latent_ode.coverage`) per regime and gap bin.
    After the window it is fitted on the forecast task's points only: the points an
    interpolation context leaves after its last observation (a few per series) err like far
    forecasts at short gaps, and pooled with the forecast's they made the nearest forecasts'
    intervals too wide (demo: 0.95-0.98 of the nearest fifth covered) while covering them
    only 0.55-0.70.

    Returns:
        :class:`NoiseCalibration`: the noise at gap 0 inside the window, after it and before it,
        each (D,), and the growth per unit of gap, (3, D).

    Raises:
        SolverError: the latent ODE solve failed on the validation split.
    """
    gen = torch.Generator().manual_seed(config.seed + _SEED_OFFSET)
    d = val.num_channels
    if passes is None:
        passes = scale_passes(val.batch_size)
    # Per regime (BACKCAST, INTERPOLATION, EXTRAPOLATION) and channel: squared residuals,
    # latent variance, counts.
    sq = torch.zeros(3, d, dtype=torch.float64)
    var = torch.zeros(3, d, dtype=torch.float64)
    count = torch.zeros(3, d, dtype=torch.float64)
    # Per regime and channel: the held-out points' squared residuals, sample spreads and gaps,
    # for the slope and the scale.
    points: list[list[list[torch.Tensor]]] = [[[] for _ in range(d)] for _ in range(3)]
    pairs = ((p, item) for p in range(passes)
             for item in _validation_pairs(val, raw, config, gen))
    for draw, (task, context, raw_context, target, raw_target) in pairs:
        base = channel_baselines(context, target.times)  # once: the anchor and the gaps
        lines = None if raw is None else channel_baselines(raw_context, target.times)
        samples, _ = forecaster.sample_normalised(context, target.times,
                                                  num_samples=num_samples,
                                                  seed=config.seed + draw,
                                                  baselines=base, lines=lines)
        heldout = target.mask & ~seen_in_context(context, target)
        position = window_position(target.times, context.first_time,
                                   context.last_time)[..., None]
        resid = (samples.mean(0) - raw_target.values) ** 2
        spread = samples.var(0, unbiased=False)
        # On the host once per batch: the per-channel selections below would each sync a device.
        # Per point: residual², spread, gap, then each sample's deviation from the truth.
        # After the window the scale is fitted on the forecast's points only (docstring).
        scaled = torch.full_like(resid, 1.0) if task == "extrapolation" else (
            (position != EXTRAPOLATION).expand_as(resid).to(resid))
        rows = torch.cat([torch.stack([resid, spread, base.data_gap(), scaled], dim=-1),
                          (samples - raw_target.values).movedim(0, -1)], dim=-1).double().cpu()
        for k in range(3):
            m = heldout & (position == k)
            sq[k] += (resid * m).sum((0, 1)).double().cpu()
            var[k] += (spread * m).sum((0, 1)).double().cpu()
            count[k] += m.sum((0, 1)).double().cpu()
            m = m.cpu()
            for j in range(d):
                mj = m[..., j]
                if bool(mj.any()):
                    points[k][j].append(rows[..., j, :][mj])
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
            p = torch.cat(points[k][j])
            a, b = _fit_growth(p[:, 0] - p[:, 1], p[:, 2], floor)
            each[k][j], growth[k, j] = np.sqrt(a), b
    return NoiseCalibration(inside=each[INTERPOLATION], after=each[EXTRAPOLATION],
                            before=each[BACKCAST], growth=growth,
                            scale=_fit_scale(points, each, growth))


def scale_passes(num_series: int) -> int:
    """How many draws of a validation split of ``num_series`` series :func:`calibrate_noise`
    makes: enough for ``_SCALE_SERIES`` series-draws, at most ``_MAX_SCALE_PASSES``."""
    return max(1, min(_MAX_SCALE_PASSES, math.ceil(_SCALE_SERIES / max(num_series, 1))))


def _fit_scale(points: list[list[list[torch.Tensor]]], each: list[np.ndarray],
               growth: np.ndarray, bins: int = COVERAGE_BINS) -> NoiseScale:
    """Per regime, ``bins`` equal-count gap bins of the held-out points (channels pooled) and
    each bin's factor on the noise for 90% coverage (:mod:`latent_ode.coverage`); a bin with
    fewer than ``_MIN_BIN_POINTS`` points takes its regime's single factor, a regime with fewer
    than ``_MIN_BLEND_POINTS`` factor 1."""
    factors, edges = np.ones((3, bins)), np.full((3, bins - 1), np.inf)
    for k in range(3):
        need, gaps = [], []
        for j, parts in enumerate(points[k]):
            if not parts:
                continue
            p = torch.cat(parts)  # (N, 4 + S): residual², spread, gap, scaled?, sample - truth
            p = p[p[:, 3] > 0]
            sigma = torch.sqrt(each[k][j] ** 2 + growth[k, j] * p[:, 2])
            need.append(_needed_scale(p[:, 4:], sigma).numpy())
            gaps.append(p[:, 2].numpy())
        if not need or sum(x.size for x in need) < _MIN_BLEND_POINTS:
            continue
        c, g = np.concatenate(need), np.concatenate(gaps)
        whole = np.quantile(c, 0.9)
        if c.size < bins * _MIN_BIN_POINTS:
            factors[k] = whole
            continue
        edges[k] = np.quantile(g, np.arange(1, bins) / bins)
        which = np.searchsorted(edges[k], g, side="right")
        factors[k] = [np.quantile(c[which == b], 0.9) if (which == b).sum() >= _MIN_BIN_POINTS
                      else whole for b in range(bins)]
    return NoiseScale(factors=np.clip(factors, _MIN_SCALE, _MAX_SCALE), edges=edges)


def _needed_scale(dev: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(N,) the least factor ``c`` on the noise ``sigma`` (N,) that puts each truth inside the
    central 90% interval of its mixture of N(sample, (c·sigma)²), given the samples'
    deviations from the truth ``dev`` (N, S); at most ``_MAX_SCALE`` · 4.

    The truth is inside while its mixture CDF F_c = mean_s Φ(−dev_s / (c·sigma)) lies in
    [0.05, 0.95]; every term moves towards 1/2 as c grows, so inside-ness is monotone in c and
    bisection finds the threshold."""
    def inside(c: torch.Tensor) -> torch.Tensor:
        cdf = torch.special.ndtr(-dev / (c * sigma)[:, None]).mean(dim=1)
        return (cdf >= 0.05) & (cdf <= 0.95)

    lo = torch.zeros_like(sigma)
    hi = torch.full_like(sigma, 4.0 * _MAX_SCALE)
    for _ in range(_SCALE_BISECTIONS):
        mid = 0.5 * (lo + hi)
        ok = inside(mid.clamp_min(1e-6))
        hi = torch.where(ok, mid, hi)
        lo = torch.where(ok, lo, mid)
    return hi


def _fit_bins(delta: np.ndarray, target: np.ndarray, gap: np.ndarray, bins: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """(K,) weights and (K - 1,) gap edges of one regime and channel from its held-out points:
    equal-count bins of the gap where each has ``_MIN_BIN_POINTS``, else one weight (weight 1
    below ``_MIN_BLEND_POINTS``)."""
    n = delta.size
    if n < _MIN_BLEND_POINTS:
        return np.ones(bins), np.full(bins - 1, np.inf)
    whole = fit_weight(delta, target)
    if bins == 1 or n < bins * _MIN_BIN_POINTS:
        return np.full(bins, whole), np.full(bins - 1, np.inf)
    edges = np.quantile(gap, np.arange(1, bins) / bins)
    which = np.searchsorted(edges, gap, side="right")
    weights = np.array([fit_weight(delta[which == k], target[which == k])
                        if (which == k).sum() >= _MIN_BIN_POINTS else whole
                        for k in range(bins)])
    return weights, edges


@torch.no_grad()
def calibrate_blend(forecaster: Forecaster, val: Observations, config: TrainConfig,
                    *, raw: Observations | None = None, num_samples: int = 8,
                    bins: int = BLEND_BINS) -> BaselineBlend:
    """Per regime, channel and gap bin, the least-squares weight of the model against the
    channel's baseline on the validation split's held-out points (:mod:`latent_ode.blend`).

    The targets are those of :func:`calibrate_noise` (both tasks, the points the encoder did not
    see, each counted in its regime against its context). Where the context observed the
    channel, the gap is the query's distance to its nearest context observation (normalised
    time); each regime and channel with at least ``bins * 50`` such points gets ``bins``
    equal-count gap bins (a bin with fewer than 50 takes the single weight), one with at least
    20 a single weight, one with fewer weight 1 (the model unchanged). Where it did not, the
    baseline is the channel's mean over the validation split, with one weight per regime and
    channel (at least 20 points; else the channel's regimes pooled, at least 20; else 1).

    The forecaster's own blend, if any, is ignored while fitting: the weights are fitted on the
    model's answer.

    Args:
        forecaster: the trained model (in eval mode).
        val: the validation split (normalised, as the model reads it), N series, D channels.
        config: ``batch_size``, the tasks' settings and ``seed``.
        raw: the same split unclipped (``to_model_batch(..., clip=False)``): the baselines and
            the truth the weights are fitted against, as :meth:`Forecaster.predict` draws its
            baselines; ``None``: ``val`` itself (a normaliser that does not clip).
        num_samples: S latent samples per series (the weight is fitted on their mean).
        bins: K gap bins per regime and channel.

    Returns:
        :class:`~latent_ode.blend.BaselineBlend` with (3, D, K) weights.

    Raises:
        SolverError: the latent ODE solve failed on the validation split.
    """
    gen = torch.Generator().manual_seed(config.seed + _SEED_OFFSET)
    d = val.num_channels
    truth = val if raw is None else raw
    count = truth.mask.sum(dim=(0, 1))
    fallback = (torch.where(truth.mask, truth.values, 0.0).sum(dim=(0, 1))
                / count.clamp_min(1)).double().cpu()
    fallback = torch.where(count.cpu() > 0, fallback, 0.0)
    # The anchor's lines, each version scored (versions: the clipped lines it was trained on,
    # and with ``raw`` and an anchor the unclipped ones; per channel the one that errs no more
    # on the held-out points is kept). Per version, regime and channel: the held-out points'
    # model - baseline, truth - baseline and gap, for channels the context observed; model -
    # fallback, truth - fallback for the others.
    versions = 2 if raw is not None and forecaster.model.anchor is not None else 1
    sse = torch.zeros(versions, d, dtype=torch.float64)
    points = [[[[] for _ in range(d)] for _ in range(3)] for _ in range(versions)]
    unseen = [[[[] for _ in range(d)] for _ in range(3)] for _ in range(versions)]
    kept, forecaster.blend = forecaster.blend, None
    try:
        for _, context, raw_context, target, raw_target in _validation_pairs(val, raw, config,
                                                                             gen):
            base = channel_baselines(raw_context, target.times)
            anchors = (channel_baselines(context, target.times), base)[:versions]
            heldout = target.mask & ~seen_in_context(context, target)
            position = window_position(target.times, context.first_time,
                                       context.last_time)[..., None].expand_as(heldout).cpu()
            truth_values, fb = raw_target.values, fallback.to(raw_target.values)
            observed, on_host = base.observed.cpu(), heldout.cpu()
            for v, anchor in enumerate(anchors):
                samples, _ = forecaster.sample_normalised(context, target.times,
                                                          num_samples=num_samples,
                                                          seed=config.seed, baselines=anchor)
                mean = samples.mean(0)
                sse[v] += torch.where(heldout, (mean - truth_values) ** 2,
                                      0.0).sum(dim=(0, 1)).double().cpu()
                rows = torch.stack([mean - base.linear, truth_values - base.linear, base.gap],
                                   dim=-1).double().cpu()  # (B, T, D, 3)
                rows_unseen = torch.stack([mean - fb, truth_values - fb],
                                          dim=-1).double().cpu()  # (B, T, D, 2)
                for k in range(3):
                    for sel, table, out in ((on_host & observed, rows, points[v]),
                                            (on_host & ~observed, rows_unseen, unseen[v])):
                        m = sel & (position == k)
                        for j in range(d):
                            mj = m[..., j]
                            if bool(mj.any()):
                                out[k][j].append(table[..., j, :][mj])
    finally:
        forecaster.blend = kept
    # A tie (the clip never touched this channel's validation points) goes to the user's own
    # lines: with no evidence either way, the unclipped line is the one the answer is promised
    # not to lose to (on P1, seed 2's WBC tied on validation and lost 1.9x on test, clipped).
    raw_anchor = (sse[1] <= sse[0]).numpy() if versions == 2 else None
    pick = [int(raw_anchor[j]) if raw_anchor is not None else 0 for j in range(d)]
    observed_points = [[points[pick[j]][k][j] for j in range(d)] for k in range(3)]
    unseen_points = [[unseen[pick[j]][k][j] for j in range(d)] for k in range(3)]
    weights = np.ones((3, d, bins))
    edges = np.full((3, d, bins - 1), np.inf)
    unobserved = np.ones((3, d))
    for j in range(d):
        for k in range(3):
            if observed_points[k][j]:
                p = torch.cat(observed_points[k][j]).numpy()
                weights[k, j], edges[k, j] = _fit_bins(p[:, 0], p[:, 1], p[:, 2], bins)
        # A channel the context never observed: a weight per regime where the regime has
        # enough points, else the channel's regimes pooled (on PhysioNet a weight unseen before
        # a forecast is rare, unseen before a backcast is not), else the model's answer.
        rows = [torch.cat(unseen_points[k][j]).numpy() if unseen_points[k][j]
                else np.zeros((0, 2)) for k in range(3)]
        pooled = np.concatenate(rows)
        default = (fit_weight(pooled[:, 0], pooled[:, 1])
                   if pooled.shape[0] >= _MIN_BLEND_POINTS else 1.0)
        for k in range(3):
            unobserved[k, j] = (fit_weight(rows[k][:, 0], rows[k][:, 1])
                                if rows[k].shape[0] >= _MIN_BLEND_POINTS else default)
    return BaselineBlend(weights=weights, edges=edges, unobserved=unobserved,
                         fallback=fallback.numpy(), raw_anchor=raw_anchor)

