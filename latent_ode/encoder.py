"""ODE-RNN encoder run backwards in time (Rubanova et al. 2019, Sec. 3.3, Alg. 1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from latent_ode.data import Observations
from latent_ode.solver import fixed_step_evolve

__all__ = ["ODERNNEncoder"]


class ODERNNEncoder(nn.Module):
    """Reads a batch of observations from the last to the first into q(z0).

    Between two observations the hidden state evolves by a learned ODE; at each observation a
    GRU cell takes the values and the mask (so "not observed" is an input, never a zero value).
    After the first observation the state evolves on to each series' reference time ``t0``.

    Args:
        input_dim: D.
        hidden_dim: H.
        latent_dim: L.
        units: hidden units of the hidden-state ODE's MLP.
        max_step: longest Euler step (normalised time) of the hidden-state evolution.
    """

    def __init__(self, input_dim: int, hidden_dim: int, latent_dim: int, units: int,
                 max_step: float) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.max_step = max_step
        self.ode = nn.Sequential(nn.Linear(hidden_dim, units), nn.Tanh(),
                                 nn.Linear(units, hidden_dim))
        self.gru = nn.GRUCell(2 * input_dim, hidden_dim)
        self.to_z0 = nn.Sequential(nn.Linear(hidden_dim, units), nn.Tanh(),
                                   nn.Linear(units, 2 * latent_dim))

    def _evolve(self, h: Tensor, dt: Tensor) -> Tensor:
        if float(dt.max()) <= 0.0:
            return h
        return fixed_step_evolve(self.ode, h, dt, self.max_step)

    def forward(self, obs: Observations, t0: Tensor) -> tuple[Tensor, Tensor]:
        """Encode.

        Args:
            obs: B series, T padded time points, D channels.
            t0: (B,) reference time of each series, at or before its first observation.

        Returns:
            mean (B, L) and std (B, L) of the Gaussian q(z0 | observations).
        """
        b, t, _ = obs.values.shape
        h = obs.values.new_zeros(b, self.hidden_dim)
        inputs = torch.cat([obs.values, obs.mask.to(obs.values.dtype)], dim=2)  # (B, T, 2D)
        observed = obs.mask.any(dim=2) & obs.valid  # (B, T)
        # Interval to evolve over before reading point j: from t_{j+1} back to t_j; padding
        # repeats the last time, so its intervals are 0 and leave h unchanged.
        gaps = obs.times.diff(dim=1)  # (B, T-1)
        for j in range(t - 1, -1, -1):
            if j < t - 1:
                h = self._evolve(h, gaps[:, j])
            updated = self.gru(inputs[:, j], h)
            h = torch.where(observed[:, j, None], updated, h)
        h = self._evolve(h, obs.first_time - t0)
        mean, raw_std = self.to_z0(h).chunk(2, dim=1)
        return mean, F.softplus(raw_std) + 1e-4
