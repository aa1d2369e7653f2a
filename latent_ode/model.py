"""The Latent ODE (Chen et al. 2018, Sec. 5; Rubanova et al. 2019, Sec. 3).

Generative model: z0 ~ N(0, I); z(t) solves dz/dt = f(z) from z0 at each series' reference time
t0; x(t) ~ N(W z(t) + b, obs_std²) per channel. Recognition model: the backwards ODE-RNN gives
q(z0 | observations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from latent_ode.config import ModelConfig, SolverConfig
from latent_ode.data import Observations
from latent_ode.encoder import ODERNNEncoder
from latent_ode.likelihoods import (
    gaussian_log_likelihood,
    iwae_bound,
    kl_normal_std_normal,
    masked_mse,
)
from latent_ode.solver import ODESolution, solve

__all__ = ["BilinearDynamics", "LatentODE", "LossOutput", "RotationDynamics"]


def _mlp(width: int, units: int, layers: int) -> nn.Sequential:
    if layers == 0:
        return nn.Sequential(nn.Linear(width, width))
    mods: list[nn.Module] = [nn.Linear(width, units), nn.Tanh()]
    for _ in range(layers - 1):
        mods += [nn.Linear(units, units), nn.Tanh()]
    mods.append(nn.Linear(units, width))
    return nn.Sequential(*mods)


def _init_mlp(net: nn.Module, std: float = 0.1) -> None:
    """The reference implementation's initialisation of its MLPs: N(0, std²) weights, zero biases
    (``utils.init_network_weights`` there)."""
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            nn.init.zeros_(m.bias)


def _rotations(dim: int, rate: float) -> Tensor:
    """(dim, dim) block-diagonal generator of rotations in ``dim // 2`` planes, angular
    frequencies uniform on [rate / 3, rate] (drawn from torch's global generator)."""
    a = torch.zeros(dim, dim)
    omega = rate / 3 + (rate - rate / 3) * torch.rand(dim // 2)
    for k, w in enumerate(omega.tolist()):
        a[2 * k, 2 * k + 1], a[2 * k + 1, 2 * k] = w, -w
    return a


class RotationDynamics(nn.Module):
    """Latent dynamics ``f(z) = A z + mlp(z)``, with ``A`` initialised by :func:`_rotations`.

    A linear part that starts as rotations gives the decoder trajectories that oscillate from the
    first step; the MLP learns the rest (see ``ModelConfig.dynamics_rotation``).
    """

    def __init__(self, mlp: nn.Module, dim: int, rate: float) -> None:
        super().__init__()
        self.mlp = mlp
        self.linear = nn.Parameter(_rotations(dim, rate))

    def forward(self, z: Tensor) -> Tensor:
        return z @ self.linear.T + self.mlp(z)


class BilinearDynamics(nn.Module):
    """Latent dynamics ``f(z) = inner(z) + (P z + a) * s tanh((Q z + b) / s)`` (see
    ``ModelConfig.dynamics_bilinear``).

    Near the origin the added term is the product ``(P z + a) * (Q z + b)``; the second factor
    saturates at ``s = BOUND``, so the term grows at most linearly in z and the solutions cannot
    blow up in finite time, as those of a quadratic ODE can. ``P``, ``Q``, ``a`` and ``b`` are
    one linear layer, initialised as the other MLPs.
    """

    BOUND = 3.0

    def __init__(self, inner: nn.Module, dim: int) -> None:
        super().__init__()
        self.inner = inner
        self.factors = nn.Linear(dim, 2 * dim)
        _init_mlp(self.factors)

    def forward(self, z: Tensor) -> Tensor:
        left, right = self.factors(z).chunk(2, dim=-1)
        gate = torch.tanh(right * (1.0 / self.BOUND)) * self.BOUND
        return torch.addcmul(self.inner(z), left, gate)


@dataclass(frozen=True)
class LossOutput:
    """One evaluation of the objective.

    Attributes:
        loss: scalar to minimise (negative ELBO, or negative IWAE bound when K > 1).
        log_likelihood: (B,) per-series mean log-likelihood of the targets (first sample).
        kl: (B,) KL(q(z0) || p(z0)).
        mse: (B,) per-series MSE of the sample-mean prediction on observed targets.
        nfe: function evaluations of the latent ODE solve.
    """

    loss: Tensor
    log_likelihood: Tensor
    kl: Tensor
    mse: Tensor
    nfe: int


class LatentODE(nn.Module):
    """Encoder, latent dynamics and decoder.

    Args:
        config: the architecture and solver settings.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ODERNNEncoder(
            config.input_dim, config.encoder_hidden, config.latent_dim, config.encoder_units,
            config.encoder_max_step, config.encoder_cell,
        )
        self.dynamics = _mlp(config.latent_dim, config.dynamics_units, config.dynamics_layers)
        self.decoder = nn.Linear(config.latent_dim, config.input_dim)
        # nn.GRUCell keeps PyTorch's initialisation; every MLP gets the reference's.
        for net in (self.dynamics, self.encoder.ode, self.encoder.to_z0, self.encoder.gru):
            if not isinstance(net, nn.GRUCell):
                _init_mlp(net)
        if config.dynamics_rotation > 0:
            self.dynamics = RotationDynamics(self.dynamics, config.latent_dim,
                                             config.dynamics_rotation)
        if config.dynamics_bilinear:
            self.dynamics = BilinearDynamics(self.dynamics, config.latent_dim)
        # q(z0) starts nearly deterministic (std softplus(-4) = 0.018, as the reference's
        # |linear| output starts near 0): with std ~0.7 the sampled z0 would be mostly noise
        # at first, and the decoder would learn to ignore it and predict the mean curve.
        nn.init.constant_(self.encoder.to_z0[-1].bias[config.latent_dim:], -4.0)

    @staticmethod
    def reference_time(context: Observations, query_times: Tensor) -> Tensor:
        """(B,) t0 of each series: its first observation, or its first query if earlier.

        Args:
            context: the observations the encoder reads.
            query_times: (B, Q) times the decoder is asked for, sorted per row.
        """
        return torch.minimum(context.first_time, query_times[:, 0])

    def encode(self, context: Observations, t0: Tensor) -> tuple[Tensor, Tensor]:
        """mean (B, L) and std (B, L) of q(z0) at reference times ``t0`` (B,)."""
        return self.encoder(context, t0)

    def decode(self, z0: Tensor, t_rel: Tensor, *, solver: SolverConfig | None = None,
               adjoint: bool = False) -> tuple[Tensor, ODESolution]:
        """Solve the latent ODE and map states to channel means.

        Args:
            z0: (N, L) initial latent states.
            t_rel: (N, Q) times relative to each series' t0, non-negative and sorted per row.
            solver: overrides the model's solver settings.
            adjoint: use the adjoint method for gradients.

        Returns:
            (N, Q, D) predicted channel means (NaN rows for failed series) and the solution.
        """
        sol = solve(self.dynamics, z0, t_rel, solver or self.config.solver, adjoint=adjoint)
        return self.decoder(sol.ys), sol

    def sample_latent(self, mean: Tensor, std: Tensor, eps: Tensor) -> Tensor:
        """z0 = mean + std * eps: (B, L), (B, L), (S, B, L) or (S, 1, L) -> (S, B, L)."""
        return mean[None] + std[None] * eps

    def loss(
        self,
        context: Observations,
        target: Observations,
        *,
        num_samples: int = 1,
        kl_weight: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """Negative ELBO (K = 1, analytic KL) or negative IWAE bound (K > 1).

        Args:
            context: what the encoder sees (B series).
            target: the points to reconstruct or forecast (same B series, own times).
            num_samples: K latent samples per series.
            kl_weight: weight of the KL term (warm-up).
            generator: source of the latent noise.

        Raises:
            SolverError: the latent ODE solve failed for some series.
        """
        b, t, d = target.values.shape
        t0 = self.reference_time(context, target.times)
        mean, std = self.encode(context, t0)
        # Drawn on the CPU so that a seeded CPU generator gives the same run on any device.
        eps = torch.randn((num_samples, b, mean.shape[1]), generator=generator,
                          dtype=mean.dtype).to(mean.device)
        z0 = self.sample_latent(mean, std, eps)  # (K, B, L)
        t_rel = (target.times - t0[:, None]).repeat(num_samples, 1)  # (K*B, T)
        adjoint = self.config.solver.gradient == "adjoint" and torch.is_grad_enabled()
        pred, sol = self.decode(z0.reshape(num_samples * b, -1), t_rel, adjoint=adjoint)
        sol.raise_on_failure()
        pred = pred.reshape(num_samples, b, t, d)  # (K, B, T, D)
        loglik = gaussian_log_likelihood(pred, target.values, target.mask, self.config.obs_std)
        kl = kl_normal_std_normal(mean, std)  # (B,)
        if num_samples == 1:
            bound = loglik[0] - kl_weight * kl
        else:
            # log p(z) - log q(z) per sample, the Monte-Carlo counterpart of -KL.
            log_prior = -0.5 * (z0**2).sum(-1) - 0.5 * z0.shape[-1] * math.log(2 * math.pi)
            log_post = torch.distributions.Normal(mean, std).log_prob(z0).sum(-1)
            bound = iwae_bound(loglik + kl_weight * (log_prior - log_post))
        mse = masked_mse(pred.mean(0), target.values, target.mask)
        return LossOutput(loss=-bound.mean(), log_likelihood=loglik[0], kl=kl, mse=mse,
                          nfe=sol.stats.nfe)
