"""Config objects: every field checked against its annotation, keys named in full, exact
round-trips, and configs and checkpoints in the flat format before the nesting still load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latent_ode import (
    ConfigError,
    DecoderConfig,
    DynamicsConfig,
    EncoderConfig,
    Forecaster,
    ModelConfig,
    Series,
    SolverConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
)
from latent_ode.config import nest_flat_model_keys

LEGACY_CHECKPOINT = Path(__file__).resolve().parents[1] / "fixtures" / "legacy" / "checkpoint"


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (TrainConfig, {"lr": "fast"}, r"`TrainConfig\.lr` must be a float; got 'fast'\."),
        (TrainConfig, {"lr": True}, r"`TrainConfig\.lr` must be a float; got True"),
        (TrainConfig, {"batch_size": 2.5}, r"`TrainConfig\.batch_size` must be an integer; got 2\.5"),
        (TrainConfig, {"batch_size": True}, r"`TrainConfig\.batch_size` must be an integer; got True"),
        (TrainConfig, {"progress": 1}, r"`TrainConfig\.progress` must be true or false; got 1"),
        (TrainConfig, {"max_steps": "10"},
         r"`TrainConfig\.max_steps` must be an integer or None; got '10'"),
        (TrainConfig, {"task": "forecast"}, r"`TrainConfig\.task` must be one of 'interpolation', "
                                            r"'extrapolation', 'both'; got 'forecast'"),
        (SolverConfig, {"method": 5}, r"`SolverConfig\.method` must be one of 'dopri5', 'tsit5'"),
        (EncoderConfig, {"cell": "lstm"}, r"`EncoderConfig\.cell` must be one of 'gru', 'mlp_gru'; "
                                          r"got 'lstm'"),
        (EncoderConfig, {"max_step": "0.1"}, r"`EncoderConfig\.max_step` must be a float; got '0\.1'"),
        (DynamicsConfig, {"kind": "ode"}, r"`DynamicsConfig\.kind` must be one of 'mlp'; got 'ode'"),
        (DynamicsConfig, {"layers": -1}, r"`DynamicsConfig\.layers` must be a non-negative integer"),
        (DecoderConfig, {"kind": None}, r"`DecoderConfig\.kind` must be a string; got None"),
        (ModelConfig, {"input_dim": 1, "encoder": {"hidden": 3}},
         r"`ModelConfig\.encoder` must be an EncoderConfig; got \{'hidden': 3\}"),
        (ModelConfig, {"input_dim": 0}, r"`ModelConfig\.input_dim` must be a positive integer; got 0"),
    ],
)
def test_every_field_is_checked_against_its_annotation(cls: type, kwargs: dict[str, Any],
                                                       match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("cls", "key", "data", "match"),
    [
        (TrainConfig, "train", {"lr": "fast"}, r"^`train\.lr` must be a float; got 'fast'\.$"),
        (TrainConfig, "train", {"lr": 0.001, "lr_min": 0.01}, r"^`train\.lr_min` must be in \(0, lr\]"),
        (TrainConfig, "train", {"balance_channels": 2.0},
         r"^`train\.balance_channels` must be in \[0, 1\]; got 2\.0\.$"),
        (ModelConfig, "model", {"input_dim": 1, "encoder": {"hidden": "x"}},
         r"^`model\.encoder\.hidden` must be an integer; got 'x'\.$"),
        (ModelConfig, "model", {"input_dim": 1, "solver": {"rtol": 2.0}},
         r"^`model\.solver\.rtol` must be in \(0, 1\); got 2\.0\.$"),
        (ModelConfig, "model", {"input_dim": 1, "dynamics": 3},
         r"^`model\.dynamics` must be a table of DynamicsConfig keys; got 3\.$"),
        (ModelConfig, "model", {"latent_dim": 3}, r"^missing key `model\.input_dim`; add it\.$"),
        (ModelConfig, "model", {"input_dim": 1, "decoder": {"knd": "linear"}},
         r"^unknown key\(s\) \['knd'\] for DecoderConfig in `model\.decoder`; "
         r"valid keys are \['anchor', 'kind'\]"),
        (ModelConfig, None, {"input_dim": 1, "latent_dim": 0},
         r"^`ModelConfig\.latent_dim` must be a positive integer; got 0\.$"),
    ],
)
def test_config_from_dict_names_the_full_key(cls: type, key: str | None, data: dict[str, Any],
                                             match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        config_from_dict(cls, data, key=key)


def test_integers_for_float_fields_are_stored_as_floats() -> None:
    cfg = TrainConfig(lr=1, grad_clip=5)
    assert cfg == TrainConfig(lr=1.0, grad_clip=5.0)
    assert isinstance(cfg.lr, float) and isinstance(cfg.grad_clip, float)
    assert config_to_dict(cfg)["lr"] == 1.0 and isinstance(config_to_dict(cfg)["lr"], float)


def _non_default_model() -> ModelConfig:
    return ModelConfig(
        input_dim=3, latent_dim=6, obs_std=0.05,
        encoder=EncoderConfig(cell="mlp_gru", hidden=7, units=9, max_step=0.1),
        dynamics=DynamicsConfig(units=11, layers=1, rotation=2.5, bilinear=True),
        decoder=DecoderConfig(kind="linear"),
        solver=SolverConfig(method="tsit5", rtol=1e-4, gradient="adjoint", adjoint_grid="warped"),
    )


def test_config_dict_round_trips_exactly() -> None:
    cfg = _non_default_model()
    as_dict = config_to_dict(cfg)
    assert as_dict["encoder"] == {"cell": "mlp_gru", "hidden": 7, "units": 9, "max_step": 0.1}
    back = config_from_dict(ModelConfig, json.loads(json.dumps(as_dict)))
    assert back == cfg
    assert config_to_dict(back) == as_dict
    train = TrainConfig(max_steps=3, ema_decay=0.9, task="extrapolation")
    assert config_from_dict(TrainConfig, json.loads(json.dumps(config_to_dict(train)))) == train


def test_flat_model_keys_are_nested() -> None:
    flat = {"input_dim": 3, "latent_dim": 6, "obs_std": 0.05, "encoder_cell": "mlp_gru",
            "encoder_hidden": 7, "encoder_units": 9, "encoder_max_step": 0.1, "dynamics_units": 11,
            "dynamics_layers": 1, "dynamics_rotation": 2.5, "dynamics_bilinear": True,
            "solver": config_to_dict(_non_default_model().solver)}
    assert config_from_dict(ModelConfig, flat) == _non_default_model()
    nested = config_to_dict(_non_default_model())
    assert nest_flat_model_keys(nested) == nested
    with pytest.raises(ConfigError, match=r"`model\.encoder_units` and `model\.encoder\.units` both "
                                          r"set the same value; keep only `model\.encoder\.units`"):
        config_from_dict(ModelConfig, {"input_dim": 1, "encoder_units": 4, "encoder": {"units": 5}},
                         key="model")


def test_checkpoint_saved_in_the_flat_format_loads_and_answers_as_then(tmp_path: Path) -> None:
    """A checkpoint written before the nesting (flat model keys) loads into the nested config,
    answers exactly as it did when it was saved, and is saved again in the nested format."""
    saved = json.loads((LEGACY_CHECKPOINT / "config.json").read_text())
    assert "encoder_hidden" in saved["model"] and "encoder" not in saved["model"]
    fc = Forecaster.load(LEGACY_CHECKPOINT)
    cfg = fc.model_config
    assert cfg.encoder == EncoderConfig(cell="mlp_gru", hidden=8, units=16, max_step=0.05)
    assert cfg.dynamics == DynamicsConfig(units=16, layers=1, rotation=3.0, bilinear=True)
    assert (cfg.obs_std, cfg.solver.rtol) == (0.02, 0.01)

    expected = json.loads((LEGACY_CHECKPOINT / "expected.json").read_text())
    series = Series(times=np.array(expected["series"]["times"]),
                    values=np.array(expected["series"]["values"]))
    out = fc.predict([series], [np.array(expected["query_times"])],
                     num_samples=expected["num_samples"], seed=expected["seed"])[0]
    np.testing.assert_allclose(out.mean, expected["mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.std, expected["std"], rtol=1e-5, atol=1e-6)

    fc.save(tmp_path / "again")
    resaved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert resaved["model"] == config_to_dict(cfg)
    assert "encoder_hidden" not in resaved["model"]
    assert Forecaster.load(tmp_path / "again").model_config == cfg

