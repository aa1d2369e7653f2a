"""The schema-free adapter on its own: conversions and how failures are attributed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from latent_ode import DataError, SolverConfig
from service.config import Settings
from service.errors import InputError, SolverBudgetError
from service.predictor import Job, prepare_series, run_jobs
from service.schemas import SeriesIn
from tests.service.service_helpers import CHANNELS, make_forecaster

# The settings are the limits (service.predictor.Limits is their shape).
LIMITS = Settings(
    max_points_per_series=100, max_series_per_request=10, max_query_times_per_series=100,
    max_horizon_span_multiple=10.0, max_horizon_abs=0.0, max_encoder_steps=10_000,
    default_num_samples=8, max_num_samples=16, seed=0,
)
SOLVER = SolverConfig()


def _prepare(items: list[SeriesIn], time_unit: str = "hours") -> list[Any]:
    return prepare_series(items, channels=CHANNELS, time_unit=time_unit, time_scale=10.0,
                          encoder_max_step=0.02, limits=LIMITS)


def _item(**changes: Any) -> SeriesIn:
    base = {"id": None, "times": [0.0, 1.0, 2.0], "values": [[70.0, 37.0], [71.0, None],
            [None, 37.2]], "channels": None, "query_times": [0.5, 3.0]}
    return SeriesIn(**{**base, **changes})


def test_iso_times_need_a_calendar_time_unit() -> None:
    item = _item(times=["2024-05-01T00:00:00Z", "2024-05-01T01:00:00Z", "2024-05-01T02:00:00Z"])
    with pytest.raises(InputError, match=r"^series\[0\]: `times` holds ISO-8601 strings but this "
                       r"model's time unit 'steps' is not a calendar unit \(seconds, minutes, "
                       r"hours, days\); send numbers in steps\.$"):
        _prepare([item], time_unit="steps")


def test_channels_are_placed_in_the_models_order() -> None:
    (prepared,) = _prepare([_item(channels=["temp"], values=[[37.0], [37.1], [37.2]])])
    assert np.isnan(prepared.series.values[:, 0]).all()
    np.testing.assert_array_equal(prepared.series.values[:, 1], [37.0, 37.1, 37.2])


class _FailsOnMarkedSeries:
    """Delegates to a real Forecaster, but raises DataError when a marked series is in the call
    (the library cannot be made to do this with inputs that passed the service's checks)."""

    def __init__(self, marked_time: float) -> None:
        self.real = make_forecaster()
        self.marked_time = marked_time
        self.calls: list[int] = []

    def predict(self, series: list[Any], queries: list[Any], **kwargs: Any) -> list[Any]:
        self.calls.append(len(series))
        if any(s.times[0] == self.marked_time for s in series):
            raise DataError("something the library did not like")
        return self.real.predict(series, queries, **kwargs)


def test_a_library_error_fails_only_the_request_that_caused_it() -> None:
    forecaster = _FailsOnMarkedSeries(marked_time=-5.0)
    good = Job(model=None, series=_prepare([_item()]), num_samples=8, seed=0,
               quantiles=(0.5,))
    bad = Job(model=None, series=_prepare([_item(times=[-5.0, 1.0, 2.0])]), num_samples=8,
              seed=0, quantiles=(0.5,))
    results = run_jobs(forecaster, [good, bad, good], solver=SOLVER)
    assert forecaster.calls == [3, 1, 1, 1]  # the batch, then each request alone
    assert isinstance(results[1], InputError)
    assert str(results[1]) == "something the library did not like"
    assert isinstance(results[0], list) and isinstance(results[2], list)
    alone = run_jobs(forecaster.real, [good], solver=SOLVER)[0]
    assert isinstance(alone, list)
    np.testing.assert_allclose(results[0][0].mean, alone[0].mean, rtol=1e-6, atol=1e-6)


class _Squared(torch.nn.Module):
    """Latent dynamics dz/dt = 10 z² + 1: finite for a short while, then infinite."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 10 * z**2 + 1


def test_a_series_that_blows_up_fails_only_its_request_naming_why() -> None:
    forecaster = make_forecaster()
    forecaster.model.dynamics = _Squared()
    near = Job(model=None, series=_prepare([_item(query_times=[0.05, 0.0])]), num_samples=8,
               seed=0, quantiles=(0.5,))
    far = Job(model=None, series=_prepare([_item(id="far", query_times=[0.5, 19.0])]),
              num_samples=8, seed=0, quantiles=(0.5,))
    results = run_jobs(forecaster, [near, far], solver=SOLVER)
    assert isinstance(results[0], list) and results[0][0].ok
    assert isinstance(results[1], SolverBudgetError)
    assert results[1].series == (0,)
    assert str(results[1]) == (
        "the model could not forecast series[0] ('far') (non_finite): the ODE solver failed "
        "(non_finite); the latent state blew up to inf/NaN; check the inputs and the horizon. "
        "Ask for query times nearer the observations, or send values and times like those the "
        "model was trained on."
    )


def test_padding_groups_keep_equal_sizes_together_and_a_large_one_apart() -> None:
    from service.predictor import padding_groups

    assert padding_groups([50] * 5) == [[0, 1, 2, 3, 4]]
    # One 10,000-query series among small ones would pad each of them to 10,000.
    assert padding_groups([60, 10_000, 50, 55]) == [[2, 3, 0], [1]]
    assert padding_groups([]) == []


def test_a_large_series_does_not_pad_the_small_ones_of_its_batch() -> None:
    """The library pads every series of a call to the call's most query times."""
    calls: list[list[int]] = []
    real = make_forecaster()

    class Recording:
        def predict(self, series: Any, query_times: Any, **kwargs: Any) -> Any:
            calls.append([q.size for q in query_times])
            return real.predict(series, query_times, **kwargs)

    small = _prepare([_item(query_times=[0.5, 1.5])] * 3)
    large = _prepare([_item(query_times=list(np.linspace(0, 2, 90)))])
    jobs = [Job(model=None, series=small, num_samples=2, seed=0, quantiles=(0.5,)),  # type: ignore[arg-type]
            Job(model=None, series=large, num_samples=2, seed=0, quantiles=(0.5,))]  # type: ignore[arg-type]
    results = run_jobs(Recording(), jobs, solver=SOLVER)  # type: ignore[arg-type]
    assert sorted(calls) == [[2, 2, 2], [90]]
    alone = real.predict([p.series for p in small], [p.query_times for p in small],
                         num_samples=2, quantiles=[0.5], seed=0, solver=SOLVER)
    for got, expected in zip(results[0], alone, strict=True):  # type: ignore[arg-type]
        np.testing.assert_allclose(got.mean, expected.mean, rtol=1e-6, atol=1e-6)
