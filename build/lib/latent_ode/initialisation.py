"""The reference implementation's initialisation of the model's MLPs."""

from __future__ import annotations

from torch import nn

__all__ = ["reference_init"]


def reference_init(net: nn.Module, std: float = 0.1) -> None:
    """N(0, std²) weights and zero biases for every ``nn.Linear`` inside ``net``, in place.

    The reference implementation of Rubanova et al. 2019 (``utils.init_network_weights``) starts
    its MLPs this way; modules without ``nn.Linear`` layers (``nn.GRUCell``) are left as
    PyTorch initialised them.

    Args:
        net: the module to initialise.
        std: standard deviation of the weights.
    """
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            nn.init.zeros_(m.bias)
