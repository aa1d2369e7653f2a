"""The pipeline configuration: one TOML file, validated when it is read.

A config file has the sections ``[data]``, ``[model]``, ``[solver]``, ``[train]``,
``[evaluate]``, ``[register]`` and ``[mlflow]`` (see ``docs/pipelines.md`` for every key).
The sections are pydantic models that reject unknown keys. ``[solver]``, ``[train]`` and the
tables of ``[model]`` (``encoder``, ``dynamics``, ``decoder``) are built once, when the file is
read, into the library's own frozen dataclasses by :func:`latent_ode.config.config_from_dict`,
which names any bad key in full (``train.lr``, ``model.encoder.hidden``) with the type it
expects. ``[model]`` also accepts the flat keys of older files (``encoder_hidden = 20``).

Relative paths in a config (``data.path``, ``data.archives``) are resolved against the current
working directory when the config is used, not against the config file's folder.

The same nested dict (:meth:`PipelineConfig.to_dict`) is logged to MLflow as flattened params
(:func:`flatten_params`) and saved as ``config.json``; :func:`unflatten_params` inverts the
flattening, so params -> dict -> :class:`PipelineConfig` round-trips.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from formats.params import flatten
from formats.validation_errors import format_validation_errors
from latent_ode.config import (
    DecoderConfig,
    DynamicsConfig,
    EncoderConfig,
    ModelConfig,
    SolverConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    nest_flat_model_keys,
)
from latent_ode.device import DEVICE_PATTERN
from latent_ode.errors import ConfigError
from pipelines.sources import SOURCES, get_source

__all__ = [
    "DataSection",
    "EvaluateSection",
    "MlflowSection",
    "ModelSection",
    "PipelineConfig",
    "PipelineSettings",
    "RegisterSection",
    "SplitSection",
    "flatten_params",
    "get_settings",
    "load_config",
    "parse_config",
    "read_toml",
    "unflatten_params",
]

C = TypeVar("C")

# Source options that files write in [data] itself rather than in [data] options (PhysioNet's
# `archives` and `limit` predate the options table); they go to the sources that declare them.
DATA_LEVEL_OPTIONS = ("archives", "limit")


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

    Exactly one of ``path`` (a long-format CSV/Parquet file) and ``dataset`` (the name of a
    registered source, :mod:`pipelines.sources.registry`) is given. ``options`` are the source's
    own options, checked against its options model; ``archives`` and ``limit`` are options too,
    written in ``[data]`` itself, of the sources that take them (PhysioNet).
    """

    path: str | None = None
    dataset: str | None = None
    n_series: int = Field(1000, gt=0)
    seed: int = 0
    options: dict[str, int | float | str | bool] = Field(default_factory=dict)
    archives: list[str] | None = None
    limit: int | None = Field(None, gt=0)
    time_unit: str = "hours"
    channels: list[str] | None = None
    normalisation: Literal["standard", "minmax", "robust", "none"] = "standard"
    split: SplitSection = Field(default_factory=SplitSection)

    @field_validator("dataset")
    @classmethod
    def _registered(cls, value: str | None) -> str | None:
        if value is not None and value not in SOURCES:
            raise ValueError(f"unknown data source; choose one of {', '.join(SOURCES)}")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        if (self.path is None) == (self.dataset is None):
            raise ValueError(
                "give exactly one of `path` (a long-format CSV/Parquet file) and `dataset` "
                f"(one of {', '.join(SOURCES)}); got path={self.path!r}, "
                f"dataset={self.dataset!r}."
            )
        for key in DATA_LEVEL_OPTIONS:
            if getattr(self, key) is None:
                continue
            takers = [s.name for s in SOURCES.values() if key in s.options_model.model_fields]
            if self.dataset not in takers:
                raise ValueError(
                    f"`{key}` only applies to dataset = {' or '.join(map(repr, takers))}; got "
                    f"dataset={self.dataset!r}."
                )
            if key in self.options:
                raise ValueError(f"`{key}` is given twice, in [data] and in `options`; keep one.")
        if self.dataset is None:
            if self.options:
                raise ValueError("`options` only apply to a `dataset`, not to a `path`.")
        else:
            try:
                get_source(self.dataset).parse_options(self.source_options())
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        if self.channels is not None and len(set(self.channels)) != len(self.channels):
            raise ValueError(f"`channels` must not repeat a name; got {self.channels}.")
        return self

    def source_options(self) -> dict[str, Any]:
        """The options of the ``dataset``'s source as written: ``options``, ``archives``, ``limit``."""
        folded = {key: getattr(self, key) for key in DATA_LEVEL_OPTIONS}
        return {**self.options, **{k: v for k, v in folded.items() if v is not None}}


class EvaluateSection(_Section):
    """Test-set evaluation: latent samples per series, plotted series, the sampling seed, and
    the rolling-origin backtest of the test split (``backtest_cuts`` origins per series, 0: no
    backtest; ``backtest_horizon`` in the data's time unit, unset: every value after the cut)."""

    num_samples: int = Field(16, gt=0)
    num_plots: int = Field(4, ge=0)
    seed: int = 0
    backtest_cuts: int = Field(3, ge=0)
    backtest_horizon: float | None = Field(None, gt=0, allow_inf_nan=False)


class RegisterSection(_Section):
    """Registry: model name, the metric (lower is better) that decides the champion, and the
    skill gate: with ``require_skill`` a version whose validation skill (``val/interp/skill``,
    ``val/forecast/skill``) is negative or unknown never takes the alias unless forced."""

    model_name: str = Field("latent-ode", min_length=1)
    metric: str = Field("val_loss", min_length=1)
    alias: str = Field("champion", min_length=1)
    require_skill: bool = True


class MlflowSection(_Section):
    """MLflow experiment that holds the runs (the tracking URI comes from MLFLOW_TRACKING_URI)."""

    experiment: str = Field("latent-ode", min_length=1)


def _library_section(cls: type[C], key: str) -> Any:
    """The annotation of a section that is one of the library's config dataclasses.

    pydantic hands the TOML table to :func:`latent_ode.config.config_from_dict`, which checks
    every key once and names it in full (``train.lr``); the section then holds the frozen
    dataclass itself, and dumps back to the same nested dict.
    """

    def build(value: Any) -> C:
        if isinstance(value, cls):
            return value
        return config_from_dict(cls, value, key=key)  # ConfigError is a ValueError for pydantic

    return Annotated[cls, PlainValidator(build), PlainSerializer(config_to_dict, return_type=dict)]


EncoderSection = _library_section(EncoderConfig, "model.encoder")
DynamicsSection = _library_section(DynamicsConfig, "model.dynamics")
DecoderSection = _library_section(DecoderConfig, "model.decoder")
SolverSection = _library_section(SolverConfig, "solver")
TrainSection = _library_section(TrainConfig, "train")

# The scalar keys of [model] take their defaults from the library, so the two cannot drift.
_MODEL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}


class ModelSection(_Section):
    """``[model]``: the library's :class:`~latent_ode.config.ModelConfig` but for the solver
    (its own ``[solver]`` section) and with ``input_dim`` optional: it is the number of channels
    of the data unless given.

    The flat keys of configs written before the nesting (``encoder_hidden = 20``) are read as
    their nested spelling (``[model.encoder] hidden = 20``).
    """

    input_dim: int | None = Field(None, gt=0, strict=True)
    latent_dim: int = Field(_MODEL_DEFAULTS["latent_dim"], gt=0, strict=True)
    obs_std: float = Field(_MODEL_DEFAULTS["obs_std"], gt=0.0, strict=True)
    learn_obs_std: bool = Field(_MODEL_DEFAULTS["learn_obs_std"], strict=True)
    obs_std_min: float = Field(_MODEL_DEFAULTS["obs_std_min"], gt=0.0, strict=True)
    encoder: EncoderSection = Field(default_factory=EncoderConfig)
    dynamics: DynamicsSection = Field(default_factory=DynamicsConfig)
    decoder: DecoderSection = Field(default_factory=DecoderConfig)

    @model_validator(mode="before")
    @classmethod
    def _nest_flat_keys(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        if "solver" in value:
            raise ValueError("put the solver settings in the [solver] section, not in [model]")
        return nest_flat_model_keys(value, key="model")


class PipelineConfig(_Section):
    """A whole pipeline configuration (what one TOML file holds).

    ``solver`` and ``train`` hold the library's frozen config objects, built once when the file
    is read; :meth:`model_config_for` adds the data's channel count to ``model`` and the solver.
    """

    data: DataSection
    model: ModelSection = Field(default_factory=ModelSection)
    solver: SolverSection = Field(default_factory=SolverConfig)
    train: TrainSection = Field(default_factory=TrainConfig)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    # ``register`` would shadow pydantic's BaseModel.register (ABCMeta); the TOML key stays.
    registry: RegisterSection = Field(default_factory=RegisterSection, alias="register")
    mlflow: MlflowSection = Field(default_factory=MlflowSection)

    def model_config_for(self, channels: list[str]) -> ModelConfig:
        """The library's ``ModelConfig`` (with its ``SolverConfig``) for data with ``channels``.

        Raises:
            ConfigError: ``model.input_dim`` is set and differs from the number of channels.
        """
        d = len(channels)
        given = self.model.input_dim
        if given is not None and given != d:
            raise ConfigError(
                f"`model.input_dim` is {given} but the data have {d} channels {channels}; remove "
                "`input_dim` from [model] (it defaults to the number of channels) or set it to "
                f"{d}."
            )
        return ModelConfig(input_dim=d, latent_dim=self.model.latent_dim, obs_std=self.model.obs_std,
                           learn_obs_std=self.model.learn_obs_std, obs_std_min=self.model.obs_std_min,
                           encoder=self.model.encoder, dynamics=self.model.dynamics,
                           decoder=self.model.decoder, solver=self.solver)

    def train_config(self) -> TrainConfig:
        """The library's ``TrainConfig``."""
        return self.train

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


def read_toml(path: str | Path) -> dict[str, Any]:
    """The parsed TOML file ``path``, not yet validated (a partial config is fine).

    Raises:
        ConfigError: the file is missing or is not valid TOML.
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
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}.") from None


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a pipeline config TOML file.

    Raises:
        ConfigError: the file is missing, is not valid TOML, or fails validation.
    """
    return parse_config(read_toml(path), source=repr(str(path)))


def _encode_value(value: Any) -> str:
    """A param string that :func:`decode_value` turns back into ``value``."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value  # plain text stays readable in the MLflow UI
        return json.dumps(value)  # "1", "true", "null" would otherwise decode to non-strings
    return json.dumps(value)


def decode_value(text: str) -> Any:
    """A TOML/CLI value given as text: what it parses to as JSON, else the text itself."""
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
        node[leaf] = decode_value(text)
    return out
