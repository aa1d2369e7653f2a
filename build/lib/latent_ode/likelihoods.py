"""The VAE objective: masked Gaussian likelihood, KL to the prior, ELBO/IWAE, and MSE.

Each term is averaged over the observed points of a series, as in the reference
implementation of Rubanova et al. 2019 (``masked_gaussian_log_density``), so that series with
many and few observations weigh the same.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["gaussian_log_likelihood", "iwae_bound", "kl_normal_std_normal", "masked_mse"]


def _per_series_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x over the observed (T, D) entries of each series: (..., B, T, D) -> (..., B)."""
    m = mask.to(x.dtype)
    total = (x * m).sum(dim=(-1, -2))
    count = m.sum(dim=(-1, -2)).clamp_min(1.0)
    return total / count


def gaussian_log_likelihood(pred: Tensor, target: Tensor, mask: Tensor, std: float | Tensor) -> Tensor:
    """Per-series mean log N(target; pred, std²) over observed entries.

    Args:
        pred: (..., B, T, D) predicted means.
        target: (B, T, D) observed values.
        mask: (B, T, D) bool, True where observed.
        std: observation noise standard deviation, a float or a (D,) tensor per channel.

    Returns:
        (..., B) log-likelihood per series (points where ``mask`` is False contribute nothing).
    """
    log_std = math.log(std) if isinstance(std, float) else torch.log(std)
    logp = -0.5 * ((target - pred) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    return _per_series_mean(logp, mask)


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per-series mean squared error over observed entries: (..., B, T, D) -> (..., B)."""
    return _per_series_mean((pred - target) ** 2, mask)


def kl_normal_std_normal(mean: Tensor, std: Tensor) -> Tensor:
    """KL(N(mean, std²) || N(0, I)) summed over the last dimension: (B, L) -> (B,)."""
    return 0.5 * (mean**2 + std**2 - 1.0 - 2.0 * torch.log(std)).sum(dim=-1)


def iwae_bound(log_weights: Tensor) -> Tensor:
    """Importance-weighted bound (Burda et al. 2016, Eq. 8) over K samples: (K, B) -> (B,)."""
    k = log_weights.shape[0]
    return torch.logsumexp(log_weights, dim=0) - math.log(k)
