"""The per-step schedules of training: learning-rate decay and KL warm-up."""

from __future__ import annotations

from latent_ode.config import TrainConfig

__all__ = ["kl_weight", "learning_rate"]


def kl_weight(config: TrainConfig, step: int) -> float:
    """The weight of the KL term at ``step``: 0 for ``kl_warmup_delay`` steps, then
    ``kl_scale * (1 - kl_warmup_rate ** (step - kl_warmup_delay))``."""
    if step < config.kl_warmup_delay:
        return 0.0
    return config.kl_scale * (1.0 - config.kl_warmup_rate ** (step - config.kl_warmup_delay))


def learning_rate(config: TrainConfig, step: int) -> float:
    """``lr * lr_decay ** step``, never below ``lr_min``."""
    return max(config.lr_min, config.lr * config.lr_decay**step)
