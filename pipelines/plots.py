"""Evaluation plots: observations, held-out truth, predicted mean and 90% interval (PNG, Agg)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (also on machines without a display)

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from latent_ode import Series, raise_on_failure  # noqa: E402

__all__ = ["MAX_CHANNELS", "plot_forecasts"]

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
) -> list[tuple[str, Figure]]:
    """One figure per series: the model sees its first ``context_fraction`` of the time span
    and forecasts a dense grid over the whole span.

    Drawn per channel: the observations the model saw (filled dots), the later observations it
    did not see (hollow dots, the truth it extrapolates to), the predicted mean and the 5-95%
    interval.

    Args:
        forecaster: a trained ``latent_ode.Forecaster``.
        series: the series to draw (user units).
        context_fraction: fraction of each series' time span that the model observes.
        num_samples: latent samples per forecast.
        seed: seed of the latent samples.

    Returns:
        ``(file_name, figure)`` pairs; the caller saves and closes them.
    """
    channels = list(forecaster.channels)
    contexts, grids = [], []
    for s in series:
        t0, t1 = float(s.times[0]), float(s.times[-1])
        cut = t0 + context_fraction * (t1 - t0)
        seen = s.times <= cut
        seen[0] = True  # at least one observation
        contexts.append(s.select(seen))
        grids.append(np.linspace(t0, t1 if t1 > t0 else t0 + 1.0, _GRID))
    # A failed series is an error here, as it was before predict reported failures per series.
    forecasts = raise_on_failure(forecaster.predict(
        contexts, grids, num_samples=num_samples, quantiles=(0.05, 0.5, 0.95), seed=seed
    ))
    figures = []
    for i, (s, ctx, fc) in enumerate(zip(series, contexts, forecasts, strict=True)):
        counts = (~np.isnan(s.values)).sum(axis=0)
        shown = [int(j) for j in np.argsort(-counts, kind="stable")[:MAX_CHANNELS] if counts[j] > 0]
        fig, axes = plt.subplots(len(shown), 1, figsize=(8, 2.2 * len(shown)), sharex=True,
                                 squeeze=False)
        cut = float(ctx.times[-1])
        for ax, j in zip(axes[:, 0], shown, strict=True):
            ax.fill_between(fc.query_times, fc.quantiles[0.05][:, j], fc.quantiles[0.95][:, j],
                            color="tab:blue", alpha=0.25, label="90% interval")
            ax.plot(fc.query_times, fc.mean[:, j], color="tab:blue", label="predicted mean")
            later = s.times > cut
            ax.plot(s.times[~later], s.values[~later, j], "o", color="black", ms=4,
                    label="observed (seen)")
            ax.plot(s.times[later], s.values[later, j], "o", mfc="none", color="tab:red", ms=4,
                    label="truth (held out)")
            ax.axvline(cut, color="grey", ls="--", lw=0.8)
            ax.set_ylabel(channels[j])
        axes[0, 0].set_title(f"series {s.id!r}: observed up to t = {cut:.3g}, forecast after")
        axes[-1, 0].set_xlabel(f"time ({forecaster.time_unit})")
        axes[0, 0].legend(loc="upper right", fontsize="small")
        fig.tight_layout()
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in s.id) or str(i)
        figures.append((f"series_{i:02d}_{safe}.png", fig))
    logger.info("drew %d forecast plots", len(figures))
    return figures
