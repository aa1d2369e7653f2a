"""One contract per registry, over every entry: encoder cells, latent dynamics, decoders.

An entry passes when the module it builds has the documented shapes, gives finite outputs,
lets gradients reach every parameter and its input, and its config round-trips; and a whole
model built with it trains a step. A new entry is covered by being registered.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from latent_ode import (
    ConfigError,
    DecoderConfig,
    DynamicsConfig,
    EncoderConfig,
    ModelConfig,
    collate,
    config_from_dict,
    config_to_dict,
)
from latent_ode.cells import CELLS, Cell
from latent_ode.decoders import DECODERS
from latent_ode.dynamics import DYNAMICS
from latent_ode.model import LatentODE
from latent_ode.registry import Registry
from pipelines.sources.spirals import spirals

B, D, L, H = 5, 3, 4, 6


def _assert_gradients_reach(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> None:
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def _trains_a_step(cfg: ModelConfig) -> None:
    """A whole model with this entry: finite loss, and one step changes every parameter group."""
    torch.manual_seed(0)
    model = LatentODE(cfg)
    batch = collate(spirals(B, n_times=12, n_total=100, seed=0))
    loss = model.loss(batch, batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    for part in (model.encoder, model.dynamics, model.decoder):
        grads = [p.grad for p in part.parameters()]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def _round_trips(config: object) -> None:
    cls = type(config)
    assert config_from_dict(cls, json.loads(json.dumps(config_to_dict(config)))) == config


@pytest.mark.parametrize("name", CELLS.names())
def test_encoder_cell_contract(name: str) -> None:
    torch.manual_seed(0)
    config = EncoderConfig(cell=name, hidden=H, units=8)
    cell = CELLS[name](2 * D, config)
    assert isinstance(cell, Cell) and cell.state_dim >= H
    x = torch.randn(B, 2 * D, requires_grad=True)
    state = torch.randn(B, cell.state_dim).abs()
    out = cell.module(x, state)
    assert out.shape == (B, cell.state_dim)
    _assert_gradients_reach(cell.module, x, out)
    _round_trips(config)
    _trains_a_step(ModelConfig(input_dim=2, latent_dim=L, encoder=config,
                               dynamics=DynamicsConfig(units=8)))


# Every dynamics entry with its options off and on (the `mlp` entry's rotation and bilinear terms).
_DYNAMICS_CASES = [(name, {}) for name in DYNAMICS.names()] + [
    ("mlp", {"rotation": 3.0}), ("mlp", {"bilinear": True}), ("mlp", {"layers": 0}),
    ("mlp", {"rotation": 3.0, "bilinear": True}),
]


@pytest.mark.parametrize(("name", "options"), _DYNAMICS_CASES,
                         ids=[f"{n}-{'-'.join(o) or 'plain'}" for n, o in _DYNAMICS_CASES])
def test_latent_dynamics_contract(name: str, options: dict) -> None:
    torch.manual_seed(0)
    config = DynamicsConfig(kind=name, units=8, **options)
    f = DYNAMICS[name](L, config)
    z = torch.randn(B, L, requires_grad=True)
    out = f(z)
    assert out.shape == (B, L)
    # The solver calls f on (N, L) states; a leading sample axis must pass through too.
    assert f(z.detach().expand(2, B, L)).shape == (2, B, L)
    _assert_gradients_reach(f, z, out)
    _round_trips(config)
    _trains_a_step(ModelConfig(input_dim=2, latent_dim=L, dynamics=config,
                               encoder=EncoderConfig(hidden=H, units=8)))


@pytest.mark.parametrize("name", DECODERS.names())
def test_decoder_contract(name: str) -> None:
    torch.manual_seed(0)
    config = DecoderConfig(kind=name)
    decoder = DECODERS[name](L, D, config)
    z = torch.randn(2, B, 7, L, requires_grad=True)  # (S, B, Q, L)
    out = decoder(z)
    assert out.shape == (2, B, 7, D)
    _assert_gradients_reach(decoder, z, out)
    _round_trips(config)
    _trains_a_step(ModelConfig(input_dim=2, latent_dim=L, decoder=config,
                               encoder=EncoderConfig(hidden=H, units=8),
                               dynamics=DynamicsConfig(units=8)))


def test_a_registered_cell_is_a_valid_config_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a cell is one function plus one entry: the config accepts its name at once and the
    model is built with it."""

    def tanh_rnn(input_dim: int, config: EncoderConfig) -> Cell:
        return Cell(nn.RNNCell(input_dim, config.hidden), config.hidden)

    with pytest.raises(ConfigError, match=r"`EncoderConfig\.cell` must be one of 'gru', 'mlp_gru'"):
        EncoderConfig(cell="tanh_rnn")
    monkeypatch.setitem(CELLS._builders, "tanh_rnn", tanh_rnn)
    model = LatentODE(ModelConfig(input_dim=2, encoder=EncoderConfig(cell="tanh_rnn", hidden=H)))
    assert isinstance(model.encoder.gru, nn.RNNCell)


def test_registry_errors() -> None:
    registry: Registry = Registry("widget")
    registry.register("a")(len)
    with pytest.raises(ValueError, match=r"widget 'a' is registered twice"):
        registry.register("a")(len)
    with pytest.raises(ConfigError, match=r"unknown widget 'b'; choose one of 'a'\."):
        registry["b"]
    assert registry["a"] is len and "a" in registry and list(registry) == ["a"]
