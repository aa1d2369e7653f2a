"""The pipeline configuration: one TOML file, validated when it is read.

A config file has the sections ``[data]``, ``[model]``, ``[solver]``, ``[train]``,
``[evaluate]``, ``[register]`` and ``[mlflow]`` (see ``docs/pipelines.md`` for every key).
The pipeline-level sections are pydantic models that reject unknown keys; ``[model]``,
``[solver]`` and ``[train]`` are handed to the library's own frozen dataclasses through
:func:`latent_ode.config.config_from_dict`, which names any bad key itself.

Relative paths in a config (``data.path``, ``data.archives``) are resolved against the current
working directory when the config is used, not against the config file's folder.

The same nested dict (:meth:`PipelineConfig.to_dict`) is logged to MLflow as flattened params
(:func:`flatten_params`) and saved as ``config.json``; :func:`unflatten_params` inverts the
flattening, so params -> dict -> :class:`PipelineConfig` round-trips.
"""

from __future__ import annotations

import json
import math
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from formats.params import flatten
from formats.validation_errors import format_validation_errors
from latent_ode.device import DEVICE_PATTERN
from latent_ode.errors import ConfigError

__all__ = [
    "DataSection",
    "EvaluateSection",
    "GENERATED_DATASETS",
    "MlflowSection",
    "PipelineConfig",
    "PipelineSettings",
    "RegisterSection",
    "SplitSection",
    "default_physionet_archives",
    "flatten_params",
    "get_settings",
    "load_config",
    "parse_config",
    "unflatten_params",
]

GENERATED_DATASETS = ("periodic", "spirals", "hopper", "physionet")
"""Values of ``data.dataset``: data made (or imported) by the pipeline instead of read from a file."""

_REPO_ROOT = Path(__file__).resolve().parents[1]


def default_physionet_archives() -> list[Path]:
    """The PhysioNet 2012 archives (sets A and B) in ``../shared/data/physionet2012/`` of the repo."""
    root = _REPO_ROOT.parent / "shared" / "data" / "physionet2012"
    return [root / "set-a.tar.gz", root / "set-b.tar.gz"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitSection(_Section):
    """Fractions of series (not of rows) in each split, and the seed of the shuffle."""

    train: float = Field(0.8, gt=0.0, lt=1.0)
    val: float = Field(0.1, gt=0.0, lt=1.0)
    test: float = Field(0.1, gt=0.0, lt=1.0)
    seed: int = 0

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitSection:
        total = self.train + self.val + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(
                f"train + val + test must be 1; got {self.train} + {self.val} + {self.test} = "
                f"{total:g}. Change the fractions so that they add up to 1."
            )
        return self


class DataSection(_Section):
    """Where the series come from and how they are split and normalised.

    Exactly one of ``path`` (a long-format CSV/Parquet file) and ``dataset`` (a generated or
    imported data set) is given.
    """

    path: str | None = None
    dataset: Literal["periodic", "spirals", "hopper", "physionet"] | None = None
    n_series: int = Field(1000, gt=0)
    seed: int = 0
    options: dict[str, int | float | str | bool] = Field(default_factory=dict)
    archives: list[str] | None = None
    limit: int | None = Field(None, gt=0)
    time_unit: str = "hours"
    channels: list[str] | None = None
    normalisation: Literal["standard", "minmax", "none"] = "standard"
    split: SplitSection = Field(default_factory=SplitSection)

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        if (self.path is None) == (self.dataset is None):
            raise ValueError(
                "give exactly one of `path` (a long-format CSV/Parquet file) and `dataset` "
                f"(one of {', '.join(GENERATED_DATASETS)}); got path={self.path!r}, "
                f"dataset={self.dataset!r}."
            )
        if (self.archives is not None or self.limit is not None) and self.dataset != "physionet":
            raise ValueError("`archives` and `limit` only apply to dataset = \"physionet\".")
        if self.options and self.dataset not in ("periodic", "spirals", "hopper"):
            raise ValueError("`options` only apply to a generated dataset (periodic, spirals, hopper).")
        if self.channels is not None and len(set(self.channels)) != len(self.channels):
            raise ValueError(f"`channels` must not repeat a name; got {self.channels}.")
        return self

    def archive_paths(self) -> list[Path]:
        """The PhysioNet archives to read (the config's, else the shared sets A and B)."""
        if self.archives is None:
            return default_physionet_archives()
        return [Path(a) for a in self.archives]


class EvaluateSection(_Section):
    """Test-set evaluation: latent samples per series, plotted series and the sampling seed."""

    num_samples: int = Field(16, gt=0)
    num_plots: int = Field(4, ge=0)
    seed: int = 0


class RegisterSection(_Section):
    """Registry: model name and the metric (lower is better) that decides the champion."""

    model_name: str = Field("latent-ode", min_length=1)
    metric: str = Field("val_loss", min_length=1)
    alias: str = Field("champion", min_length=1)


class MlflowSection(_Section):
    """MLflow experiment that holds the runs (the tracking URI comes from MLFLOW_TRACKING_URI)."""

    experiment: str = Field("latent-ode", min_length=1)


def _validated_section(name: str, value: dict[str, Any]) -> dict[str, Any]:
    """Check one of ``[model]``, ``[solver]``, ``[train]`` with the library and fill defaults."""
    from latent_ode.config import (
        ModelConfig,
        SolverConfig,
        TrainConfig,
        config_from_dict,
        config_to_dict,
    )

    if name == "model":
        if "solver" in value:
            raise ValueError("put the solver settings in the [solver] section, not in [model]")
        # input_dim is D, which the data decide; a placeholder lets the other keys be checked now.
        given_dim = "input_dim" in value
        built = config_from_dict(ModelConfig, {"input_dim": 1, **value})
        out = config_to_dict(built)
        out.pop("solver")
        if not given_dim:
            out.pop("input_dim")
        return out
    klass = SolverConfig if name == "solver" else TrainConfig
    return config_to_dict(config_from_dict(klass, value))


class PipelineConfig(_Section):
    """A whole pipeline configuration (what one TOML file holds).

    ``model``, ``solver`` and ``train`` are kept as plain nested dicts with every default filled
    in by the library (so that they log completely); :meth:`model_config_for` and
    :meth:`train_config` build the frozen library objects from them. ``model.input_dim`` may be
    left out: it is the number of channels of the data.
    """

    data: DataSection
    model: dict[str, Any] = Field(default_factory=dict)
    solver: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    # ``register`` would shadow pydantic's BaseModel.register (ABCMeta); the TOML key stays.
    registry: RegisterSection = Field(default_factory=RegisterSection, alias="register")
    mlflow: MlflowSection = Field(default_factory=MlflowSection)

    @field_validator("model", "solver", "train", mode="after")
    @classmethod
    def _library_section(cls, value: dict[str, Any], info: Any) -> dict[str, Any]:
        try:
            return _validated_section(info.field_name, value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    def model_config_for(self, channels: list[str]) -> Any:
        """The library's ``ModelConfig`` (with its ``SolverConfig``) for data with ``channels``.

        Raises:
            ConfigError: ``model.input_dim`` is set and differs from the number of channels.
        """
        from latent_ode.config import ModelConfig, config_from_dict

        d = len(channels)
        given = self.model.get("input_dim")
        if given is not None and given != d:
            raise ConfigError(
                f"`model.input_dim` is {given} but the data have {d} channels {channels}; remove "
                "`input_dim` from [model] (it defaults to the number of channels) or set it to "
                f"{d}."
            )
        return config_from_dict(ModelConfig, {**self.model, "input_dim": d, "solver": self.solver})

    def train_config(self) -> Any:
        """The library's ``TrainConfig``."""
        from latent_ode.config import TrainConfig, config_from_dict

        return config_from_dict(TrainConfig, self.train)

    def to_dict(self) -> dict[str, Any]:
        """The nested, JSON-able dict that is logged as params and saved as ``config.json``."""
        return self.model_dump(mode="json", by_alias=True)


class PipelineSettings(BaseSettings):
    """Machine settings of the pipelines (not hyperparameters), from ``LATENT_ODE_*`` variables.

    Attributes:
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``;
            ``LATENT_ODE_DEVICE``. The command line's ``--device`` overrides it.
    """

    model_config = SettingsConfigDict(env_prefix="LATENT_ODE_", extra="ignore")

    device: str = Field("auto", pattern=DEVICE_PATTERN.pattern)


@lru_cache(maxsize=1)
def get_settings() -> PipelineSettings:
    """The pipeline settings (cached; tests call ``get_settings.cache_clear()`` to re-read)."""
    return PipelineSettings()


def _format_validation_error(exc: ValidationError, source: str) -> str:
    detail = format_validation_errors(
        exc.errors(), noun="key", unknown_hint=" or check its spelling against docs/pipelines.md",
        limit=None,
    )
    return f"invalid pipeline config {source}: {detail}"


def parse_config(raw: dict[str, Any], *, source: str = "<dict>") -> PipelineConfig:
    """Validate a nested config dict.

    Args:
        raw: the parsed TOML (or the dict from ``config.json`` / :func:`unflatten_params`).
        source: where it came from, for the error message.

    Raises:
        ConfigError: an unknown key, a missing key or a bad value, each named with its section.
    """
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline config TOML file.

    Raises:
        ConfigError: the file is missing, is not valid TOML, or fails validation.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} does not exist; pass an existing TOML file, e.g. "
            "pipelines/configs/periodic.toml."
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}.") from None
    return parse_config(raw, source=repr(str(path)))


def _encode_value(value: Any) -> str:
    """A param string that :func:`_decode_value` turns back into ``value``."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value  # plain text stays readable in the MLflow UI
        return json.dumps(value)  # "1", "true", "null" would otherwise decode to non-strings
    return json.dumps(value)


def _decode_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def flatten_params(config: dict[str, Any]) -> dict[str, str]:
    """Flatten a nested config dict into MLflow params: ``{"data.split.seed": "0", ...}``.

    The keys are :func:`formats.params.flatten`'s. Lists, ``None`` and empty dicts are
    JSON-encoded leaves; strings are kept as they are unless they would read back as another
    JSON type.
    """
    return {name: _encode_value(value) for name, value in flatten(config).items()}


def unflatten_params(params: dict[str, str]) -> dict[str, Any]:
    """Inverse of :func:`flatten_params`."""
    out: dict[str, Any] = {}
    for name, text in sorted(params.items()):
        node = out
        *parents, leaf = name.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = _decode_value(text)
    return out
