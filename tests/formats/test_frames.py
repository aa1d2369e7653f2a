"""formats.frames: the one frame format of the CLI, HTTP, the pyfunc and Spark."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from formats.frames import (
    forecast_frame,
    forecasts_to_frame,
    frame_to_requests,
    horizon_times,
    output_columns,
    parse_quantiles,
    predict_frame,
    quantile_column,
    response_to_frame,
)
from formats.longformat import Locator
from latent_ode import Series
from latent_ode.errors import ConfigError, DataError, SolverError
from tests.service.service_helpers import CHANNELS, make_forecaster, make_series

TOL = {"rtol": 1e-5, "atol": 1e-5}  # the solver's own tolerance: batches solve to it


@pytest.fixture(scope="module")
def forecaster():
    return make_forecaster()


def input_frame(series: list[Series], queries: list[np.ndarray]) -> pd.DataFrame:
    """Observation rows then query rows of each series (the frame format's input)."""
    parts = []
    for s, q in zip(series, queries, strict=True):
        obs = pd.DataFrame({"series_id": s.id, "time": s.times, "query": False})
        for j, c in enumerate(CHANNELS):
            obs[c] = s.values[:, j]
        parts += [obs, pd.DataFrame({"series_id": s.id, "time": q, "query": True})]
    return pd.concat(parts, ignore_index=True)


def test_output_columns_name_each_channel_and_level_in_order() -> None:
    assert output_columns(["hr", "temp"], [0.05, 0.5]) == [
        "series_id", "time", "mode", "hr_mean", "hr_std", "hr_q0.05", "hr_q0.5",
        "temp_mean", "temp_std", "temp_q0.05", "temp_q0.5",
    ]
    assert quantile_column("hr", 1e-05) == "hr_q1e-05"


def test_a_frame_is_answered_as_the_library_answers(forecaster) -> None:
    series = make_series(3)
    queries = [np.array([11.0, 0.5, 5.0]), np.array([12.0]), np.array([-1.0, 3.0])]
    frame = input_frame(series, queries)
    out = predict_frame(forecaster, frame, quantiles="0.1,0.9", num_samples=8, seed=3)
    expected = forecaster.predict(series, queries, num_samples=8, quantiles=(0.1, 0.9), seed=3)
    assert list(out.columns) == output_columns(CHANNELS, [0.1, 0.9])
    assert list(out["series_id"]) == ["s0"] * 3 + ["s1"] + ["s2"] * 2
    np.testing.assert_array_equal(out["time"], np.concatenate(queries))  # the order given
    assert list(out["mode"]) == [m for f in expected for m in f.mode]
    assert set(out["mode"]) == {"interpolation", "extrapolation", "backcast"}
    for j, c in enumerate(CHANNELS):
        np.testing.assert_allclose(out[f"{c}_mean"], np.concatenate([f.mean[:, j] for f in expected]))
        np.testing.assert_allclose(out[f"{c}_std"], np.concatenate([f.std[:, j] for f in expected]))
        np.testing.assert_allclose(out[f"{c}_q0.9"],
                                   np.concatenate([f.quantiles[0.9][:, j] for f in expected]))


def test_rows_may_interleave_and_observations_need_no_order(forecaster) -> None:
    series = make_series(2)
    queries = [np.array([11.0]), np.array([4.0, 12.0])]
    frame = input_frame(series, queries)
    shuffled = frame.sample(frac=1.0, random_state=0)
    # The queries keep their relative order (that is the answer's order).
    q = shuffled[shuffled["query"]].sort_values("time", kind="stable")
    shuffled = pd.concat([shuffled[~shuffled["query"]], q])
    first = shuffled["series_id"].iloc[0]
    out = predict_frame(forecaster, shuffled, num_samples=4)
    ref = predict_frame(forecaster, frame, num_samples=4)
    ref = pd.concat([ref[ref.series_id == first], ref[ref.series_id != first]], ignore_index=True)
    pd.testing.assert_frame_equal(out, ref, **TOL)


def test_batches_of_whole_series_give_the_same_rows(forecaster) -> None:
    series = make_series(5)
    queries = [np.array([2.5, 11.0])] * 5
    frame = input_frame(series, queries)
    whole = predict_frame(forecaster, frame, quantiles=[0.5], num_samples=6, seed=1)
    parts = [predict_frame(forecaster, frame[frame.series_id.isin(ids)], quantiles=[0.5],
                           num_samples=6, seed=1)
             for ids in (["s0", "s1"], ["s2", "s3"], ["s4"])]
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole, **TOL)


def test_channels_absent_from_the_frame_are_unobserved(forecaster) -> None:
    (s,) = make_series(1)
    frame = input_frame([s], [np.array([11.0])]).drop(columns=["temp"])
    req = frame_to_requests(frame, CHANNELS)
    assert np.isnan(req.series[0].values[:, 1]).all()
    observed = ~np.isnan(s.values[:, 0])
    np.testing.assert_array_equal(req.series[0].times, s.times[observed])


def test_query_column_absent_means_observations_only_and_horizon_adds_queries(forecaster) -> None:
    (s,) = make_series(1)
    frame = input_frame([s], [np.array([])]).drop(columns=["query"])
    req = frame_to_requests(frame, CHANNELS)
    assert req.ids == [] and req.no_queries == ["s0"]
    req = frame_to_requests(frame, CHANNELS, horizon=2.0, every=0.5)
    np.testing.assert_allclose(req.queries[0], s.times[-1] + np.array([0.5, 1.0, 1.5, 2.0]))
    result = forecast_frame(forecaster, frame, horizon=1.0, every=1.0, num_samples=2)
    assert list(result.frame["mode"]) == ["extrapolation"] and result.failed == {}


def test_query_cells_accept_text_booleans_and_empty() -> None:
    frame = pd.DataFrame({"series_id": ["a"] * 4, "time": [0.0, 1.0, 2.0, 3.0],
                          "hr": [70.0, 71.0, np.nan, np.nan],
                          "query": ["false", "", "TRUE", "1"]})
    req = frame_to_requests(frame, CHANNELS)
    np.testing.assert_array_equal(req.queries[0], [2.0, 3.0])
    np.testing.assert_array_equal(req.series[0].times, [0.0, 1.0])


def test_iso_times_become_the_model_time_unit() -> None:
    frame = pd.DataFrame({"series_id": ["a", "a", "a"],
                          "time": ["2024-01-01T00:00:00Z", "2024-01-01T02:00:00Z",
                                   "2024-01-01T03:30:00Z"],
                          "hr": [70.0, 72.0, None], "query": [False, False, True]})
    req = frame_to_requests(frame, CHANNELS, time_unit="hours")
    base = pd.Timestamp("2024-01-01T00:00:00Z").timestamp() / 3600
    np.testing.assert_allclose(req.series[0].times, [base, base + 2])
    np.testing.assert_allclose(req.queries[0], [base + 3.5])


def test_a_failed_series_has_no_rows(forecaster) -> None:
    series = make_series(2)
    queries = [np.array([1.0]), np.array([2.0, 3.0])]
    forecasts = forecaster.predict(series, queries, num_samples=2)
    failed = dataclasses.replace(forecasts[0], status="max_steps", message="too many steps")
    out = forecasts_to_frame(["a", "b"], [failed, forecasts[1]], CHANNELS)
    assert list(out["series_id"]) == ["b", "b"]
    empty = forecasts_to_frame(["a"], [failed], CHANNELS, [0.5])
    assert list(empty.columns) == output_columns(CHANNELS, [0.5]) and len(empty) == 0


def test_predict_frame_raises_and_forecast_frame_reports_a_solver_failure(forecaster,
                                                                          monkeypatch) -> None:
    series = make_series(2)
    frame = input_frame(series, [np.array([1.0]), np.array([2.0])])
    real = type(forecaster).predict

    def failing(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        return [dataclasses.replace(out[0], status="max_steps", message="s0 took too many steps"),
                *out[1:]]

    monkeypatch.setattr(type(forecaster), "predict", failing)
    with pytest.raises(SolverError):
        predict_frame(forecaster, frame, num_samples=2)
    result = forecast_frame(forecaster, frame, num_samples=2)
    assert result.failed == {"s0": "s0 took too many steps"}
    assert list(result.frame["series_id"]) == ["s1"]


def test_response_to_frame_matches_the_library_frame(forecaster) -> None:
    series = make_series(2)
    queries = [np.array([1.0, 11.0]), np.array([2.0])]
    forecasts = forecaster.predict(series, queries, num_samples=2, quantiles=(0.25,))
    answer = {
        "channels": CHANNELS, "time_unit": "hours",
        "series": [{"id": s.id, "query_times": q.tolist(), "mode": f.mode,
                    "mean": f.mean.tolist(), "std": f.std.tolist(),
                    "quantiles": [{"quantile": 0.25, "values": f.quantiles[0.25].tolist()}]}
                   for s, q, f in zip(series, queries, forecasts, strict=True)],
    }
    expected = forecasts_to_frame(["s0", "s1"], forecasts, CHANNELS, [0.25])
    pd.testing.assert_frame_equal(response_to_frame(answer), expected)
    empty = response_to_frame({**answer, "series": []})
    assert list(empty.columns) == output_columns(CHANNELS) and len(empty) == 0


def test_parse_quantiles_takes_lists_and_comma_strings() -> None:
    assert parse_quantiles("0.05, 0.5,0.95,0.5") == (0.05, 0.5, 0.95)
    assert parse_quantiles([0.9, "0.1"]) == (0.9, 0.1)
    assert parse_quantiles(None) == () and parse_quantiles("") == ()
    with pytest.raises(ConfigError, match=r"numbers between 0 and 1 separated by commas; got 'x'"):
        parse_quantiles("0.5,x")
    with pytest.raises(ConfigError, match=r"strictly between 0 and 1; got 1.5"):
        parse_quantiles([1.5])


def test_horizon_errors() -> None:
    with pytest.raises(ConfigError, match=r"`every` must be a positive number .* got 0.0"):
        horizon_times(1.0, 2.0, 0.0)
    with pytest.raises(ConfigError, match=r"`every` \(3.0\) is longer than `horizon` \(2.0\)"):
        horizon_times(1.0, 2.0, 3.0)
    with pytest.raises(ConfigError, match=r"`horizon` and `every` go together"):
        frame_to_requests(pd.DataFrame({"series_id": ["a"], "time": [0.0], "hr": [1.0]}),
                          CHANNELS, horizon=1.0)


def _bad(**columns) -> pd.DataFrame:
    base = {"series_id": ["a", "a", "b"], "time": [0.0, 1.0, 0.0], "hr": [70.0, 71.0, 72.0],
            "query": [False, True, False]}
    base.update(columns)
    return pd.DataFrame({k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize(("frame", "message"), [
    (_bad(series_id=None), r"model input: the column 'series_id' is missing; found 'time', 'hr', "
                           r"'query'"),
    (_bad(time=None), r"the column 'time' is missing"),
    (_bad(spo2=[1.0, 2.0, 3.0]), r"model input: column\(s\) 'spo2' are not channels of the model; "
                                 r"its channels are 'hr', 'temp'"),
    (_bad().iloc[:0], r"model input: no rows"),
    (_bad(hr=[70.0, 71.0, "high"]), r"model input, row index 2 \(0-based\), column 'hr': a channel "
                                    r"value must be a number or empty; got 'high'"),
    (_bad(hr=[70.0, 71.0, np.inf]), r"row index 2 \(0-based\), column 'hr': values must be finite"),
    (_bad(time=[0.0, None, 1.0]), r"row index 1 \(0-based\), column 'time': every row needs a time"),
    (_bad(series_id=["a", "", "b"]), r"row index 1 \(0-based\), column 'series_id': every row "
                                     r"needs a series id"),
    (_bad(query=[False, "maybe", False]), r"row index 1 \(0-based\), column 'query': must be true "
                                          r"or false \(or empty for false\); got 'maybe'"),
    (_bad(time=[0.0, 1.0, 0.0], series_id=["a", "b", "a"], query=[False, True, False]),
     r"row index 2 \(0-based\): series 'a' has two observation rows at time 0.0 \(the other at "
     r"row index 0 \(0-based\)\); merge them"),
    (_bad(hr=[70.0, 71.0, None]), r"row index 2 \(0-based\): series 'b' has no observed value in "
                                  r"any of the channels 'hr'"),
])
def test_every_bad_frame_is_named_by_row_and_column(frame, message) -> None:
    with pytest.raises(DataError, match=message):
        frame_to_requests(frame, CHANNELS)


def test_a_locator_names_file_lines() -> None:
    frame = _bad(hr=[70.0, 71.0, "high"])
    where = Locator("data.csv", "csv", np.array([0, 1, 3]))  # a blank line was dropped
    with pytest.raises(DataError, match=r"data.csv, line 5, column 'hr'"):
        frame_to_requests(frame, CHANNELS, where=where)
