"""Registry of the ODE-RNN's update cells: what the encoder does at an observation.

An entry is a function ``(input_dim, config) -> Cell``; the encoder calls it with the width of
its input (values and mask, 2D) and its :class:`~latent_ode.config.EncoderConfig`, and
``EncoderConfig.cell`` names the entry. To add a cell: write the function below (or in its own
module imported here) and decorate it with ``@CELLS.register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from latent_ode.initialisation import reference_init
from latent_ode.registry import Registry

if TYPE_CHECKING:  # the config takes its valid names from CELLS, so it imports this module
    from latent_ode.config import EncoderConfig

__all__ = ["CELLS", "Cell", "CellBuilder", "MLPGRUCell"]


@dataclass(frozen=True)
class Cell:
    """An update cell and the width of the state it carries.

    Attributes:
        module: ``(x (B, input_dim), state (B, state_dim)) -> state (B, state_dim)``.
        state_dim: width of the state. Its first H coordinates evolve by the encoder's ODE
            between observations; the rest (if any) are carried unchanged.
    """

    module: nn.Module
    state_dim: int


CellBuilder = Callable[[int, "EncoderConfig"], Cell]
CELLS: Registry[CellBuilder] = Registry("encoder cell")


class MLPGRUCell(nn.Module):
    """A GRU update whose gates and candidate state are one-hidden-layer MLPs.

    The cell of the reference implementation of Rubanova et al. 2019: the state is a mean and a
    standard deviation (each H wide), both gated; the gates see both and the input. The update
    and reset gates share one hidden layer (the reference has one MLP each). An encoder pass with
    it costs about 1.7x one with ``nn.GRUCell`` on CPU.

    Args:
        input_dim: width of the input (values and mask).
        hidden_dim: H.
        units: hidden units of the gate and candidate MLPs.
    """

    def __init__(self, input_dim: int, hidden_dim: int, units: int) -> None:
        super().__init__()
        width = 2 * hidden_dim + input_dim
        self.gates = nn.Sequential(nn.Linear(width, units), nn.Tanh(),
                                   nn.Linear(units, 2 * hidden_dim), nn.Sigmoid())
        self.candidate = nn.Sequential(nn.Linear(width, units), nn.Tanh(),
                                       nn.Linear(units, 2 * hidden_dim))

    def forward(self, x: Tensor, state: Tensor) -> Tensor:
        """x (B, input_dim), state (B, 2H) = [mean, std] -> new state (B, 2H)."""
        update, reset = self.gates(torch.cat([state, x], dim=-1)).chunk(2, dim=-1)
        cand_mean, cand_std = self.candidate(
            torch.cat([state * reset.repeat(1, 2), x], dim=-1)).chunk(2, dim=-1)
        cand = torch.cat([cand_mean, cand_std.abs()], dim=-1)
        u = update.repeat(1, 2)
        return state + (1.0 - u) * (cand - state)


@CELLS.register("gru")
def gru(input_dim: int, config: EncoderConfig) -> Cell:
    """``torch.nn.GRUCell`` with PyTorch's initialisation; the state is H wide."""
    return Cell(nn.GRUCell(input_dim, config.hidden), config.hidden)


@CELLS.register("mlp_gru")
def mlp_gru(input_dim: int, config: EncoderConfig) -> Cell:
    """:class:`MLPGRUCell` with the reference's initialisation; the state is [mean, std], 2H wide
    (the std part does not evolve between observations)."""
    cell = MLPGRUCell(input_dim, config.hidden, config.units)
    reference_init(cell)
    return Cell(cell, 2 * config.hidden)
