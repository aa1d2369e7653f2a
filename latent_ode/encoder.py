"""ODE-RNN encoder run backwards in time (Rubanova et al. 2019, Sec. 3.3, Alg. 1)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from latent_ode.cells import CELLS
from latent_ode.config import EncoderConfig
from latent_ode.data import Observations
from latent_ode.fused import inference_field
from latent_ode.initialisation import reference_init
from latent_ode.solver import euler_schedule, fixed_step_evolve

__all__ = ["ODERNNEncoder"]


class ODERNNEncoder(nn.Module):
    """Reads a batch of observations from the last to the first into q(z0).

    Between two observations the hidden state evolves by a learned ODE; at each observation an
    update cell (:data:`latent_ode.cells.CELLS`) takes the values and the mask (so "not observed"
    is an input, never a zero value). After the first observation the state evolves on to each
    series' reference time ``t0``.

    Args:
        input_dim: D.
        latent_dim: L.
        config: hidden size H, MLP units, longest Euler step (normalised time) of the
            hidden-state evolution, and the name of the update cell.

    Raises:
        ConfigError: ``config.cell`` names no registered cell.
    """

    def __init__(self, input_dim: int, latent_dim: int, config: EncoderConfig) -> None:
        super().__init__()
        self.hidden_dim = config.hidden
        self.max_step = config.max_step
        self.ode = nn.Sequential(nn.Linear(config.hidden, config.units), nn.Tanh(),
                                 nn.Linear(config.units, config.hidden))
        cell = CELLS[config.cell](2 * input_dim, config)
        # The attribute keeps its historical name: checkpoints store the cell's weights under it.
        self.gru = cell.module
        self.state_dim = cell.state_dim
        self.to_z0 = nn.Sequential(nn.Linear(self.state_dim, config.units), nn.Tanh(),
                                   nn.Linear(config.units, 2 * latent_dim))
        reference_init(self.ode)
        reference_init(self.to_z0)

    def _evolve(self, ode: Callable[[Tensor], Tensor], h: Tensor, n: Tensor, step: Tensor,
                most: int) -> Tensor:
        if self.state_dim == self.hidden_dim:
            return fixed_step_evolve(ode, h, n, step, most)
        # Only the first H coordinates follow the ODE; a cell's extra state (the std part of
        # mlp_gru's [mean, std]) is carried unchanged between observations.
        mean, rest = h[:, :self.hidden_dim], h[:, self.hidden_dim:]
        return torch.cat([fixed_step_evolve(ode, mean, n, step, most), rest], dim=-1)

    def forward(self, obs: Observations, t0: Tensor) -> tuple[Tensor, Tensor]:
        """Encode.

        Args:
            obs: B series, T padded time points, D channels.
            t0: (B,) reference time of each series, at or before its first observation.

        Returns:
            mean (B, L) and std (B, L) of the Gaussian q(z0 | observations).
        """
        b, t, _ = obs.values.shape
        h = obs.values.new_zeros(b, self.state_dim)
        inputs = torch.cat([obs.values, obs.mask.to(obs.values.dtype)], dim=2)  # (B, T, 2D)
        observed = obs.mask.any(dim=2) & obs.valid  # (B, T)
        # Interval to evolve over before reading point j: from t_{j+1} back to t_j (padding
        # repeats the last time, so its intervals are 0 and leave h unchanged); the last column
        # is from the first observation back to t0. Planned at once: one host sync per pass.
        gaps = torch.cat([obs.times.diff(dim=1), (obs.first_time - t0)[:, None]], dim=1)
        n, step, most = euler_schedule(gaps, self.max_step)  # (B, T), (B, T), T ints
        counts = observed.sum(dim=0).tolist()  # series observed at each position
        # Without gradients (prediction), the ODE MLP with its tanh as a sigmoid (fused.py).
        ode = inference_field(self.ode) or self.ode
        for j in range(t - 1, -1, -1):
            if j < t - 1:
                h = self._evolve(ode, h, n[:, j], step[:, j], most[j])
            if counts[j] == 0:
                continue
            updated = self.gru(inputs[:, j], h)
            h = updated if counts[j] == b else torch.where(observed[:, j, None], updated, h)
        h = self._evolve(ode, h, n[:, -1], step[:, -1], most[-1])
        mean, raw_std = self.to_z0(h).chunk(2, dim=1)
        return mean, F.softplus(raw_std) + 1e-4
