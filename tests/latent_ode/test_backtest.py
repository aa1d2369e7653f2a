"""The rolling-origin backtest: cut points, windows, horizon buckets and errors in the data's
units, on series whose exact answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latent_ode import (
    ConfigError,
    DataError,
    DynamicsConfig,
    EncoderConfig,
    Forecaster,
    ModelConfig,
    Normaliser,
    Series,
    ShapeError,
)
from latent_ode.backtest import (
    BacktestConfig,
    backtest,
    cut_points,
    score_windows,
    windows,
)


def _line(n: int = 11, *, slope: float = 3.0, offset: float = 10.0, sid: str = "a") -> Series:
    """y = offset + slope * t at t = 0, 1, ..., n - 1 (one channel)."""
    t = np.arange(n, dtype=np.float64)
    return Series(times=t, values=(offset + slope * t)[:, None], id=sid)


def _exact(items, *, plus: float = 0.0) -> list[np.ndarray]:
    """Predictions equal to the targets (plus a constant)."""
    return [np.nan_to_num(w.target_values, nan=0.0) + plus for w in items]


def test_cut_points_spread_over_the_span_and_end_the_last_window_at_the_last_point() -> None:
    s = _line(11)  # span 10
    np.testing.assert_allclose(cut_points(s, BacktestConfig(cuts=3, horizon=4.0)), [2.0, 4.0, 6.0])
    np.testing.assert_allclose(cut_points(s, BacktestConfig(cuts=4)), [2.0, 4.0, 6.0, 8.0])
    # A series shorter than the horizon: fractions of its span, as without a horizon.
    np.testing.assert_allclose(cut_points(s, BacktestConfig(cuts=1, horizon=20.0)), [5.0])
    np.testing.assert_allclose(cut_points(s, BacktestConfig(cuts=None, cut_times=(7, 3, 3))),
                               [3.0, 7.0])
    single = Series(times=np.array([1.0]), values=np.array([[2.0]]))
    assert cut_points(single, BacktestConfig(cuts=2)).size == 0


def test_windows_see_up_to_the_cut_and_score_up_to_the_horizon() -> None:
    s = _line(11)
    (w,) = windows([s], BacktestConfig(cuts=None, cut_times=(4.0,), horizon=3.0))
    np.testing.assert_array_equal(w.context.times, [0, 1, 2, 3, 4])  # the cut itself is seen
    np.testing.assert_array_equal(w.target_times, [5, 6, 7])
    (w,) = windows([s], BacktestConfig(cuts=None, cut_times=(4.0,), horizon=3.0,
                                       regime="interp"))
    np.testing.assert_array_equal(w.context.times, [0, 1, 2, 3, 4, 8, 9, 10])  # both sides
    np.testing.assert_array_equal(w.target_times, [5, 6, 7])
    # Nothing seen before -1, nothing to score after 10: both windows are left out.
    assert windows([s], BacktestConfig(cuts=None, cut_times=(-1.0, 10.0, 12.0))) == []


def test_a_constant_series_has_zero_locf_error() -> None:
    s = Series(times=np.array([0.0, 0.7, 1.5, 2.0, 3.1, 4.0]), values=np.full((6, 1), 36.6))
    cfg = BacktestConfig(cuts=2)
    items = windows([s], cfg)
    result = score_windows(items, _exact(items, plus=0.5), channels=["temp"], config=cfg,
                           fallback=np.zeros(1))
    assert result.methods == ("model", "locf")
    np.testing.assert_allclose(result.total_mae[1], [0.0], atol=1e-12)
    np.testing.assert_allclose(result.total_mae[0], [0.5])
    np.testing.assert_allclose(result.total_rmse[0], [0.5])
    assert result.windows == 2 and result.series == 1


def test_leads_fall_in_their_buckets_with_errors_in_the_data_units() -> None:
    # y = 10 + 3t; cut at 4, horizon 5, 5 buckets of width 1: the target at lead L falls in
    # bucket L and LOCF (y(4) = 22) misses it by exactly 3 L.
    s = _line(11)
    cfg = BacktestConfig(cuts=None, cut_times=(4.0,), horizon=5.0, buckets=5)
    items = windows([s], cfg)
    # The model misses the target at lead L by L.
    preds = [w.target_values + (w.target_times - w.cut)[:, None] for w in items]
    result = score_windows(items, preds, channels=["y"], config=cfg, fallback=np.zeros(1))
    np.testing.assert_allclose(result.bucket_edges, [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(result.count[:, 0], [1, 1, 1, 1, 1])
    np.testing.assert_allclose(result.mae[0, :, 0], [1, 2, 3, 4, 5])
    np.testing.assert_allclose(result.mae[1, :, 0], [3, 6, 9, 12, 15])
    np.testing.assert_allclose(result.total_mae[:, 0], [3.0, 9.0])
    np.testing.assert_allclose(result.total_rmse[:, 0], [np.sqrt(11.0), 3 * np.sqrt(11.0)])
    rows = result.rows()
    assert [r["bucket"] for r in rows] == ["h1", "h2", "h3", "h4", "h5", "all"]
    assert rows[2] == {"channel": "y", "bucket": "h3", "lead_from": 2.0, "lead_to": 3.0,
                       "count": 1, "model_mae": 3.0, "model_rmse": 3.0, "locf_mae": 9.0,
                       "locf_rmse": 9.0}
    metrics = result.metrics()
    assert metrics["backtest/baseline_mae_units/y"] == pytest.approx(9.0)
    assert metrics["backtest/mae_units/y"] == pytest.approx(3.0)
    assert metrics["backtest/count"] == 5 and metrics["backtest/windows"] == 1


def test_without_a_horizon_the_buckets_span_the_largest_lead() -> None:
    s = _line(11)
    cfg = BacktestConfig(cuts=None, cut_times=(0.0, 6.0), buckets=2)
    items = windows([s], cfg)
    result = score_windows(items, _exact(items), channels=["y"], config=cfg, fallback=np.zeros(1))
    np.testing.assert_allclose(result.bucket_edges, [0, 5, 10])
    # Leads 1..10 from cut 0 and 1..4 from cut 6: (0, 5] holds 5 + 4, (5, 10] holds 5.
    np.testing.assert_array_equal(result.count[:, 0], [9, 5])


def test_interp_scores_linear_interpolation_which_is_exact_on_a_line() -> None:
    s = _line(11)
    cfg = BacktestConfig(cuts=None, cut_times=(4.0,), horizon=3.0, regime="interp")
    items = windows([s], cfg)
    result = score_windows(items, _exact(items), channels=["y"], config=cfg, fallback=np.zeros(1))
    assert result.methods == ("model", "locf", "linear")
    np.testing.assert_allclose(result.total_mae[:, 0], [0.0, 6.0, 0.0], atol=1e-9)  # LOCF: 3,6,9
    assert result.metrics()["backtest/baseline_mae_units/y"] == pytest.approx(0.0)


def test_missing_values_are_not_scored_and_an_unseen_channel_gets_the_fallback() -> None:
    values = np.array([[1.0, np.nan], [1.0, np.nan], [1.0, 5.0], [1.0, np.nan]])
    s = Series(times=np.arange(4.0), values=values, id="m")
    cfg = BacktestConfig(cuts=None, cut_times=(1.0,))
    items = windows([s], cfg)
    result = score_windows(items, _exact(items), channels=["a", "b"], config=cfg,
                           fallback=np.array([0.0, 2.0]))
    np.testing.assert_array_equal(result.total_count, [2, 1])
    np.testing.assert_allclose(result.total_mae[1], [0.0, 3.0])  # b: fallback 2 vs 5
    assert "backtest/mae_units/b" in result.metrics()


def test_failed_windows_are_counted_and_left_out() -> None:
    cfg = BacktestConfig(cuts=1)
    items = windows([_line(5, sid="x"), _line(5, sid="y")], cfg)
    result = score_windows(items, [None, _exact(items)[1]], channels=["y"], config=cfg,
                           fallback=np.zeros(1))
    assert (result.failed, result.failed_ids, result.windows) == (1, ("x",), 1)
    np.testing.assert_array_equal(result.total_count, [2])


def test_baselines_are_the_same_in_batches_of_windows() -> None:
    series = [_line(11, slope=float(i), sid=f"s{i}") for i in range(5)]
    results = []
    for batch_size in (1, 2, 256):
        cfg = BacktestConfig(cuts=3, horizon=2.0, batch_size=batch_size)
        items = windows(series, cfg)
        results.append(score_windows(items, _exact(items), channels=["y"], config=cfg,
                                     fallback=np.zeros(1)))
    for other in results[1:]:
        np.testing.assert_allclose(other.mae, results[0].mae)
    # Cuts at 8/3, 16/3, 8: each scores the two points after its last seen one, 1 and 2 later;
    # LOCF misses y = i t there by i and 2 i: the mean over i = 0..4 is 2 * 1.5 = 3.
    np.testing.assert_allclose(results[0].total_mae[1], [3.0])


def test_a_prediction_of_the_wrong_shape_is_a_data_error() -> None:
    cfg = BacktestConfig(cuts=None, cut_times=(4.0,), horizon=2.0)
    items = windows([_line(11)], cfg)
    with pytest.raises(DataError, match=r"the prediction of window 0 \(series 'a', cut 4\) must "
                                        r"have shape \(2, 1\); got \(3, 1\)"):
        score_windows(items, [np.zeros((3, 1))], channels=["y"], config=cfg,
                      fallback=np.zeros(1))


def test_no_window_to_score_is_a_data_error() -> None:
    cfg = BacktestConfig(cuts=None, cut_times=(100.0,))
    with pytest.raises(DataError, match="no window to score"):
        score_windows(windows([_line(5)], cfg), [], channels=["y"], config=cfg,
                      fallback=np.zeros(1))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"cuts": 2, "cut_times": (1.0,)}, "not both"),
    ({"cuts": None}, "got neither"),
    ({"cuts": 0}, "`cuts` must be a positive integer; got 0"),
    ({"cuts": None, "cut_times": ()}, "`cut_times` must be one or more finite times"),
    ({"cuts": None, "cut_times": (float("nan"),)}, "finite"),
    ({"horizon": -1.0}, "`horizon` must be a positive, finite time; got -1.0"),
    ({"regime": "interp"}, "needs a `horizon`"),
    ({"regime": "backcast"}, "`regime` must be 'forecast' or 'interp'"),
    ({"buckets": 0}, "`buckets` must be a positive integer; got 0"),
])
def test_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        BacktestConfig(**kwargs)


def _constant_forecaster(level: float, loc: float, scale: float) -> Forecaster:
    """A real forecaster whose decoder answers ``level`` on the normalised scale everywhere, so
    its forecast in the data's units is ``loc + scale * level``."""
    config = ModelConfig(input_dim=1, latent_dim=2, encoder=EncoderConfig(hidden=4, units=8),
                         dynamics=DynamicsConfig(units=8))
    norm = Normaliser(kind="standard", loc=np.array([loc]), scale=np.array([scale]),
                      time_scale=10.0)
    fc = Forecaster.create(config, norm, channels=["y"], time_unit="hours", seed=0)
    with torch.no_grad():
        fc.model.decoder.weight.zero_()
        fc.model.decoder.bias.fill_(level)
    return fc


def test_backtest_answers_in_the_data_units() -> None:
    # The model forecasts 100 + 20 * 0.5 = 110 everywhere; y = 10 + 3t, cut at 4 (y = 22),
    # targets t = 5..7 (25, 28, 31): model errors 85, 82, 79; LOCF errors 3, 6, 9.
    fc = _constant_forecaster(0.5, loc=100.0, scale=20.0)
    cfg = BacktestConfig(cuts=None, cut_times=(4.0,), horizon=3.0, buckets=3, num_samples=2)
    result = backtest(fc, [_line(11)], cfg)
    np.testing.assert_allclose(result.mae[0, :, 0], [85.0, 82.0, 79.0], rtol=1e-5)
    np.testing.assert_allclose(result.mae[1, :, 0], [3.0, 6.0, 9.0])
    np.testing.assert_allclose(result.total_rmse[0, 0], np.sqrt((85**2 + 82**2 + 79**2) / 3),
                               rtol=1e-5)


def test_backtest_input_errors() -> None:
    fc = _constant_forecaster(0.0, loc=0.0, scale=1.0)
    cfg = BacktestConfig(cuts=2)
    with pytest.raises(DataError, match="must contain at least one series"):
        backtest(fc, [], cfg)
    two = Series(times=np.arange(3.0), values=np.ones((3, 2)), id="w")
    with pytest.raises(DataError, match="series 'w' has 2 channels; the model has 1"):
        backtest(fc, [two], cfg)
    with pytest.raises(ShapeError, match="`fallback` must be 1 finite numbers"):
        backtest(fc, [_line(5)], cfg, fallback=[np.nan])
