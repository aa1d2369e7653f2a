"""The Latent ODE (Chen et al. 2018, Sec. 5; Rubanova et al. 2019, Sec. 3).

Generative model: z0 ~ N(0, I); z(t) solves dz/dt = f(z) from z0 at each series' reference time
t0; x(t) ~ N(decoder(z(t)), obs_std²) per channel. Recognition model: the backwards ODE-RNN gives
q(z0 | observations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from latent_ode.anchor import BaselineAnchor
from latent_ode.baselines import ChannelBaselines
from latent_ode.config import ModelConfig, SolverConfig
from latent_ode.data import Observations
from latent_ode.decoders import DECODERS
from latent_ode.dynamics import DYNAMICS
from latent_ode.encoder import ODERNNEncoder
from latent_ode.likelihoods import (
    gaussian_log_likelihood,
    iwae_bound,
    kl_normal_std_normal,
    masked_mse,
)
from latent_ode.solver import ODESolution, solve

__all__ = ["LatentODE", "LossOutput"]


@dataclass(frozen=True)
class LossOutput:
    """One evaluation of the objective.

    Attributes:
        loss: scalar to minimise (negative ELBO, or negative IWAE bound when K > 1).
        log_likelihood: (B,) per-series mean log-likelihood of the targets (first sample).
        kl: (B,) KL(q(z0) || p(z0)).
        mse: (B,) per-series MSE of the sample-mean prediction on observed targets.
        nfe: function evaluations of the latent ODE solve.
        mean: (B, T, D) the sample-mean prediction at the target times (what ``mse`` scores).
    """

    loss: Tensor
    log_likelihood: Tensor
    kl: Tensor
    mse: Tensor
    nfe: int
    mean: Tensor


class LatentODE(nn.Module):
    """Encoder, latent dynamics and decoder, each built from its registry by the name in
    ``config`` (:mod:`latent_ode.cells`, :mod:`latent_ode.dynamics`, :mod:`latent_ode.decoders`).

    Args:
        config: the architecture and solver settings.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ODERNNEncoder(config.input_dim, config.latent_dim, config.encoder)
        self.dynamics = DYNAMICS[config.dynamics.kind](config.latent_dim, config.dynamics)
        self.decoder = DECODERS[config.decoder.kind](config.latent_dim, config.input_dim,
                                                     config.decoder)
        # q(z0) starts nearly deterministic (std softplus(-4) = 0.018, as the reference's
        # |linear| output starts near 0): with std ~0.7 the sampled z0 would be mostly noise
        # at first, and the decoder would learn to ignore it and predict the mean curve.
        nn.init.constant_(self.encoder.to_z0[-1].bias[config.latent_dim:], -4.0)
        self.anchor = BaselineAnchor(config.input_dim) if config.decoder.anchor else None
        # log(std - floor), so the learned std starts at obs_std and never falls below the floor.
        self.obs_log_excess = (
            nn.Parameter(torch.full((config.input_dim,),
                                    math.log(config.obs_std - config.obs_std_min + 1e-12)))
            if config.learn_obs_std else None
        )
        # (D,) weights of each channel's term of the objective, set by the training loop
        # (TrainConfig.balance_channels); not part of the saved model.
        self.channel_weight: Tensor | None = None

    @property
    def obs_std(self) -> float | Tensor:
        """The observation noise std of the objective: ``obs_std``, or (D,) learned per channel;
        divided by the square root of each channel's weight when ``channel_weight`` is set."""
        std: float | Tensor = (self.config.obs_std if self.obs_log_excess is None
                               else self.config.obs_std_min + torch.exp(self.obs_log_excess))
        if self.channel_weight is not None:
            std = std / torch.sqrt(self.channel_weight)
        return std

    def means(self, decoded: Tensor, context: Observations, query_times: Tensor, *,
              baselines: ChannelBaselines | None = None) -> Tensor:
        """The channel means at ``query_times``: the decoded ones, anchored if configured.

        Args:
            decoded: (S, B, Q, D) decoder outputs.
            context: the B series the encoder read.
            query_times: (B, Q) the times of ``decoded``.
            baselines: ``channel_baselines(context, query_times)`` if the caller has them.
        """
        if self.anchor is None:
            return decoded
        return self.anchor(decoded, context, query_times, baselines=baselines)

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
        pred = self.means(pred.reshape(num_samples, b, t, d), context, target.times)  # (K, B, T, D)
        loglik = gaussian_log_likelihood(pred, target.values, target.mask, self.obs_std)
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
                          nfe=sol.stats.nfe, mean=pred.mean(0))
