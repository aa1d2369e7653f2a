"""A trained model with its normalisation and channel names: answers in the user's units."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from latent_ode.baselines import ChannelBaselines, channel_baselines, mix_baselines
from latent_ode.blend import BaselineBlend
from latent_ode.checkpoint import check_weight_shapes, load_weights, read_config, save_model_files
from latent_ode.config import ModelConfig, SolverConfig, config_from_dict, config_to_dict
from latent_ode.coverage import NoiseScale
from latent_ode.data import Observations, Series, collate
from latent_ode.errors import CheckpointError, ConfigError, DataError, ShapeError, SolverError
from latent_ode.model import LatentODE
from latent_ode.normalisation import Normaliser
from latent_ode.solver import (
    SolverFailure,
    SolverStats,
    failure_error,
    failure_message,
    series_failures,
)

__all__ = ["BACKCAST", "EXTRAPOLATION", "INTERPOLATION", "Forecast", "ForecastStatus", "Forecaster",
           "mixture_quantiles", "raise_on_failure", "window_position"]

ForecastStatus = Literal["ok", SolverFailure]
"""How a series' forecast went: ``ok``, or why the solver could not answer it."""

# Safeguarded Newton steps on the mixture CDF before bisecting the rest of the bracket, and
# the CDF error at which they stop (float32's resolution of a mean of normal CDFs is ~1e-7).
_QUANTILE_NEWTON = 8
_QUANTILE_CDF_TOL = 2e-6
# The bracket is as wide as the spread of the sample means; 2^-24 of it is float32 precision.
_QUANTILE_BISECTIONS = 24


@dataclass(frozen=True)
class Forecast:
    """The answer for one series, in the user's units.

    Attributes:
        query_times: (Q,) the query times in the order asked.
        mode: per query, ``interpolation`` (inside the observed window), ``extrapolation``
            (after it) or ``backcast`` (before it).
        mean: (Q, D) predictive mean.
        std: (Q, D) predictive standard deviation (latent uncertainty plus observation noise).
        quantiles: level -> (Q, D) predictive quantiles.
        stats: solver statistics of the batch this series was solved in.
        status: ``ok``, or the reason this series could not be answered: the solver's
            (``max_steps``, ``dt_underflow``, ``non_finite``, ``failed``), or ``non_finite``
            when the solve succeeded but the decoded forecast is not finite. When not ``ok``,
            ``mean``, ``std`` and ``quantiles`` are NaN and must not be used.
        message: empty when ``ok``; else one sentence saying what happened and how to fix it.
    """

    query_times: np.ndarray
    mode: list[str]
    mean: np.ndarray
    std: np.ndarray
    quantiles: dict[float, np.ndarray]
    stats: SolverStats
    status: ForecastStatus = "ok"
    message: str = ""

    @property
    def ok(self) -> bool:
        """True when the forecast can be used."""
        return self.status == "ok"


def raise_on_failure(forecasts: Sequence[Forecast]) -> list[Forecast]:
    """The forecasts unchanged if every series was answered; else raise for the failed ones.

    For callers that treat any failed series as an error (:meth:`Forecaster.predict` reports
    failures per series instead).

    Args:
        forecasts: what :meth:`Forecaster.predict` returned.

    Returns:
        ``forecasts`` as a list.

    Raises:
        SolverError: ``.series`` lists the failed series (indices into ``forecasts``) and
            ``.reason`` is the commonest of their reasons.
    """
    reasons = [None if f.ok else f.status for f in forecasts]
    error = _failure_error(reasons, forecasts[0].stats.max_steps if forecasts else None)
    if error is not None:
        raise error
    return list(forecasts)


def _failure_error(reasons: Sequence[str | None], max_steps: int | None) -> SolverError | None:
    """The :class:`SolverError` naming the series whose reason is not None, for the commonest
    of their reasons (ties: the first failed series'); None when every series was answered."""
    failed = [i for i, r in enumerate(reasons) if r is not None]
    if not failed:
        return None
    named = [reasons[i] for i in failed]
    reason = max(dict.fromkeys(named), key=named.count)
    assert reason is not None  # only failed series were counted
    return failure_error(tuple(failed), reason, max_steps)


def mixture_quantiles(means: Tensor, std: float | Tensor, levels: Sequence[float]) -> Tensor:
    """Quantiles of the equal-weight mixture of N(means[s], std²) over the first dimension.

    Solved on the mixture CDF F by safeguarded Newton iterations, then bisection if needed. The
    quantile of level p lies in [min_s means + std z_p, max_s means + std z_p] (z_p the
    standard normal quantile), because F is bounded by the CDFs of its leftmost and rightmost
    components. Newton starts from the normal with the mixture's mean and variance, keeps the
    bracket updated, and falls back to its midpoint whenever a step would leave it; when the
    samples are close together (their spread within a few noise widths, what a trained model
    gives) F is nearly normal and a few steps reach float32 precision, about six times fewer
    evaluations of F than bisection. Where F is far from normal (a mixture of well-separated
    modes) Newton can stall, so after ``_QUANTILE_NEWTON`` steps the rest of the bracket is
    bisected ``_QUANTILE_BISECTIONS`` times, as precise as bisection alone. Either way the
    answer solves F(q) = p to float32 precision; quantiles are ordered across levels.

    Args:
        means: (S, ..., D) component means.
        std: component standard deviation, a number or (D,) per channel, or any shape that
            broadcasts against ``means[0]``.
        levels: K levels in (0, 1).

    Returns:
        (K, ..., D) quantiles.
    """
    # Without argument validation: a non-finite component makes its own quantiles NaN (which
    # the caller reports) instead of raising for the whole batch.
    # A zero noise (a mixture of point masses) is solved as a very narrow one: its quantiles
    # are then the samples' own, within 1e-12.
    std = torch.as_tensor(std, dtype=means.dtype, device=means.device).clamp_min(1e-12)
    target = torch.tensor(list(levels), dtype=means.dtype, device=means.device)
    target = target.reshape(-1, *([1] * (means.ndim - 1)))  # (K, 1, ...)
    z = torch.special.ndtri(target)
    lo = means.min(dim=0).values[None] + std * z  # (K, ..., D)
    hi = means.max(dim=0).values[None] + std * z
    spread = torch.sqrt(means.var(dim=0, unbiased=False) + std**2)
    x = torch.minimum(torch.maximum(means.mean(dim=0)[None] + spread * z, lo), hi)
    inv = 1.0 / std
    scaled = means * inv  # (S, ..., D): F(x) = mean_s Phi(x / std - means_s / std)
    density = inv / math.sqrt(2.0 * math.pi)
    for _ in range(_QUANTILE_NEWTON):
        u = (x * inv)[:, None] - scaled[None]  # (K, S, ..., D)
        miss = torch.special.ndtr(u).mean(dim=1) - target
        if not bool((miss.abs() > _QUANTILE_CDF_TOL).any()):
            return x
        below = miss < 0
        lo = torch.where(below, x, lo)
        hi = torch.where(below, hi, x)
        step = x - miss / (torch.exp(-0.5 * u * u).mean(dim=1) * density)
        x = torch.where((step >= lo) & (step <= hi), step, 0.5 * (lo + hi))
    for _ in range(_QUANTILE_BISECTIONS):
        cdf = torch.special.ndtr((x * inv)[:, None] - scaled[None]).mean(dim=1)
        below = cdf < target
        lo = torch.where(below, x, lo)
        hi = torch.where(below, hi, x)
        x = 0.5 * (lo + hi)
    return x


def _padded_quantiles(samples: Tensor, noise: Tensor, levels: Sequence[float],
                      sizes: Sequence[int]) -> Tensor | None:
    """(K, B, Q, D) :func:`mixture_quantiles` of (S, B, Q, D) samples whose series ``b`` asks
    only its first ``sizes[b]`` queries (the rest is padding, left at 0): solved on the asked
    queries only, which on series of mixed lengths (PhysioNet stays) is most of a batch's work
    saved. ``None`` without levels."""
    if not levels:
        return None
    b, q = samples.shape[1], samples.shape[2]
    if all(n == q for n in sizes):
        return mixture_quantiles(samples, noise, levels)
    asked = torch.arange(q, device=samples.device)[None, :] < torch.as_tensor(
        list(sizes), device=samples.device)[:, None]  # (B, Q)
    out = samples.new_zeros((len(levels), b, q, samples.shape[3]))
    out[:, asked] = mixture_quantiles(samples[:, asked], noise[asked], levels)
    return out


BACKCAST, INTERPOLATION, EXTRAPOLATION = 0, 1, 2
"""Where a query time lies against its series' observed window (:func:`window_position`)."""
_MODES = ("backcast", "interpolation", "extrapolation")  # Forecast.mode, by position


def window_position(times: Tensor, first: Tensor, last: Tensor) -> Tensor:
    """(B, Q) ``BACKCAST`` before each series' first observation time ``first`` (B,),
    ``INTERPOLATION`` from it to its last ``last`` (B,), ``EXTRAPOLATION`` after, for ``times``
    (B, Q)."""
    after = (times > last[:, None]).long()
    return INTERPOLATION - (times < first[:, None]).long() + after


def _noise(name: str, value: Sequence[float] | np.ndarray | None, default: np.ndarray,
           d: int) -> np.ndarray:
    noise = default.copy() if value is None else np.asarray(value, float)
    if noise.shape != (d,) or not (np.isfinite(noise).all() and (noise > 0).all()):
        raise ConfigError(f"`{name}` must be {d} positive numbers; got {noise.tolist()}.")
    return noise


class Forecaster:
    """A :class:`LatentODE` with its :class:`Normaliser`, channel names and time unit.

    Args:
        model: the network.
        normaliser: fitted on the training split.
        channels: D channel names, in the model's order.
        time_unit: the unit of times the user speaks (e.g. ``hours``).
        metadata: free-form JSON-able facts (training metrics, data lineage).
        noise_std: (D,) predictive observation-noise standard deviation per channel on the
            normalised scale, for query times inside a series' observed window (from its first
            to its last observation); ``None`` uses the model's ``obs_std``.
        extrap_noise_std: (D,) the same after the window; ``None``: ``noise_std``.
        backcast_noise_std: (D,) the same before the window; ``None``: ``noise_std``.
            :func:`latent_ode.fit` calibrates all three on the validation split so that
            intervals are honest in each regime.
        noise_growth: (3, D) extra predictive variance per unit of normalised time between a
            query and the channel's nearest observation
            (:meth:`~latent_ode.baselines.ChannelBaselines.data_gap`), for the
            regimes before, inside and after the window (the order of :func:`window_position`):
            the noise std at gap g is ``sqrt(noise_std**2 + growth * g)``, so intervals widen
            with the distance to the data where the error does. ``None``: zeros (no growth, as
            checkpoints written before it predicted).
        blend: per regime, channel and gap bin, the weight of the model's answer against the
            channel's baseline (:mod:`latent_ode.blend`), applied to every latent sample;
            :func:`latent_ode.fit` fits it on the validation split when ``calibrate_blend`` is
            set. ``None``: the model's answer unchanged (weight 1, as checkpoints written
            before it predicted).
        noise_scale: per regime and gap bin, the factor the noise is multiplied by so that 90%
            intervals cover 90% across gaps (:mod:`latent_ode.coverage`); ``None``: 1, as
            checkpoints written before it predicted.
    """

    def __init__(self, model: LatentODE, normaliser: Normaliser, *, channels: Sequence[str],
                 time_unit: str, metadata: dict[str, Any] | None = None,
                 noise_std: Sequence[float] | np.ndarray | None = None,
                 extrap_noise_std: Sequence[float] | np.ndarray | None = None,
                 backcast_noise_std: Sequence[float] | np.ndarray | None = None,
                 noise_growth: Sequence[Sequence[float]] | np.ndarray | None = None,
                 blend: BaselineBlend | None = None,
                 noise_scale: NoiseScale | None = None) -> None:
        d = model.config.input_dim
        if len(channels) != d or normaliser.num_channels != d:
            raise ShapeError(f"`channels` ({len(channels)}) and the normaliser "
                             f"({normaliser.num_channels}) must both match the model's "
                             f"input_dim = {d}.")
        if len(set(channels)) != len(channels):
            raise ConfigError(f"`channels` must be unique; got {list(channels)}.")
        self.model = model
        self.normaliser = normaliser
        self.channels = list(channels)
        self.time_unit = time_unit
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.noise_std = _noise("noise_std", noise_std, np.full(d, model.config.obs_std), d)
        self.extrap_noise_std = _noise("extrap_noise_std", extrap_noise_std, self.noise_std, d)
        self.backcast_noise_std = _noise("backcast_noise_std", backcast_noise_std,
                                         self.noise_std, d)
        growth = np.zeros((3, d)) if noise_growth is None else np.asarray(noise_growth, np.float64)
        if growth.shape != (3, d) or not (np.isfinite(growth).all() and (growth >= 0).all()):
            raise ConfigError(f"`noise_growth` must be a (3, {d}) array of finite, non-negative "
                              f"variances per unit of time; got shape {growth.shape}.")
        self.noise_growth = growth
        if blend is not None and blend.num_channels != d:
            raise ConfigError(f"`blend` must have weights for the model's {d} channels; got "
                              f"{blend.num_channels}.")
        self.blend = blend
        self.noise_scale = noise_scale

    def noise_tensor(self, position: Tensor, like: Tensor, gap: Tensor | None = None) -> Tensor:
        """(B, Q, D) predictive noise std for queries at ``position`` (B, Q) against their
        series' observed window (:func:`window_position`), on ``like``'s device and dtype.

        Args:
            position: (B, Q) regime of each query.
            like: a tensor whose device and dtype the answer takes.
            gap: (B, Q, D) normalised time from each query to the channel's nearest observation
                (:meth:`~latent_ode.baselines.ChannelBaselines.data_gap`); ``None``: the noise at gap 0.
        """
        table = np.stack([self.backcast_noise_std, self.noise_std, self.extrap_noise_std])
        base = torch.as_tensor(table, dtype=like.dtype, device=like.device)[position]
        if gap is not None and self.noise_growth.any():
            growth = torch.as_tensor(self.noise_growth, dtype=like.dtype,
                                     device=like.device)[position]
            base = torch.sqrt(base**2 + growth * gap.to(like.dtype))
        if self.noise_scale is not None:
            base = base * self.noise_scale.tensor(
                position, base.new_zeros(base.shape) if gap is None else gap.to(like.dtype))
        return base

    @classmethod
    def create(cls, model_config: ModelConfig, normaliser: Normaliser, *, channels: Sequence[str],
               time_unit: str, metadata: dict[str, Any] | None = None,
               seed: int | None = None) -> Forecaster:
        """A new, untrained forecaster (parameters initialised from ``seed`` when given)."""
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = LatentODE(model_config)
        else:
            model = LatentODE(model_config)
        return cls(model, normaliser, channels=channels, time_unit=time_unit, metadata=metadata)

    @property
    def model_config(self) -> ModelConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> Forecaster:
        """Move the model to ``device`` (in place) and return self."""
        self.model.to(device)
        return self

    # ----------------------------------------------------------------------------- persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``weights.safetensors`` to ``directory``."""
        config = {
            "model": config_to_dict(self.model.config),
            "normaliser": self.normaliser.to_dict(),
            "channels": self.channels,
            "time_unit": self.time_unit,
            "metadata": self.metadata,
            "noise_std": self.noise_std.tolist(),
            "extrap_noise_std": self.extrap_noise_std.tolist(),
            "backcast_noise_std": self.backcast_noise_std.tolist(),
            "noise_growth": self.noise_growth.tolist(),
        }
        if self.blend is not None:
            config["blend"] = self.blend.to_dict()
        if self.noise_scale is not None:
            config["noise_scale"] = self.noise_scale.to_dict()
        return save_model_files(directory, self.model, config)

    @classmethod
    def load(cls, directory: str | Path, *, device: torch.device | str = "cpu") -> Forecaster:
        """Load what :meth:`save` wrote, strictly.

        Raises:
            CheckpointError: missing files, unknown keys, weights that do not match the sizes in
                config.json (checked on the file's header before the network is allocated), or a
                model over ``MAX_PARAMETERS``.
        """
        data = read_config(directory)
        expected = {"model", "normaliser", "channels", "time_unit", "metadata", "noise_std"}
        # Checkpoints written before the noise was calibrated per regime lack these; they get
        # ``noise_std`` everywhere, as they predicted then.
        # Those written before the blend lack it: the model's answer unchanged, as then; and
        # before the noise scale, factor 1.
        optional = {"extrap_noise_std", "backcast_noise_std", "noise_growth", "blend",
                    "noise_scale"}
        if not expected <= set(data) <= expected | optional:
            raise CheckpointError(f"config.json in {str(directory)!r} must have the keys "
                                  f"{sorted(expected)} (and optionally {sorted(optional)}); "
                                  f"got {sorted(data)}.")
        try:
            model_config = config_from_dict(ModelConfig, data["model"])
            normaliser = Normaliser.from_dict(data["normaliser"])
        except ConfigError as exc:
            raise CheckpointError(f"config.json in {str(directory)!r} is invalid: {exc}") from exc
        # The config's sizes are checked against the weights file's header before the network
        # is allocated: a crafted config.json could otherwise ask for any amount of memory.
        with torch.device("meta"):
            skeleton = LatentODE(model_config)
        check_weight_shapes(directory, {k: tuple(v.shape)
                                        for k, v in skeleton.state_dict().items()})
        model = LatentODE(model_config)
        load_weights(directory, model)
        model.eval()
        try:
            fc = cls(model, normaliser, channels=data["channels"], time_unit=data["time_unit"],
                     metadata=data["metadata"], noise_std=data["noise_std"],
                     extrap_noise_std=data.get("extrap_noise_std"),
                     backcast_noise_std=data.get("backcast_noise_std"),
                     noise_growth=data.get("noise_growth"),
                     blend=(BaselineBlend.from_dict(data["blend"]) if "blend" in data else None),
                     noise_scale=(NoiseScale.from_dict(data["noise_scale"])
                                  if "noise_scale" in data else None))
        except (ConfigError, ShapeError) as exc:
            raise CheckpointError(f"config.json in {str(directory)!r} is invalid: {exc}") from exc
        return fc.to(device)

    # ------------------------------------------------------------------------------ prediction
    def sample_normalised(self, context: Observations, query_times: Tensor, *, num_samples: int,
                          seed: int = 0, solver: SolverConfig | None = None,
                          baselines: ChannelBaselines | None = None,
                          lines: ChannelBaselines | None = None
                          ) -> tuple[Tensor, SolverStats]:
        """Latent-sample trajectories on the model's scale; any failed series is an error.

        Args:
            context: B series (normalised).
            query_times: (B, Q) normalised query times, sorted per row.
            num_samples: S.
            seed: the latent noise (S, L) is drawn from this seed and shared by every series, so
                a series' answer does not depend on the rest of the batch.
            solver: overrides the model's solver settings.
            baselines: ``channel_baselines(context, query_times)`` when the caller has computed
                them already (the baseline anchor reads them, as in training).
            lines: the baselines the blend shrinks towards (:mod:`latent_ode.blend`): those of
                the user's own values, unclipped, where the normaliser clips what the model
                reads; ``None``: ``baselines``.

        Returns:
            (S, B, Q, D) decoded means and the solver statistics.

        Raises:
            SolverError: ``.series`` lists the failing series (indices into the batch),
                ``.reason`` the commonest of their own reasons.
        """
        samples, stats, failures = self._sample(context, query_times, num_samples=num_samples,
                                                seed=seed, solver=solver, baselines=baselines,
                                                lines=lines)
        error = _failure_error(failures, stats.max_steps)
        if error is not None:
            raise error
        return samples, stats

    def _sample(self, context: Observations, query_times: Tensor, *, num_samples: int,
                seed: int, solver: SolverConfig | None, baselines: ChannelBaselines | None = None,
                lines: ChannelBaselines | None = None
                ) -> tuple[Tensor, SolverStats, list[SolverFailure | None]]:
        """:meth:`sample_normalised` without raising: also each series' failure reason (None
        where all its samples solved); failed series' samples are NaN. One solve per call."""
        b, q = query_times.shape
        t0 = self.model.reference_time(context, query_times)
        mean, std = self.model.encode(context, t0)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        eps = torch.randn((num_samples, 1, mean.shape[1]), generator=gen, dtype=mean.dtype)
        z0 = self.model.sample_latent(mean, std, eps.to(mean.device))  # (S, B, L)
        t_rel = (query_times - t0[:, None]).repeat(num_samples, 1)  # (S*B, Q)
        pred, sol = self.model.decode(z0.reshape(num_samples * b, -1), t_rel, solver=solver)
        failures = series_failures(sol.status.reshape(num_samples, b))
        if self.blend is not None and baselines is None:
            baselines = channel_baselines(context, query_times)
        if (self.blend is not None and self.blend.raw_anchor is not None and lines is not None
                and baselines is not None):
            baselines = mix_baselines(baselines, lines, torch.as_tensor(self.blend.raw_anchor))
        pred = self.model.means(pred.reshape(num_samples, b, q, -1), context, query_times,
                                baselines=baselines)
        if self.blend is not None:
            assert baselines is not None  # computed above
            position = window_position(query_times, context.first_time, context.last_time)
            pred = self.blend.apply(pred, baselines if lines is None else lines, position)
        return pred, sol.stats, failures

    def predict(
        self,
        series: Sequence[Series],
        query_times: Sequence[np.ndarray],
        *,
        num_samples: int = 32,
        quantiles: Sequence[float] = (0.05, 0.5, 0.95),
        seed: int = 0,
        solver: SolverConfig | None = None,
    ) -> list[Forecast]:
        """Predictive mean, std and quantiles at any query times, in the user's units.

        Args:
            series: B series in the user's units, with the model's D channels.
            query_times: B arrays (Q_b,) of times, any order, duplicates allowed, before, inside
                or after each series' observed window.
            num_samples: latent samples S.
            quantiles: levels in (0, 1).
            seed: seed of the latent noise; the same seed gives the same answer.
            solver: overrides the model's solver settings (tolerances, step limit).

        Returns:
            One :class:`Forecast` per series, queries in the order asked. The batch is solved
            once; a series the solver could not answer (or whose forecast is not finite) is
            reported in its own :attr:`Forecast.status` and does not change the others'
            answers. :func:`raise_on_failure` turns such a series into an exception.

        Raises:
            DataError / ShapeError / ConfigError: bad inputs.
        """
        if len(series) != len(query_times):
            raise ShapeError(f"`query_times` must have one array per series ({len(series)}); got "
                             f"{len(query_times)}.")
        if len(series) == 0:
            raise DataError("`series` must contain at least one series; got none.")
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ConfigError(f"`num_samples` must be a positive integer; got {num_samples!r}.")
        levels = [float(x) for x in quantiles]
        if any(not 0.0 < x < 1.0 for x in levels):
            raise ConfigError(f"`quantiles` must lie strictly between 0 and 1; got {levels}.")
        d = len(self.channels)
        queries, refs = [], []
        for i, (s, q) in enumerate(zip(series, query_times, strict=True)):
            if s.num_channels != d:
                raise ShapeError(f"series {i} ({s.id!r}) has {s.num_channels} channels; the model "
                                 f"has {d}: {self.channels}.")
            q = np.asarray(q, dtype=np.float64)
            if q.ndim != 1 or q.size == 0 or not np.isfinite(q).all():
                raise DataError(f"`query_times` of series {i} ({s.id!r}) must be a non-empty 1-D "
                                f"array of finite times; got {q!r}.")
            queries.append(q)
            refs.append(s.times[0])
        ts = self.normaliser.time_scale
        # Times relative to each series' first observation, in float64, before going to float32:
        # absolute times (e.g. hours since 1970) would lose precision otherwise.
        model_series = [
            Series(times=(s.times - r) / ts, values=self.normaliser.values_to_model(s.values),
                   id=s.id) for s, r in zip(series, refs, strict=True)
        ]
        qmax = max(q.size for q in queries)
        orders = [np.argsort(q, kind="stable") for q in queries]
        padded = np.empty((len(series), qmax))
        for i, (q, o) in enumerate(zip(queries, orders, strict=True)):
            padded[i, : q.size] = q[o]
            padded[i, q.size:] = q[o][-1]
        # Where each query lies (Forecast.mode, and which noise it gets), in the user's float64
        # times: a query at a series' last observation is interpolation, exactly.
        position = window_position(torch.as_tensor(padded),
                                   torch.as_tensor([s.times[0] for s in series]),
                                   torch.as_tensor([s.times[-1] for s in series]))
        padded = (padded - np.asarray(refs)[:, None]) / ts
        device = self.device
        context = collate(model_series, device=device)
        # The blend's baselines are the user's own lines: unclipped where the normaliser
        # winsorises what the model reads (the anchor reads the clipped ones, as in training;
        # latent_ode/blend.py).
        raw = None if self.normaliser.clip is None or self.blend is None else collate(
            [Series(times=m.times, values=self.normaliser.values_to_model(s.values, clip=False),
                    id=s.id) for m, s in zip(model_series, series, strict=True)], device=device)
        qt = torch.as_tensor(padded, dtype=torch.float32, device=device)
        with torch.inference_mode():
            base = channel_baselines(context, qt)  # once: the anchor and the noise both use it
            lines = None if raw is None else channel_baselines(raw, qt)
            samples, stats, failures = self._sample(context, qt, num_samples=num_samples,
                                                    seed=seed, solver=solver, baselines=base,
                                                    lines=lines)
            # A series that failed (NaN samples) or whose samples are not finite is summarised
            # from zeros so that the batch's statistics stay computable; its values are blanked
            # below and its status says why.
            usable = torch.isfinite(samples).flatten(2).all(dim=2).all(dim=0)  # (B,)
            samples = torch.where(usable[None, :, None, None], samples, 0.0)
            noise = self.noise_tensor(position.to(device), samples, base.data_gap())  # (B, Q, D)
            mean = samples.mean(dim=0)  # (B, Q, D)
            std = torch.sqrt(samples.var(dim=0, unbiased=False) + noise**2)
            qs = _padded_quantiles(samples, noise, levels, [q.size for q in queries])
        mean_np = mean.double().cpu().numpy()
        std_np = std.double().cpu().numpy()
        qs_np = qs.double().cpu().numpy() if qs is not None else None
        usable_np = usable.cpu().numpy()
        out = []
        for i, (q, o) in enumerate(zip(queries, orders, strict=True)):
            inv = np.empty_like(o)
            inv[o] = np.arange(o.size)  # rows back in the order asked
            mode = [_MODES[p] for p in position[i, inv].tolist()]
            answer = _Answer(
                mean=self.normaliser.values_from_model(mean_np[i, inv]),
                std=self.normaliser.std_from_model(std_np[i, inv]),
                quantiles={lv: self.normaliser.values_from_model(qs_np[k, i, inv])
                           for k, lv in enumerate(levels)} if qs_np is not None else {},
            )
            status, message = _status(failures[i], bool(usable_np[i]) and answer.finite(),
                                      stats.max_steps)
            if status != "ok":
                answer = answer.blank()
            out.append(Forecast(query_times=q.copy(), mode=mode, mean=answer.mean, std=answer.std,
                                quantiles=answer.quantiles, stats=stats, status=status,
                                message=message))
        return out


@dataclass(frozen=True)
class _Answer:
    """One series' predictive summary in the user's units, before its status is known."""

    mean: np.ndarray  # (Q, D)
    std: np.ndarray  # (Q, D)
    quantiles: dict[float, np.ndarray]  # level -> (Q, D)

    def finite(self) -> bool:
        return bool(np.isfinite(self.mean).all() and np.isfinite(self.std).all()
                    and all(np.isfinite(v).all() for v in self.quantiles.values()))

    def blank(self) -> _Answer:
        """The same shapes, all NaN: a failed series' values are never half-usable."""
        return _Answer(mean=np.full_like(self.mean, np.nan), std=np.full_like(self.std, np.nan),
                       quantiles={k: np.full_like(v, np.nan) for k, v in self.quantiles.items()})


_NON_FINITE_OUTPUT = ("the forecast is not finite although the ODE solve succeeded; the series' "
                      "values or times are probably far outside the range the model was trained "
                      "on.")


def _status(reason: SolverFailure | None, finite: bool, max_steps: int | None
            ) -> tuple[ForecastStatus, str]:
    """A series' :attr:`Forecast.status` and message from its solver outcome (``reason``, None
    when solved) and whether its samples and summaries are all finite."""
    if reason is not None:
        return reason, failure_message(reason, max_steps)
    if not finite:
        # A latent state that is large but finite can still overflow in the decoder or when
        # scaled back to the user's units.
        return "non_finite", _NON_FINITE_OUTPUT
    return "ok", ""
