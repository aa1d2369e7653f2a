"""The noise scale per regime and gap bin: exact thresholds, 90% per bin, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latent_ode import CheckpointError, ConfigError, Forecaster, ModelConfig, Normaliser, Series
from latent_ode.config import TrainConfig
from latent_ode.coverage import NoiseScale
from latent_ode.forecaster import EXTRAPOLATION, INTERPOLATION
from latent_ode.training.calibration import (
    COVERAGE_BINS,
    _fit_scale,
    _needed_scale,
    scale_passes,
)


def _forecaster() -> Forecaster:
    data = [Series(times=np.linspace(0, 1, 5), values=np.random.default_rng(0).normal(size=(5, 2)))]
    return Forecaster.create(ModelConfig(input_dim=2, latent_dim=2), Normaliser.fit(data),
                             channels=["a", "b"], time_unit="h", seed=0)


def test_needed_scale_of_one_sample_is_the_normal_quantile_ratio() -> None:
    """One sample: inside the central 90% interval iff |dev| <= 1.6449 c sigma."""
    dev = torch.tensor([[0.0], [1.0], [-3.0], [0.5]], dtype=torch.float64)
    sigma = torch.tensor([1.0, 1.0, 2.0, 0.1], dtype=torch.float64)
    expected = torch.clamp(dev[:, 0].abs() / (1.6448536269514722 * sigma), max=20.0)
    torch.testing.assert_close(_needed_scale(dev, sigma), expected, rtol=1e-4, atol=1e-4)


def test_fitted_factors_cover_ninety_percent_in_every_gap_bin() -> None:
    """Errors whose spread is not the fitted line in the gap (large near the data, small far
    from it): after scaling, each equal-count gap bin covers 90% of its points."""
    rng = np.random.default_rng(1)
    n = 4000
    gap = rng.uniform(0.0, 1.0, n)
    truth_sd = 1.0 + 2.0 * (gap < 0.2)  # what a line through the variances misses
    samples = rng.normal(0.0, 0.1, (n, 8))
    truth = rng.normal(0.0, truth_sd)
    dev = samples - truth[:, None]
    resid = (samples.mean(1) - truth) ** 2
    rows = torch.as_tensor(np.column_stack([resid, samples.var(1), gap, np.ones(n), dev]))
    points = [[[]], [[rows]], [[]]]  # interpolation only, one channel
    each = [np.ones(1), np.array([1.2]), np.ones(1)]
    growth = np.zeros((3, 1))
    scale = _fit_scale(points, each, growth)
    assert (scale.factors[[0, 2]] == 1.0).all()  # regimes without points keep factor 1
    factors = scale.factors[INTERPOLATION]
    assert factors[0] > 1.8 and factors[-1] < 1.0, factors
    which = np.searchsorted(scale.edges[INTERPOLATION], gap, side="right")
    sigma = 1.2 * factors[which]
    cdf = torch.special.ndtr(torch.as_tensor(-dev / sigma[:, None])).mean(1).numpy()
    inside = (cdf >= 0.05) & (cdf <= 0.95)
    for b in range(COVERAGE_BINS):
        assert abs(inside[which == b].mean() - 0.9) < 0.01, (b, inside[which == b].mean())


def test_points_flagged_out_of_the_scale_do_not_move_it() -> None:
    """Rows whose fourth column is 0 (an interpolation context's points after its last
    observation) count for the noise line, not for the scale: wild ones change no factor."""
    rng = np.random.default_rng(2)
    n = 2000
    gap = rng.uniform(0.0, 1.0, n)
    dev = rng.normal(0.0, 1.0, (n, 1)) + rng.normal(0.0, 0.1, (n, 4))
    rows = torch.as_tensor(np.column_stack([dev.mean(1) ** 2, dev.var(1), gap, np.ones(n), dev]))
    wild = rows[:300].clone()
    wild[:, 3] = 0.0
    wild[:, 4:] *= 50.0
    each, growth = [np.ones(1)] * 3, np.zeros((3, 1))
    alone = _fit_scale([[[]], [[]], [[rows]]], each, growth)
    mixed = _fit_scale([[[]], [[]], [[rows, wild]]], each, growth)
    np.testing.assert_array_equal(alone.factors, mixed.factors)
    np.testing.assert_array_equal(alone.edges, mixed.edges)
    counted = wild.clone()
    counted[:, 3] = 1.0
    assert (_fit_scale([[[]], [[]], [[rows, counted]]], each, growth).factors[EXTRAPOLATION]
            > alone.factors[EXTRAPOLATION]).all()


def test_after_the_window_the_scale_takes_the_forecast_task_points_only(monkeypatch) -> None:
    """calibrate_noise flags for the scale every held-out forecast point and no interpolation
    point that lies after its context; with ``passes`` it draws the contexts that many times."""
    from latent_ode.tasks import extrapolation_task, seen_in_context, to_model_batch
    from latent_ode.training import calibration
    from pipelines.sources.periodic import periodic

    data = periodic(30, n_times=20, shared_grid=False, seed=0)
    norm = Normaliser.fit(data[:20], kind="none", time_scale=1.0)
    fc = Forecaster.create(ModelConfig(input_dim=1, latent_dim=2), norm, channels=["x"],
                           time_unit="s", seed=0)
    val = to_model_batch(fc, data[20:])
    context, target = extrapolation_task(val, 0.5)
    forecast_points = int((target.mask & ~seen_in_context(context, target)).sum())
    seen: list[list] = []
    real_fit = calibration._fit_scale

    def spy(points, each, growth, bins=COVERAGE_BINS):
        seen.append(points)
        return real_fit(points, each, growth, bins)

    monkeypatch.setattr(calibration, "_fit_scale", spy)
    for passes in (1, 3):
        calibration.calibrate_noise(fc, val, TrainConfig(batch_size=4, seed=0), passes=passes)
        after = torch.cat(seen[-1][EXTRAPOLATION][0])
        flagged = int((after[:, 3] > 0).sum())
        assert flagged == passes * forecast_points
        assert after.shape[0] > flagged  # interpolation contexts left points after them too
        inside = torch.cat(seen[-1][INTERPOLATION][0])
        assert (inside[:, 3] > 0).all()


def test_small_validation_splits_are_drawn_more_times() -> None:
    assert [scale_passes(n) for n in (1, 30, 100, 400, 799, 800, 1598)] == [8, 8, 8, 2, 2, 1, 1]


def test_noise_tensor_multiplies_by_the_factor_of_the_gap_bin() -> None:
    fc = _forecaster()
    fc.noise_std = np.array([1.0, 2.0])
    factors = np.ones((3, 2))
    factors[INTERPOLATION] = [0.5, 3.0]
    edges = np.full((3, 1), np.inf)
    edges[INTERPOLATION] = [0.4]
    fc.noise_scale = NoiseScale(factors=factors, edges=edges)
    position = torch.full((1, 2), INTERPOLATION)
    gap = torch.tensor([[[0.1, 0.1], [0.9, 0.4]]])
    noise = fc.noise_tensor(position, gap, gap)
    torch.testing.assert_close(noise, torch.tensor([[[0.5, 1.0], [3.0, 6.0]]]))
    fc.noise_scale = None
    torch.testing.assert_close(fc.noise_tensor(position, gap, gap),
                               torch.tensor([[[1.0, 2.0], [1.0, 2.0]]]))


def test_noise_scale_round_trips_and_old_checkpoints_load_without_it(tmp_path) -> None:
    fc = _forecaster()
    fc.save(tmp_path / "old")
    assert "noise_scale" not in json.loads((tmp_path / "old" / "config.json").read_text())
    assert Forecaster.load(tmp_path / "old").noise_scale is None
    scale = NoiseScale(factors=np.array([[1.0, 1.1], [0.9, 1.3], [1.0, 2.0]]),
                       edges=np.array([[np.inf], [0.3], [0.5]]))
    fc.noise_scale = scale
    fc.save(tmp_path / "new")
    loaded = Forecaster.load(tmp_path / "new").noise_scale
    assert loaded is not None
    np.testing.assert_array_equal(loaded.factors, scale.factors)
    np.testing.assert_array_equal(loaded.edges, scale.edges)
    path = tmp_path / "new" / "config.json"
    cfg = json.loads(path.read_text())
    cfg["noise_scale"]["factors"][0][0] = -1.0
    path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="`noise_scale.factors` must be positive numbers"):
        Forecaster.load(tmp_path / "new")


def test_invalid_noise_scales_are_refused_with_their_reason() -> None:
    with pytest.raises(ConfigError, match=r"`noise_scale.factors` must have shape \(3, K\)"):
        NoiseScale(factors=np.ones((2, 1)), edges=np.zeros((2, 0)))
    with pytest.raises(ConfigError, match=r"`noise_scale.edges` must be a \(3, K - 1\)"):
        NoiseScale(factors=np.ones((3, 3)), edges=np.array([[0.2, 0.1]] * 3))
    with pytest.raises(ConfigError, match=r"`noise_scale` must be a table with the keys"):
        NoiseScale.from_dict({"factors": [[1.0]] * 3})
