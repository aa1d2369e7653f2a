"""The CUDA path: solver exactness, adjoint gradients, failures, training and persistence on a GPU.

Every test here is marked ``gpu`` and skips without CUDA (the ``cuda_device`` fixture probes at
run time). CPU results are the reference: the same computation must agree across devices, and a
model trained on the GPU must load on a CPU-only machine (the serving side) unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from latent_ode import (
    DynamicsConfig,
    EncoderConfig,
    Forecaster,
    ModelConfig,
    Normaliser,
    SolverConfig,
    TrainConfig,
    evaluate,
    fit,
)
from latent_ode.solver import solve
from pipelines.sources.periodic import periodic
from tests.latent_ode.conftest import ADJOINT_RTOL, EXACT_ODE_ATOL
from tests.latent_ode.test_solver import TIGHT, Blowup, Linear

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("adjoint", [False, True], ids=["backprop", "adjoint"])
def test_harmonic_oscillator_on_cuda_matches_exact_solution(cuda_device, adjoint) -> None:
    w = 2.0
    a = torch.tensor([[0.0, 1.0], [-(w**2), 0.0]], dtype=torch.float64, device=cuda_device)
    y0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64, device=cuda_device)
    t = torch.linspace(0.0, 10.0, 57, dtype=torch.float64, device=cuda_device).repeat(2, 1)
    sol = solve(Linear(a), y0, t, TIGHT, adjoint=adjoint)
    assert sol.ys.device.type == "cuda"
    exact_x = torch.stack([torch.cos(w * t[0]), torch.sin(w * t[1]) / w])
    torch.testing.assert_close(sol.ys[..., 0], exact_x, rtol=0, atol=EXACT_ODE_ATOL)


@pytest.mark.parametrize(("adjoint", "grid"), [(False, "auto"), (True, "union"), (True, "warped")],
                         ids=["backprop", "adjoint-union", "adjoint-warped"])
def test_exponential_decay_on_cuda_with_per_series_times(cuda_device, adjoint, grid) -> None:
    k = 0.7
    y0 = torch.tensor([[1.0], [2.0], [-0.5]], dtype=torch.float64, device=cuda_device)
    t = torch.tensor([[0.0, 0.5, 1.0, 1.0], [0.1, 0.2, 3.0, 4.0], [0.0, 0.0, 0.3, 9.0]],
                     dtype=torch.float64, device=cuda_device)
    cfg = SolverConfig(**{**TIGHT.__dict__, "adjoint_grid": grid})
    sol = solve(Linear(torch.tensor([[-k]], dtype=torch.float64, device=cuda_device)), y0, t, cfg,
                adjoint=adjoint)
    torch.testing.assert_close(sol.ys[..., 0], y0 * torch.exp(-k * t), rtol=0, atol=EXACT_ODE_ATOL)


def test_adjoint_gradients_on_cuda_match_backprop_and_cpu(cuda_device) -> None:
    torch.manual_seed(0)
    field = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.sort(torch.rand(4, 6, dtype=torch.float64) * 2.0, dim=1).values
    cfg = SolverConfig(rtol=1e-8, atol=1e-10, max_steps=100_000)

    def grads(device: str, adjoint: bool) -> list[torch.Tensor]:
        field.to(device).zero_grad()
        sol = solve(field, y0.to(device), t.to(device), cfg, adjoint=adjoint)
        (sol.ys**2).sum().backward()
        return [p.grad.detach().cpu().clone() for p in field.parameters()]

    cpu = grads("cpu", False)
    for mode in (False, True):
        for g, ref in zip(grads(cuda_device, mode), cpu, strict=True):
            torch.testing.assert_close(g, ref, rtol=ADJOINT_RTOL, atol=ADJOINT_RTOL * ref.abs().max())


def test_failing_series_on_cuda_leaves_the_others_exact(cuda_device) -> None:
    y0 = torch.tensor([[0.1], [1.0], [0.2]], dtype=torch.float64, device=cuda_device)
    t = torch.tensor([[0.5, 1.5, 2.0]] * 3, dtype=torch.float64, device=cuda_device)
    sol = solve(Blowup(), y0, t, SolverConfig(rtol=1e-10, atol=1e-12, max_steps=2000))
    assert sol.failed.tolist() == [False, True, False]
    healthy = torch.tensor([0, 2], device=cuda_device)
    exact = y0 / (1 - y0 * t)
    torch.testing.assert_close(sol.ys[healthy, :, 0], exact[healthy], rtol=0, atol=EXACT_ODE_ATOL)
    assert torch.isnan(sol.ys[1]).all()


@pytest.mark.slow
def test_training_on_cuda_beats_linear_interpolation_and_loads_on_cpu(cuda_device, tmp_path) -> None:
    """The quality threshold of the CPU training test, on the GPU; the model saved from the GPU
    then loads on the CPU and predicts the same."""
    data = periodic(300, n_times=20, t_max=2.0, shared_grid=False, seed=0)
    train, val, test = data[:200], data[200:250], data[250:]
    norm = Normaliser.fit(train, kind="none", time_scale=1.0)
    cfg = ModelConfig(input_dim=1, latent_dim=6, encoder=EncoderConfig(max_step=0.1))
    fc = Forecaster.create(cfg, norm, channels=["x"], time_unit="s", seed=0).to(cuda_device)
    result = fit(fc, train, val, TrainConfig(max_steps=400, batch_size=50, progress=False, seed=0,
                                             patience=None, val_metric="val_interp_mse"))
    assert result.steps == 400
    assert fc.device.type == "cuda"
    m = evaluate(fc, test, num_samples=16, seed=0).metrics
    assert m["interp/mse"] < 0.75 * m["interp/baseline_mse"], m
    assert m["forecast/mse"] < 0.5 * m["forecast/baseline_mse"], m

    fc.save(tmp_path / "model")
    cpu = Forecaster.load(tmp_path / "model", device="cpu")
    assert cpu.device.type == "cpu"
    queries = [np.linspace(-0.5, 3.0, 15)] * 4
    on_gpu = fc.predict(test[:4], queries, num_samples=8, seed=1)
    on_cpu = cpu.predict(test[:4], queries, num_samples=8, seed=1)
    for a, b in zip(on_gpu, on_cpu, strict=True):
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(a.std, b.std, rtol=1e-3, atol=1e-3)


def test_adjoint_training_on_cuda_takes_the_steps_backprop_takes_on_cpu(cuda_device) -> None:
    """Same data, seed and draws (taken on the CPU): two adjoint steps on the GPU (series with
    their own times, so in warped time) land where two backprop steps on the CPU do."""
    data = periodic(60, n_times=20, shared_grid=False, seed=0)
    norm = Normaliser.fit(data[:40], kind="none", time_scale=1.0)
    cfg = TrainConfig(batch_size=10, max_steps=2, progress=False, seed=3, task="extrapolation")
    small = dict(input_dim=1, latent_dim=4, encoder=EncoderConfig(hidden=8, units=16, max_step=0.1),
                 dynamics=DynamicsConfig(units=16))
    runs = {}
    for device, gradient in (("cpu", "backprop"), (cuda_device, "adjoint")):
        fc = Forecaster.create(ModelConfig(**small, solver=SolverConfig(gradient=gradient)), norm,
                               channels=["x"], time_unit="s", seed=0).to(device)
        runs[device] = fit(fc, data[:40], data[40:50], cfg).history[-1]["val_extrap_mse"]
    np.testing.assert_allclose(runs[cuda_device], runs["cpu"], rtol=0.05)


def test_a_seed_picks_the_same_interpolation_context_on_cuda_and_cpu(cuda_device) -> None:
    from latent_ode import collate
    from latent_ode.tasks import interpolation_task

    series = periodic(6, n_times=12, shared_grid=False, seed=2)
    cpu, _ = interpolation_task(collate(series), 0.5, generator=torch.Generator().manual_seed(4))
    gpu, _ = interpolation_task(collate(series, device=cuda_device), 0.5,
                                generator=torch.Generator().manual_seed(4))
    assert gpu.times.device.type == "cuda"
    torch.testing.assert_close(gpu.times.cpu(), cpu.times, rtol=0, atol=0)
    torch.testing.assert_close(gpu.mask.cpu(), cpu.mask, rtol=0, atol=0)
