"""The one place that calls ODE solver packages.

Two paths, chosen with :class:`~latent_ode.config.SolverConfig`:

- **torchode** (default, forward passes and ``gradient="backprop"``): every series carries its
  own evaluation times and its own step-size control, so a series' answer does not depend on
  which other series share the batch, and no union time grid is built. Gradients flow through
  the solver's operations.
- **torchdiffeq's** ``odeint_adjoint`` (``gradient="adjoint"``, training only): the continuous
  adjoint of Chen et al. 2018 (Sec. 2, Eq. 4) with the seminorm of Kidger et al. 2021, whose
  memory is flat in the number of solver steps. It needs a time grid shared by the batch, so the
  per-series times are merged into their union and gathered back.

Why these two (figures measured on this kind of machine: docs/library.md, "Two solver packages,
one wrapper"): torchode is the
only package with per-series times and was fastest forward and through-the-solver; its own
backsolve adjoint was 15x slower and used 11.7 GB where torchdiffeq's adjoint stayed at 58 MB.

Both paths share a time convention: the state is given at relative time 0 for every series and
the dynamics are autonomous, so a batch of series that start at different absolute times is
solved from 0 to each series' own (relative) evaluation times.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torchode as to
from torch import Tensor, nn
from torchdiffeq import odeint_adjoint

from latent_ode.config import SolverConfig
from latent_ode.errors import ShapeError, SolverError
from latent_ode.fused import inference_field

__all__ = ["ODESolution", "SolverFailure", "SolverStats", "euler_schedule", "failure_error",
           "failure_message", "failure_reason", "fixed_step_evolve", "series_failures", "solve"]

SolverFailure = Literal["failed", "dt_underflow", "max_steps", "non_finite"]
"""Why the solver could not answer a series (``SolverError.reason``, ``Forecast.status``)."""

# torchode status codes (torchode.status_codes), named for the messages below.
_REASONS: dict[int, SolverFailure] = {1: "failed", 2: "dt_underflow", 3: "max_steps",
                                      4: "non_finite"}
_NON_FINITE = 4
_HINTS = {
    "max_steps": "raise SolverConfig.max_steps, loosen rtol/atol, or shorten the horizon",
    "dt_underflow": "the dynamics are stiff or discontinuous there; loosen rtol/atol",
    "non_finite": "the latent state blew up to inf/NaN; check the inputs and the horizon",
    "failed": "check the inputs and the horizon",
}


@dataclass(frozen=True)
class SolverStats:
    """What one solve cost.

    Attributes:
        method: the Runge-Kutta scheme.
        rtol: relative tolerance used.
        atol: absolute tolerance used.
        nfe: function evaluations of the batch (the most any series needed; the batch steps
            together so this is what was computed).
        steps: solver steps of the batch (accepted and rejected).
        max_steps: the step limit the solve ran under (per series), for messages; None when
            unknown.
    """

    method: str
    rtol: float
    atol: float
    nfe: int
    steps: int
    max_steps: int | None = None


@dataclass(frozen=True)
class ODESolution:
    """States at the requested times.

    Attributes:
        ys: (B, Q, L) states; rows of ``failed`` series are NaN.
        stats: cost of the solve.
        status: (B,) each series' outcome, torchode's codes (0: solved; else ``_REASONS``).
    """

    ys: Tensor
    stats: SolverStats
    status: Tensor

    @property
    def failed(self) -> Tensor:
        """(B,) bool, True where the solve for that series failed."""
        return self.status != 0

    def raise_on_failure(self) -> None:
        """Raise :class:`SolverError` if any series failed, naming the commonest reason."""
        if bool(self.failed.any()):
            idx = tuple(int(i) for i in self.failed.nonzero().flatten().tolist())
            raise failure_error(idx, failure_reason(self.status))


Field = nn.Module | Callable[[Tensor], Tensor]
"""A vector field: a module, or a plain function such as a fused one (latent_ode.fused)."""


class _Autonomous(nn.Module):
    """Adapts an autonomous vector field ``f(y)`` to the solver packages' ``f(t, y)``."""

    def __init__(self, field: Field) -> None:
        super().__init__()
        self.field = field

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.field(y)


def failure_reason(status: Tensor) -> str | None:
    """The commonest failure among solver status codes (``SolverError.reason``); None if none."""
    codes = status[status != 0].tolist()
    return _REASONS.get(max(set(codes), key=codes.count), "failed") if codes else None


def series_failures(status: Tensor) -> list[SolverFailure | None]:
    """Each series' failure reason, from status codes (B,) or (S, B) (one row per latent sample).

    With samples, a series failed when any of its samples did, for the reason most of its
    failing samples share (ties: the lower code), so each series names its own cause rather
    than the batch's commonest one.

    Returns:
        B entries: None where the series solved, else ``max_steps``, ``non_finite``,
        ``dt_underflow`` or ``failed``.
    """
    rows = status.reshape(-1, status.shape[-1])  # (S, B)
    codes = sorted(_REASONS)
    counts = torch.stack([(rows == c).sum(dim=0) for c in codes])  # (len(codes), B)
    commonest = counts.argmax(dim=0).tolist()  # first maximum: the lower code on ties
    failed = (rows != 0).any(dim=0).tolist()
    return [_REASONS[codes[k]] if bad else None for k, bad in zip(commonest, failed, strict=True)]


def _what(reason: str, max_steps: int | None) -> str:
    return (f"exceeded its budget ({max_steps} steps)" if reason == "max_steps" and max_steps
            else f"failed ({reason})")


def failure_message(reason: str, max_steps: int | None = None) -> str:
    """One series' failure as a sentence: what happened and how to fix it."""
    return f"the ODE solver {_what(reason, max_steps)}; {_HINTS[reason]}."


def failure_error(series: tuple[int, ...], reason: str, max_steps: int | None = None) -> SolverError:
    """The :class:`SolverError` for ``series`` (indices) that failed for ``reason``."""
    shown = list(series[:10]) + (["..."] if len(series) > 10 else [])
    return SolverError(f"the ODE solver {_what(reason, max_steps)} for series {shown}; "
                       f"{_HINTS[reason]}.", series=series, reason=reason)


def _check_times(y0: Tensor, t_eval: Tensor) -> None:
    if y0.ndim != 2:
        raise ShapeError(f"`y0` must have shape (B, L); got {tuple(y0.shape)}.")
    if t_eval.ndim != 2 or t_eval.shape[0] != y0.shape[0]:
        raise ShapeError(
            f"`t_eval` must have shape (B, Q) with B = {y0.shape[0]}; got {tuple(t_eval.shape)}."
        )
    if t_eval.shape[1] == 0:
        raise ShapeError("`t_eval` must hold at least one time per series; got Q = 0.")
    if bool((t_eval[:, 0] < 0).any()) or bool((t_eval.diff(dim=1) < 0).any()):
        raise ShapeError("`t_eval` must be non-negative and non-decreasing along each row.")


def _torchode_solve(field: Field, y0: Tensor, t_eval: Tensor, config: SolverConfig):
    term = to.ODETerm(_Autonomous(field))
    method = to.Dopri5(term=term) if config.method == "dopri5" else to.Tsit5(term=term)
    # PID control: 5-10x more accurate than the integral controller at the same NFE (notes).
    controller = to.PIDController(atol=config.atol, rtol=config.rtol, pcoeff=0.2, icoeff=0.5,
                                  dcoeff=0.0, term=term)
    # Backprop treats the step sizes the controller chose as constants: the gradient is that of
    # the solution on the mesh the solver took, not of the mesh's own dependence on the
    # parameters (a numerical artefact). It spares the controller's operations in the backward
    # pass: a `periodic` bench training step takes 0.92x the time (docs/library.md).
    adjoint = to.AutoDiffAdjoint(method, controller, max_steps=config.max_steps,
                                 backprop_through_step_size_control=False)
    t_start = torch.zeros_like(t_eval[:, 0])
    # torchode divides by the span: a series asked only about t = 0 would fail with a zero
    # step, so every span is at least a negligible epsilon (answers at 0 are y0 exactly).
    t_end = t_eval[:, -1].clamp_min(1e-6)
    problem = to.InitialValueProblem(y0=y0, t_start=t_start, t_end=t_end, t_eval=t_eval)
    return adjoint.solve(problem)


def solve(
    field: nn.Module,
    y0: Tensor,
    t_eval: Tensor,
    config: SolverConfig,
    *,
    adjoint: bool = False,
) -> ODESolution:
    """Integrate ``dy/dt = field(y)`` from relative time 0 to each series' evaluation times.

    Args:
        field: the autonomous vector field, (N, L) -> (N, L).
        y0: (B, L) states at relative time 0.
        t_eval: (B, Q) non-negative, non-decreasing relative times (repeats allowed, e.g. padding).
        config: method, tolerances and step limit.
        adjoint: use the continuous adjoint (torchdiffeq) for the backward pass.

    Returns:
        ODESolution with ys (B, Q, L). A series that fails gets NaN rows and ``failed=True``;
        the other series of the batch are solved again without it, so their answers are
        correct (torchode stops the whole batch at the first failure).

    Raises:
        ShapeError: malformed ``y0`` or ``t_eval``.
        SolverError: in adjoint mode, any failure (the adjoint path cannot isolate series).
    """
    _check_times(y0, t_eval)
    if adjoint:
        return _solve_adjoint(field, y0, t_eval, config)
    stats = {"nfe": 0, "steps": 0}
    # Without gradients (prediction), the same field with its tanh layers as sigmoids: about 2x
    # cheaper on a CPU, equal up to float32 rounding (latent_ode.fused).
    ys, status = _solve_isolating(inference_field(field) or field, y0, t_eval, config, stats)
    return ODESolution(
        ys=ys, status=status,
        stats=SolverStats(method=config.method, rtol=config.rtol, atol=config.atol,
                          nfe=stats["nfe"], steps=stats["steps"], max_steps=config.max_steps),
    )


def _solve_isolating(
    field: Field, y0: Tensor, t_eval: Tensor, config: SolverConfig, stats: dict[str, int]
) -> tuple[Tensor, Tensor]:
    """torchode solve; re-solve the healthy series whenever a failure stopped the batch.

    Returns the states (NaN rows where a series failed) and each series' status code.
    """
    q = t_eval.shape[1]
    sol = _torchode_solve(field, y0, t_eval, config)
    stats["nfe"] += int(sol.stats["n_f_evals"].max())
    stats["steps"] += int(sol.stats["n_steps"].max())
    status = sol.status
    failed = status != 0
    if not bool(failed.any()):
        return sol.ys, status
    complete = sol.stats["n_initialized"] >= q
    # Healthy series that the failure cut short hold uninitialised memory past their last
    # evaluated point: solve them again on their own.
    redo = (~failed) & (~complete)
    ys = torch.where(failed[:, None, None], torch.full_like(sol.ys, float("nan")), sol.ys)
    if bool(redo.any()):
        idx = redo.nonzero().flatten()
        sub_ys, sub_status = _solve_isolating(field, y0[idx], t_eval[idx], config, stats)
        ys = ys.index_put((idx,), sub_ys)
        status = status.index_put((idx,), sub_status)
    return ys, status


def _solve_adjoint(field: nn.Module, y0: Tensor, t_eval: Tensor, config: SolverConfig) -> ODESolution:
    """torchdiffeq's adjoint on a grid shared by the batch.

    Where the series share their times (or nearly), the grid is the union of the batch's times.
    Where they do not, the union is up to B times longer than one series, and the adjoint's
    backward pass restarts at every grid point: instead the batch is solved in a warped time
    s in [0, Q] in which every series reaches its k-th time at s = k (``_Warped``), so the shared
    grid is 0, 1, ..., Q whatever the times (``SolverConfig.adjoint_grid``).
    """
    b, q = t_eval.shape
    warp = config.adjoint_grid == "warped"
    if not warp:
        # Union grid of the batch, starting at 0: (U,) (not built when warped time is forced)
        grid, inverse = torch.unique(torch.cat([t_eval.new_zeros(1), t_eval.flatten()]),
                                     sorted=True, return_inverse=True)
        warp = config.adjoint_grid == "auto" and grid.numel() > 2 * (q + 1)
    func: nn.Module = _Autonomous(field)
    options: dict[str, object] = {"max_num_steps": config.adjoint_max_steps}
    if warp:
        delta = torch.cat([t_eval.new_zeros(b, 1), t_eval], dim=1).diff(dim=1)  # (B, Q)
        func = _Warped(field, delta)
        grid = torch.arange(q + 1, dtype=t_eval.dtype, device=t_eval.device)
        # dt/ds jumps at every integer s: the forward solve steps onto each one.
        options["jump_t"] = grid[1:-1]
        inverse = torch.arange(1, q + 1, device=t_eval.device).expand(b, q)
    else:
        inverse = inverse[1:].reshape(b, q)  # (B, Q) positions of each series' times in the grid
    counter = _CountingField(func)
    try:
        ys_grid = odeint_adjoint(
            counter, y0, grid, rtol=config.rtol, atol=config.atol, method=config.method,
            options=options,
            adjoint_options={"norm": "seminorm", "max_num_steps": config.adjoint_max_steps},
            adjoint_params=tuple(field.parameters()),
        )  # (U, B, L), time-first as torchdiffeq returns it
    except AssertionError as exc:  # torchdiffeq reports step failures as bare assertions
        raise SolverError(
            f"the adjoint ODE solve failed ({exc}); {_HINTS['max_steps']}.",
            series=tuple(range(b)), reason="max_steps",
        ) from exc
    ys_grid = ys_grid.permute(1, 0, 2)  # (B, U, L)
    ys = ys_grid.gather(1, inverse[:, :, None].expand(-1, -1, ys_grid.shape[2]))  # (B, Q, L)
    failed = ~torch.isfinite(ys).all(dim=2).all(dim=1)
    stats = SolverStats(method=config.method, rtol=config.rtol, atol=config.atol,
                        nfe=counter.nfe, steps=0, max_steps=config.adjoint_max_steps)
    return ODESolution(ys=ys, stats=stats, status=torch.where(failed, _NON_FINITE, 0))


class _Warped(nn.Module):
    """``dy/ds = field(y) dt/ds`` with each series' time t(s) piecewise linear through its own
    times: t(k) = t_k (t_0 = 0), so dt/ds = t_k - t_(k-1) on (k - 1, k).

    A change of variables, so y(s = k) is exactly the state at the series' k-th time; padding
    (a repeated time) has dt/ds = 0 and leaves the state unchanged. At an integer s the segment
    is the one ending there (ceil(s) - 1): the forward solve reaches integers through torchdiffeq's
    ``jump_t`` (which evaluates just beside them), and each backward interval (k - 1, k) starts
    at s = k and needs segment k.
    """

    def __init__(self, field: nn.Module, delta: Tensor) -> None:
        super().__init__()
        self.field = field
        self.delta = delta  # (B, Q)

    def forward(self, s: Tensor, y: Tensor) -> Tensor:
        k = min(max(math.ceil(float(s.detach())) - 1, 0), self.delta.shape[1] - 1)
        return self.field(y) * self.delta[:, k, None]


class _CountingField(nn.Module):
    """Counts forward evaluations of the vector field (torchdiffeq reports none)."""

    def __init__(self, func: nn.Module) -> None:
        super().__init__()
        self.func = func
        self.nfe = 0

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        self.nfe += 1
        return self.func(t, y)


def euler_schedule(dt: Tensor, max_step: float) -> tuple[Tensor, Tensor, list[int]]:
    """Plan the Euler steps of :func:`fixed_step_evolve` for K intervals per series at once.

    Each series takes its own number of equal steps over each interval, ``ceil(dt / max_step)``,
    so its result does not depend on the other series of the batch. Planning every interval of
    an encoder pass in one go costs one device-to-host copy instead of one per observation.

    Args:
        dt: (B, K) non-negative intervals.
        max_step: longest Euler step.

    Returns:
        ``n`` (B, K) steps per series and interval, ``step`` (B, K) their size, and per interval
        the most steps any series takes (0 where every series' interval is 0).
    """
    n = torch.ceil(dt / max_step).clamp_min(1.0)
    most = torch.where(dt > 0, n, torch.zeros_like(n)).amax(dim=0)
    return n, dt / n, [int(x) for x in most.tolist()]


def fixed_step_evolve(field: Callable[[Tensor], Tensor], h: Tensor, n: Tensor, step: Tensor,
                      most: int) -> Tensor:
    """Explicit Euler steps of ``dh/dt = field(h)``, planned by :func:`euler_schedule`.

    This is the ODE-RNN's evolution between two observations (Rubanova et al. 2019, Alg. 1;
    the reference code also uses Euler there). It is not routed through a solver package: it
    runs once per observation inside the encoder, where a package call's fixed overhead
    (about a millisecond) would dominate a training step (``docs/library.md``).

    Args:
        field: the vector field, (B, H) -> (B, H).
        h: (B, H) states.
        n: (B,) steps of each series (at least 1).
        step: (B,) step size of each series; 0 leaves a series unchanged exactly.
        most: the largest entry of ``n`` among series with a non-zero step (0: nothing moves).

    Returns:
        (B, H) states after the interval.
    """
    for k in range(most):
        moved = torch.addcmul(h, step[:, None], field(h))
        # Every series takes the first step (a zero step leaves it as it is); later steps only
        # where the series has that many.
        h = moved if k == 0 else torch.where((k < n)[:, None], moved, h)
    return h
