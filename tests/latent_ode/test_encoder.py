"""The ODE-RNN's update cells."""

from __future__ import annotations

import torch
from torch import nn

from latent_ode.cells import MLPGRUCell


def _cell_with_gates(bias: float) -> MLPGRUCell:
    torch.manual_seed(0)
    cell = MLPGRUCell(input_dim=4, hidden_dim=3, units=8)
    last = cell.gates[2]
    assert isinstance(last, nn.Linear)
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(bias)  # both gates saturate at sigmoid(bias)
    return cell


def test_mlp_gru_with_a_closed_update_gate_keeps_the_state() -> None:
    cell = _cell_with_gates(60.0)  # update gate 1: keep the old state
    state = torch.randn(5, 6)
    x = torch.randn(5, 4)
    torch.testing.assert_close(cell(x, state), state, rtol=0, atol=1e-12)


def test_mlp_gru_with_an_open_update_gate_takes_the_candidate() -> None:
    cell = _cell_with_gates(-60.0)  # update gate 0, reset gate 0: the candidate of x alone
    state = torch.randn(5, 6)
    x = torch.randn(5, 4)
    new = cell(x, state)
    cand_mean, cand_std = cell.candidate(torch.cat([torch.zeros_like(state), x], dim=1)).chunk(2, 1)
    torch.testing.assert_close(new, torch.cat([cand_mean, cand_std.abs()], dim=1))
    assert bool((new[:, 3:] >= 0).all())  # the std half is a standard deviation
    # The reset gate hid the old state from the candidate: another state, the same answer.
    torch.testing.assert_close(cell(x, torch.randn(5, 6)), new)
