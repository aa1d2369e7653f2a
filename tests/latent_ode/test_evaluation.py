"""Held-out metrics: pooled as P1 pools, baselines per regime, skill, units, horizon, errors.

The model is replaced by oracles that answer a known function of time, so every figure can be
recomputed here by hand (numpy loops over the series).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latent_ode import EncoderConfig, Forecaster, ModelConfig, Normaliser, Series, evaluate
from latent_ode.errors import DataError, ShapeError
from latent_ode.evaluation import HORIZON_BINS
from latent_ode.tasks import TASKS, task_batches, to_model_batch

CHANNELS = ["a", "b"]


def _truth(t: np.ndarray) -> np.ndarray:
    """(..., 2) the noiseless values of channels a and b at times ``t`` (user units)."""
    return np.stack([10.0 + 5.0 * np.sin(t), 100.0 + 0.5 * t**2], axis=-1)


def _data(n: int = 12, seed: int = 0) -> list[Series]:
    """Series starting at 0 with a dense channel a and a rare channel b (in some series only
    after the middle of the span, so LOCF has nothing to carry)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        # Continuous times: no distance sits on a horizon bin edge (float32 against float64).
        times = np.sort(rng.uniform(0.1, 10.0, size=15))
        times = np.concatenate([[0.0], times])
        values = _truth(times)
        rare = np.ones(times.size, dtype=bool)
        rare[::4] = False
        if i % 3 == 0:
            rare[: times.size // 2 + 1] = True
        values[rare, 1] = np.nan
        out.append(Series(times=times, values=values, id=f"s{i}"))
    return out


class Oracle(Forecaster):
    """Answers ``_truth`` (normalised) + ``offset``; ``off_context`` is added only at query times
    the context does not contain."""

    offset = 0.0
    off_context = 0.0

    def sample_normalised(self, context, query_times, *, num_samples, seed=0, solver=None,
                          baselines=None):
        t = query_times.double().cpu().numpy() * self.normaliser.time_scale
        pred = torch.as_tensor(self.normaliser.values_to_model(_truth(t)) + self.offset,
                               dtype=context.values.dtype)
        in_ctx = (query_times[:, :, None] == context.times[:, None, :]).any(-1)  # (B, Q)
        pred = pred + torch.where(in_ctx, 0.0, self.off_context)[:, :, None]
        return pred[None].expand(num_samples, *pred.shape), None


def _oracle(data: list[Series], *, kind: str = "minmax", offset: float = 0.0,
            off_context: float = 0.0) -> Oracle:
    norm = Normaliser.fit(data, kind=kind)
    cfg = ModelConfig(input_dim=2, latent_dim=2, encoder=EncoderConfig(hidden=4, units=4))
    fc = Oracle.create(cfg, norm, channels=CHANNELS, time_unit="h", seed=0)
    fc.offset, fc.off_context = offset, off_context
    return fc


def _forecast_reference(data, norm, fallback, offset):
    """Per channel: the squared errors of the model and of LOCF on the forecast targets, and
    each target's distance after the context's last observation (normalised scale)."""
    model = {0: [], 1: []}
    locf = {0: [], 1: []}
    dist = []
    for s in data:
        cut = s.times[0] + 0.5 * (s.times[-1] - s.times[0])
        before, after = s.times < cut, s.times >= cut
        z = norm.values_to_model(s.values)
        for d in (0, 1):
            seen = before & ~np.isnan(z[:, d])
            carried = z[seen, d][-1] if seen.any() else (fallback[d] - norm.loc[d]) / norm.scale[d]
            target = after & ~np.isnan(z[:, d])
            model[d] += list(offset**2 * np.ones(target.sum()))
            locf[d] += list((carried - z[target, d]) ** 2)
            dist += list((s.times[target] - s.times[before][-1]) / norm.time_scale)
    return model, locf, np.array(dist)


def test_pooled_is_the_mean_over_channels_and_locf_carries_or_falls_back() -> None:
    data = _data()
    fallback = np.array([11.0, 130.0])
    fc = _oracle(data, offset=0.1)
    m = evaluate(fc, data, num_samples=2, fallback=fallback).metrics
    model, locf, _ = _forecast_reference(data, fc.normaliser, fallback, 0.1)
    per_model = [np.mean(model[d]) for d in (0, 1)]
    per_locf = [np.mean(locf[d]) for d in (0, 1)]
    assert m["forecast/count/a"] == len(model[0]) and m["forecast/count/b"] == len(model[1])
    assert m["forecast/count/a"] > 3 * m["forecast/count/b"]  # a pooled-over-points mean would differ
    for d, ch in enumerate(CHANNELS):
        assert m[f"forecast/mse/{ch}"] == pytest.approx(0.01, rel=1e-5)
        assert m[f"forecast/baseline_mse/{ch}"] == pytest.approx(per_locf[d], rel=1e-5)
        assert m[f"forecast/skill/{ch}"] == pytest.approx(1 - per_model[d] / per_locf[d], rel=1e-5)
        # MAE in the user's units is the normalised MAE times the channel's scale.
        assert m[f"forecast/mae_units/{ch}"] == pytest.approx(0.1 * fc.normaliser.scale[d], rel=1e-5)
    points = np.concatenate([locf[0], locf[1]]).mean()
    assert m["forecast/baseline_mse"] == pytest.approx(np.mean(per_locf), rel=1e-5)
    assert m["forecast/baseline_mse"] != pytest.approx(points, rel=1e-2)
    assert m["forecast/skill"] == pytest.approx(1 - 0.01 / np.mean(per_locf), rel=1e-5)
    assert m["forecast/mae_units"] == pytest.approx(0.1 * fc.normaliser.scale.mean(), rel=1e-5)


def test_a_channel_never_seen_falls_back_to_the_training_mean_not_zero() -> None:
    data = _data()
    fc = _oracle(data)
    given = evaluate(fc, data, num_samples=2, fallback=np.array([11.0, 130.0])).metrics
    other = evaluate(fc, data, num_samples=2, fallback=np.array([11.0, 100.0])).metrics
    # Only channel b is ever missing from a forecast context; its baseline moves, a's does not.
    assert given["forecast/baseline_mse/a"] == other["forecast/baseline_mse/a"]
    assert given["forecast/baseline_mse/b"] != pytest.approx(other["forecast/baseline_mse/b"])
    # Without a fallback, minmax: the split's channel mean (the normalised 0 is the minimum).
    default = evaluate(fc, data, num_samples=2).metrics
    mean_b = np.nanmean(np.concatenate([s.values[:, 1] for s in data]))
    _, locf, _ = _forecast_reference(data, fc.normaliser, np.array([0.0, mean_b]), 0.0)
    assert default["forecast/baseline_mse/b"] == pytest.approx(np.mean(locf[1]), rel=1e-5)


def test_a_perfect_model_has_zero_error_full_skill_and_covers_everything() -> None:
    data = _data()
    m = evaluate(_oracle(data), data, num_samples=2).metrics
    for r in ("interp", "forecast"):
        assert m[f"{r}/mse"] == pytest.approx(0.0, abs=1e-10)
        assert m[f"{r}/skill"] == pytest.approx(1.0)
        assert m[f"{r}/baseline_mse"] > 1e-3
        assert m[f"{r}/coverage_90"] == 1.0
        assert sum(m[f"{r}/horizon_count/h{k}"] for k in range(1, 6)) == m[f"{r}/count"]


def test_interpolation_scores_only_the_points_the_encoder_did_not_see() -> None:
    data = _data()
    # Exact at the context's times, off by 0.5 elsewhere.
    m = evaluate(_oracle(data, off_context=0.5), data, num_samples=2).metrics
    assert m["interp/mse"] == pytest.approx(0.25, rel=1e-5)
    assert m["interp/mae"] == pytest.approx(0.5, rel=1e-5)
    assert m["interp/mse_incl_seen"] < 0.2  # the old headline counted the seen points
    total = sum(int((~np.isnan(s.values)).sum()) for s in data)
    hidden_times = sum(s.times.size - round(0.5 * s.times.size) for s in data)
    assert m["interp/count/a"] == hidden_times  # channel a is observed at every time
    assert m["interp/count"] < total


def test_interpolation_is_scored_against_numpy_linear_interpolation() -> None:
    data = _data()
    fallback = np.array([11.0, 130.0])
    fc = _oracle(data)
    m = evaluate(fc, data, num_samples=2, fallback=fallback, seed=3).metrics
    # The same draw of hidden points (evaluate's generator, the first task), redone in numpy.
    obs = to_model_batch(fc, data)
    item = next(task_batches(obs, TASKS, batch_size=100, interp_fraction=0.5, extrap_split=0.5,
                             generator=torch.Generator().manual_seed(3), trim=False))
    assert item.task == "interpolation"
    ctx, tgt = item.context, item.target
    fb = fc.normaliser.values_to_model(fallback)
    sq: dict[int, list[float]] = {0: [], 1: []}
    for b in range(len(data)):
        n = int(ctx.lengths[b])
        ct, cv, cm = (x[b, :n].numpy() for x in (ctx.times, ctx.values, ctx.mask))
        for d in (0, 1):
            for i in range(int(tgt.lengths[b])):
                t, observed = float(tgt.times[b, i]), bool(tgt.mask[b, i, d])
                if not observed or (cm[:, d] & np.isclose(ct, t)).any():
                    continue  # not a target, or seen by the encoder
                seen = cm[:, d]
                pred = np.interp(t, ct[seen], cv[seen, d]) if seen.any() else fb[d]
                sq[d].append((pred - float(tgt.values[b, i, d])) ** 2)
    for d, ch in enumerate(CHANNELS):
        assert m[f"interp/count/{ch}"] == len(sq[d])
        assert m[f"interp/baseline_mse/{ch}"] == pytest.approx(np.mean(sq[d]), rel=1e-4)


def test_forecast_horizon_bins_split_the_largest_distance_in_five() -> None:
    data = _data()
    fc = _oracle(data, offset=0.1)
    result = evaluate(fc, data, num_samples=2)
    s = result.regimes["forecast"]
    _, _, dist = _forecast_reference(data, fc.normaliser, np.zeros(2), 0.1)
    edges = np.linspace(0.0, dist.max(), HORIZON_BINS + 1)
    np.testing.assert_allclose(s.horizon_edges, edges * fc.normaliser.time_scale, rtol=1e-5)
    expected = np.bincount(np.clip(np.floor(dist / (dist.max() / 5)), 0, 4).astype(int),
                           minlength=5)
    np.testing.assert_array_equal(s.horizon_count, expected)
    assert s.horizon_count[-1] >= 1  # the farthest target is in the last bin
    assert result.metrics["forecast/horizon_count/h5"] == expected[-1]


def test_interpolation_gap_bins_hold_equal_counts() -> None:
    """The interpolation's distances crowd near 0: its fifths are equal-count, so the farthest
    fifth has a fifth of the points (equal widths left it a handful)."""
    data = _data()
    fc = _oracle(data, offset=0.1)
    s = evaluate(fc, data, num_samples=2).regimes["interp"]
    total = int(s.horizon_count.sum())
    assert total == int(s.count.sum())
    assert (np.abs(s.horizon_count - total / HORIZON_BINS) <= 0.05 * total).all(), s.horizon_count
    assert (np.diff(s.horizon_edges) >= 0).all() and s.horizon_edges[0] == 0.0


def test_calibration_counts_values_outside_the_interval() -> None:
    data = _data()
    # Off by far more than the noise: nothing inside the 90% interval.
    m = evaluate(_oracle(data, offset=5.0), data, num_samples=2).metrics
    assert m["interp/coverage_90"] == 0.0
    assert m["forecast/coverage_90"] == 0.0
    assert m["forecast/coverage_90/h5"] == 0.0
    assert m["forecast/skill"] < 0


def test_errors_name_the_argument() -> None:
    data = _data()
    fc = _oracle(data)
    with pytest.raises(DataError, match=r"`series` must contain at least one series; got none\."):
        evaluate(fc, [])
    with pytest.raises(ShapeError, match=r"`fallback` must be 2 finite numbers \(one per channel, "
                                         r"user units\); got \[1\.0\]\."):
        evaluate(fc, data, fallback=[1.0])
    with pytest.raises(ShapeError, match=r"got \[1\.0, nan\]"):
        evaluate(fc, data, fallback=[1.0, float("nan")])


def test_evaluating_a_real_model_gives_every_name(periodic_small) -> None:
    norm = Normaliser.fit(periodic_small, kind="standard")
    cfg = ModelConfig(input_dim=1, latent_dim=4, encoder=EncoderConfig(hidden=8, units=16))
    fc = Forecaster.create(cfg, norm, channels=["x"], time_unit="s", seed=0)
    result = evaluate(fc, periodic_small[:10], num_samples=2)
    m = result.metrics
    for r in ("interp", "forecast"):
        for stat in ("mse", "mae", "mae_units", "baseline_mse", "baseline_mae",
                     "baseline_mae_units", "skill", "nll", "coverage_90", "count"):
            assert np.isfinite(m[f"{r}/{stat}"]), (r, stat)
        assert m[f"{r}/mse/x"] == m[f"{r}/mse"]  # one channel: pooled = the channel
        assert m == m | result.regimes[r].metrics()
    # Same seed, same numbers.
    again = evaluate(fc, periodic_small[:10], num_samples=2).metrics
    assert again == m
    assert all(np.isfinite(v) for v in m.values()), m  # empty horizon bins are left out
