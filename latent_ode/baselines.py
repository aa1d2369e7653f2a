"""What a user gets by drawing lines between their own measurements, per channel, as tensors.

The two baselines every evaluation compares with (``../shared/notes/protocols.md``): linear
interpolation of each channel's observed context points (constant before the first and after
the last, as ``numpy.interp``) and the last observation carried forward (the first one carried
backward before it). Both come from one pass over the context, vectorised over the batch, the
queries and the channels, so they are cheap enough to sit inside the model (a decoder may
anchor its answer on them) as well as in the evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from latent_ode.data import Observations
from latent_ode.errors import ShapeError

__all__ = ["ChannelBaselines", "channel_baselines", "mix_baselines"]


@dataclass(frozen=True)
class ChannelBaselines:
    """Per-channel baselines at the query times.

    Attributes:
        linear: (B, Q, D) linear interpolation of the channel's context points, constant
            outside them; ``fallback`` where the channel is never observed in the context.
        locf: (B, Q, D) the channel's last context value at or before the query (the first one
            before it); ``fallback`` where never observed.
        gap: (B, Q, D) distance in time from the query to the nearest context observation of
            the channel; ``inf`` where never observed.
        observed: (B, Q, D) bool, True where the channel has at least one context observation.
    """

    linear: Tensor
    locf: Tensor
    gap: Tensor
    observed: Tensor

    def data_gap(self) -> Tensor:
        """(B, Q, D) ``gap``, except for a channel the context never observes: the distance to
        the series' nearest observation of any channel (the regime's horizon); 0 where the
        context observes nothing at all."""
        nearest_any = torch.where(self.observed, self.gap, torch.inf).amin(dim=2, keepdim=True)
        return torch.nan_to_num(torch.where(self.observed, self.gap, nearest_any), posinf=0.0)


def channel_baselines(context: Observations, query_times: Tensor,
                      fallback: Tensor | float = 0.0) -> ChannelBaselines:
    """Linear interpolation and LOCF of each channel of ``context`` at ``query_times``.

    Args:
        context: B series (padding repeats each series' last time, with ``mask`` False).
        query_times: (B, Q) query times, in any order, on the context's time scale.
        fallback: (D,) or scalar value for channels never observed in a series' context (the
            training mean on the model's scale, say).

    Returns:
        :class:`ChannelBaselines`; differentiable in the context values.

    Raises:
        ShapeError: ``query_times`` is not (B, Q) for the context's B.
    """
    times, values, mask = context.times, context.values, context.mask & context.valid[:, :, None]
    b, t, d = values.shape
    if query_times.ndim != 2 or query_times.shape[0] != b:
        raise ShapeError(f"`query_times` must have shape (B, Q) with B = {b}; got "
                         f"{tuple(query_times.shape)}.")
    q = query_times.shape[1]
    ar = torch.arange(t, device=times.device)[None, :, None]  # (1, T, 1)
    # For each context position and channel: the index of the channel's last observation at or
    # before it (-1: none yet), and of its first observation at or after it (t: none after).
    prev_at = torch.cummax(torch.where(mask, ar, -1), dim=1).values  # (B, T, D)
    next_at = torch.flip(torch.cummin(torch.flip(torch.where(mask, ar, t), [1]), dim=1).values, [1])

    qt = query_times.to(times.dtype).contiguous()
    # Context positions bracketing each query: last time <= q, first time >= q (padding repeats
    # the last time, so clamp to the valid range).
    last_valid = (context.lengths - 1)[:, None]  # (B, 1)
    before = torch.searchsorted(times.contiguous(), qt, right=True) - 1  # (B, Q), -1: q < first
    after = torch.searchsorted(times.contiguous(), qt, right=False)  # (B, Q), >= length: q > last
    before = torch.minimum(before, last_valid)
    has_before = before >= 0
    has_after = after <= last_valid

    expand = (b, q, d)
    prev = prev_at.gather(1, before.clamp(min=0)[:, :, None].expand(expand))  # (B, Q, D)
    prev = torch.where(has_before[:, :, None], prev, -1)
    nxt = next_at.gather(1, torch.minimum(after, last_valid)[:, :, None].expand(expand))
    nxt = torch.where(has_after[:, :, None], nxt, t)
    has_prev, has_next = prev >= 0, nxt < t
    observed = mask.any(dim=1)[:, None, :].expand(expand)  # (B, Q, D)

    times_d = times[:, :, None].expand(b, t, d)
    pi, ni = prev.clamp(0, t - 1), nxt.clamp(0, t - 1)
    tp, tn = times_d.gather(1, pi), times_d.gather(1, ni)  # (B, Q, D)
    vp, vn = values.gather(1, pi), values.gather(1, ni)
    qd = qt[:, :, None]  # (B, Q, 1)

    fb = torch.as_tensor(fallback, dtype=values.dtype, device=values.device).expand(expand)
    both = has_prev & has_next
    width = torch.where(both, tn - tp, 1.0)
    # tn == tp only when the query sits on an observation: take it as it is.
    frac = torch.where(both & (width > 0), (qd - tp) / torch.where(width > 0, width, 1.0), 0.0)
    interp = vp + frac * (vn - vp)
    one_side = torch.where(has_prev, vp, vn)
    linear = torch.where(both, interp, torch.where(observed, one_side, fb))
    locf = torch.where(observed, one_side, fb)
    inf = torch.full_like(tp, float("inf"))
    gap = torch.minimum(torch.where(has_prev, qd - tp, inf), torch.where(has_next, tn - qd, inf))
    return ChannelBaselines(linear=linear, locf=locf, gap=gap, observed=observed)


def mix_baselines(first: ChannelBaselines, second: ChannelBaselines,
                  use_second: Tensor) -> ChannelBaselines:
    """Per channel, ``second``'s lines where ``use_second`` (D,) is True, else ``first``'s (the
    same context's points, e.g. clipped and unclipped values: gaps and ``observed`` agree)."""
    pick = use_second.to(device=first.linear.device, dtype=torch.bool)
    return ChannelBaselines(linear=torch.where(pick, second.linear, first.linear),
                            locf=torch.where(pick, second.locf, first.locf),
                            gap=first.gap, observed=first.observed)
