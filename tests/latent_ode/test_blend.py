"""The blend towards the baselines: fitted on validation, applied to every answer, persisted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latent_ode import (
    CheckpointError,
    ConfigError,
    DynamicsConfig,
    EncoderConfig,
    Forecaster,
    ModelConfig,
    Normaliser,
    Series,
    TrainConfig,
    fit,
)
from latent_ode.baselines import channel_baselines
from latent_ode.blend import BaselineBlend, fit_weight
from latent_ode.data import collate
from latent_ode.forecaster import EXTRAPOLATION, INTERPOLATION, window_position
from latent_ode.training.calibration import calibrate_blend

SMALL = ModelConfig(input_dim=2, latent_dim=4, encoder=EncoderConfig(hidden=8, units=16, max_step=0.1),
                    dynamics=DynamicsConfig(units=16))


def _data(n: int, seed: int) -> list[Series]:
    """Channel 0 a line per series (drawing lines is nearly exact), channel 1 noise around 0.5
    (its mean is the best answer, a line between noisy neighbours is not)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = np.sort(rng.uniform(0.0, 1.0, 20))
        line = rng.normal(0.0, 1.0) + 0.2 * t + rng.normal(0.0, 0.01, t.size)
        noise = 0.5 + rng.normal(0.0, 0.3, t.size)
        out.append(Series(times=t, values=np.stack([line, noise], axis=1), id=f"s{i}"))
    return out


def _constant_model(seed: int = 0) -> Forecaster:
    """A forecaster whose decoder answers 0 on channel 0 (wrong: the lines sit anywhere) and
    0.5 on channel 1 (right: the noise's mean), whatever the latent state."""
    norm = Normaliser.fit(_data(5, 99), kind="none", time_scale=1.0)
    fc = Forecaster.create(SMALL, norm, channels=["line", "noise"], time_unit="s", seed=seed)
    with torch.no_grad():
        fc.model.decoder.weight.zero_()
        fc.model.decoder.bias.copy_(torch.tensor([0.0, 0.5]))
    fc.model.eval()
    return fc


def _errors(fc: Forecaster, series: list[Series]) -> dict[str, np.ndarray]:
    """(D,) MSE of the model and of the baseline on every other point of each series, the
    model seeing the rest."""
    ctx = [Series(times=s.times[::2], values=s.values[::2], id=s.id) for s in series]
    hid = [s.times[1::2] for s in series]
    truth = np.concatenate([s.values[1::2] for s in series])
    answers = fc.predict(ctx, hid, num_samples=4, quantiles=())
    model = np.concatenate([a.mean for a in answers])
    line = np.concatenate([np.stack([np.interp(q, c.times, c.values[:, j]) for j in range(2)],
                                    axis=1) for c, q in zip(ctx, hid, strict=True)])
    return {"model": ((model - truth) ** 2).mean(0), "baseline": ((line - truth) ** 2).mean(0)}


def test_fit_weight_is_clipped_least_squares() -> None:
    delta = np.array([1.0, -2.0, 0.5])
    assert fit_weight(delta, 0.3 * delta) == pytest.approx(0.3)
    assert fit_weight(delta, -delta) == 0.0  # the model's departure points the wrong way
    assert fit_weight(delta, 3.0 * delta) == 1.0  # never beyond the model itself
    assert fit_weight(np.zeros(3), np.ones(3)) == 1.0  # model == baseline: nothing to shrink


def test_weight_goes_to_the_baseline_where_the_model_is_worse_and_keeps_it_where_better() -> None:
    fc = _constant_model()
    val = collate(_data(120, seed=1))
    blend = calibrate_blend(fc, val, TrainConfig(batch_size=40, seed=0), num_samples=2)
    assert fc.blend is None  # fitting does not set it
    w = blend.weights
    assert w.shape == (3, 2, 3)
    # Interpolation and forecast both have points: the line channel goes to its baseline, the
    # noise channel keeps the model's answer (nearly: the weight is fitted, not set).
    for regime in (INTERPOLATION, EXTRAPOLATION):
        assert (w[regime, 0] < 0.05).all(), w
        assert (w[regime, 1] > 0.8).all(), w
    # Equal-count gap bins where there are enough points, edges increasing.
    assert np.isfinite(blend.edges[INTERPOLATION]).all()
    assert (np.diff(blend.edges[INTERPOLATION], axis=1) >= 0).all()

    # On fresh series, through predict: the blended answer is at least as good as the better of
    # the model and the baseline on each channel (within a few percent).
    test = _data(60, seed=2)
    before = _errors(fc, test)
    assert before["model"][0] > 10 * before["baseline"][0]  # the model deliberately worse
    fc.blend = blend
    after = _errors(fc, test)
    best = np.minimum(before["model"], before["baseline"])
    assert (after["model"] <= 1.05 * best).all(), (before, after)


def test_identity_blend_keeps_the_model() -> None:
    fc = _constant_model()
    with torch.no_grad():  # a decoder that depends on the latent state
        fc.model.decoder.weight.normal_()
    series = _data(4, seed=3)
    queries = [np.linspace(-0.2, 1.3, 7)] * 4
    plain = fc.predict(series, queries, num_samples=3)
    fc.blend = BaselineBlend.identity(2)
    same = fc.predict(series, queries, num_samples=3)
    for a, b in zip(plain, same, strict=True):
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(a.std, b.std, rtol=1e-6, atol=1e-6)


def test_weight_zero_answers_the_baseline_and_bins_follow_the_gap() -> None:
    samples = torch.randn(3, 1, 4, 2)
    series = _data(1, seed=4)[0]
    context = collate([Series(times=series.times[:10], values=series.values[:10])])
    query = torch.tensor([[float(series.times[0]), float(series.times[9]) + 0.01,
                           float(series.times[9]) + 0.5, float(series.times[9]) + 5.0]])
    base = channel_baselines(context, query)
    position = window_position(query, context.first_time, context.last_time)
    weights = np.ones((3, 2, 3))
    weights[EXTRAPOLATION, 0] = [0.0, 0.5, 1.0]  # by gap bin, channel 0 only
    edges = np.full((3, 2, 2), np.inf)
    edges[EXTRAPOLATION, 0] = [0.1, 1.0]
    out = BaselineBlend(weights=weights, edges=edges).apply(samples, base, position)
    # Channel 1 and the interpolation query: weight 1, the samples themselves.
    torch.testing.assert_close(out[..., 1], samples[..., 1])
    torch.testing.assert_close(out[:, :, 0, 0], samples[:, :, 0, 0])
    b = base.linear[0, :, 0]
    torch.testing.assert_close(out[:, 0, 1, 0], b[1].expand(3))  # gap 0.01: bin 0, weight 0
    torch.testing.assert_close(out[:, 0, 2, 0], b[2] + 0.5 * (samples[:, 0, 2, 0] - b[2]))
    torch.testing.assert_close(out[:, 0, 3, 0], samples[:, 0, 3, 0])  # gap 5: last bin, weight 1


def test_blend_round_trips_through_save_and_load(tmp_path) -> None:
    fc = _constant_model()
    weights = np.random.default_rng(0).uniform(0, 1, (3, 2, 3))
    edges = np.array([[[0.1, 0.2], [np.inf, np.inf]]] * 3)
    fc.blend = BaselineBlend(weights=weights, edges=edges)
    fc.save(tmp_path / "m")
    loaded = Forecaster.load(tmp_path / "m")
    assert loaded.blend is not None
    np.testing.assert_array_equal(loaded.blend.weights, weights)
    np.testing.assert_array_equal(loaded.blend.edges, edges)
    series, queries = _data(3, seed=5), [np.array([0.1, 0.5, 1.5])] * 3
    for a, b in zip(fc.predict(series, queries, num_samples=2),
                    loaded.predict(series, queries, num_samples=2), strict=True):
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-6, atol=1e-6)


def test_checkpoint_without_a_blend_loads_with_the_model_unchanged(tmp_path) -> None:
    fc = _constant_model()
    fc.save(tmp_path / "old")
    cfg = json.loads((tmp_path / "old" / "config.json").read_text())
    assert "blend" not in cfg  # as written before the blend existed
    loaded = Forecaster.load(tmp_path / "old")
    assert loaded.blend is None


def test_invalid_blends_are_refused_with_their_reason(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"`blend.weights` must lie in \[0, 1\]"):
        BaselineBlend(weights=np.full((3, 2, 1), 1.5), edges=np.zeros((3, 2, 0)))
    with pytest.raises(ConfigError, match=r"`blend.weights` must have shape \(3, D, K\)"):
        BaselineBlend(weights=np.ones((2, 2, 1)), edges=np.zeros((2, 2, 0)))
    with pytest.raises(ConfigError, match=r"`blend.edges` must be a \(3, D, K - 1\)"):
        BaselineBlend(weights=np.ones((3, 2, 3)), edges=np.array([[[0.2, 0.1]] * 2] * 3))
    fc = _constant_model()
    with pytest.raises(ConfigError, match="`blend` must have weights for the model's 2 channels; got 3"):
        Forecaster(fc.model, fc.normaliser, channels=fc.channels, time_unit="s",
                   blend=BaselineBlend.identity(3))
    fc.blend = BaselineBlend.identity(2)
    fc.save(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    cfg = json.loads(path.read_text())
    cfg["blend"] = {"weights": [[[2.0]] * 2] * 3, "edges": [[[]] * 2] * 3}
    path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"is invalid: `blend.weights` must lie in \[0, 1\]"):
        Forecaster.load(tmp_path / "m")
    cfg["blend"] = {"weights": [[[1.0]] * 2] * 3}
    path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"`blend` must be a table with the keys"):
        Forecaster.load(tmp_path / "m")


def test_fit_calibrates_the_blend_before_the_noise_when_asked() -> None:
    data = _data(60, seed=6)
    norm = Normaliser.fit(data[:40], kind="none", time_scale=1.0)
    fc = Forecaster.create(SMALL, norm, channels=["line", "noise"], time_unit="s", seed=0)
    fit(fc, data[:40], data[40:], TrainConfig(batch_size=20, max_steps=2, progress=False))
    assert fc.blend is None  # off by default
    fit(fc, data[:40], data[40:], TrainConfig(batch_size=20, max_steps=2, progress=False,
                                              calibrate_blend=True))
    assert fc.blend is not None and fc.blend.weights.shape == (3, 2, 3)
    # The noise was fitted on the blended answers: a refit with the blend now in place (the fit
    # ignores it) gives the same weights, and the noise equals a recalibration after the blend.
    from latent_ode.tasks import to_model_batch
    from latent_ode.training.calibration import calibrate_noise

    val = to_model_batch(fc, data[40:])
    cfg = TrainConfig(batch_size=20)
    np.testing.assert_allclose(calibrate_blend(fc, val, cfg).weights, fc.blend.weights)
    np.testing.assert_allclose(calibrate_noise(fc, val, cfg).inside, fc.noise_std)


def test_a_channel_the_context_never_observed_is_blended_towards_its_mean() -> None:
    samples = torch.randn(3, 1, 2, 2)
    context = collate([Series(times=np.array([0.0, 1.0]),
                              values=np.array([[1.0, np.nan], [2.0, np.nan]]))])
    query = torch.tensor([[0.5, 3.0]])  # interpolation, forecast
    base = channel_baselines(context, query)
    position = window_position(query, context.first_time, context.last_time)
    unobserved = np.ones((3, 2))
    unobserved[INTERPOLATION, 1], unobserved[EXTRAPOLATION, 1] = 0.0, 0.25
    blend = BaselineBlend(weights=np.ones((3, 2, 1)), edges=np.zeros((3, 2, 0)),
                          unobserved=unobserved, fallback=np.array([9.0, -0.7]))
    out = blend.apply(samples, base, position)
    torch.testing.assert_close(out[..., 0], samples[..., 0])  # observed, weight 1
    torch.testing.assert_close(out[:, 0, 0, 1], torch.full((3,), -0.7))  # weight 0: the mean
    torch.testing.assert_close(out[:, 0, 1, 1], -0.7 + 0.25 * (samples[:, 0, 1, 1] + 0.7))
    # Without `unobserved` (blends written before it) such a channel keeps the model's answer.
    old = BaselineBlend(weights=np.zeros((3, 2, 1)), edges=np.zeros((3, 2, 0)))
    torch.testing.assert_close(old.apply(samples, base, position)[..., 1], samples[..., 1])


def test_unobserved_weights_round_trip_and_are_checked(tmp_path) -> None:
    fc = _constant_model()
    blend = BaselineBlend(weights=np.ones((3, 2, 1)), edges=np.zeros((3, 2, 0)),
                          unobserved=np.full((3, 2), 0.3), fallback=np.array([0.1, 0.2]))
    fc.blend = blend
    fc.save(tmp_path / "m")
    loaded = Forecaster.load(tmp_path / "m").blend
    assert loaded is not None and loaded.fallback is not None and loaded.unobserved is not None
    np.testing.assert_array_equal(loaded.unobserved, blend.unobserved)
    np.testing.assert_array_equal(loaded.fallback, blend.fallback)
    with pytest.raises(ConfigError, match="`blend.unobserved` and `blend.fallback` come together"):
        BaselineBlend(weights=np.ones((3, 2, 1)), edges=np.zeros((3, 2, 0)),
                      unobserved=np.ones((3, 2)))
    with pytest.raises(ConfigError, match=r"`blend.unobserved` must have shape \(3, D\)"):
        BaselineBlend(weights=np.ones((3, 2, 1)), edges=np.zeros((3, 2, 0)),
                      unobserved=np.ones((3, 3)), fallback=np.zeros(2))
    with pytest.raises(ConfigError, match=r"`blend.unobserved` must lie in \[0, 1\]"):
        BaselineBlend(weights=np.ones((3, 2, 1)), edges=np.zeros((3, 2, 0)),
                      unobserved=np.full((3, 2), -0.1), fallback=np.zeros(2))
    with pytest.raises(ConfigError, match="`blend.fallback` must be 2 finite numbers"):
        BaselineBlend(weights=np.ones((3, 2, 1)), edges=np.zeros((3, 2, 0)),
                      unobserved=np.ones((3, 2)), fallback=np.array([0.0, np.nan]))


def test_the_baseline_is_the_users_own_line_even_beyond_the_normalisers_clip() -> None:
    """A robust normaliser clips what the model reads; the blend's baseline (and so a weight of
    0) is the line through the user's own values, outliers included."""
    train = _data(40, seed=7)
    norm = Normaliser.fit(train, kind="robust", time_scale=1.0)
    assert norm.clip is not None
    fc = _constant_model()
    fc = Forecaster(fc.model, norm, channels=fc.channels, time_unit="s",
                    blend=BaselineBlend(weights=np.zeros((3, 2, 1)), edges=np.zeros((3, 2, 0))))
    high = float(norm.values_from_model(norm.clip[1])[0]) + 50.0  # far beyond the clip
    context = Series(times=np.array([0.0, 1.0, 2.0]),
                     values=np.array([[high, 0.5], [high + 2.0, 0.4], [high + 4.0, 0.6]]))
    answer = fc.predict([context], [np.array([0.5, 1.5, 3.0])], num_samples=2)[0]
    np.testing.assert_allclose(answer.mean[:, 0], [high + 1.0, high + 3.0, high + 4.0], rtol=1e-5)
    np.testing.assert_allclose(answer.mean[:, 1], [0.45, 0.5, 0.6], rtol=1e-5, atol=1e-5)


def test_calibration_fits_against_the_unclipped_values_and_the_mean_of_unseen_channels() -> None:
    """With ``raw``, the fallback is each channel's unclipped validation mean, and a channel
    the context never saw gets a weight per regime: towards its mean where the decoder's
    answer is worse (here 5 robust units above a channel's median)."""
    from latent_ode.tasks import to_model_batch

    rng = np.random.default_rng(8)
    series = []
    for i in range(150):
        t = np.sort(rng.uniform(0.0, 1.0, 12))
        values = np.stack([rng.normal(0.0, 1.0) + 0.1 * t, 3.0 + rng.normal(0.0, 0.1, t.size)], 1)
        values[t < 0.7, 1] = np.nan  # channel 1 only late: unseen in forecast contexts
        values[-1, 1] = 3.0
        series.append(Series(times=t, values=values, id=f"u{i}"))
    norm = Normaliser.fit(series, kind="robust", time_scale=1.0)
    fc = _constant_model()
    fc = Forecaster(fc.model, norm, channels=fc.channels, time_unit="s")
    with torch.no_grad():
        fc.model.decoder.bias.copy_(torch.tensor([0.0, 5.0]))
    val, raw = to_model_batch(fc, series), to_model_batch(fc, series, clip=False)
    assert not torch.equal(val.values, raw.values)  # the clip bites on the outer values
    blend = calibrate_blend(fc, val, TrainConfig(batch_size=50, seed=0), raw=raw, num_samples=2)
    assert blend.fallback is not None and blend.unobserved is not None
    expected = np.nanmean(norm.values_to_model(np.concatenate([s.values for s in series]),
                                               clip=False), axis=0)
    np.testing.assert_allclose(blend.fallback, expected, rtol=1e-5, atol=1e-6)
    assert blend.unobserved[EXTRAPOLATION, 1] < 0.05  # the mean, not the decoder's 0


def test_the_anchor_reads_the_unclipped_lines_where_they_err_no_more() -> None:
    """Per channel, the anchor's lines are chosen on validation: a tie (the clip never touches
    the channel) goes to the user's own, unclipped lines."""
    from latent_ode import DecoderConfig
    from latent_ode.tasks import to_model_batch

    series = _data(80, seed=9)
    # Fitted on data whose quantile bounds lie outside every validation value: the clip never
    # bites there, so both choices score alike on both channels.
    wide = _data(400, seed=10) + [Series(times=np.linspace(0, 1, 20),
                                         values=np.full((20, 2), v), id=f"w{v}")
                                  for v in (-50.0, 50.0)]
    norm = Normaliser.fit(wide, kind="robust", time_scale=1.0)
    cfg = ModelConfig(input_dim=2, latent_dim=4, decoder=DecoderConfig(anchor=True),
                      encoder=EncoderConfig(hidden=8, units=16), dynamics=DynamicsConfig(units=16))
    fc = Forecaster.create(cfg, norm, channels=["line", "noise"], time_unit="s", seed=0)
    fc.model.eval()
    val = to_model_batch(fc, series)
    blend = calibrate_blend(fc, val, TrainConfig(batch_size=40, seed=0), num_samples=2,
                            raw=to_model_batch(fc, series, clip=False))
    assert blend.raw_anchor is not None
    assert torch.equal(to_model_batch(fc, series, clip=False).values, val.values)
    assert blend.raw_anchor.tolist() == [True, True]  # ties: the user's own lines
    # Without an anchor there is nothing to choose.
    plain = _constant_model()
    assert calibrate_blend(plain, collate(_data(40, seed=1)), TrainConfig(batch_size=40),
                           num_samples=2, raw=collate(_data(40, seed=1))).raw_anchor is None
