"""The training loop: exact resume, callbacks, and a quality threshold."""

from __future__ import annotations

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
    TrainConfig,
    TrainEvent,
    evaluate,
    fit,
)
from pipelines.sources.periodic import periodic

SMALL = ModelConfig(input_dim=1, latent_dim=4, encoder=EncoderConfig(hidden=8, units=16, max_step=0.1),
                    dynamics=DynamicsConfig(units=16))


def _setup(seed: int = 0):
    data = periodic(60, n_times=20, shared_grid=False, seed=seed)
    norm = Normaliser.fit(data[:40], kind="none", time_scale=1.0)
    fc = Forecaster.create(SMALL, norm, channels=["x"], time_unit="s", seed=seed)
    return fc, data[:40], data[40:50]


def _weights(fc: Forecaster) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in fc.model.state_dict().items()}


def test_same_seed_same_run_and_callbacks_report() -> None:
    cfg = TrainConfig(batch_size=10, max_epochs=2, log_every=2, progress=False, seed=5)
    events: list[TrainEvent] = []
    a, tr, va = _setup()
    res_a = fit(a, tr, va, cfg, callbacks=[events.append])
    b, tr, va = _setup()
    res_b = fit(b, tr, va, cfg)
    for k, v in _weights(a).items():
        torch.testing.assert_close(v, _weights(b)[k], rtol=0, atol=0)
    assert res_a.history == res_b.history
    assert res_a.steps == 8 and res_a.epochs == 2
    kinds = [e.kind for e in events]
    assert kinds.count("epoch") == 2 and kinds.count("step") == 4
    assert {"train_loss", "train_mse", "train_kl", "train_nfe", "train_lr"} <= set(events[0].metrics)
    assert {"val_interp_mse", "val_extrap_mse", "val_mse", "best_val_mse"} <= set(events[-1].metrics)
    assert a.metadata["training"]["steps"] == 8
    # The metadata describes the weights kept: the best validation, not the last one.
    assert a.metadata["training"]["val_mse"] == min(h["val_mse"] for h in res_a.history)


@pytest.mark.parametrize(("task", "val_metric", "validated"), [
    ("interpolation", "val_mse", {"interp"}),
    ("extrapolation", "val_loss", {"extrap"}),
    ("extrapolation", "val_interp_mse", {"interp", "extrap"}),
    ("both", "val_mse", {"interp", "extrap"}),
])
def test_validation_measures_the_trained_task_and_the_selection_metric(task, val_metric,
                                                                        validated) -> None:
    fc, tr, va = _setup()
    cfg = TrainConfig(batch_size=10, max_steps=4, progress=False, task=task,
                      val_metric=val_metric, calibrate_noise=False)
    last = fit(fc, tr, va, cfg).history[-1]
    assert {k.split("_")[1] for k in last if k.endswith("_mse") and k != "val_mse"} == validated
    # val_mse and val_loss average the tasks validated.
    assert last["val_mse"] == pytest.approx(np.mean([last[f"val_{p}_mse"] for p in validated]))
    assert last["val_loss"] == pytest.approx(np.mean([last[f"val_{p}_loss"] for p in validated]))


def test_validation_builds_no_autograd_graph(monkeypatch) -> None:
    from latent_ode.model import LatentODE

    calls: list[tuple[bool, bool]] = []  # (training mode, grad enabled) of every loss
    original = LatentODE.loss

    def spy(self, *args, **kwargs):
        calls.append((self.training, torch.is_grad_enabled()))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LatentODE, "loss", spy)
    fc, tr, va = _setup()
    fit(fc, tr, va, TrainConfig(batch_size=10, max_steps=4, progress=False,
                                calibrate_noise=False))
    assert (True, True) in calls  # training steps
    assert {grad for training, grad in calls if not training} == {False}


def test_kl_weight_warms_up_to_kl_scale() -> None:
    cfg = TrainConfig(batch_size=10, max_steps=6, log_every=1, progress=False, kl_warmup_delay=2,
                      kl_warmup_rate=0.5, kl_scale=0.1)
    events: list[TrainEvent] = []
    fc, tr, va = _setup()
    fit(fc, tr, va, cfg, callbacks=[events.append])
    weights = [e.metrics["train_kl_weight"] for e in events if e.kind == "step"]
    # 0 for the delay, then kl_scale * (1 - rate ** (step - delay)).
    np.testing.assert_allclose(weights, [0.0, 0.0, 0.0, 0.05, 0.075, 0.0875], rtol=1e-12)
    with pytest.raises(ConfigError, match=r"`TrainConfig.kl_scale` must be non-negative; got -1"):
        TrainConfig(kl_scale=-1)


def test_moving_average_of_the_weights_is_what_is_validated_and_kept() -> None:
    """With ``ema_decay`` the training trajectory is unchanged, and the model returned is the
    exponential moving average of the weights after each step (the first step's weights, then
    ``avg = d * avg + (1 - d) * w``), validated once at the end."""
    decay, steps = 0.6, 3  # fewer than the 4 steps of an epoch: one validation, at the end
    trajectory: list[dict[str, torch.Tensor]] = []
    raw, tr, va = _setup()
    cfg = TrainConfig(batch_size=10, max_steps=steps, log_every=1, progress=False, seed=3,
                      calibrate_noise=False)
    fit(raw, tr, va, cfg, callbacks=[lambda e: e.kind == "step" and trajectory.append(_weights(raw))])
    assert len(trajectory) == steps
    expected = trajectory[0]
    for w in trajectory[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * w[k] for k in w}

    averaged, tr, va = _setup()
    events: list[TrainEvent] = []
    res = fit(averaged, tr, va, TrainConfig(**{**cfg.__dict__, "ema_decay": decay}),
              callbacks=[events.append])
    for k, v in expected.items():
        torch.testing.assert_close(_weights(averaged)[k], v, rtol=1e-5, atol=1e-6)
    assert res.steps == steps and len(res.history) == 1
    assert not torch.equal(_weights(averaged)["decoder.weight"], trajectory[-1]["decoder.weight"])
    with pytest.raises(ConfigError, match=r"`TrainConfig.ema_decay` must be in \(0, 1\) or None; got 1"):
        TrainConfig(ema_decay=1.0)


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_interrupted_run_resumes_exactly(tmp_path, ema_decay) -> None:
    full_cfg = TrainConfig(batch_size=10, max_epochs=3, checkpoint_every=3, progress=False, seed=1,
                           ema_decay=ema_decay)
    ref, tr, va = _setup()
    ref_result = fit(ref, tr, va, full_cfg)

    # First leg stops mid-epoch at step 7 (a checkpoint is written at 6 and at the end).
    leg, tr, va = _setup()
    fit(leg, tr, va, TrainConfig(**{**full_cfg.__dict__, "max_steps": 7}), checkpoint_dir=tmp_path)
    resumed, tr, va = _setup(seed=0)
    resumed_result = fit(resumed, tr, va, full_cfg, checkpoint_dir=tmp_path, resume=True)
    assert resumed_result.steps == ref_result.steps == 12
    assert resumed_result.best_step == ref_result.best_step
    np.testing.assert_allclose(resumed_result.best_metric, ref_result.best_metric, rtol=1e-6)
    for k, v in _weights(ref).items():
        torch.testing.assert_close(_weights(resumed)[k], v, rtol=1e-6, atol=1e-7)


def test_resume_from_a_torn_checkpoint_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "last.pt").write_bytes(b"garbage")
    fc, tr, va = _setup()
    with pytest.raises(CheckpointError, match="cannot resume from .*last.pt.*Delete it to start afresh"):
        fit(fc, tr, va, TrainConfig(max_steps=1, progress=False), checkpoint_dir=tmp_path, resume=True)


def test_empty_splits_are_rejected() -> None:
    fc, tr, _ = _setup()
    with pytest.raises(DataError, match=r"`train` and `val` must not be empty; got 40 and 0 series"):
        fit(fc, tr, [], TrainConfig(progress=False))


def test_adjoint_training_step_runs_and_matches_backprop_loss() -> None:
    cfg = TrainConfig(batch_size=10, max_steps=2, progress=False, seed=3, task="extrapolation")
    a, tr, va = _setup()
    ra = fit(a, tr, va, cfg)
    adj_cfg = ModelConfig(**{**SMALL.__dict__,
                             "solver": type(SMALL.solver)(gradient="adjoint")})
    b = Forecaster.create(adj_cfg, a.normaliser, channels=["x"], time_unit="s", seed=0)
    rb = fit(b, tr, va, cfg)
    # Same data, same seed: the two gradient modes take nearly the same two steps.
    np.testing.assert_allclose(rb.history[-1]["val_extrap_mse"], ra.history[-1]["val_extrap_mse"],
                               rtol=0.05)


def test_noise_calibration_per_regime_falls_back_to_the_pooled_value(monkeypatch) -> None:
    from latent_ode.tasks import to_model_batch
    from latent_ode.training import calibration
    from latent_ode.training.calibration import calibrate_noise

    fc, _, val = _setup()
    val_obs = to_model_batch(fc, val)
    cfg = TrainConfig(batch_size=10, seed=0)
    # One draw of the contexts (a split this small is drawn 8 times by default).
    calib = calibrate_noise(fc, val_obs, cfg, passes=1)
    inside, after, before = calib.inside, calib.after, calib.before
    assert inside[0] != after[0]
    # Ten series of 20 points: about 100 held-out points inside the windows and 100 after them,
    # but a backcast point only where a context misses a series' first point: too few to
    # estimate from, so the backcast does not get its own estimate...
    monkeypatch.setattr(calibration, "_MIN_CALIBRATION_POINTS", 1)
    own = calibrate_noise(fc, val_obs, cfg, passes=1)
    assert (own.inside[0], own.after[0]) == (inside[0], after[0])
    assert own.before[0] != before[0]
    monkeypatch.undo()
    # ... but the pooled one, without growth. With the encoder shown every point, interpolation
    # holds nothing out: only forecast points remain, and the regimes without points of their
    # own take the constant fitted to them; the forecast regime fits its own line in the gap,
    # whose intercept lies at or below that constant (the slope is never negative).
    all_seen = calibrate_noise(fc, val_obs, TrainConfig(batch_size=10, seed=0, interp_fraction=1.0))
    np.testing.assert_array_equal(all_seen.inside, all_seen.before)
    assert all_seen.growth[0, 0] == all_seen.growth[1, 0] == 0.0
    assert all_seen.after[0] <= all_seen.inside[0] + 1e-12
    assert all_seen.inside[0] > fc.model_config.obs_std


def test_noise_growth_fit_is_least_squares_under_its_bounds() -> None:
    from latent_ode.training.calibration import _fit_growth

    g = torch.linspace(0.0, 2.0, 50, dtype=torch.float64)
    a, b = _fit_growth(0.3 + 0.5 * g, g, floor=0.01)
    assert (a, b) == pytest.approx((0.3, 0.5), rel=1e-12)
    # A falling error: no negative growth, the mean instead.
    a, b = _fit_growth(1.0 - 0.2 * g, g, floor=0.01)
    assert (a, b) == pytest.approx((float((1.0 - 0.2 * g).mean()), 0.0), rel=1e-12)
    # An intercept below the floor: the line is refitted through the floor.
    a, b = _fit_growth(-0.1 + 1.0 * g, g, floor=0.1)
    r = -0.1 + g
    assert a == pytest.approx(0.01)
    assert b == pytest.approx(float((g * (r - 0.01)).sum() / (g * g).sum()), rel=1e-12)


@pytest.mark.slow
def test_training_beats_linear_interpolation_on_held_out_points() -> None:
    """Sparse irregular sinusoids (10 of 20 points seen): the model must beat linear
    interpolation of the observed points on the points it did not see, by a clear margin."""
    torch.manual_seed(0)
    data = periodic(300, n_times=20, t_max=2.0, shared_grid=False, seed=0)
    train, val, test = data[:200], data[200:250], data[250:]
    norm = Normaliser.fit(train, kind="none", time_scale=1.0)
    fc = Forecaster.create(ModelConfig(input_dim=1, latent_dim=6, encoder=EncoderConfig(max_step=0.1)), norm,
                           channels=["x"], time_unit="s", seed=0)
    result = fit(fc, train, val, TrainConfig(max_steps=400, batch_size=50, progress=False, seed=0,
                                             patience=None, val_metric="val_interp_mse"))
    m = evaluate(fc, test, num_samples=16, seed=0).metrics
    assert result.steps == 400
    # Linear interpolation scores about 0.12 here; the model must reach under 0.75 of that.
    assert m["interp/mse"] < 0.75 * m["interp/baseline_mse"], m
    # And it forecasts: far better than carrying the last observation forward.
    assert m["forecast/mse"] < 0.5 * m["forecast/baseline_mse"], m
    # Calibrated noise makes the 90% interval cover about 90% of held-out points in each regime.
    # The forecast errs more than the interpolation (about 0.09 against 0.05), more the further
    # out it reaches, and its noise, calibrated apart and growing with the gap, says so: half a
    # time unit out (the middle of the forecast window) against a twentieth of one (a typical
    # gap between observations).
    assert 0.8 < m["interp/coverage_90"] < 0.98, m
    assert 0.8 < m["forecast/coverage_90"] < 0.98, m
    from latent_ode.forecaster import EXTRAPOLATION, INTERPOLATION

    def noise_at(base: np.ndarray, regime: int, gap: float) -> float:
        return float(np.sqrt(base[0] ** 2 + fc.noise_growth[regime, 0] * gap))

    assert fc.noise_growth[EXTRAPOLATION, 0] > 0, fc.noise_growth
    assert (noise_at(fc.extrap_noise_std, EXTRAPOLATION, 0.5)
            > 1.2 * noise_at(fc.noise_std, INTERPOLATION, 0.05)), (fc.noise_std, fc.extrap_noise_std,
                                                                  fc.noise_growth)


@pytest.mark.integration
def test_distributed_data_parallel_on_cpu_with_gloo(tmp_path) -> None:
    """Two processes (gloo) train one model: identical weights on both ranks, only rank 0
    reports and checkpoints, and the result is close to a single-process run."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import free_port

    worker = Path(__file__).with_name("ddp_worker.py")
    root = Path(__file__).parents[2]
    port = str(free_port())
    env = {**os.environ, "PYTHONPATH": str(root)}
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), "2", port, str(tmp_path)], env=env)
             for r in range(2)]
    single = subprocess.Popen([sys.executable, str(worker), "0", "1", port, str(tmp_path)], env=env)
    assert [p.wait(timeout=300) for p in [*procs, single]] == [0, 0, 0]
    r0, r1, one = (torch.load(tmp_path / f, weights_only=True)
                   for f in ("rank0-of-2.pt", "rank1-of-2.pt", "rank0-of-1.pt"))
    for k, v in r0["weights"].items():
        torch.testing.assert_close(r1["weights"][k], v, rtol=0, atol=0)
    assert int(r0["events"]) > 0 and int(r1["events"]) == 0
    assert (tmp_path / "ckpt2" / "last.pt").exists()
    # Different latent noise per rank, so not identical; same data and steps, so close.
    assert abs(float(r0["best"]) - float(one["best"])) < 0.5 * float(one["best"])


@pytest.mark.integration
def test_distributed_processes_stop_together_on_a_time_budget(tmp_path) -> None:
    """Rank 0's slow callback puts the ranks' clocks past the budget at different steps; they
    must still stop at the same step (one stopping alone would leave the other waiting in the
    next all-reduce for ever)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import free_port

    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    port = str(free_port())
    procs = [subprocess.Popen([sys.executable, str(worker), str(r), "2", port, str(tmp_path),
                               "timed"], env=env) for r in range(2)]
    try:
        assert [p.wait(timeout=120) for p in procs] == [0, 0]
    finally:
        for p in procs:
            p.kill()
    r0, r1 = (torch.load(tmp_path / f"rank{r}-of-2.pt", weights_only=True) for r in range(2))
    assert r0["stopped"] == r1["stopped"] == "max_time"
    assert int(r0["steps"]) == int(r1["steps"]) > 1
    for k, v in r0["weights"].items():
        torch.testing.assert_close(r1["weights"][k], v, rtol=0, atol=0)


def test_early_stopping_stops_at_the_validation_that_exhausts_patience(monkeypatch) -> None:
    """Patience counts validations since the best one (not since the previous one): with
    patience 2, a run validated at 1.0, 0.5, 0.6, 0.55 stops at the fourth validation, having
    kept the second."""
    from latent_ode.training import loop

    scripted = iter([1.0, 0.5, 0.6, 0.55, 0.4, 0.3, 0.2, 0.1])
    monkeypatch.setattr(loop, "validate", lambda model, val, config: {"val_mse": next(scripted)})
    fc, tr, va = _setup()  # 40 series, batch 10: 4 steps an epoch
    res = fit(fc, tr, va, TrainConfig(batch_size=10, max_epochs=8, patience=2, progress=False,
                                      calibrate_noise=False))
    assert res.stopped == "early_stop"
    assert (res.epochs, res.steps) == (4, 16)
    assert [h["val_mse"] for h in res.history] == [1.0, 0.5, 0.6, 0.55]
    assert (res.best_metric, res.best_step) == (0.5, 8)
    assert fc.metadata["training"]["stopped"] == "early_stop"


def test_time_budget_stops_a_single_process_run(monkeypatch) -> None:
    """A clock that moves 1000 s per reading is past a 1500 s budget after a step or two: the
    run stops there, long before ``max_steps``, still validates its last weights, and counts
    the budget's time."""
    from latent_ode.training import loop

    readings = iter(range(0, 10**9, 1000))
    monkeypatch.setattr(loop, "monotonic", lambda: float(next(readings)))
    fc, tr, va = _setup()
    res = fit(fc, tr, va, TrainConfig(batch_size=10, max_steps=40, max_time_s=1500.0,
                                      progress=False, calibrate_noise=False))
    assert res.stopped == "max_time"
    assert 1 <= res.steps < 40
    assert res.history[-1]["step"] == res.steps
    assert res.elapsed_s >= 1500.0


def test_resume_without_a_checkpoint_starts_afresh_like_an_unresumed_run(tmp_path, caplog) -> None:
    cfg = TrainConfig(batch_size=10, max_steps=6, checkpoint_every=4, progress=False, seed=2,
                      calibrate_noise=False)
    plain, tr, va = _setup()
    plain_result = fit(plain, tr, va, cfg)
    fresh, tr, va = _setup()
    ckpt_dir = tmp_path / "not" / "yet"
    with caplog.at_level("WARNING", logger="latent_ode"):
        fresh_result = fit(fresh, tr, va, cfg, checkpoint_dir=ckpt_dir, resume=True)
    assert "no checkpoint at" in caplog.text and "starting from scratch" in caplog.text
    assert fresh_result.steps == plain_result.steps == 6
    assert fresh_result.history == plain_result.history
    for k, v in _weights(plain).items():
        torch.testing.assert_close(_weights(fresh)[k], v, rtol=0, atol=0)
    # ... and from then on it checkpoints where it was told to.
    assert (ckpt_dir / "last.pt").exists()


def test_val_error_ratio_compares_held_out_errors_with_the_baselines() -> None:
    """A model whose answer is the baseline scores 1 in both tasks; one far off scores more;
    and early stopping can select on it."""
    from latent_ode import DecoderConfig
    from latent_ode.tasks import to_model_batch
    from latent_ode.training.validation import validate

    data = periodic(60, n_times=20, shared_grid=False, seed=0)
    norm = Normaliser.fit(data[:40], kind="none", time_scale=1.0)
    cfg = ModelConfig(input_dim=1, latent_dim=4, encoder=EncoderConfig(hidden=8, units=16, max_step=0.1),
                      dynamics=DynamicsConfig(units=16), decoder=DecoderConfig(anchor=True))
    fc = Forecaster.create(cfg, norm, channels=["x"], time_unit="s", seed=0)
    fc.model.eval()
    val = to_model_batch(fc, data[40:])
    train_cfg = TrainConfig(batch_size=10, val_metric="val_error_ratio")
    with torch.no_grad():  # full trust in the baseline at every gap
        fc.model.anchor.trust.fill_(50.0)
        fc.model.anchor.decay.fill_(-50.0)
    m = validate(fc.model, val, train_cfg)
    assert m["val_interp_error_ratio"] == pytest.approx(1.0, abs=1e-4)
    assert m["val_extrap_error_ratio"] == pytest.approx(1.0, abs=1e-4)
    assert m["val_error_ratio"] == pytest.approx(1.0, abs=1e-4)
    with torch.no_grad():  # no trust, and a decoder 5 units off
        fc.model.anchor.trust.fill_(-50.0)
        fc.model.decoder.bias.fill_(5.0)
    m = validate(fc.model, val, train_cfg)
    assert m["val_interp_error_ratio"] > 10 and m["val_extrap_error_ratio"] > 10, m
    # Not computed unless asked (it costs a baseline per batch).
    assert "val_error_ratio" not in validate(fc.model, val, TrainConfig(batch_size=10))
    fc2, tr, va = _setup()
    result = fit(fc2, tr, va, TrainConfig(batch_size=10, max_steps=3, progress=False,
                                          val_metric="val_error_ratio", calibrate_noise=False))
    assert result.best_metric == min(h["val_error_ratio"] for h in result.history)


def test_balanced_channels_weigh_the_objective_by_inverse_count() -> None:
    """balance_channels 1: each channel's weight is mean count / its count, scaled so the
    observations' mean weight is 1 (clipped to [0.1, 10]); 0.5 its square root; 0 none. The
    objective's noise per channel is obs_std / sqrt(weight), so its squared-error term scales
    with the weight."""
    from latent_ode import Series
    from latent_ode.model import LatentODE
    from latent_ode.training.loop import channel_weights

    model = LatentODE(ModelConfig(input_dim=4, latent_dim=2, obs_std=0.1))
    values = np.full((100, 4), np.nan)
    values[:, 0] = 1.0
    values[:20, 1] = 1.0
    values[:5, 2] = 1.0  # channel 3 is never observed
    data = [Series(times=np.arange(100.0), values=values)]
    assert channel_weights(data, 0.0, model) is None
    counts = np.array([100.0, 20.0, 5.0])
    for a in (0.5, 1.0):
        w = channel_weights(data, a, model).numpy()
        raw = (counts.mean() / counts) ** a
        expected = raw * counts.sum() / (raw * counts).sum()
        np.testing.assert_allclose(w[:3], np.clip(expected, 0.1, 10.0), rtol=1e-6)
        assert w[3] > 0
    w = channel_weights(data, 1.0, model)
    np.testing.assert_allclose((w[:3].numpy() * counts).sum() / counts.sum(), 1.0, rtol=1e-6)
    model.channel_weight = w
    np.testing.assert_allclose(model.obs_std.numpy(), 0.1 / np.sqrt(w.numpy()), rtol=1e-6)


def test_balanced_channels_train_and_leave_no_trace_in_the_saved_model(tmp_path) -> None:
    fc, tr, va = _setup()
    cfg = TrainConfig(batch_size=10, max_epochs=1, progress=False, seed=0, balance_channels=1.0,
                      calibrate_noise=False)
    fit(fc, tr, va, cfg)
    assert fc.model.channel_weight is not None
    fc.save(tmp_path / "m")
    assert Forecaster.load(tmp_path / "m").model.channel_weight is None
