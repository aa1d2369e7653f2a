"""Checkpoint loading checks config.json's sizes against the weights file before allocating."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch

import latent_ode.checkpoint as checkpoint
import latent_ode.forecaster as forecaster_module
from latent_ode import CheckpointError, Forecaster


def _saved(forecaster: Forecaster, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    directory = forecaster.save(tmp_path / "m")
    return directory, json.loads((directory / "config.json").read_text())


class _BuildSpy:
    """Wraps LatentODE in latent_ode.forecaster and records the default device of each build."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = forecaster_module.LatentODE
        self.devices: list[str] = []
        monkeypatch.setattr(forecaster_module, "LatentODE", self)

    def __call__(self, config: Any) -> Any:
        device = torch.get_default_device().type
        self.devices.append(device)
        if device != "meta" and config.dynamics.units > 1000:
            raise AssertionError("the crafted network would have been allocated")
        return self.real(config)


def test_a_crafted_config_is_refused_before_the_network_is_allocated(
    tmp_path: Path, forecaster: Forecaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, cfg = _saved(forecaster, tmp_path)
    cfg["model"]["dynamics"]["units"] = 100_000  # 10^10 weights, 40 GB in float32
    (directory / "config.json").write_text(json.dumps(cfg))
    spy = _BuildSpy(monkeypatch)
    # The MLP's first layer sits under dynamics.[inner.][mlp.] depending on the fixture's kind.
    with pytest.raises(CheckpointError, match=(
        r"wrong shape \['dynamics\.[a-z.]*0\.weight \(config\.json implies \[100000, 4\], the "
        r"file holds \[16, 4\]\)', 'dynamics\.[a-z.]*0\.bias \(config\.json implies \[100000\], "
        r"the file holds \[16\]\)'"
    )):
        Forecaster.load(directory)
    assert spy.devices == ["meta"]


def test_every_mismatch_is_named_with_both_shapes(tmp_path: Path, forecaster: Forecaster) -> None:
    directory, cfg = _saved(forecaster, tmp_path)
    cfg["model"]["latent_dim"] = 5
    (directory / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as caught:
        Forecaster.load(directory)
    message = str(caught.value)
    assert message.startswith(
        f"{directory / 'weights.safetensors'} does not match the model built from its "
        "config.json: missing [], unexpected [], wrong shape ["
    )
    assert "decoder.weight (config.json implies [1, 5], the file holds [1, 4])" in message
    assert message.endswith(
        "]; the config's sizes must be the ones the weights were trained with."
    )


def test_a_model_over_the_parameter_bound_is_refused(
    tmp_path: Path, forecaster: Forecaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, _ = _saved(forecaster, tmp_path)
    total = sum(p.numel() for p in forecaster.model.state_dict().values())
    monkeypatch.setattr(checkpoint, "MAX_PARAMETERS", total - 1)
    with pytest.raises(CheckpointError, match=re.escape(
        f"config.json in {str(directory)!r} describes a model of {total} parameters; at most "
        f"{total - 1} are loaded (latent_ode.checkpoint.MAX_PARAMETERS)."
    )):
        Forecaster.load(directory)
    monkeypatch.setattr(checkpoint, "MAX_PARAMETERS", total)
    loaded = Forecaster.load(directory)
    for key, value in forecaster.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value, rtol=0, atol=0)


def test_header_check_errors(tmp_path: Path, forecaster: Forecaster) -> None:
    directory, _ = _saved(forecaster, tmp_path)
    shapes = {k: tuple(v.shape) for k, v in forecaster.model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"no weights\.safetensors in"):
        checkpoint.check_weight_shapes(tmp_path, shapes)
    (directory / "weights.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(CheckpointError, match=r"cannot read .*weights\.safetensors: "):
        checkpoint.check_weight_shapes(directory, shapes)
