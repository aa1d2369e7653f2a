"""Anchor the decoded means on what the user's own measurements already say.

A forecast that loses to drawing lines between the user's measurements is not worth serving.
:class:`BaselineAnchor` blends each channel's decoded mean with that channel's baseline, the
linear interpolation of its context observations (the last observation carried forward after
them, :mod:`latent_ode.baselines`), with a learned per-channel trust that decays with the time
to the channel's nearest observation:

    x̂_d(t) = tau_d(t) * baseline_d(t) + (1 - tau_d(t)) * decoder_d(z(t)),
    tau_d(t) = sigmoid(a_d) * exp(-softplus(r_d) * gap_d(t)),

and tau = 0 for a channel never observed in the context. It is the output-side counterpart of
GRU-D's decay of an input towards its last observation (Che et al. 2018, Sec. 3.1): a slowly
varying channel (a weight, a creatinine) learns a large ``a`` and a small ``r`` and is answered
by its baseline, a channel the latent dynamics predict well learns to trust the decoder.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from latent_ode.baselines import ChannelBaselines, channel_baselines
from latent_ode.data import Observations

__all__ = ["BaselineAnchor"]


class BaselineAnchor(nn.Module):
    """``tau * baseline + (1 - tau) * decoded`` per channel (see the module docstring).

    Args:
        channels: D. Both the trust logit ``a`` and the decay ``r`` start at 0: trust 1/2 at
            the observation, decaying at rate log 2 per unit of normalised time.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.trust = nn.Parameter(torch.zeros(channels))
        self.decay = nn.Parameter(torch.zeros(channels))

    def weight(self, gap: Tensor, observed: Tensor) -> Tensor:
        """tau (B, Q, D) from the gaps (B, Q, D) to the nearest observation and ``observed``."""
        rate = F.softplus(self.decay)
        near = torch.exp(-rate * torch.where(observed, gap, 0.0))
        return torch.where(observed, torch.sigmoid(self.trust) * near, 0.0)

    def forward(self, decoded: Tensor, context: Observations, query_times: Tensor, *,
                baselines: ChannelBaselines | None = None) -> Tensor:
        """Blend the decoded means with the baselines.

        Args:
            decoded: (S, B, Q, D) decoded means on the normalised scale.
            context: the B series the encoder read (normalised).
            query_times: (B, Q) the times ``decoded`` is at.
            baselines: ``channel_baselines(context, query_times)`` if the caller has them (its
                fallback does not matter: a channel with no observation gets trust 0).

        Returns:
            (S, B, Q, D) anchored means.
        """
        base = channel_baselines(context, query_times) if baselines is None else baselines
        tau = self.weight(base.gap, base.observed)  # (B, Q, D)
        return tau * base.linear + (1 - tau) * decoded
