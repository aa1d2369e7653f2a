"""Registry of decoders: the map from a latent state z(t) to the channel means.

An entry is a function ``(latent_dim, input_dim, config) -> nn.Module`` whose module maps
(..., L) to (..., D); ``DecoderConfig.kind`` names it. To add a decoder: write the function and
decorate it with ``@DECODERS.register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import nn

from latent_ode.registry import Registry

if TYPE_CHECKING:  # the config takes its valid names from DECODERS, so it imports this module
    from latent_ode.config import DecoderConfig

__all__ = ["DECODERS", "DecoderBuilder"]

DecoderBuilder = Callable[[int, int, "DecoderConfig"], nn.Module]
DECODERS: Registry[DecoderBuilder] = Registry("decoder")


@DECODERS.register("linear")
def linear(latent_dim: int, input_dim: int, config: DecoderConfig) -> nn.Module:
    """x(t) = W z(t) + b (Rubanova et al. 2019, Sec. 3), PyTorch's initialisation."""
    return nn.Linear(latent_dim, input_dim)
