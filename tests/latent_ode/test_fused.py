"""The fused inference fields (latent_ode.fused) equal the modules they replace, and a forecast
through them equals the module path's within the solver's tolerance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import latent_ode.fused as fused
from latent_ode import Forecaster, ModelConfig, Normaliser
from latent_ode.config import DynamicsConfig, EncoderConfig, SolverConfig
from latent_ode.dynamics import DYNAMICS
from latent_ode.fused import inference_field
from pipelines.sources.periodic import periodic


@pytest.mark.parametrize("config", [
    DynamicsConfig(units=64, layers=1, rotation=25.0),  # the demo's
    DynamicsConfig(units=100, layers=2),  # the default
    DynamicsConfig(units=40, layers=1, rotation=25.0, bilinear=True),
    DynamicsConfig(layers=0),
])
def test_fused_field_equals_the_module(config: DynamicsConfig) -> None:
    torch.manual_seed(0)
    module = DYNAMICS["mlp"](10, config)
    for p in module.parameters():  # weights of a trained size, not the small initial ones
        p.data.normal_(0.0, 0.5)
    z = 3.0 * torch.randn(257, 10)
    with torch.no_grad():
        fast = inference_field(module)
        assert fast is not None
        want, got = module(z), fast(z)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_not_used_with_gradients_nor_when_switched_off_nor_for_unknown_modules(
        monkeypatch: pytest.MonkeyPatch) -> None:
    module = DYNAMICS["mlp"](4, DynamicsConfig(units=8, layers=1))
    assert inference_field(module) is None  # grad mode: training never sees it
    with torch.no_grad():
        assert inference_field(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(),
                                                   torch.nn.Linear(4, 4))) is None
        monkeypatch.setattr(fused, "ENABLED", False)
        assert inference_field(module) is None


def _demo_forecaster(seed: int = 0) -> Forecaster:
    """The demo's architecture and solver (pipelines/configs/periodic.toml), weights perturbed
    to a trained-like size so that the solve takes many steps."""
    config = ModelConfig(
        input_dim=1, latent_dim=10, obs_std=0.01, encoder=EncoderConfig(hidden=20, units=64),
        dynamics=DynamicsConfig(units=64, layers=1, rotation=25.0),
        solver=SolverConfig(method="dopri5", rtol=1e-2, atol=1e-3, max_steps=2000),
    )
    train = periodic(50, n_times=50, shared_grid=False, seed=0)
    fc = Forecaster.create(config, Normaliser.fit(train, kind="standard"), channels=["x"],
                           time_unit="hours", seed=seed)
    with torch.no_grad():
        for p in fc.model.dynamics.mlp.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return fc


def test_forecast_through_fused_fields_equals_the_module_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fc = _demo_forecaster()
    rng = np.random.default_rng(0)
    series = periodic(24, n_times=60, shared_grid=False, seed=3)
    queries = [np.sort(rng.uniform(-0.5, 7.0, int(rng.integers(1, 40)))) for _ in series]
    fast = fc.predict(series, queries, num_samples=16)
    monkeypatch.setattr(fused, "ENABLED", False)
    slow = fc.predict(series, queries, num_samples=16)
    rtol = fc.model_config.solver.rtol
    assert fast[0].stats.nfe > 50  # a real solve, not a handful of steps
    for a, b in zip(fast, slow, strict=True):
        assert a.ok and b.ok
        scale = np.abs(b.mean).max() + np.abs(b.std).max()
        assert np.abs(a.mean - b.mean).max() <= rtol * scale
        assert np.abs(a.std - b.std).max() <= rtol * scale
    # Not just close: the same arithmetic up to rounding, so far inside the tolerance.
    err = max(np.abs(a.mean - b.mean).max() for a, b in zip(fast, slow, strict=True))
    assert err < 1e-3



@pytest.mark.gpu
def test_fused_path_on_cuda_equals_the_module_path(cuda_device: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused fields are device-agnostic (addmm and sigmoid): on a GPU too the forecast
    equals the module path's (skipped without CUDA; no GPU was lent when this was written)."""
    fc = _demo_forecaster().to(cuda_device)
    series = periodic(8, n_times=40, shared_grid=False, seed=4)
    queries = [np.array([0.5, 3.0, 6.5])] * len(series)
    fast = fc.predict(series, queries, num_samples=8)
    monkeypatch.setattr(fused, "ENABLED", False)
    slow = fc.predict(series, queries, num_samples=8)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a.mean, b.mean, rtol=0, atol=1e-3)
