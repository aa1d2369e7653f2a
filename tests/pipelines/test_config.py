"""Pipeline config: shipped configs load, errors name the key, params/config.json round-trip."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from latent_ode.config import ModelConfig, SolverConfig, TrainConfig
from latent_ode.errors import ConfigError
from pipelines.cli import main
from pipelines.config import (
    PipelineConfig,
    flatten_params,
    get_settings,
    load_config,
    parse_config,
    unflatten_params,
)
from pipelines.sources import get_source

CONFIGS = Path(__file__).resolve().parents[2] / "pipelines" / "configs"
TINY = CONFIGS / "periodic-tiny.toml"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def dump_toml(config: dict[str, Any]) -> str:
    """TOML text of a config dict: tables of scalars, lists, inline tables; ``None`` left out."""
    lines: list[str] = []

    def table(name: str, body: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        subs = {}
        for k, v in body.items():
            if isinstance(v, dict) and k != "options":
                subs[k] = v
            elif v is not None:
                lines.append(f"{k} = {_toml_value(v)}")
        for k, v in subs.items():
            table(f"{name}.{k}", v)

    for name, body in config.items():
        table(name, body)
    return "\n".join(lines) + "\n"


def tiny_config(**sections: dict[str, Any]) -> dict[str, Any]:
    """The tiny periodic config as a dict, with keys of ``sections`` overridden per section."""
    raw = tomllib.loads(TINY.read_text())
    for name, updates in sections.items():
        raw.setdefault(name, {}).update(updates)
    return raw


def write_config(path: Path, **sections: dict[str, Any]) -> Path:
    """Write the tiny config with overrides to ``path``."""
    path.write_text(dump_toml(tiny_config(**sections)))
    return path


@pytest.mark.parametrize("name", ["periodic", "periodic-tiny", "hopper", "physionet"])
def test_shipped_configs_validate(name: str) -> None:
    cfg = load_config(CONFIGS / f"{name}.toml")
    assert cfg.model_config_for(["a"] * (37 if name == "physionet" else 1)).input_dim >= 1
    assert isinstance(cfg.train_config(), TrainConfig)


def test_physionet_config_reads_sets_a_and_b_split_by_patient() -> None:
    cfg = load_config(CONFIGS / "physionet.toml")
    assert cfg.data.dataset == "physionet"
    assert cfg.data.normalisation == "robust"  # not the paper's min-max: docs/benchmarks.md
    assert cfg.data.split.test == pytest.approx(0.2)
    options = get_source("physionet").parse_options(cfg.data.source_options())
    assert [p.name for p in options.archive_paths()] == ["set-a.tar.gz", "set-b.tar.gz"]


@pytest.mark.parametrize(
    ("sections", "match"),
    [
        ({"dta": {"x": 1}}, r"`dta` is not a known key; remove it"),
        ({"data": {"pathh": "x.csv"}},
         r"`data\.pathh` is not a known key; remove it or check its spelling against "
         r"docs/pipelines\.md"),
        ({"evaluate": {"n_plots": 3}}, r"`evaluate\.n_plots` is not a known key"),
        ({"data": {"split": {"train": 0.5, "val": 0.2, "test": 0.2, "sed": 1}}},
         r"`data\.split\.sed` is not a known key"),
        ({"model": {"latent_size": 4}}, r"`model\.latent_size` is not a known key"),
        ({"model": {"encoder": {"hiden": 4}}},
         r"`model\.encoder`: unknown key\(s\) \['hiden'\] for EncoderConfig in `model\.encoder`"),
        ({"train": {"epochs": 4}},
         r"`train`: unknown key\(s\) \['epochs'\] for TrainConfig in `train`"),
        ({"solver": {"rtol": 2.0}}, r"`solver`: `solver\.rtol` must be in \(0, 1\); got 2\.0"),
        ({"train": {"batch_size": 0}}, r"`train\.batch_size` must be a positive integer; got 0"),
        ({"train": {"lr": "fast"}}, r"`train\.lr` must be a float; got 'fast'\."),
        ({"train": {"patience": 2.5}}, r"`train\.patience` must be an integer or None; got 2\.5"),
        ({"train": {"progress": "yes"}}, r"`train\.progress` must be true or false; got 'yes'"),
        ({"solver": {"method": "euler"}},
         r"`solver\.method` must be one of 'dopri5', 'tsit5'; got 'euler'"),
        ({"model": {"encoder": {"hidden": "x"}}},
         r"`model\.encoder\.hidden` must be an integer; got 'x'"),
        ({"model": {"encoder": {"cell": "lstm"}}},
         r"`model\.encoder\.cell` must be one of 'gru', 'mlp_gru'; got 'lstm'"),
        ({"model": {"dynamics": {"kind": "sde"}}}, r"`model\.dynamics\.kind` must be one of 'mlp'"),
        ({"model": {"decoder": {"kind": "mlp"}}}, r"`model\.decoder\.kind` must be one of 'linear'"),
        ({"model": {"dynamics": {"bilinear": 1}}},
         r"`model\.dynamics\.bilinear` must be true or false; got 1"),
        ({"model": {"latent_dim": "4"}}, r"`model\.latent_dim`: Input should be a valid integer"),
        ({"model": {"obs_std": 0.0}}, r"`model\.obs_std`: Input should be greater than 0"),
        ({"model": {"encoder_hidden": 3}},
         r"`model\.encoder_hidden` and `model\.encoder\.hidden` both set the same value"),
        ({"data": {"normalisation": "zscore"}},
         r"`data\.normalisation`: Input should be 'standard', 'minmax', 'robust' or 'none'; got 'zscore'\."),
        ({"data": {"split": {"train": 0.8, "val": 0.2, "test": 0.2}}},
         r"`data\.split`: train \+ val \+ test must be 1; got 0\.8 \+ 0\.2 \+ 0\.2 = 1\.2"),
        ({"data": {"path": "x.csv"}}, r"give exactly one of `path`.*got path='x\.csv', "
                                      r"dataset='periodic'"),
        ({"data": {"n_series": -3}}, r"`data\.n_series`: Input should be greater than 0; got -3\."),
        ({"register": {"model_name": ""}}, r"`register\.model_name`: String should have at least"),
        ({"model": {"solver": {"rtol": 0.1}}}, r"put the solver settings in the \[solver\] section"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, sections: dict, match: str) -> None:
    path = write_config(tmp_path / "bad.toml", **sections)
    with pytest.raises(ConfigError, match=r"invalid pipeline config '.*bad\.toml': .*" + match):
        load_config(path)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file '.*nope\.toml' does not exist; pass an "):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[data\nx = 1\n")
    with pytest.raises(ConfigError, match=r"config file '.*bad\.toml' is not valid TOML"):
        load_config(bad)


def test_input_dim_comes_from_the_data_and_a_mismatch_is_named() -> None:
    cfg = parse_config(tiny_config())
    assert cfg.model.input_dim is None
    assert cfg.model_config_for(["a", "b"]).input_dim == 2
    fixed = parse_config(tiny_config(model={"input_dim": 3}))
    with pytest.raises(ConfigError, match=r"`model\.input_dim` is 3 but the data have 2 channels"):
        fixed.model_config_for(["a", "b"])


def test_library_sections_are_filled_with_their_defaults() -> None:
    cfg = parse_config(tiny_config())
    assert cfg.train.lr_decay == TrainConfig().lr_decay
    assert cfg.model.obs_std == ModelConfig(input_dim=1).obs_std
    assert cfg.model.encoder.max_step == ModelConfig(input_dim=1).encoder.max_step
    assert cfg.model_config_for(["x"]).solver.rtol == pytest.approx(1e-2)
    assert cfg.model_config_for(["x"]).encoder.hidden == 8


LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy" / "configs"


@pytest.mark.parametrize("name", ["periodic", "periodic-tiny", "hopper", "physionet"])
def test_configs_with_flat_model_keys_load_as_the_nested_ones(name: str) -> None:
    """Users' TOML files from before the nesting (``encoder_hidden = 30`` in [model]) still load,
    into the same config as the shipped nested file."""
    legacy_text = (LEGACY / f"{name}.toml").read_text()
    assert "encoder_hidden" in legacy_text and "[model.encoder]" not in legacy_text
    legacy = load_config(LEGACY / f"{name}.toml")
    shipped = load_config(CONFIGS / f"{name}.toml")
    if name == "physionet":  # the shipped file has since turned the baseline anchor on,
        # normalises robustly, fits the blend towards the baselines after training, trains
        # the forecast on 70% of the batches and has a narrower noise in the objective
        assert shipped.model.decoder.anchor and not legacy.model.decoder.anchor
        assert (shipped.data.normalisation, legacy.data.normalisation) == ("robust", "minmax")
        assert shipped.train.calibrate_blend and not legacy.train.calibrate_blend
        assert (shipped.train.extrap_prob, legacy.train.extrap_prob) == (0.7, 0.5)
        assert (shipped.model.obs_std, legacy.model.obs_std) == (0.003, 0.01)
        shipped = shipped.model_copy(update={
            "model": shipped.model.model_copy(update={"decoder": legacy.model.decoder,
                                                      "obs_std": legacy.model.obs_std}),
            "data": shipped.data.model_copy(update={"normalisation": "minmax"}),
            "train": dataclasses.replace(shipped.train, calibrate_blend=False, extrap_prob=0.5)})
    assert legacy == shipped
    channels = ["a"] * (37 if name == "physionet" else 1)
    flat = tomllib.loads(legacy_text)["model"]
    built = legacy.model_config_for(channels)
    assert (built.encoder.hidden, built.encoder.units) == (flat["encoder_hidden"], flat["encoder_units"])
    assert built.dynamics.units == flat["dynamics_units"]
    assert built.dynamics.rotation == flat.get("dynamics_rotation", 0.0)
    # Saved (params, config.json) in the nested form from then on.
    assert "encoder_hidden" not in legacy.to_dict()["model"]
    assert legacy.to_dict()["model"]["encoder"]["hidden"] == flat["encoder_hidden"]


def test_sections_hold_the_library_objects_built_once() -> None:
    cfg = parse_config(tiny_config(train={"lr": 1}))
    assert isinstance(cfg.train, TrainConfig)
    assert cfg.train_config() is cfg.train
    assert isinstance(cfg.train.lr, float)  # a TOML integer for a float key is a float
    assert isinstance(cfg.solver, SolverConfig)
    assert cfg.model_config_for(["x"]).solver is cfg.solver


def test_config_params_config_json_round_trip() -> None:
    cfg = parse_config(tiny_config(data={"channels": ["x"], "time_unit": "minutes"},
                                   mlflow={"experiment": "123"}))
    as_dict = cfg.to_dict()
    params = flatten_params(as_dict)
    assert params["data.split.seed"] == "0"
    assert params["data.options.n_times"] == "30"
    assert params["data.channels"] == '["x"]'
    assert params["data.path"] == "null"
    assert params["data.time_unit"] == "minutes"  # plain text stays readable
    assert params["mlflow.experiment"] == '"123"'  # a string that looks like a number is quoted
    assert all(isinstance(v, str) for v in params.values())
    back = unflatten_params(params)
    assert back == json.loads(json.dumps(as_dict))
    assert parse_config(back) == cfg
    assert parse_config(json.loads(json.dumps(as_dict))) == cfg


def test_empty_dicts_survive_flattening() -> None:
    params = flatten_params({"a": {}, "b": {"c": 1}})
    assert params == {"a": "{}", "b.c": "1"}
    assert unflatten_params(params) == {"a": {}, "b": {"c": 1}}


def test_device_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    get_settings.cache_clear()
    monkeypatch.setenv("LATENT_ODE_DEVICE", "cuda:1")
    try:
        assert get_settings().device == "cuda:1"
        get_settings.cache_clear()
        monkeypatch.setenv("LATENT_ODE_DEVICE", "gpu")
        with pytest.raises(ValidationError, match="device"):
            get_settings()
    finally:
        get_settings.cache_clear()


def test_register_key_is_kept_in_the_dict() -> None:
    cfg = parse_config(tiny_config(register={"metric": "val_mse"}))
    assert cfg.registry.metric == "val_mse"
    assert cfg.to_dict()["register"]["metric"] == "val_mse"
    assert isinstance(cfg, PipelineConfig)


def test_a_wrongly_typed_library_key_stops_the_cli_with_its_name(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The issue's example: `lr = "fast"` names `train.lr` and the type, through the usual
    one-line error and exit status 2 (it used to end in a comparison TypeError)."""
    path = write_config(tmp_path / "c.toml", train={"lr": "fast"})
    assert main(["pipeline", "run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "`train.lr` must be a float; got 'fast'." in err
