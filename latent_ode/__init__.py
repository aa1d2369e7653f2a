"""Latent ODEs for irregularly sampled, partially observed multivariate time series.

The public surface: data containers, configuration, the model, the forecaster (a model with
its normalisation, answering in the user's units), training, evaluation and synthetic data.
Importing this package does no work and needs neither MLflow nor a web framework.
"""

from latent_ode.backtest import BacktestConfig, BacktestResult, backtest
from latent_ode.config import (
    DecoderConfig,
    DynamicsConfig,
    EncoderConfig,
    ModelConfig,
    SolverConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
)
from latent_ode.data import Observations, Series, collate
from latent_ode.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    LatentODEError,
    ShapeError,
    SolverError,
)
from latent_ode.evaluation import EvalResult, evaluate
from latent_ode.forecaster import Forecast, Forecaster, raise_on_failure
from latent_ode.model import LatentODE
from latent_ode.normalisation import Normaliser
from latent_ode.solver import SolverStats
from latent_ode.training import TrainEvent, TrainResult, fit

__all__ = [
    "BacktestConfig",
    "BacktestResult",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "DecoderConfig",
    "DynamicsConfig",
    "EncoderConfig",
    "EvalResult",
    "Forecast",
    "Forecaster",
    "LatentODE",
    "LatentODEError",
    "ModelConfig",
    "Normaliser",
    "Observations",
    "Series",
    "ShapeError",
    "SolverConfig",
    "SolverError",
    "SolverStats",
    "TrainConfig",
    "TrainEvent",
    "TrainResult",
    "backtest",
    "collate",
    "config_from_dict",
    "config_to_dict",
    "evaluate",
    "fit",
    "raise_on_failure",
]
