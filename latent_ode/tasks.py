"""Turn a batch of observations into (context, target) pairs for the two training tasks.

Interpolation (Rubanova et al. 2019, Sec. 4.1): the encoder sees a random subset of each
series' time points and the model reconstructs all of them. Extrapolation: the encoder sees the
points before a split time and the model forecasts the points after it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from latent_ode.data import Observations

__all__ = ["compact", "extrapolation_task", "interpolation_task", "seen_in_context"]


def compact(obs: Observations, keep: Tensor) -> Observations:
    """Keep the time points where ``keep`` (B, T) is True, packed to the left.

    Every series must keep at least one valid point. Padding repeats each series' last kept
    time, with an all-False mask.
    """
    b, t = keep.shape
    keep = keep & obs.valid
    lengths = keep.sum(dim=1)
    assert bool((lengths >= 1).all()), "compact() needs one kept point per series"
    ar = torch.arange(t, device=keep.device)
    # Kept positions sort first, in time order: (B, T) permutation.
    order = torch.argsort(torch.where(keep, ar, ar + t), dim=1, stable=True)
    new_t = int(lengths.max())
    order = order[:, :new_t]  # (B, T')
    valid = ar[None, :new_t] < lengths[:, None]  # (B, T')
    last = order.gather(1, (lengths - 1)[:, None])  # (B, 1) index of the last kept point
    order = torch.where(valid, order, last)
    d = obs.values.shape[2]
    idx3 = order[:, :, None].expand(-1, -1, d)
    return Observations(
        times=obs.times.gather(1, order),
        values=obs.values.gather(1, idx3),
        mask=obs.mask.gather(1, idx3) & valid[:, :, None],
        lengths=lengths,
    )


def interpolation_task(obs: Observations, fraction: float, *,
                       generator: torch.Generator | None = None) -> tuple[Observations, Observations]:
    """Context: a random ``fraction`` of each series' points; target: all points.

    Each series keeps exactly ``round(fraction * length)`` of its points (at least one), drawn
    without replacement: the reference protocol shows the encoder a random 50 of 100 points.
    (A coin per point would keep a varying number, and the encoder's loop runs as many times as
    the longest context of the batch: about 62 at fraction 0.5 and batch 50.)
    """
    # Drawn on the CPU (where seeded generators live) so that a seed picks the same points on
    # any device.
    u = torch.rand(obs.times.shape, generator=generator).to(obs.times.device)
    u = torch.where(obs.valid, u, 2.0)  # padding ranks last
    rank = u.argsort(dim=1).argsort(dim=1)
    count = torch.round(fraction * obs.lengths).clamp_min(1)
    keep = (rank < count[:, None]) & obs.valid
    return compact(obs, keep), obs


def extrapolation_task(obs: Observations, split: float) -> tuple[Observations, Observations]:
    """Context: points before ``first + split * span``; target: the points from there on.

    Series with a single point cannot be split; their target is their context.
    """
    first, last = obs.first_time, obs.last_time
    cut = first + split * (last - first)  # (B,)
    before = (obs.times < cut[:, None]) & obs.valid
    before[:, 0] = True
    after = (~before) & obs.valid
    single = ~after.any(dim=1)
    after = torch.where(single[:, None], before, after)
    return compact(obs, before), compact(obs, after)


def seen_in_context(context: Observations, target: Observations) -> torch.Tensor:
    """(B, T_target, D) True where the target value was also given to the encoder."""
    same_time = target.times[:, :, None] == context.times[:, None, :]  # (B, Tt, Tc)
    valid_ctx = context.mask  # (B, Tc, D)
    return torch.einsum("btc,bcd->btd", same_time.float(), valid_ctx.float()) > 0
