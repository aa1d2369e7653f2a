"""Registry of latent dynamics: the vector field f of dz/dt = f(z) (Chen et al. 2018).

An entry is a function ``(latent_dim, config) -> nn.Module`` whose module maps z (..., L) to
dz/dt (..., L); ``DynamicsConfig.kind`` names it. To add dynamics: write the function and
decorate it with ``@DYNAMICS.register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from latent_ode.initialisation import reference_init
from latent_ode.registry import Registry

if TYPE_CHECKING:  # the config takes its valid names from DYNAMICS, so it imports this module
    from latent_ode.config import DynamicsConfig

__all__ = ["DYNAMICS", "BilinearDynamics", "DynamicsBuilder", "RotationDynamics", "mlp"]

DynamicsBuilder = Callable[[int, "DynamicsConfig"], nn.Module]
DYNAMICS: Registry[DynamicsBuilder] = Registry("latent dynamics")


def _rotations(dim: int, rate: float) -> Tensor:
    """(dim, dim) block-diagonal generator of rotations in ``dim // 2`` planes, angular
    frequencies uniform on [rate / 3, rate] (drawn from torch's global generator)."""
    a = torch.zeros(dim, dim)
    omega = rate / 3 + (rate - rate / 3) * torch.rand(dim // 2)
    k = torch.arange(dim // 2)
    # Indexed, not a Python loop over values: the network can then be built on the meta device
    # (shapes only), which Forecaster.load does to check a config before allocating it.
    a[2 * k, 2 * k + 1] = omega
    a[2 * k + 1, 2 * k] = -omega
    return a


class RotationDynamics(nn.Module):
    """Latent dynamics ``f(z) = A z + mlp(z)``, with ``A`` initialised by :func:`_rotations`.

    A linear part that starts as rotations gives the decoder trajectories that oscillate from the
    first step; the MLP learns the rest (see ``DynamicsConfig.rotation``).
    """

    def __init__(self, mlp: nn.Module, dim: int, rate: float) -> None:
        super().__init__()
        self.mlp = mlp
        self.linear = nn.Parameter(_rotations(dim, rate))

    def forward(self, z: Tensor) -> Tensor:
        return z @ self.linear.T + self.mlp(z)


class BilinearDynamics(nn.Module):
    """Latent dynamics ``f(z) = inner(z) + (P z + a) * s tanh((Q z + b) / s)`` (see
    ``DynamicsConfig.bilinear``).

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
        reference_init(self.factors)

    def forward(self, z: Tensor) -> Tensor:
        left, right = self.factors(z).chunk(2, dim=-1)
        gate = torch.tanh(right * (1.0 / self.BOUND)) * self.BOUND
        return torch.addcmul(self.inner(z), left, gate)


@DYNAMICS.register("mlp")
def mlp(latent_dim: int, config: DynamicsConfig) -> nn.Module:
    """An MLP of ``config.layers`` tanh layers of ``config.units`` (one linear layer when 0),
    with the reference's initialisation; wrapped in :class:`RotationDynamics` when
    ``config.rotation > 0`` and then in :class:`BilinearDynamics` when ``config.bilinear``."""
    if config.layers == 0:
        net = nn.Sequential(nn.Linear(latent_dim, latent_dim))
    else:
        mods: list[nn.Module] = [nn.Linear(latent_dim, config.units), nn.Tanh()]
        for _ in range(config.layers - 1):
            mods += [nn.Linear(config.units, config.units), nn.Tanh()]
        mods.append(nn.Linear(config.units, latent_dim))
        net = nn.Sequential(*mods)
    reference_init(net)
    out: nn.Module = net
    if config.rotation > 0:
        out = RotationDynamics(out, latent_dim, config.rotation)
    if config.bilinear:
        out = BilinearDynamics(out, latent_dim)
    return out
