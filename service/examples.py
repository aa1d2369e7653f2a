"""Synthetic example series for the served model: what ``/ui``'s "Load example" and the OpenAPI
request examples offer.

A series of the demo's kind (``pipelines/sources/periodic.py``: a noisy sinusoid at irregular
times), built for the served model's channels, units and time scale from its normaliser alone:
the signal is drawn in the model's normalised space and mapped back with
``Normaliser.values_from_model``, so it lies where the model's training values lay. It is never
training data: only the normaliser's per-channel location and scale and its time scale are read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from latent_ode import Forecaster

__all__ = ["SyntheticSeries", "example_csv", "example_request", "synthetic_series"]

#: Share of the model's trained span (its time scale) that the example observes; the rest of the
#: span is what the page forecasts by default (extrapolation).
OBSERVED_SHARE = 0.6
#: Observation times of the example.
NUM_OBSERVATIONS = 30
#: Share of the cells left unobserved when the model has several channels.
MISSING_SHARE = 0.25
#: Query grid points over the whole trained span (the page's default step is span / this).
GRID_POINTS = 50


@dataclass(frozen=True)
class SyntheticSeries:
    """One synthetic series in the served model's units.

    Attributes:
        series_id: its id.
        times: (T,) observation times, strictly increasing, in the model's time unit.
        values: (T, D) observations in the model's channel order; NaN = not observed.
        horizon: how far past the last observation the page forecasts by default.
        every: the default step of the page's query grid.
    """

    series_id: str
    times: np.ndarray
    values: np.ndarray
    horizon: float
    every: float

    @property
    def num_observations(self) -> int:
        """Observed cells (channel values that are not NaN)."""
        return int(np.isfinite(self.values).sum())


def _decimals(span: float) -> int:
    """Decimals that keep about four significant digits of times on a span."""
    return max(0, 3 - math.floor(math.log10(span)))


def synthetic_series(forecaster: Forecaster, *, seed: int = 0) -> SyntheticSeries:
    """A noisy sinusoid per channel, observed at irregular times over the first
    :data:`OBSERVED_SHARE` of the model's trained span, with a quarter of the cells missing when
    the model has several channels.

    Args:
        forecaster: the served model (its channels, normaliser and time scale are read).
        seed: makes the series reproducible.
    """
    normaliser = forecaster.normaliser
    span = float(normaliser.time_scale)
    d = len(forecaster.channels)
    rng = np.random.default_rng(seed)
    decimals = _decimals(span)
    end = OBSERVED_SHARE * span
    times = np.unique(np.round(
        np.concatenate([[0.0], np.sort(rng.uniform(0.0, end, NUM_OBSERVATIONS - 1))]), decimals
    ))
    # The demo's series are sin(2 pi f t) + offset from t = 0 (no phase: a model trained on them
    # has only seen series that start rising from their offset), with 0.4-0.8 cycles per hour
    # over 5 hours (2 to 4 per span); the example keeps to the slower half, whose waves a few
    # dozen irregular points show clearly.
    cycles = rng.uniform(2.0, 3.0, size=d)
    wave = np.sin(2 * np.pi * cycles[None, :] * times[:, None] / span)
    if normaliser.kind == "minmax":  # the training values filled [0, 1]
        model_values = 0.5 + 0.4 * wave
    else:  # standard or robust: unit scale; a sinusoid of amplitude 1.4 has std 1
        model_values = 1.4 * wave
    model_values = model_values + 0.02 * rng.standard_normal(model_values.shape)  # noise
    values = np.asarray(normaliser.values_from_model(model_values), dtype=np.float64)
    values = np.round(values, 4)
    if d > 1:
        drop = rng.uniform(size=values.shape) < MISSING_SHARE
        drop[drop.all(axis=1), 0] = False  # every time observes at least one channel
        values[drop] = np.nan
    every = float(np.round(span / GRID_POINTS, decimals))
    horizon = float(np.round(span - times[-1], decimals))
    return SyntheticSeries(series_id="example-1", times=times, values=values,
                           horizon=max(horizon, every), every=every)


def _json_values(values: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in values.tolist()]


def example_request(
    series: SyntheticSeries,
    *,
    query_times: list[float],
    channels: list[str] | None = None,
    all_channels: list[str] | None = None,
    max_observations: int | None = None,
    quantiles: tuple[float, ...] | list[float] = (0.05, 0.25, 0.75, 0.95),
) -> dict[str, Any]:
    """A ``POST /v1/predict`` body for ``series``.

    Args:
        series: the synthetic series.
        query_times: the times to ask.
        channels: send only these channels (named in the series' ``channels`` field);
            ``all_channels`` must then give the model's channel order.
        all_channels: the model's channels.
        max_observations: keep only the first this many observation times.
        quantiles: the levels to ask (default: the page's 50% and 90% bands).
    """
    times, values = series.times, series.values
    if max_observations is not None:
        times, values = times[:max_observations], values[:max_observations]
    item: dict[str, Any] = {"id": series.series_id, "times": [float(t) for t in times]}
    if channels is not None:
        assert all_channels is not None
        columns = [all_channels.index(c) for c in channels]
        values = values[:, columns]
        keep = np.isfinite(values).any(axis=1)  # a row must observe something
        item["times"] = [float(t) for t in times[keep]]
        values = values[keep]
        item["channels"] = list(channels)
    item["values"] = _json_values(values)
    item["query_times"] = list(query_times)
    return {"series": [item], "num_samples": 32, "quantiles": list(quantiles)}


def example_csv(series: SyntheticSeries, channels: list[str]) -> str:
    """The series as a long-format CSV (``series_id,time,<channels>``; empty = not observed)."""
    lines = [",".join(["series_id", "time", *channels])]
    for t, row in zip(series.times.tolist(), series.values.tolist(), strict=True):
        cells = ["" if math.isnan(v) else repr(float(v)) for v in row]
        lines.append(",".join([series.series_id, repr(float(t)), *cells]))
    return "\n".join(lines) + "\n"
