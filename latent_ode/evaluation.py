"""Test metrics of a forecaster, next to two baselines computed on the same points.

Protocol (Rubanova et al. 2019, Sec. 4): interpolation — the encoder sees a random
``interp_fraction`` of each series' points and the model reconstructs all of them;
extrapolation — the encoder sees the first ``extrap_split`` of each series' time span and the
model forecasts the rest. Errors are on the normalised scale (as in the paper's tables), pooled
over every observed target value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from latent_ode.config import SolverConfig
from latent_ode.data import Observations, Series
from latent_ode.errors import DataError
from latent_ode.forecaster import Forecaster, mixture_quantiles, observation_gap, window_position
from latent_ode.tasks import TASK_PREFIX, TASKS, seen_in_context, task_batches, to_model_batch

__all__ = ["EvalResult", "evaluate", "linear_interpolation", "last_observation"]


@dataclass(frozen=True)
class EvalResult:
    """Metrics by name (see :func:`evaluate`) and the number of points each is computed on."""

    metrics: dict[str, float]
    counts: dict[str, int]


def _channel_baseline(context: Observations, target: Observations, kind: str) -> torch.Tensor:
    """Per-channel baseline predictions at the target times: (B, T_target, D)."""
    ct, cv, cm = (x.cpu().numpy() for x in (context.times, context.values, context.mask))
    tt = target.times.cpu().numpy()
    out = np.zeros(target.values.shape, dtype=np.float64)
    for b in range(ct.shape[0]):
        for d in range(cv.shape[2]):
            seen = cm[b, :, d]
            if not seen.any():
                continue  # never observed: predict the training mean, 0 on the normalised scale
            xs, ys = ct[b, seen], cv[b, seen, d]
            if kind == "linear":
                out[b, :, d] = np.interp(tt[b], xs, ys)
            else:  # last observation carried forward (the first one carried backward)
                pos = np.searchsorted(xs, tt[b], side="right") - 1
                out[b, :, d] = ys[np.clip(pos, 0, None)]
    return torch.as_tensor(out, dtype=target.values.dtype, device=target.values.device)


def linear_interpolation(context: Observations, target: Observations) -> torch.Tensor:
    """Linear interpolation of each channel's observed context points (constant outside)."""
    return _channel_baseline(context, target, "linear")


def last_observation(context: Observations, target: Observations) -> torch.Tensor:
    """Last observation carried forward per channel."""
    return _channel_baseline(context, target, "locf")


def _sq_err(pred: torch.Tensor, target: Observations, mask: torch.Tensor) -> tuple[float, int]:
    err = ((pred - target.values) ** 2)[mask]
    return float(err.sum()), int(mask.sum())


@torch.no_grad()
def evaluate(
    forecaster: Forecaster,
    test: Sequence[Series],
    *,
    num_samples: int = 16,
    interp_fraction: float = 0.5,
    extrap_split: float = 0.5,
    batch_size: int = 100,
    seed: int = 0,
    solver: SolverConfig | None = None,
) -> EvalResult:
    """Interpolation and extrapolation errors, likelihood and calibration on ``test``.

    Metrics: ``interp_mse`` (all target points, the paper's definition), ``interp_mse_heldout``
    (points the encoder did not see), ``extrap_mse``, ``interp_nll`` / ``extrap_nll`` (negative
    log predictive density per held-out value, normalised scale), ``interp_coverage_90`` /
    ``extrap_coverage_90`` / ``coverage_90`` (share of held-out values inside the central 90%
    predictive interval), and the baselines ``linear_interp_mse`` (held-out points),
    ``locf_interp_mse``, ``locf_extrap_mse``, ``linear_extrap_mse``. ``solver`` overrides the
    model's solver settings (e.g. to check that trained weights do not lean on the solver's error).

    Raises:
        DataError: ``test`` is empty.
    """
    if len(test) == 0:
        raise DataError("`test` must contain at least one series; got none.")
    model = forecaster.model
    model.eval()
    obs = to_model_batch(forecaster, test)
    gen = torch.Generator().manual_seed(seed)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}

    def add(name: str, total: float, count: int) -> None:
        sums[name] = sums.get(name, 0.0) + total
        counts[name] = counts.get(name, 0) + count

    # Untrimmed minibatches: the contexts drawn stay those of every evaluation published so far.
    for item in task_batches(obs, TASKS, batch_size=batch_size, interp_fraction=interp_fraction,
                             extrap_split=extrap_split, generator=gen, trim=False):
        task, context, target = TASK_PREFIX[item.task], item.context, item.target
        samples, _ = forecaster.sample_normalised(context, target.times, num_samples=num_samples,
                                                  seed=seed + item.start, solver=solver)
        mean = samples.mean(0)  # (B, T, D)
        # Held-out: target points the encoder did not see.
        seen = seen_in_context(context, target)
        heldout = target.mask & ~seen
        if task == "interp":
            add("interp_mse", *_sq_err(mean, target, target.mask))
            add("interp_mse_heldout", *_sq_err(mean, target, heldout))
            add("linear_interp_mse", *_sq_err(linear_interpolation(context, target), target, heldout))
            add("locf_interp_mse", *_sq_err(last_observation(context, target), target, heldout))
        else:
            add("extrap_mse", *_sq_err(mean, target, heldout))
            add("locf_extrap_mse", *_sq_err(last_observation(context, target), target, heldout))
            add("linear_extrap_mse", *_sq_err(linear_interpolation(context, target), target, heldout))
        # Mixture predictive density of the held-out values.
        position = window_position(target.times, context.first_time, context.last_time)
        noise = forecaster.noise_tensor(position, samples, observation_gap(context, target.times))
        comp = torch.distributions.Normal(samples, noise).log_prob(target.values[None])
        logp = torch.logsumexp(comp, dim=0) - math.log(num_samples)  # (B, T, D)
        add(f"{task}_nll", float(-logp[heldout].sum()), int(heldout.sum()))
        q = mixture_quantiles(samples, noise, (0.05, 0.95))  # (2, B, T, D)
        inside = (target.values >= q[0]) & (target.values <= q[1])
        add(f"{task}_coverage_90", float(inside[heldout].sum()), int(heldout.sum()))
        add("coverage_90", float(inside[heldout].sum()), int(heldout.sum()))
    metrics = {k: sums[k] / counts[k] if counts[k] else float("nan") for k in sums}
    return EvalResult(metrics=metrics, counts=counts)
