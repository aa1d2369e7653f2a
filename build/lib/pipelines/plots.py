"""Evaluation plots (PNG, Agg): forecasts of test series in both regimes (observations, held-out
truth, predicted mean and 90% interval), per-channel skill, and error and coverage against the
horizon."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (also on machines without a display)

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from latent_ode import EvalResult, Series, raise_on_failure  # noqa: E402
from latent_ode.evaluation import BASELINE, HORIZON_BINS, REGIMES  # noqa: E402

__all__ = ["MAX_CHANNELS", "plot_channel_skill", "plot_forecasts", "plot_horizon"]

logger = logging.getLogger(__name__)

MAX_CHANNELS = 6
"""Channels drawn per series (the most observed ones); a plot of 37 panels reads as noise."""

_GRID = 200


def plot_forecasts(
    forecaster: Any,
    series: Sequence[Series],
    *,
    context_fraction: float = 0.5,
    num_samples: int = 32,
    seed: int = 0,
    mode: str = "forecast",
) -> list[tuple[str, Figure]]:
    """One figure per series and a dense grid of predictions over its whole span.

    ``mode="forecast"``: the model sees the first ``context_fraction`` of the time span and
    forecasts the rest (``series_NN_<id>.png``); ``mode="interp"``: it sees a seeded random
    ``context_fraction`` of the time points and fills in the others
    (``interp_series_NN_<id>.png``). Drawn per channel: the observations the model saw (filled
    dots), those it did not see (hollow dots, the truth), the predicted mean and the 5-95%
    interval.

    Args:
        forecaster: a trained ``latent_ode.Forecaster``.
        series: the series to draw (user units).
        context_fraction: fraction of each series' time span that the model observes.
        num_samples: latent samples per forecast.
        seed: seed of the latent samples (and of the hidden points in ``interp`` mode).
        mode: ``forecast`` or ``interp``.

    Returns:
        ``(file_name, figure)`` pairs; the caller saves and closes them.
    """
    if mode not in ("forecast", "interp"):
        raise ValueError(f"`mode` must be 'forecast' or 'interp'; got {mode!r}.")
    channels = list(forecaster.channels)
    rng = np.random.default_rng(seed)
    contexts, grids, seens = [], [], []
    for s in series:
        t0, t1 = float(s.times[0]), float(s.times[-1])
        if mode == "forecast":
            seen = s.times <= t0 + context_fraction * (t1 - t0)
        else:
            seen = np.zeros(s.times.size, dtype=bool)
            keep = max(1, round(context_fraction * s.times.size))
            seen[rng.choice(s.times.size, size=keep, replace=False)] = True
        seen[0] |= not seen.any()  # at least one observation
        seens.append(seen)
        contexts.append(s.select(seen))
        grids.append(np.linspace(t0, t1 if t1 > t0 else t0 + 1.0, _GRID))
    # A failed series is an error here, as it was before predict reported failures per series.
    forecasts = raise_on_failure(forecaster.predict(
        contexts, grids, num_samples=num_samples, quantiles=(0.05, 0.5, 0.95), seed=seed
    ))
    figures = []
    for i, (s, seen, fc) in enumerate(zip(series, seens, forecasts, strict=True)):
        counts = (~np.isnan(s.values)).sum(axis=0)
        shown = [int(j) for j in np.argsort(-counts, kind="stable")[:MAX_CHANNELS] if counts[j] > 0]
        fig, axes = plt.subplots(len(shown), 1, figsize=(8, 2.2 * len(shown)), sharex=True,
                                 squeeze=False)
        cut = float(s.times[seen][-1])
        for ax, j in zip(axes[:, 0], shown, strict=True):
            ax.fill_between(fc.query_times, fc.quantiles[0.05][:, j], fc.quantiles[0.95][:, j],
                            color="tab:blue", alpha=0.25, label="90% interval")
            ax.plot(fc.query_times, fc.mean[:, j], color="tab:blue", label="predicted mean")
            ax.plot(s.times[seen], s.values[seen, j], "o", color="black", ms=4,
                    label="observed (seen)")
            ax.plot(s.times[~seen], s.values[~seen, j], "o", mfc="none", color="tab:red", ms=4,
                    label="truth (held out)")
            if mode == "forecast":
                ax.axvline(cut, color="grey", ls="--", lw=0.8)
            ax.set_ylabel(channels[j])
        axes[0, 0].set_title(
            f"series {s.id!r}: observed up to t = {cut:.3g}, forecast after" if mode == "forecast"
            else f"series {s.id!r}: {int(seen.sum())} of {seen.size} time points seen, "
                 "the others filled in")
        axes[-1, 0].set_xlabel(f"time ({forecaster.time_unit})")
        axes[0, 0].legend(loc="upper right", fontsize="small")
        fig.tight_layout()
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in s.id) or str(i)
        prefix = "" if mode == "forecast" else "interp_"
        figures.append((f"{prefix}series_{i:02d}_{safe}.png", fig))
    logger.info("drew %d %s plots", len(figures), mode)
    return figures


def plot_channel_skill(result: EvalResult, *, split: str) -> list[tuple[str, Figure]]:
    """A bar per channel of its skill ``1 - model MSE / baseline MSE``, one panel per regime.

    Bars right of 0 (blue) beat the baseline; left (red) lose to it. Skills below -1 are drawn
    at -1 with the value written beside.

    Returns:
        ``[("<split>_channel_skill.png", figure)]``.
    """
    channels = result.regimes[REGIMES[0]].channels
    fig, axes = plt.subplots(1, len(REGIMES), figsize=(5 * len(REGIMES), 1.0 + 0.25 * len(channels)),
                             sharey=True, squeeze=False)
    y = np.arange(len(channels))
    for ax, regime in zip(axes[0], REGIMES, strict=True):
        scores = result.regimes[regime]
        skill = scores.skill
        shown = np.clip(np.nan_to_num(skill, nan=0.0), -1.0, 1.0)
        ax.barh(y, shown, color=np.where(shown >= 0, "tab:blue", "tab:red"))
        for j in np.flatnonzero(skill < -1):
            ax.text(-1.0, j, f" {skill[j]:.2g}", va="center", fontsize="x-small")
        ax.axvline(0.0, color="black", lw=0.8)
        ax.set_xlim(-1.05, 1.05)
        ax.set_title(f"{split} {regime}: pooled skill {scores.pooled('skill'):.3g}\n"
                     f"(1 - MSE / {BASELINE[regime]} MSE)", fontsize="small")
        ax.set_xlabel("skill")
    axes[0, 0].set_yticks(y, channels, fontsize="small")
    axes[0, 0].invert_yaxis()
    fig.tight_layout()
    return [(f"{split}_channel_skill.png", fig)]


def plot_horizon(result: EvalResult, *, split: str) -> list[tuple[str, Figure]]:
    """Error and 90%-interval coverage against the horizon, one panel per regime.

    Horizon: the distance after the context's last observation (forecast), to the channel's
    nearest seen value (interpolation), in :data:`~latent_ode.evaluation.HORIZON_BINS` equal bins.

    Returns:
        ``[("<split>_horizon_error.png", fig), ("<split>_horizon_coverage.png", fig)]``.
    """
    err, err_axes = plt.subplots(1, len(REGIMES), figsize=(5 * len(REGIMES), 3.2), squeeze=False)
    cov, cov_axes = plt.subplots(1, len(REGIMES), figsize=(5 * len(REGIMES), 3.2), squeeze=False)
    bins = np.arange(1, HORIZON_BINS + 1)
    for ax_e, ax_c, regime in zip(err_axes[0], cov_axes[0], REGIMES, strict=True):
        s = result.regimes[regime]
        labels = [f"{a:.2g}-{b:.2g}" for a, b in zip(s.horizon_edges[:-1], s.horizon_edges[1:],
                                                       strict=True)]
        ax_e.plot(bins, s.horizon_mse, "o-", label="model")
        ax_e.plot(bins, s.horizon_baseline_mse, "s--", color="grey", label=BASELINE[regime])
        ax_e.set_ylabel("MSE (normalised)")
        ax_e.legend(fontsize="small")
        ax_c.plot(bins, s.horizon_coverage_90, "o-")
        ax_c.axhline(0.9, color="grey", ls="--", lw=0.8)
        ax_c.axhspan(0.85, 0.95, color="grey", alpha=0.15)
        ax_c.set_ylim(0.0, 1.02)
        ax_c.set_ylabel("90% interval coverage")
        what = "after the last observation" if regime == "forecast" else "to the nearest seen value"
        for ax in (ax_e, ax_c):
            ax.set_xticks(bins, labels, fontsize="x-small")
            ax.set_xlabel(f"distance {what}")
            ax.set_title(f"{split} {regime}", fontsize="small")
    for fig in (err, cov):
        fig.tight_layout()
    return [(f"{split}_horizon_error.png", err), (f"{split}_horizon_coverage.png", cov)]
