"""Held-out metrics of a forecaster, per channel and pooled, next to the baseline of each regime.

Two regimes, each drawn by :mod:`latent_ode.tasks` on every series of the evaluated split:

- ``interp`` (interpolation, Rubanova et al. 2019, Sec. 4.1): the encoder sees a random
  ``interp_fraction`` of each series' time points; scored on the values it did **not** see,
  against per-channel linear interpolation of the seen values;
- ``forecast`` (extrapolation): the encoder sees the first ``extrap_split`` of each series' time
  span; scored on every value after it, against the last observation carried forward (LOCF).

A channel never observed in a series' context is predicted by both baselines as its training
mean (``fallback``). Errors are on the normalised scale ("scaled") and, for MAE, also in the
user's units. A regime's pooled error is the mean over channels of the per-channel error (the
"P1" protocol of ``../shared/notes/protocols.md``: each channel's errors summed over the split
and divided by its count, then averaged over the channels that have targets), so a rare channel
counts as much as a frequent one. Skill is ``1 - model MSE / baseline MSE`` (per channel, and
pooled from the pooled MSEs): positive when the model beats doing nothing.

Calibration: the share of held-out values inside the central 90% predictive interval, pooled
over values and per fifth of the horizon. Forecast horizon: the distance after the context's
last observation; interpolation: the distance to the nearest observation of the same channel in
the context (a channel never observed there counts as farthest). The forecast's horizon range,
0 to its largest finite distance in the split, is cut into :data:`HORIZON_BINS` equal bins; the
interpolation's distances into :data:`HORIZON_BINS` bins of equal counts (its distances crowd
near 0: equal widths left a handful of points in the farthest bin).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from latent_ode.baselines import channel_baselines
from latent_ode.config import SolverConfig
from latent_ode.data import Series
from latent_ode.errors import DataError, ShapeError
from latent_ode.forecaster import Forecaster, mixture_quantiles, window_position
from latent_ode.tasks import TASKS, Task, seen_in_context, task_batches, to_model_batch

__all__ = ["BASELINE", "HORIZON_BINS", "REGIMES", "EvalResult", "Regime", "RegimeScores", "evaluate"]

Regime = Literal["interp", "forecast"]
REGIMES: tuple[Regime, ...] = ("interp", "forecast")
_REGIME_OF: dict[Task, Regime] = {"interpolation": "interp", "extrapolation": "forecast"}
BASELINE: dict[Regime, str] = {"interp": "linear interpolation", "forecast": "LOCF"}
"""The baseline each regime is scored against."""
HORIZON_BINS = 5
"""Equal bins of each regime's horizon range (``.../h1`` nearest to ``.../h5`` farthest)."""
_PER_CHANNEL = ("mse", "mae", "mae_units", "baseline_mse", "baseline_mae", "baseline_mae_units",
                "skill")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _nanmean(x: np.ndarray) -> float:
    finite = x[np.isfinite(x)]
    return float(finite.mean()) if finite.size else float("nan")


@dataclass(frozen=True)
class RegimeScores:
    """One regime's held-out scores.

    Attributes:
        regime: ``interp`` or ``forecast``.
        channels: the D channel names.
        count: (D,) held-out values per channel.
        mse, mae: (D,) model error per channel, normalised scale; NaN where ``count`` is 0.
        mae_units: (D,) model MAE in the user's units.
        baseline_mse, baseline_mae, baseline_mae_units: (D,) the same for the regime's baseline.
        nll: negative log predictive density per held-out value (normalised scale).
        coverage_90: share of held-out values inside the central 90% interval.
        horizon_edges: (HORIZON_BINS + 1,) bin edges, in the user's time unit.
        horizon_count: (HORIZON_BINS,) held-out values per bin.
        horizon_mse, horizon_baseline_mse: (HORIZON_BINS,) MSE per bin, pooled over values
            (normalised scale); NaN for an empty bin.
        horizon_coverage_90: (HORIZON_BINS,) coverage per bin; NaN for an empty bin.
    """

    regime: Regime
    channels: tuple[str, ...]
    count: np.ndarray
    mse: np.ndarray
    mae: np.ndarray
    mae_units: np.ndarray
    baseline_mse: np.ndarray
    baseline_mae: np.ndarray
    baseline_mae_units: np.ndarray
    nll: float
    coverage_90: float
    horizon_edges: np.ndarray
    horizon_count: np.ndarray
    horizon_mse: np.ndarray
    horizon_baseline_mse: np.ndarray
    horizon_coverage_90: np.ndarray

    @property
    def skill(self) -> np.ndarray:
        """(D,) per-channel skill ``1 - mse / baseline_mse``; NaN without targets or where the
        baseline is exact."""
        return 1.0 - _ratio(self.mse, self.baseline_mse)

    def pooled(self, name: str) -> float:
        """A per-channel statistic pooled as P1 does: the mean over channels with targets.

        ``skill`` is pooled from the pooled MSEs (``1 - pooled mse / pooled baseline_mse``).
        """
        if name == "skill":
            base = self.pooled("baseline_mse")
            return 1.0 - self.pooled("mse") / base if base > 0 else float("nan")
        return _nanmean(np.where(self.count > 0, getattr(self, name), np.nan))

    def metrics(self) -> dict[str, float]:
        """Flat metrics, named ``<regime>/<stat>`` (pooled), ``<regime>/<stat>/<channel>``,
        ``<regime>/coverage_90/h<k>`` and ``<regime>/horizon_mse/h<k>`` (see :func:`evaluate`);
        channels without held-out values and empty horizon bins are left out (only their count,
        0, is given for a bin)."""
        r = self.regime
        out = {f"{r}/{s}": self.pooled(s) for s in _PER_CHANNEL}
        out |= {f"{r}/count": float(self.count.sum()), f"{r}/nll": self.nll,
                f"{r}/coverage_90": self.coverage_90}
        for j, ch in enumerate(self.channels):
            if self.count[j] == 0:
                continue
            out[f"{r}/count/{ch}"] = float(self.count[j])
            for s in _PER_CHANNEL:
                out[f"{r}/{s}/{ch}"] = float(getattr(self, s)[j])
        for k in range(HORIZON_BINS):
            h = f"h{k + 1}"
            out[f"{r}/horizon_count/{h}"] = float(self.horizon_count[k])
            if self.horizon_count[k] == 0:
                continue  # an empty bin has no error or coverage
            out[f"{r}/coverage_90/{h}"] = float(self.horizon_coverage_90[k])
            out[f"{r}/horizon_mse/{h}"] = float(self.horizon_mse[k])
            out[f"{r}/horizon_baseline_mse/{h}"] = float(self.horizon_baseline_mse[k])
        return out


@dataclass(frozen=True)
class EvalResult:
    """The scores of both regimes.

    Attributes:
        regimes: ``interp`` and ``forecast`` -> :class:`RegimeScores`.
        metrics: every regime's :meth:`RegimeScores.metrics`, plus ``interp/mse_incl_seen``
            (all interpolation targets, the points the encoder saw included: the definition of
            Rubanova et al.'s tables, for comparison with them only).
    """

    regimes: dict[Regime, RegimeScores]
    metrics: dict[str, float]


class _Points:
    """Held-out values of one regime, gathered over minibatches (numpy, flat)."""

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                                   ("channel", "err", "base_err", "inside",
                                                    "logp", "distance")}

    def add(self, **arrays: torch.Tensor) -> None:
        for k, v in arrays.items():
            self.parts[k].append(v.detach().cpu().double().numpy())

    def get(self, name: str) -> np.ndarray:
        return np.concatenate(self.parts[name]) if self.parts[name] else np.zeros(0)


def _scores(regime: Regime, pts: _Points, channels: Sequence[str], scale: np.ndarray,
            time_scale: float) -> RegimeScores:
    d = len(channels)
    ch = pts.get("channel").astype(np.int64)
    err, base, inside = pts.get("err"), pts.get("base_err"), pts.get("inside")
    count = np.bincount(ch, minlength=d)

    def per_channel(x: np.ndarray) -> np.ndarray:
        return _ratio(np.bincount(ch, weights=x, minlength=d), count)

    mae, base_mae = per_channel(np.abs(err)), per_channel(np.abs(base))
    dist = pts.get("distance")
    finite = dist[np.isfinite(dist)]
    top = float(finite.max()) if finite.size else 0.0
    if regime == "interp" and finite.size:
        # Equal-count fifths: most held-out points sit near a seen one, and equal widths left
        # the farthest fifth of the demo's gaps with 5 of 2,500 points.
        edges = np.quantile(finite, np.linspace(0.0, 1.0, HORIZON_BINS + 1))
        edges[0] = 0.0
    else:
        edges = np.linspace(0.0, top, HORIZON_BINS + 1)
    # Bin k holds [edges[k], edges[k+1]); the largest distance, and a channel never observed
    # (infinite distance), fall in the last bin.
    k = np.clip(np.searchsorted(edges[1:-1], np.where(np.isfinite(dist), dist, top),
                                side="right"), 0, HORIZON_BINS - 1).astype(np.int64)
    h_count = np.bincount(k, minlength=HORIZON_BINS)

    def per_bin(x: np.ndarray) -> np.ndarray:
        return _ratio(np.bincount(k, weights=x, minlength=HORIZON_BINS), h_count)

    n = max(err.size, 1)
    return RegimeScores(
        regime=regime, channels=tuple(channels), count=count,
        mse=per_channel(err**2), mae=mae, mae_units=mae * scale,
        baseline_mse=per_channel(base**2), baseline_mae=base_mae,
        baseline_mae_units=base_mae * scale,
        nll=float(-pts.get("logp").sum() / n) if err.size else float("nan"),
        coverage_90=float(inside.sum() / n) if err.size else float("nan"),
        horizon_edges=edges * time_scale, horizon_count=h_count,
        horizon_mse=per_bin(err**2), horizon_baseline_mse=per_bin(base**2),
        horizon_coverage_90=per_bin(inside),
    )


@torch.no_grad()
def evaluate(
    forecaster: Forecaster,
    series: Sequence[Series],
    *,
    num_samples: int = 16,
    interp_fraction: float = 0.5,
    extrap_split: float = 0.5,
    batch_size: int = 100,
    seed: int = 0,
    fallback: Sequence[float] | np.ndarray | None = None,
    solver: SolverConfig | None = None,
) -> EvalResult:
    """Held-out errors, baselines, skill and calibration of ``forecaster`` on ``series``.

    Metric names (``EvalResult.metrics``), for ``<r>`` in ``interp`` / ``forecast``:

    - pooled (mean over channels): ``<r>/mse``, ``<r>/mae`` (normalised scale),
      ``<r>/mae_units`` (user units), ``<r>/baseline_mse``, ``<r>/baseline_mae``,
      ``<r>/baseline_mae_units``, ``<r>/skill``; pooled over values: ``<r>/nll``,
      ``<r>/coverage_90``, ``<r>/count``;
    - per channel: ``<r>/<stat>/<channel>`` for the stats above that have one, and
      ``<r>/count/<channel>`` (channels without held-out values are left out);
    - per fifth of the horizon: ``<r>/coverage_90/h<k>``, ``<r>/horizon_mse/h<k>``,
      ``<r>/horizon_baseline_mse/h<k>``, ``<r>/horizon_count/h<k>``, k = 1 (nearest) .. 5
      (an empty bin has only its count).

    Args:
        forecaster: the trained model.
        series: the held-out series (user units).
        num_samples: latent samples per prediction (the mean over samples is the prediction).
        interp_fraction: share of each series' time points the encoder sees in ``interp``.
        extrap_split: where in each series' span ``forecast`` cuts context from targets.
        batch_size: series per solver call.
        seed: the interpolation contexts and the latent samples.
        fallback: (D,) each channel's training mean in user units, predicted by both baselines
            for a channel never observed in a context; ``None``: the normaliser's location
            when it is ``standard`` (the training mean), else each channel's mean over
            ``series`` (a stand-in that, if anything, flatters the baselines).
        solver: overrides the model's solver settings (e.g. to check that trained weights do
            not lean on the solver's error).

    Raises:
        DataError: ``series`` is empty.
        ShapeError: ``fallback`` is not D numbers.
    """
    if len(series) == 0:
        raise DataError("`series` must contain at least one series; got none.")
    norm = forecaster.normaliser
    d = norm.num_channels
    model = forecaster.model
    model.eval()
    obs = to_model_batch(forecaster, series)
    if fallback is None and norm.kind == "standard":
        fb = np.zeros(d)
    elif fallback is None:  # the split's own channel means: if anything, flatters the baselines
        total = torch.where(obs.mask, obs.values, 0.0).sum(dim=(0, 1))
        fb = (total / obs.mask.sum(dim=(0, 1)).clamp_min(1)).cpu().numpy()
    else:
        fb_units = np.asarray(fallback, dtype=np.float64)
        if fb_units.shape != (d,) or not np.isfinite(fb_units).all():
            raise ShapeError(f"`fallback` must be {d} finite numbers (one per channel, user "
                             f"units); got {fb_units.tolist()}.")
        fb = norm.values_to_model(fb_units)
    gen = torch.Generator().manual_seed(seed)
    points = {r: _Points() for r in REGIMES}
    incl_seen = [0.0, 0]
    # Untrimmed minibatches: the contexts drawn stay those of every evaluation published so far.
    for item in task_batches(obs, TASKS, batch_size=batch_size, interp_fraction=interp_fraction,
                             extrap_split=extrap_split, generator=gen, trim=False):
        regime, context, target = _REGIME_OF[item.task], item.context, item.target
        base = channel_baselines(context, target.times,
                                 torch.as_tensor(fb, dtype=target.values.dtype,
                                                 device=target.values.device))
        samples, _ = forecaster.sample_normalised(context, target.times, num_samples=num_samples,
                                                  seed=seed + item.start, solver=solver,
                                                  baselines=base)
        mean = samples.mean(0)  # (B, T, D)
        heldout = target.mask & ~seen_in_context(context, target)  # (B, T, D)
        if regime == "interp":
            sq = (mean - target.values) ** 2
            incl_seen[0] += float(sq[target.mask].sum())
            incl_seen[1] += int(target.mask.sum())
        baseline = base.linear if regime == "interp" else base.locf  # (B, T, D)
        if regime == "interp":
            distance = base.gap  # (B, T, D) to the channel's nearest seen value
        else:  # (B, T, D) after the context's last observation
            distance = (target.times - context.last_time[:, None])[:, :, None].expand_as(mean)
        # Mixture predictive density and central 90% interval of each held-out value.
        position = window_position(target.times, context.first_time, context.last_time)
        noise = forecaster.noise_tensor(position, samples, base.data_gap())
        comp = torch.distributions.Normal(samples, noise).log_prob(target.values[None])
        logp = torch.logsumexp(comp, dim=0) - math.log(num_samples)  # (B, T, D)
        q = mixture_quantiles(samples, noise, (0.05, 0.95))  # (2, B, T, D)
        inside = (target.values >= q[0]) & (target.values <= q[1])
        channel = torch.arange(d, device=mean.device).expand_as(mean)
        points[regime].add(channel=channel[heldout], err=(mean - target.values)[heldout],
                           base_err=(baseline - target.values)[heldout], inside=inside[heldout],
                           logp=logp[heldout], distance=distance[heldout])
    regimes = {r: _scores(r, points[r], forecaster.channels, norm.scale, norm.time_scale)
               for r in REGIMES}
    metrics: dict[str, float] = {}
    for r in REGIMES:
        metrics |= regimes[r].metrics()
    metrics["interp/mse_incl_seen"] = (incl_seen[0] / incl_seen[1] if incl_seen[1]
                                       else float("nan"))
    return EvalResult(regimes=regimes, metrics=metrics)
