"""Prediction in the user's units, invariants of the model, and persistence."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from latent_ode import (
    CheckpointError,
    ConfigError,
    DataError,
    DynamicsConfig,
    EncoderConfig,
    Forecaster,
    ModelConfig,
    Normaliser,
    Series,
    ShapeError,
    SolverConfig,
    SolverError,
    TrainConfig,
    collate,
    config_from_dict,
    config_to_dict,
    raise_on_failure,
)
from latent_ode.likelihoods import gaussian_log_likelihood, kl_normal_std_normal
from tests.latent_ode.conftest import assert_close

QUERIES = np.array([2.0, -1.0, 0.5, 7.0, 0.5])


def test_predict_answers_in_the_order_asked_with_modes(forecaster, periodic_small) -> None:
    s = periodic_small[0]
    q = np.array([s.times[-1] + 1.0, s.times[0] - 1.0, s.times[3], s.times[3], s.times[0]])
    (f,) = forecaster.predict([s], [q], num_samples=8, quantiles=(0.1, 0.5, 0.9))
    assert f.mode == ["extrapolation", "backcast", "interpolation", "interpolation", "interpolation"]
    assert f.mean.shape == f.std.shape == (5, 1)
    np.testing.assert_array_equal(f.query_times, q)
    # Duplicate query times get identical answers; quantiles are ordered and bracket the median.
    np.testing.assert_allclose(f.mean[2], f.mean[3], rtol=1e-6)
    assert (f.quantiles[0.1] <= f.quantiles[0.5]).all() and (f.quantiles[0.5] <= f.quantiles[0.9]).all()
    assert (f.std > 0).all()
    assert f.stats.nfe > 0 and f.stats.method == "dopri5"


def test_answers_are_in_user_units(forecaster, periodic_small) -> None:
    """Shifting and scaling the data (and the normaliser with it) moves answers the same way."""
    s = periodic_small[0]
    (base,) = forecaster.predict([s], [QUERIES], num_samples=4)
    n = forecaster.normaliser
    scaled_norm = Normaliser(kind=n.kind, loc=n.loc * 100 + 5, scale=n.scale * 100,
                             time_scale=n.time_scale * 60)
    scaled = Forecaster(forecaster.model, scaled_norm, channels=["x"], time_unit="min")
    s2 = Series(times=s.times * 60 + 1e6, values=s.values * 100 + 5)
    (f,) = scaled.predict([s2], [QUERIES * 60 + 1e6], num_samples=4)
    np.testing.assert_allclose(f.mean, base.mean * 100 + 5, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(f.std, base.std * 100, rtol=1e-4, atol=1e-3)


def test_masked_values_change_nothing(two_channel_forecaster) -> None:
    fc, data = two_channel_forecaster
    s = data[0]
    values = s.values.copy()
    values[::3, 1] = np.nan
    obs_a = collate([fc.normaliser.transform(Series(times=s.times, values=values))])
    values_b = obs_a.values.clone()
    values_b[~obs_a.mask] = 1e6  # garbage where not observed
    obs_b = type(obs_a)(times=obs_a.times, values=values_b, mask=obs_a.mask, lengths=obs_a.lengths)
    with torch.no_grad():
        a = fc.model.encode(obs_a, obs_a.first_time)
        b = fc.model.encode(obs_b, obs_b.first_time)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_permuting_the_batch_permutes_the_output(two_channel_forecaster) -> None:
    fc, data = two_channel_forecaster
    series = data[:5]
    queries = [np.linspace(s.times[0] - 1, s.times[-1] + 2, 4 + i) for i, s in enumerate(series)]
    out = fc.predict(series, queries, num_samples=4)
    perm = [3, 0, 4, 1, 2]
    out_p = fc.predict([series[i] for i in perm], [queries[i] for i in perm], num_samples=4)
    for j, i in enumerate(perm):
        assert_close(out_p[j].mean, out[i].mean)
        assert_close(out_p[j].std, out[i].std)


def test_an_answer_does_not_depend_on_the_rest_of_the_batch(two_channel_forecaster) -> None:
    fc, data = two_channel_forecaster
    q = np.array([1.0, 30.0])
    (alone,) = fc.predict([data[0]], [q], num_samples=4)
    together = fc.predict(data[:6], [q] * 6, num_samples=4)[0]
    # Per-series step control in the solver and per-series Euler steps in the encoder: only
    # float32 rounding of batched matrix products differs.
    np.testing.assert_allclose(together.mean, alone.mean, rtol=1e-5, atol=1e-5)


def test_same_seed_same_output_other_seed_other_output(forecaster, periodic_small) -> None:
    s = periodic_small[1]
    a = forecaster.predict([s], [QUERIES], num_samples=6, seed=11)[0]
    b = forecaster.predict([s], [QUERIES], num_samples=6, seed=11)[0]
    c = forecaster.predict([s], [QUERIES], num_samples=6, seed=12)[0]
    np.testing.assert_array_equal(a.mean, b.mean)
    assert not np.allclose(a.std, c.std)


@pytest.mark.parametrize(("b", "t", "d", "q", "s"), [(1, 1, 1, 1, 1), (3, 7, 2, 5, 4), (2, 12, 3, 1, 9)])
def test_output_shapes_over_a_grid(b, t, d, q, s) -> None:
    rng = np.random.default_rng(0)
    series = [Series(times=np.cumsum(rng.uniform(0.1, 1.0, t)), values=rng.normal(size=(t, d)))
              for _ in range(b)]
    fc = Forecaster.create(ModelConfig(input_dim=d, latent_dim=3, encoder=EncoderConfig(hidden=4, units=8),
                                       dynamics=DynamicsConfig(units=8)),
                           Normaliser.fit(series), channels=[f"c{i}" for i in range(d)], time_unit="s")
    out = fc.predict(series, [rng.uniform(-1, 10, q) for _ in range(b)], num_samples=s,
                     quantiles=(0.2, 0.8))
    assert len(out) == b
    for f in out:
        assert f.mean.shape == f.std.shape == f.quantiles[0.2].shape == (q, d)
        assert np.isfinite(f.mean).all()


def test_kl_is_non_negative_and_matches_torch() -> None:
    torch.manual_seed(0)
    mean, std = torch.randn(64, 5) * 3, torch.rand(64, 5) * 4 + 1e-3
    kl = kl_normal_std_normal(mean, std)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mean, std),
                                            torch.distributions.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(kl, ref)
    assert bool((kl >= 0).all())
    assert float(kl_normal_std_normal(torch.zeros(1, 3), torch.ones(1, 3))) == 0.0


def test_gaussian_log_likelihood_matches_torch_on_observed_points() -> None:
    torch.manual_seed(0)
    pred, target = torch.randn(2, 3, 4, 2), torch.randn(3, 4, 2)
    mask = torch.rand(3, 4, 2) > 0.4
    ll = gaussian_log_likelihood(pred, target, mask, std=0.3)
    dens = torch.distributions.Normal(pred, 0.3).log_prob(target)
    ref = (dens * mask).sum((-1, -2)) / mask.sum((-1, -2))
    torch.testing.assert_close(ll, ref)


def test_config_round_trips_through_dict_and_json() -> None:
    cfg = ModelConfig(input_dim=4, latent_dim=6, solver=SolverConfig(rtol=1e-4, gradient="adjoint"))
    assert config_from_dict(ModelConfig, json.loads(json.dumps(config_to_dict(cfg)))) == cfg
    tc = TrainConfig(batch_size=7, max_steps=3)
    assert config_from_dict(TrainConfig, config_to_dict(tc)) == tc
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['solvr'\] for ModelConfig"):
        config_from_dict(ModelConfig, {"input_dim": 1, "solvr": {}})
    with pytest.raises(ConfigError, match=r"`ModelConfig.latent_dim` must be a positive integer; got 0"):
        config_from_dict(ModelConfig, {"input_dim": 1, "latent_dim": 0})


def test_checkpoint_round_trip_gives_the_same_predictions(tmp_path, forecaster, periodic_small) -> None:
    forecaster.metadata["note"] = "round-trip"
    forecaster.save(tmp_path / "m")
    loaded = Forecaster.load(tmp_path / "m")
    a = forecaster.predict(periodic_small[:3], [QUERIES] * 3, num_samples=5)
    b = loaded.predict(periodic_small[:3], [QUERIES] * 3, num_samples=5)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.mean, y.mean)
        np.testing.assert_array_equal(x.quantiles[0.95], y.quantiles[0.95])
    assert loaded.metadata["note"] == "round-trip"
    assert loaded.normaliser == forecaster.normaliser and loaded.channels == ["x"]


def _with_noise(fc: Forecaster, backcast: float, inside: float, after: float) -> Forecaster:
    return Forecaster(fc.model, fc.normaliser, channels=fc.channels, time_unit=fc.time_unit,
                      noise_std=[inside], extrap_noise_std=[after], backcast_noise_std=[backcast])


def test_predictive_noise_follows_the_query_position(forecaster) -> None:
    fc = _with_noise(forecaster, backcast=0.3, inside=0.1, after=0.5)
    s = Series(times=[1.0, 2.0, 3.0], values=[[0.2], [0.4], [0.1]])
    queries = np.array([4.0, 0.5, 1.0, 2.5, 3.0, 3.5])
    # One latent sample: no latent spread, so the std is exactly the noise of each regime.
    f = fc.predict([s], [queries], num_samples=1, quantiles=(0.05, 0.95))[0]
    assert f.mode == ["extrapolation", "backcast", "interpolation", "interpolation",
                      "interpolation", "extrapolation"]
    noise = np.array([0.5, 0.3, 0.1, 0.1, 0.1, 0.5])[:, None]
    expected = fc.normaliser.std_from_model(noise)
    np.testing.assert_allclose(f.std, expected, rtol=1e-5)
    # The 90% interval of one Gaussian: mean -/+ 1.6449 std.
    np.testing.assert_allclose(f.quantiles[0.95] - f.mean, 1.6448536 * expected, rtol=1e-4)
    np.testing.assert_allclose(f.mean - f.quantiles[0.05], 1.6448536 * expected, rtol=1e-4)


def test_noise_per_regime_round_trips_and_old_checkpoints_keep_one_noise(tmp_path, forecaster) -> None:
    fc = _with_noise(forecaster, backcast=0.3, inside=0.1, after=0.5)
    loaded = Forecaster.load(fc.save(tmp_path / "m"))
    assert (loaded.backcast_noise_std.tolist(), loaded.noise_std.tolist(),
            loaded.extrap_noise_std.tolist()) == ([0.3], [0.1], [0.5])
    # A checkpoint written before the regimes had their own noise has only noise_std.
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    del cfg["extrap_noise_std"], cfg["backcast_noise_std"]
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    old = Forecaster.load(tmp_path / "m")
    assert old.backcast_noise_std.tolist() == old.noise_std.tolist() == old.extrap_noise_std.tolist() == [0.1]
    with pytest.raises(ConfigError, match=r"`extrap_noise_std` must be 1 positive numbers; got \[0.0\]"):
        Forecaster(fc.model, fc.normaliser, channels=["x"], time_unit="s", extrap_noise_std=[0.0])


def test_loading_is_strict(tmp_path, forecaster) -> None:
    with pytest.raises(CheckpointError, match="no config.json"):
        Forecaster.load(tmp_path)
    d = forecaster.save(tmp_path / "m")
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["latent_dim"] = 5  # weights no longer fit
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match the model built from its config.json"):
        Forecaster.load(d)
    cfg["model"]["latent_dim"] = 4
    cfg["surprise"] = 1
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="must have the keys"):
        Forecaster.load(d)
    (d / "weights.safetensors").write_bytes(b"not a safetensors file")
    del cfg["surprise"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="cannot read"):
        Forecaster.load(d)


def test_predict_rejects_bad_arguments(forecaster, periodic_small) -> None:
    s = periodic_small[0]
    with pytest.raises(ShapeError, match=r"one array per series \(1\); got 2"):
        forecaster.predict([s], [QUERIES, QUERIES])
    with pytest.raises(DataError, match="at least one series"):
        forecaster.predict([], [])
    with pytest.raises(ConfigError, match=r"`quantiles` must lie strictly between 0 and 1; got \[0.0\]"):
        forecaster.predict([s], [QUERIES], quantiles=(0.0,))
    with pytest.raises(ConfigError, match="`num_samples` must be a positive integer; got 0"):
        forecaster.predict([s], [QUERIES], num_samples=0)
    with pytest.raises(DataError, match=r"`query_times` of series 0 .* finite times"):
        forecaster.predict([s], [np.array([1.0, np.inf])])
    with pytest.raises(ShapeError, match=r"series 0 \('x2'\) has 2 channels; the model has 1"):
        forecaster.predict([Series(times=[0.0], values=[[1.0, 2.0]], id="x2")], [QUERIES])


def test_step_limit_is_a_solver_error_naming_the_series(forecaster, periodic_small) -> None:
    tiny = SolverConfig(max_steps=2)
    out = forecaster.predict(periodic_small[:2], [np.array([1e4])] * 2, solver=tiny)
    assert [f.status for f in out] == ["max_steps", "max_steps"]
    assert out[0].message.startswith("the ODE solver exceeded its budget (2 steps); raise "
                                     "SolverConfig.max_steps")
    assert np.isnan(out[0].mean).all() and np.isnan(out[0].std).all()  # never half-usable
    with pytest.raises(SolverError, match=r"exceeded its budget \(2 steps\) .* series \[0, 1\]") as info:
        raise_on_failure(out)
    assert info.value.series == (0, 1)


def test_blown_up_solve_is_a_solver_error_naming_why(forecaster, periodic_small) -> None:
    # Latent dynamics dz/dt = 10 z² reach infinity in finite time: the error must say the
    # state blew up (or the step size collapsed), not that a step budget ran out.
    blown = copy.deepcopy(forecaster)
    blown.model.dynamics = _Squared()
    out = blown.predict(periodic_small[:2], [np.array([50.0])] * 2)
    assert {f.status for f in out} <= {"non_finite", "dt_underflow"}
    with pytest.raises(SolverError, match=r"failed \((non_finite|dt_underflow)\) for series \[0, 1\]; "
                                          r"(the latent state blew up|the dynamics are stiff)") as info:
        raise_on_failure(out)
    assert info.value.reason in ("non_finite", "dt_underflow")
    assert info.value.series == (0, 1)


def test_a_diverging_series_fails_alone_in_one_solve(forecaster, periodic_small, monkeypatch) -> None:
    """One series asked far past the blow-up of dz/dt = 10 z² + 1 fails; the others, asked just
    after their first observation, get the values they get alone, from a single solver call."""
    import latent_ode.model

    blown = copy.deepcopy(forecaster)
    blown.model.dynamics = _Squared()
    series = periodic_small[:3]
    queries = [np.array([series[0].times[0] + 0.05, series[0].times[0]]), np.array([50.0]),
               np.array([series[2].times[0] + 0.1])]
    calls = []
    real_solve = latent_ode.model.solve

    def counting_solve(*args, **kwargs):
        calls.append(args[1].shape[0])  # rows solved: S * B
        return real_solve(*args, **kwargs)

    monkeypatch.setattr(latent_ode.model, "solve", counting_solve)
    out = blown.predict(series, queries, num_samples=4, quantiles=(0.1, 0.9))
    assert calls == [4 * 3]
    assert [f.status for f in out] == ["ok", "non_finite", "ok"]
    assert out[1].message.startswith("the ODE solver failed (non_finite); the latent state blew up")
    for i in (0, 2):
        (alone,) = blown.predict([series[i]], [queries[i]], num_samples=4, quantiles=(0.1, 0.9))
        assert alone.ok and out[i].ok
        assert_close(out[i].mean, alone.mean)
        assert_close(out[i].std, alone.std)
        for level in (0.1, 0.9):
            assert_close(out[i].quantiles[level], alone.quantiles[level])
    with pytest.raises(SolverError, match=r"failed \(non_finite\) for series \[1\]") as info:
        raise_on_failure(out)
    assert info.value.series == (1,)


def test_sample_normalised_raises_naming_each_failed_series(forecaster, periodic_small) -> None:
    blown = copy.deepcopy(forecaster)
    blown.model.dynamics = _Squared()
    obs = collate([blown.normaliser.transform(s) for s in periodic_small[:3]])
    t = obs.first_time[:, None] + torch.tensor([[0.01], [10.0], [0.01]])  # (B, 1)
    with pytest.raises(SolverError, match=r"failed \(non_finite\) for series \[1\]; the latent "
                                          r"state blew up") as info:
        blown.sample_normalised(obs, t, num_samples=3)
    assert (info.value.series, info.value.reason) == ((1,), "non_finite")


def test_a_forecast_that_overflows_is_reported_not_returned(forecaster, periodic_small) -> None:
    # A finite solve whose decoded values overflow float32 is not a usable forecast either.
    huge = copy.deepcopy(forecaster)
    huge.model.decoder = _Overflowing()
    out = huge.predict(periodic_small[:1], [QUERIES])
    assert out[0].status == "non_finite", out[0]
    assert out[0].message.startswith("the forecast is not finite although the ODE solve succeeded")
    assert np.isnan(out[0].mean).all()


class _Squared(torch.nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return 10 * z**2 + 1


class _Overflowing(torch.nn.Module):
    """A decoder whose output overflows float32 (10 x 3e38) for a finite latent state."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z[..., :1] * 0 + 3e38) * 10


def test_evaluate_solves_with_the_solver_it_is_given(forecaster, periodic_small) -> None:
    from latent_ode import evaluate

    own = evaluate(forecaster, periodic_small[:8], num_samples=2).metrics
    same = evaluate(forecaster, periodic_small[:8], num_samples=2,
                    solver=forecaster.model_config.solver).metrics
    assert same == own
    # A one-step budget only fails if the override reaches the solver.
    with pytest.raises(SolverError, match=r"exceeded its budget \(1 steps\)"):
        evaluate(forecaster, periodic_small[:8], num_samples=2, solver=SolverConfig(max_steps=1))


@pytest.mark.gpu
def test_gpu_predictions_match_cpu(cuda_device, forecaster, periodic_small) -> None:
    cpu = forecaster.predict(periodic_small[:4], [QUERIES] * 4, num_samples=4)
    gpu = forecaster.to(cuda_device).predict(periodic_small[:4], [QUERIES] * 4, num_samples=4)
    for a, b in zip(cpu, gpu, strict=True):
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-3, atol=1e-3)


def test_mixture_quantiles_match_the_mixture_cdf() -> None:
    from latent_ode.forecaster import mixture_quantiles

    torch.manual_seed(0)
    means = torch.randn(32, 5, 3, dtype=torch.float64) * 2
    std = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    levels = (0.01, 0.05, 0.5, 0.95, 0.99)
    q = mixture_quantiles(means, std, levels)
    cdf = torch.distributions.Normal(means[None], std).cdf(q[:, None]).mean(dim=1)  # (K, 5, 3)
    expected = torch.tensor(levels, dtype=torch.float64)[:, None, None].expand_as(cdf)
    torch.testing.assert_close(cdf, expected, rtol=0, atol=1e-5)
    assert bool((q.diff(dim=0) > 0).all())
    # One component: the Gaussian quantile itself.
    one = mixture_quantiles(torch.zeros(1, 1, dtype=torch.float64), 2.0, (0.975,))
    torch.testing.assert_close(one, torch.tensor([[1.959964 * 2]], dtype=torch.float64), rtol=1e-5, atol=0)


@pytest.mark.parametrize("spread", [0.01, 1.0, 30.0])
def test_mixture_quantiles_solve_the_cdf_in_float32_from_one_mode_to_separated_modes(
        spread: float) -> None:
    """Newton's steps where the mixture is nearly normal, the bisection behind them where its
    modes are far apart (spread 30 noise widths): F(q) = p to float32 precision either way."""
    from latent_ode.forecaster import mixture_quantiles

    g = torch.Generator().manual_seed(1)
    means = torch.randn(32, 40, 6, generator=g) * spread
    std = 0.5 + torch.rand(40, 6, generator=g)  # per query and channel, as predict passes it
    levels = (0.05, 0.25, 0.5, 0.75, 0.95)
    q = mixture_quantiles(means, std, levels)
    cdf = torch.special.ndtr((q.double()[:, None] - means.double()[None]) / std.double()).mean(1)
    expected = torch.tensor(levels, dtype=torch.float64)[:, None, None].expand_as(cdf)
    torch.testing.assert_close(cdf, expected, rtol=0, atol=5e-6)
    assert bool((q.diff(dim=0) >= 0).all())


def test_mixture_quantiles_of_point_masses_are_the_samples_quantiles() -> None:
    """Zero noise: F is a step function; each level lands on the sample where F crosses it."""
    from latent_ode.forecaster import mixture_quantiles

    means = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    q = mixture_quantiles(means, 0.0, (0.1, 0.6, 0.9)).flatten()
    torch.testing.assert_close(q, torch.tensor([0.0, 2.0, 3.0]), rtol=0, atol=1e-6)
    assert bool(torch.isfinite(q).all())


def test_quantiles_of_padded_queries_equal_those_of_each_series_alone(
        two_channel_forecaster) -> None:
    fc, _ = two_channel_forecaster
    rng = np.random.default_rng(3)
    series = [Series(times=np.sort(rng.uniform(0, 1, 8)), values=rng.normal(size=(8, 2)))
              for _ in range(3)]
    queries = [np.linspace(0, 1.5, n) for n in (2, 9, 5)]  # padded to 9 in one batch
    together = fc.predict(series, queries, num_samples=4, quantiles=(0.1, 0.9))
    for s, q, a in zip(series, queries, together, strict=True):
        alone = fc.predict([s], [q], num_samples=4, quantiles=(0.1, 0.9))[0]
        for level in (0.1, 0.9):
            np.testing.assert_allclose(a.quantiles[level], alone.quantiles[level], rtol=1e-4,
                                       atol=1e-4)


def test_noise_grows_with_the_gap_to_the_channels_nearest_observation(tmp_path) -> None:
    from latent_ode.baselines import channel_baselines
    from latent_ode.forecaster import INTERPOLATION

    s = Series(times=np.array([0.0, 1.0, 4.0]), values=np.array([[1.0, np.nan], [2.0, np.nan],
                                                                 [3.0, 5.0]]))
    obs = collate([s], dtype=torch.float64)
    q = torch.tensor([[0.5, 2.0, 6.0]], dtype=torch.float64)
    gap = channel_baselines(obs, q).data_gap()
    # Channel 0 seen at 0, 1 and 4; channel 1 only at 4.
    torch.testing.assert_close(gap[0], torch.tensor([[0.5, 3.5], [1.0, 2.0], [2.0, 2.0]],
                                                    dtype=torch.float64))
    norm = Normaliser(kind="none", loc=np.zeros(2), scale=np.ones(2), time_scale=1.0)
    fc = Forecaster.create(ModelConfig(input_dim=2, latent_dim=2), norm, channels=["a", "b"],
                           time_unit="s", seed=0)
    fc.noise_std = np.array([0.1, 0.2])
    fc.noise_growth = np.array([[0.0, 0.0], [0.03, 0.5], [0.0, 0.0]])
    pos = torch.full((1, 3), INTERPOLATION)
    noise = fc.noise_tensor(pos, gap, gap)
    want = np.sqrt(np.array([0.1, 0.2]) ** 2 + np.array([0.03, 0.5]) * gap[0].numpy())
    np.testing.assert_allclose(noise[0].numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(fc.noise_tensor(pos, gap)[0].numpy(), [[0.1, 0.2]] * 3)
    loaded = Forecaster.load(fc.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.noise_growth, fc.noise_growth)
    with pytest.raises(ConfigError, match=r"`noise_growth` must be a \(3, 2\) array of finite, "
                                          r"non-negative variances"):
        Forecaster(fc.model, norm, channels=["a", "b"], time_unit="s", noise_growth=[[-1.0, 0.0]] * 3)
