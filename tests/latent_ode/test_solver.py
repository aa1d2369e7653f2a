"""The solver wrapper against ODEs with exact solutions, gradients, and failures."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from latent_ode import ConfigError, DynamicsConfig, ModelConfig, SolverConfig, SolverError
from latent_ode.dynamics import BilinearDynamics, RotationDynamics
from latent_ode.errors import ShapeError
from latent_ode.model import LatentODE
from latent_ode.solver import euler_schedule, fixed_step_evolve, series_failures, solve
from tests.latent_ode.conftest import ADJOINT_RTOL, EXACT_ODE_ATOL

TIGHT = SolverConfig(rtol=1e-10, atol=1e-12, max_steps=100_000)


class Linear(nn.Module):
    """dy/dt = A y."""

    def __init__(self, a: torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Parameter(a)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y @ self.a.T


class Blowup(nn.Module):
    """dy/dt = y², which reaches infinity at t = 1 / y0."""

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y**2


def test_exponential_decay_matches_exact_solution_per_series_times() -> None:
    k = 0.7
    y0 = torch.tensor([[1.0], [2.0], [-0.5]], dtype=torch.float64)
    # Own times per series, with a repeat (padding) and a point exactly at 0.
    t = torch.tensor([[0.0, 0.5, 1.0, 1.0], [0.1, 0.2, 3.0, 4.0], [0.0, 0.0, 0.3, 9.0]],
                     dtype=torch.float64)
    sol = solve(Linear(torch.tensor([[-k]], dtype=torch.float64)), y0, t, TIGHT)
    exact = y0 * torch.exp(-k * t)
    torch.testing.assert_close(sol.ys[..., 0], exact, rtol=0, atol=EXACT_ODE_ATOL)
    assert not sol.failed.any()
    assert sol.stats.nfe > 0


def test_harmonic_oscillator_matches_exact_solution() -> None:
    w = 2.0
    a = torch.tensor([[0.0, 1.0], [-(w**2), 0.0]], dtype=torch.float64)
    y0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    t = torch.linspace(0.0, 10.0, 57, dtype=torch.float64).repeat(2, 1)
    sol = solve(Linear(a), y0, t, TIGHT)
    exact_x = torch.stack([torch.cos(w * t[0]), torch.sin(w * t[1]) / w])
    torch.testing.assert_close(sol.ys[..., 0], exact_x, rtol=0, atol=EXACT_ODE_ATOL)


def test_adjoint_path_matches_exact_solution() -> None:
    y0 = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    t = torch.tensor([[0.2, 0.9], [0.5, 2.5]], dtype=torch.float64)
    sol = solve(Linear(torch.tensor([[-0.3]], dtype=torch.float64)), y0, t, TIGHT, adjoint=True)
    torch.testing.assert_close(sol.ys[..., 0], y0 * torch.exp(-0.3 * t), rtol=0, atol=EXACT_ODE_ATOL)


@pytest.mark.parametrize("grid", ["union", "warped"])
def test_adjoint_on_either_grid_matches_exact_solution_with_own_times_and_padding(grid) -> None:
    k = 0.7
    y0 = torch.tensor([[1.0], [2.0], [-0.5]], dtype=torch.float64)
    # Own times per series, a point at 0, and padding (a repeated last time).
    t = torch.tensor([[0.0, 0.5, 1.0, 1.0], [0.1, 0.2, 3.0, 4.0], [0.0, 0.3, 0.3, 0.3]],
                     dtype=torch.float64)
    cfg = SolverConfig(rtol=1e-10, atol=1e-12, max_steps=100_000, adjoint_grid=grid)
    sol = solve(Linear(torch.tensor([[-k]], dtype=torch.float64)), y0, t, cfg, adjoint=True)
    torch.testing.assert_close(sol.ys[..., 0], y0 * torch.exp(-k * t), rtol=0, atol=EXACT_ODE_ATOL)


@pytest.mark.parametrize("grid", ["union", "warped"])
def test_adjoint_gradients_match_backprop_through_the_solver(grid) -> None:
    torch.manual_seed(0)
    field = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.sort(torch.rand(4, 6, dtype=torch.float64) * 2.0, dim=1).values
    t[1, -2:] = t[1, -3]  # padding
    cfg = SolverConfig(rtol=1e-8, atol=1e-10, max_steps=100_000, adjoint_grid=grid)

    def grads(adjoint: bool) -> list[torch.Tensor]:
        field.zero_grad()
        sol = solve(field, y0, t, cfg, adjoint=adjoint)
        (sol.ys**2).sum().backward()
        return [p.grad.clone() for p in field.parameters()]

    for g_adj, g_bp in zip(grads(True), grads(False), strict=True):
        torch.testing.assert_close(g_adj, g_bp, rtol=ADJOINT_RTOL, atol=ADJOINT_RTOL * g_bp.abs().max())


def test_adjoint_grid_auto_warps_only_where_the_union_is_long() -> None:
    field = Linear(torch.tensor([[-0.5]], dtype=torch.float64))
    y0 = torch.ones(8, 1, dtype=torch.float64)
    shared = torch.linspace(0.1, 2.0, 5, dtype=torch.float64).repeat(8, 1)
    own = torch.sort(torch.rand(8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
                     dim=1).values
    cfg = SolverConfig(rtol=1e-6, atol=1e-8)
    # NFE tells the grids apart: the warped forward solve steps onto every integer s, and
    # the union's forward solve does not stop at its grid points.
    nfe = {(name, grid): solve(field, y0, t, SolverConfig(**{**cfg.__dict__, "adjoint_grid": grid}),
                               adjoint=True).stats.nfe
           for name, t in (("shared", shared), ("own", own)) for grid in ("auto", "union", "warped")}
    assert nfe["shared", "auto"] == nfe["shared", "union"] != nfe["shared", "warped"]
    assert nfe["own", "auto"] == nfe["own", "warped"] != nfe["own", "union"]
    with pytest.raises(ConfigError, match="adjoint_grid"):
        SolverConfig(adjoint_grid="shared")


def test_blowup_fails_within_step_limit_without_hanging() -> None:
    y0 = torch.tensor([[1.0]], dtype=torch.float64)
    t = torch.tensor([[0.5, 2.0]], dtype=torch.float64)
    field = Blowup()
    calls = []
    field.register_forward_hook(lambda *_: calls.append(1))
    cfg = SolverConfig(max_steps=300)
    sol = solve(field, y0, t, cfg)
    # Bounded by max_steps, not by the blow-up: the field is evaluated a bounded number of times
    # (dopri5 evaluates it 6 times per step, first-same-as-last, plus 2 for the initial step
    # size), and the reported cost is what ran.
    assert 0 < sol.stats.steps <= 300 == sol.stats.max_steps
    assert 0 < len(calls) == sol.stats.nfe <= 6 * 300 + 2
    assert sol.failed.tolist() == [True]
    assert torch.isnan(sol.ys).all()
    # The error names why (not a bare "failed") and what to change.
    with pytest.raises(SolverError, match=r"failed \((max_steps|non_finite|dt_underflow)\) "
                                          r"for series \[0\]; \w+") as info:
        sol.raise_on_failure()
    assert info.value.reason in ("max_steps", "non_finite", "dt_underflow")


def test_series_failures_names_each_series_own_reason() -> None:
    # (S=3, B=4) status codes: 3 max_steps, 4 non_finite, 2 dt_underflow (torchode's codes).
    status = torch.tensor([[0, 3, 4, 0],
                           [0, 3, 4, 2],
                           [0, 4, 0, 0]])
    assert series_failures(status) == [None, "max_steps", "non_finite", "dt_underflow"]
    assert series_failures(torch.tensor([0, 3])) == [None, "max_steps"]  # (B,) as well
    # A tie between two reasons of one series goes to the lower code, whatever the order.
    assert series_failures(torch.tensor([[4], [3]])) == ["max_steps"]


def test_failing_series_does_not_corrupt_the_rest_of_the_batch() -> None:
    # Series 1 blows up at t = 1; series 0 and 2 (y0 = 0.1, 0.2) are finite up to t = 2.
    y0 = torch.tensor([[0.1], [1.0], [0.2]], dtype=torch.float64)
    t = torch.tensor([[0.5, 1.5, 2.0], [0.5, 1.5, 2.0], [0.5, 1.5, 2.0]], dtype=torch.float64)
    cfg = SolverConfig(rtol=1e-10, atol=1e-12, max_steps=2000)
    sol = solve(Blowup(), y0, t, cfg)
    assert sol.failed.tolist() == [False, True, False]
    exact = y0 / (1 - y0 * t)
    healthy = torch.tensor([0, 2])
    torch.testing.assert_close(sol.ys[healthy, :, 0], exact[healthy], rtol=0, atol=EXACT_ODE_ATOL)
    assert torch.isnan(sol.ys[1]).all()


def test_adjoint_failure_is_a_solver_error() -> None:
    y0 = torch.tensor([[1.0]], dtype=torch.float64)
    t = torch.tensor([[2.0]], dtype=torch.float64)
    with pytest.raises(SolverError, match="adjoint ODE solve failed"):
        solve(Blowup(), y0, t, SolverConfig(adjoint_max_steps=50), adjoint=True)


@pytest.mark.parametrize(
    ("y0", "t", "match"),
    [
        (torch.zeros(2), torch.zeros(2, 3), r"`y0` must have shape \(B, L\)"),
        (torch.zeros(2, 1), torch.zeros(3, 3), r"`t_eval` must have shape \(B, Q\) with B = 2"),
        (torch.zeros(2, 1), torch.zeros(2, 0), "at least one time"),
        (torch.zeros(1, 1), torch.tensor([[1.0, 0.5]]), "non-decreasing"),
        (torch.zeros(1, 1), torch.tensor([[-1.0, 0.5]]), "non-negative"),
    ],
)
def test_malformed_inputs_are_shape_errors(y0, t, match) -> None:
    with pytest.raises(ShapeError, match=match):
        solve(Blowup(), y0, t, SolverConfig())


def test_solver_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match=r"`SolverConfig.max_steps` must be a positive integer; got 0"):
        SolverConfig(max_steps=0)
    with pytest.raises(ValueError, match=r"`SolverConfig.method` must be one of 'dopri5', 'tsit5'"):
        SolverConfig(method="euler")  # type: ignore[arg-type]
    assert math.isclose(SolverConfig().rtol, 1e-3)


def test_euler_schedule_takes_per_series_steps_exactly() -> None:
    # dh/dt = -h: n equal Euler steps over dt give (1 - dt/n)^n exactly.
    dt = torch.tensor([[0.25, 0.0], [0.05, 0.0], [0.0, 0.0]], dtype=torch.float64)  # (B, K)
    n, step, most = euler_schedule(dt, max_step=0.1)
    assert n[:, 0].tolist() == [3.0, 1.0, 1.0] and most == [3, 0]
    h0 = torch.tensor([[1.0], [2.0], [-0.5]], dtype=torch.float64)
    h = fixed_step_evolve(lambda y: -y, h0, n[:, 0], step[:, 0], most[0])
    expected = h0 * torch.tensor([[(1 - 0.25 / 3) ** 3], [1 - 0.05], [1.0]], dtype=torch.float64)
    torch.testing.assert_close(h, expected, rtol=1e-15, atol=0.0)
    assert torch.equal(h[2], h0[2])  # a zero interval leaves the state exactly as it was
    # Nothing moves where every interval is zero.
    assert torch.equal(fixed_step_evolve(lambda y: -y, h0, n[:, 1], step[:, 1], most[1]), h0)


def test_euler_steps_of_a_series_do_not_depend_on_its_batch() -> None:
    torch.manual_seed(0)
    field = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    h0 = torch.randn(4, 3, dtype=torch.float64)
    dt = torch.tensor([[0.33], [0.02], [0.0], [0.91]], dtype=torch.float64)
    n, step, most = euler_schedule(dt, max_step=0.1)
    batch = fixed_step_evolve(field, h0, n[:, 0], step[:, 0], most[0])
    for i in range(4):
        ni, si, mi = euler_schedule(dt[i:i + 1], max_step=0.1)
        alone = fixed_step_evolve(field, h0[i:i + 1], ni[:, 0], si[:, 0], mi[0])
        torch.testing.assert_close(batch[i:i + 1], alone, rtol=1e-12, atol=1e-14)


def test_rotation_dynamics_start_as_rotations_at_the_configured_frequencies() -> None:
    torch.manual_seed(0)
    model = LatentODE(ModelConfig(input_dim=1, latent_dim=5, dynamics=DynamicsConfig(rotation=6.0))).double()
    dyn = model.dynamics
    assert isinstance(dyn, RotationDynamics)
    a = dyn.linear.detach()
    torch.testing.assert_close(a, -a.T, rtol=0, atol=0)  # skew-symmetric: rotations
    omega = torch.tensor([a[0, 1], a[2, 3]])
    assert bool(((omega >= 2.0) & (omega <= 6.0)).all()) and float(a[4].abs().sum()) == 0.0
    # With the MLP silenced the latent ODE is linear: its solution is exp(A t) z0.
    with torch.no_grad():
        dyn.mlp[-1].weight.zero_()
        dyn.mlp[-1].bias.zero_()
    z0 = torch.randn(3, 5, dtype=torch.float64)
    t = torch.tensor([[0.0, 0.5, 2.0], [0.3, 1.0, 4.0], [0.0, 0.0, 1.5]], dtype=torch.float64)
    sol = solve(dyn, z0, t, TIGHT)
    exact = torch.stack([torch.stack([torch.linalg.matrix_exp(a * ti) @ z0[b] for ti in t[b]])
                         for b in range(3)])
    torch.testing.assert_close(sol.ys, exact, rtol=0, atol=EXACT_ODE_ATOL)


def _bilinear_only(latent_dim: int, left: list[list[float]], right: list[list[float]]
                   ) -> BilinearDynamics:
    """The bilinear term alone (the MLP silenced), with the given P and Q and no biases."""
    torch.manual_seed(0)
    dyn = LatentODE(ModelConfig(input_dim=1, latent_dim=latent_dim,
                                dynamics=DynamicsConfig(bilinear=True))).double().dynamics
    assert isinstance(dyn, BilinearDynamics)
    with torch.no_grad():
        for p in dyn.inner.parameters():
            p.zero_()
        dyn.factors.weight.copy_(torch.cat([torch.tensor(left), torch.tensor(right)]))
        dyn.factors.bias.zero_()
    return dyn


def test_bilinear_dynamics_rotate_each_series_at_the_frequency_it_carries() -> None:
    # z = (x, y, w): left = (-y, x, 0), right = (w, w, 0) give dx/dt = -g y, dy/dt = g x,
    # dw/dt = 0 with g = s tanh(w / s): each series rotates at its own constant rate g(w).
    dyn = _bilinear_only(3, [[0.0, -1, 0], [1, 0, 0], [0, 0, 0]],
                         [[0.0, 0, 1], [0, 0, 1], [0, 0, 0]])
    z0 = torch.tensor([[1.0, 0.0, 2.5], [0.3, -0.4, 5.0], [0.0, 2.0, -1.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 0.7, 3.0], [0.2, 1.0, 5.0], [0.5, 0.5, 2.0]], dtype=torch.float64)
    sol = solve(dyn, z0, t, TIGHT)
    s = BilinearDynamics.BOUND
    angle = s * torch.tanh(z0[:, 2:3] / s) * t  # (B, T)
    c, sn = torch.cos(angle), torch.sin(angle)
    exact = torch.stack([c * z0[:, :1] - sn * z0[:, 1:2], sn * z0[:, :1] + c * z0[:, 1:2],
                         z0[:, 2:3].expand_as(t)], dim=-1)
    torch.testing.assert_close(sol.ys, exact, rtol=0, atol=EXACT_ODE_ATOL)


def test_bilinear_dynamics_do_not_blow_up_where_a_quadratic_would() -> None:
    # left = right = z: near 0 this is dz/dt = z^2, which from z0 = 1 blows up at t = 1. The
    # bounded factor makes it dz/dt = z s tanh(z / s) <= s z: finite, and at least e^t z0.
    dyn = _bilinear_only(1, [[1.0]], [[1.0]])
    z0 = torch.tensor([[1.0]], dtype=torch.float64)
    t = torch.tensor([[0.5, 1.0, 2.0]], dtype=torch.float64)
    sol = solve(dyn, z0, t, SolverConfig(max_steps=2000))
    sol.raise_on_failure()
    s = BilinearDynamics.BOUND
    assert bool((sol.ys[0, :, 0] <= torch.exp(s * t[0]) + 1e-6).all())
    assert bool((sol.ys[0, :, 0] >= torch.exp(t[0] * math.tanh(1 / s) * s) - 1e-3).all())


def test_bilinear_dynamics_add_a_bounded_product_to_the_inner_dynamics() -> None:
    torch.manual_seed(0)
    plain = LatentODE(ModelConfig(input_dim=1, latent_dim=4, dynamics=DynamicsConfig(rotation=3.0))).dynamics
    dyn = BilinearDynamics(plain, 4)
    z = torch.randn(6, 4)
    left, right = dyn.factors(z).chunk(2, dim=-1)
    s = BilinearDynamics.BOUND
    torch.testing.assert_close(dyn(z), plain(z) + left * s * torch.tanh(right / s))
    with pytest.raises(ValueError, match=r"`DynamicsConfig.bilinear` must be true or false; got 1"):
        DynamicsConfig(bilinear=1)  # type: ignore[arg-type]


def test_model_config_rejects_negative_rotation() -> None:
    with pytest.raises(ValueError, match=r"`DynamicsConfig.rotation` must be non-negative"):
        DynamicsConfig(rotation=-1.0)
