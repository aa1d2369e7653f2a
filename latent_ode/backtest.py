"""Rolling-origin backtest: forecast each series from several cut points, score in the user's units.

A backtest answers "how wrong would the forecasts have been, in my units, h hours ahead?" the
way statsforecast's ``cross_validation`` and Darts' ``historical_forecasts`` do, for irregular,
partially observed series: for every series and every cut point (the *origin*), the model sees
the series' observations up to and including the cut and forecasts every observed value after
it, up to ``horizon``. Each forecast error falls in a horizon bucket by its *lead* (target time
minus cut). The errors are those of the predictive mean, de-normalised: MAE and RMSE in the
data's own units, per channel and per bucket, beside the last observation carried forward
(LOCF) from the same context.

The ``interp`` regime hides a gap instead: the model sees the observations outside
``(cut, cut + horizon]``, on both sides, and fills the gap; scored against LOCF and linear
interpolation of the same context (:mod:`latent_ode.baselines`, the same baselines as
:func:`latent_ode.evaluate`).

Cut points (:func:`cut_points`): ``cuts = K`` spreads K origins over each series' own span, so
that with a ``horizon`` H the last window ends at the series' last observation (origins at
``first + (span - H) * k / K``, k = 1..K); without a horizon, or for a series shorter than H, at
``first + span * k / (K + 1)``. ``cut_times`` gives the same origins (times on the data's own
axis) to every series instead. A window with no observation up to its cut, or none to score,
is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from latent_ode.baselines import channel_baselines
from latent_ode.data import Series, collate
from latent_ode.errors import ConfigError, DataError, ShapeError
from latent_ode.forecaster import Forecaster

__all__ = ["BACKTEST_BASELINE", "BACKTEST_METHODS", "BacktestConfig", "BacktestRegime",
           "BacktestResult", "Window", "backtest", "cut_points", "score_windows", "windows"]

BacktestRegime = Literal["forecast", "interp"]
BACKTEST_METHODS: dict[BacktestRegime, tuple[str, ...]] = {
    "forecast": ("model", "locf"), "interp": ("model", "locf", "linear")}
"""The methods each regime scores: the model and the baselines drawn from the same context."""
BACKTEST_BASELINE: dict[BacktestRegime, str] = {"forecast": "locf", "interp": "linear"}
"""The baseline a regime's ``baseline_*`` metrics name (as :data:`latent_ode.evaluation.BASELINE`)."""


@dataclass(frozen=True, kw_only=True)
class BacktestConfig:
    """Where to cut, how far to score, and how to bucket the leads.

    Attributes:
        cuts: K origins per series, spread over its span (see the module docstring); ``None``
            when ``cut_times`` is given.
        cut_times: the same origins for every series, on the data's time axis (its unit).
        horizon: score the observations at most this far after the cut (data time unit);
            ``None``: every observation after it. ``interp`` needs it (the gap's width).
        buckets: equal horizon buckets over ``(0, horizon]`` (without a horizon, over
            ``(0, largest lead]``).
        regime: ``forecast`` (the model sees the past only) or ``interp`` (a gap of width
            ``horizon`` after the cut is hidden; the model sees both sides).
        num_samples: latent samples per forecast; the mean over samples is the forecast.
        seed: seed of the latent samples.
        batch_size: windows per solver call.

    Raises:
        ConfigError: a field out of range, both or neither of ``cuts`` and ``cut_times``,
            or ``interp`` without a horizon.
    """

    cuts: int | None = 3
    cut_times: tuple[float, ...] | None = None
    horizon: float | None = None
    buckets: int = 5
    regime: BacktestRegime = "forecast"
    num_samples: int = 16
    seed: int = 0
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.cut_times is not None:
            times = tuple(float(t) for t in self.cut_times)
            object.__setattr__(self, "cut_times", times)
            if self.cuts is not None:
                raise ConfigError(f"give `cuts` or `cut_times`, not both; got cuts={self.cuts} "
                                  f"and cut_times={list(times)}.")
            if not times or not all(math.isfinite(t) for t in times):
                raise ConfigError(f"`cut_times` must be one or more finite times; got "
                                  f"{list(times)}.")
        elif self.cuts is None:
            raise ConfigError("give `cuts` (origins per series) or `cut_times`; got neither.")
        elif not (isinstance(self.cuts, int) and self.cuts >= 1):
            raise ConfigError(f"`cuts` must be a positive integer; got {self.cuts!r}.")
        if self.horizon is not None and not (math.isfinite(self.horizon) and self.horizon > 0):
            raise ConfigError(f"`horizon` must be a positive, finite time; got {self.horizon!r}.")
        if self.regime not in BACKTEST_METHODS:
            raise ConfigError(f"`regime` must be 'forecast' or 'interp'; got {self.regime!r}.")
        if self.regime == "interp" and self.horizon is None:
            raise ConfigError("the `interp` regime needs a `horizon` (the width of the hidden "
                              "gap after each cut); got none.")
        for name in ("buckets", "num_samples", "batch_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"`{name}` must be a positive integer; got {value!r}.")


def cut_points(series: Series, config: BacktestConfig) -> np.ndarray:
    """The origins of ``series``' windows (see the module docstring), before any is skipped.

    Args:
        series: one series (its own time axis).
        config: the backtest settings.

    Returns:
        (K,) cut times, increasing; empty for a single-point series under ``cuts``.
    """
    if config.cut_times is not None:
        return np.asarray(sorted(set(config.cut_times)), dtype=np.float64)
    cuts = config.cuts
    assert cuts is not None  # BacktestConfig: `cuts` or `cut_times`
    first, last = float(series.times[0]), float(series.times[-1])
    span = last - first
    if span <= 0:
        return np.zeros(0)
    k = np.arange(1, cuts + 1, dtype=np.float64)
    h = config.horizon
    if h is not None and span > h:
        return first + (span - h) * k / cuts  # the last window ends at the last point
    return first + span * k / (cuts + 1)


@dataclass(frozen=True)
class Window:
    """One (series, origin) pair: what the model sees and what it is scored on.

    Attributes:
        series: index of the series in the backtested list.
        cut: the origin.
        context: the observations the model (and the baselines) see.
        target_times: (Q,) times of the scored observations, all in ``(cut, cut + horizon]``.
        target_values: (Q, D) their values (NaN: not observed, not scored).
    """

    series: int
    cut: float
    context: Series
    target_times: np.ndarray
    target_values: np.ndarray


def windows(series: Sequence[Series], config: BacktestConfig) -> list[Window]:
    """Every usable window of ``series``: series in order, origins increasing.

    A window without an observation up to its cut, or without one to score, is left out.
    """
    out = []
    for i, s in enumerate(series):
        for cut in cut_points(s, config):
            end = np.inf if config.horizon is None else cut + config.horizon
            scored = (s.times > cut) & (s.times <= end)
            seen = s.times <= cut
            if config.regime == "interp":
                seen = ~scored
            if not scored.any() or not (s.times <= cut).any():
                continue
            out.append(Window(series=i, cut=float(cut), context=s.select(seen),
                              target_times=s.times[scored], target_values=s.values[scored]))
    return out


@dataclass(frozen=True)
class BacktestResult:
    """MAE and RMSE per method, channel and horizon bucket, in the data's units.

    Attributes:
        regime: ``forecast`` or ``interp``.
        channels: the D channel names.
        methods: the M methods scored (``model`` first, then the baselines).
        bucket_edges: (K + 1,) lead edges in the data's time unit; bucket k holds the leads in
            ``(edges[k], edges[k + 1]]``.
        count: (K, D) scored values per bucket and channel.
        mae, rmse: (M, K, D) errors per method, bucket and channel; NaN where ``count`` is 0.
        total_count: (D,) scored values per channel over every bucket.
        total_mae, total_rmse: (M, D) errors over every bucket.
        windows: windows scored.
        series: series with at least one window scored.
        failed: windows the solver could not answer (left out of every error, their series
            ids in ``failed_ids``).
        failed_ids: ids of the series whose windows failed, once each, in order.
    """

    regime: BacktestRegime
    channels: tuple[str, ...]
    methods: tuple[str, ...]
    bucket_edges: np.ndarray
    count: np.ndarray
    mae: np.ndarray
    rmse: np.ndarray
    total_count: np.ndarray
    total_mae: np.ndarray
    total_rmse: np.ndarray
    windows: int
    series: int
    failed: int = 0
    failed_ids: tuple[str, ...] = field(default=())

    def rows(self) -> list[dict[str, float | int | str]]:
        """The table, one row per channel and bucket (bucket ``all`` last for each channel).

        Columns: ``channel``, ``bucket`` (``h1``..``hK`` or ``all``), ``lead_from``,
        ``lead_to``, ``count``, then ``<method>_mae`` and ``<method>_rmse`` per method.
        """
        edges = self.bucket_edges
        k = len(edges) - 1
        out: list[dict[str, float | int | str]] = []
        for j, ch in enumerate(self.channels):
            for b in range(k + 1):
                whole = b == k
                row: dict[str, float | int | str] = {
                    "channel": ch, "bucket": "all" if whole else f"h{b + 1}",
                    "lead_from": float(edges[0] if whole else edges[b]),
                    "lead_to": float(edges[-1] if whole else edges[b + 1]),
                    "count": int(self.total_count[j] if whole else self.count[b, j]),
                }
                for m, name in enumerate(self.methods):
                    row[f"{name}_mae"] = float(self.total_mae[m, j] if whole else self.mae[m, b, j])
                    row[f"{name}_rmse"] = float(self.total_rmse[m, j] if whole
                                                else self.rmse[m, b, j])
                out.append(row)
        return out

    def metrics(self) -> dict[str, float]:
        """Flat metrics named like :func:`latent_ode.evaluate`'s, under the regime ``backtest``.

        ``backtest/mae_units/<channel>``, ``backtest/rmse_units/<channel>`` (the model),
        ``backtest/baseline_mae_units/<channel>``, ``backtest/baseline_rmse_units/<channel>``
        (LOCF for ``forecast``, linear interpolation for ``interp``), ``backtest/count/<channel>``
        (channels without scored values are left out) and ``backtest/count``,
        ``backtest/windows``, ``backtest/failed``.
        """
        base = self.methods.index(BACKTEST_BASELINE[self.regime])
        out = {"backtest/count": float(self.total_count.sum()),
               "backtest/windows": float(self.windows), "backtest/failed": float(self.failed)}
        for j, ch in enumerate(self.channels):
            if self.total_count[j] == 0:
                continue
            out[f"backtest/count/{ch}"] = float(self.total_count[j])
            out[f"backtest/mae_units/{ch}"] = float(self.total_mae[0, j])
            out[f"backtest/rmse_units/{ch}"] = float(self.total_rmse[0, j])
            out[f"backtest/baseline_mae_units/{ch}"] = float(self.total_mae[base, j])
            out[f"backtest/baseline_rmse_units/{ch}"] = float(self.total_rmse[base, j])
        return out


def _baselines(items: Sequence[Window], fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LOCF and linear interpolation of each window's context at its target times, in the
    data's units, by :func:`latent_ode.baselines.channel_baselines`.

    Returns:
        (locf, linear), each (N, Qmax, D): window i's answers in its first Q_i rows.
    """
    # Each window on its own clock (float64): absolute times would lose digits otherwise.
    contexts = [Series(times=w.context.times - w.cut, values=w.context.values, id=w.context.id)
                for w in items]
    qmax = max(w.target_times.size for w in items)
    queries = np.stack([np.pad(w.target_times - w.cut, (0, qmax - w.target_times.size), mode="edge")
                        for w in items])
    base = channel_baselines(collate(contexts, dtype=torch.float64),
                             torch.as_tensor(queries, dtype=torch.float64),
                             torch.as_tensor(fallback, dtype=torch.float64))
    return base.locf.numpy(), base.linear.numpy()


def score_windows(items: Sequence[Window], predictions: Sequence[np.ndarray | None], *,
                  channels: Sequence[str], config: BacktestConfig,
                  fallback: np.ndarray) -> BacktestResult:
    """Score predictions of ``items`` against their targets, beside the baselines.

    The scoring half of :func:`backtest`, apart so that any forecaster's answers (or exact
    ones, in a test) can be scored.

    Args:
        items: N windows (:func:`windows`).
        predictions: per window its (Q, D) predictive mean in the data's units, or ``None``
            for a window the model could not answer.
        channels: the D channel names.
        config: the backtest settings (regime, horizon, buckets).
        fallback: (D,) what the baselines predict for a channel the context never observes.

    Raises:
        DataError: no windows, or a prediction of the wrong shape.
    """
    if not items:
        raise DataError("no window to score: every series needs an observation at or before a "
                        "cut and one after it (within the horizon); use fewer `cuts`, other "
                        "`cut_times` or a longer `horizon`.")
    d = len(channels)
    methods = BACKTEST_METHODS[config.regime]
    ok = [i for i, p in enumerate(predictions) if p is not None]
    failed_ids = tuple(dict.fromkeys(items[i].context.id for i, p in enumerate(predictions)
                                     if p is None))
    leads, chan, errs = [], [], []
    # The baselines a batch of windows at a time: one padded batch of every window of a large
    # split (thousands, each padded to the longest) would hold gigabytes.
    for start in range(0, len(ok), config.batch_size):
        chunk = ok[start:start + config.batch_size]
        locf, linear = _baselines([items[i] for i in chunk], fallback)
        for n, i in enumerate(chunk):
            w, pred = items[i], np.asarray(predictions[i], dtype=np.float64)
            q = w.target_times.size
            if pred.shape != (q, d):
                raise DataError(f"the prediction of window {i} (series {w.context.id!r}, cut "
                                f"{w.cut:g}) must have shape ({q}, {d}); got {pred.shape}.")
            observed = ~np.isnan(w.target_values)  # (Q, D)
            by_method = {"model": pred, "locf": locf[n, :q], "linear": linear[n, :q]}
            err = np.stack([by_method[m] - w.target_values for m in methods])  # (M, Q, D)
            lead = np.broadcast_to((w.target_times - w.cut)[:, None], (q, d))
            leads.append(lead[observed])
            chan.append(np.broadcast_to(np.arange(d), (q, d))[observed])
            errs.append(err[:, observed])
    lead = np.concatenate(leads) if leads else np.zeros(0)
    ch = np.concatenate(chan).astype(np.int64) if chan else np.zeros(0, np.int64)
    err = np.concatenate(errs, axis=1) if errs else np.zeros((len(methods), 0))
    top = config.horizon if config.horizon is not None else float(lead.max(initial=0.0))
    edges = np.linspace(0.0, top if top > 0 else 1.0, config.buckets + 1)
    # Leads are > 0; bucket k holds (edges[k], edges[k + 1]].
    bucket = np.clip(np.searchsorted(edges, lead, side="left") - 1, 0, config.buckets - 1)
    k = config.buckets
    cell = bucket * d + ch  # flat (bucket, channel) index

    def per_cell(x: np.ndarray, size: int, index: np.ndarray) -> np.ndarray:
        return np.bincount(index, weights=x, minlength=size)

    count = per_cell(np.ones_like(lead), k * d, cell).reshape(k, d)
    total = per_cell(np.ones_like(lead), d, ch)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = np.stack([per_cell(np.abs(e), k * d, cell).reshape(k, d) for e in err]) / count
        mse = np.stack([per_cell(e**2, k * d, cell).reshape(k, d) for e in err]) / count
        total_mae = np.stack([per_cell(np.abs(e), d, ch) for e in err]) / total
        total_mse = np.stack([per_cell(e**2, d, ch) for e in err]) / total
    return BacktestResult(
        regime=config.regime, channels=tuple(channels), methods=methods, bucket_edges=edges,
        count=count.astype(np.int64), mae=mae, rmse=np.sqrt(mse),
        total_count=total.astype(np.int64), total_mae=total_mae, total_rmse=np.sqrt(total_mse),
        windows=len(ok), series=len({items[i].series for i in ok}),
        failed=len(items) - len(ok), failed_ids=failed_ids)


def backtest(forecaster: Forecaster, series: Sequence[Series], config: BacktestConfig, *,
             fallback: Sequence[float] | np.ndarray | None = None) -> BacktestResult:
    """Rolling-origin backtest of ``forecaster`` on ``series`` (see the module docstring).

    Args:
        forecaster: the trained model; it answers in the data's units.
        series: the series to backtest, in the data's units, with the model's D channels.
        config: cuts, horizon, buckets, regime, sampling.
        fallback: (D,) what the baselines predict for a channel never observed in a context
            (the training mean, say); ``None``: each channel's mean over ``series``.

    Returns:
        :class:`BacktestResult`.

    Raises:
        DataError: no series, a series with the wrong number of channels, or no usable window.
        ShapeError: ``fallback`` is not D finite numbers.
    """
    if len(series) == 0:
        raise DataError("`series` must contain at least one series; got none.")
    d = len(forecaster.channels)
    for s in series:
        if s.num_channels != d:
            raise DataError(f"series {s.id!r} has {s.num_channels} channels; the model has {d}: "
                            f"{forecaster.channels}.")
    if fallback is None:
        values = np.concatenate([s.values for s in series])  # (N, D)
        seen = ~np.isnan(values)
        # A channel never observed anywhere has nothing to score: any fallback does.
        fb = np.where(seen, values, 0.0).sum(axis=0) / np.maximum(seen.sum(axis=0), 1)
    else:
        fb = np.asarray(fallback, dtype=np.float64)
        if fb.shape != (d,) or not np.isfinite(fb).all():
            raise ShapeError(f"`fallback` must be {d} finite numbers (one per channel, the "
                             f"data's units); got {fb.tolist()}.")
    items = windows(series, config)
    predictions: list[np.ndarray | None] = []
    for start in range(0, len(items), config.batch_size):
        chunk = items[start:start + config.batch_size]
        answers = forecaster.predict([w.context for w in chunk], [w.target_times for w in chunk],
                                     num_samples=config.num_samples, quantiles=(),
                                     seed=config.seed + start)
        predictions += [a.mean if a.ok else None for a in answers]
    return score_windows(items, predictions, channels=forecaster.channels, config=config,
                         fallback=fb)
