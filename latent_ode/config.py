"""Frozen, keyword-only configuration objects that check themselves when built.

The same nested dict is logged to MLflow as params and saved beside the weights as
``config.json`` (:func:`config_to_dict` / :func:`config_from_dict` round-trip exactly).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin

from latent_ode.errors import ConfigError

__all__ = ["ModelConfig", "SolverConfig", "TrainConfig", "config_from_dict", "config_to_dict"]


def _check(cond: bool, name: str, value: Any, rule: str) -> None:
    if not cond:
        raise ConfigError(f"`{name}` must be {rule}; got {value!r}.")


def _check_literals(obj: Any) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        hint = hints[f.name]
        if get_origin(hint) is Literal:
            allowed = get_args(hint)
            value = getattr(obj, f.name)
            _check(value in allowed, f"{type(obj).__name__}.{f.name}", value,
                   "one of " + ", ".join(repr(a) for a in allowed))


@dataclass(frozen=True, kw_only=True)
class SolverConfig:
    """How the latent ODE is integrated.

    Attributes:
        method: adaptive Runge-Kutta scheme of torchode (``dopri5`` as in Chen et al. 2018).
        rtol: relative tolerance of the step-size controller.
        atol: absolute tolerance of the step-size controller.
        max_steps: hard limit on solver steps per solve; exceeding it raises ``SolverError``
            (an unbounded solve would be a hung request).
        gradient: ``backprop`` differentiates through the solver's operations (fast, memory
            grows with the number of steps); ``adjoint`` solves the adjoint ODE backwards
            (Chen et al. 2018, Sec. 2) with torchdiffeq's ``odeint_adjoint`` and the seminorm of
            Kidger et al. 2021, so memory stays flat in the number of steps.
        adjoint_max_steps: step limit per output interval of torchdiffeq in adjoint mode.
        adjoint_grid: the time grid the adjoint solves the batch on. ``union``: the union of
            the batch's times (cheap where the series share their times, up to B times longer
            where they do not, and the backward pass restarts at every point of it);
            ``warped``: a change of time variable in which every series reaches its k-th time
            at s = k, so the grid has Q + 1 points whatever the times; ``auto`` (default): the
            union where it is at most twice as long as the warped grid, else warped.
    """

    method: Literal["dopri5", "tsit5"] = "dopri5"
    rtol: float = 1e-3
    atol: float = 1e-4
    max_steps: int = 2000
    gradient: Literal["backprop", "adjoint"] = "backprop"
    adjoint_max_steps: int = 2000
    adjoint_grid: Literal["auto", "union", "warped"] = "auto"

    def __post_init__(self) -> None:
        _check_literals(self)
        _check(0 < self.rtol < 1, "SolverConfig.rtol", self.rtol, "in (0, 1)")
        _check(0 < self.atol < 1, "SolverConfig.atol", self.atol, "in (0, 1)")
        _check(self.max_steps >= 1, "SolverConfig.max_steps", self.max_steps, "a positive integer")
        _check(self.adjoint_max_steps >= 1, "SolverConfig.adjoint_max_steps",
               self.adjoint_max_steps, "a positive integer")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture of the Latent ODE (Rubanova et al. 2019, Sec. 3).

    Attributes:
        input_dim: D, number of observed channels.
        latent_dim: L, size of the latent state z.
        encoder_hidden: H, size of the ODE-RNN hidden state.
        encoder_units: hidden units of the encoder's ODE function.
        dynamics_units: hidden units of each layer of the latent dynamics MLP.
        dynamics_layers: number of hidden layers of the latent dynamics MLP (the reference
            implementation uses two).
        dynamics_rotation: when positive, the latent dynamics are ``A z + MLP(z)`` with a
            learnable ``A`` that starts as rotations in ``latent_dim // 2`` planes, at angular
            frequencies drawn uniformly from ``[dynamics_rotation / 3, dynamics_rotation]``
            radians per unit of normalised time; 0 (default): the MLP alone. For oscillating
            data this shortens the initial plateau where the model predicts the mean curve.
        dynamics_bilinear: add a bilinear term ``(P z + a) * s tanh((Q z + b) / s)``
            (elementwise, s = 3) to the latent dynamics, so that they can multiply two latent
            coordinates (a frequency and a phase, say) rather than approximate the product with
            the MLP's tanh units. The second factor saturates, so the dynamics grow at most
            linearly and cannot blow up in finite time as quadratic ones can. Off by default.
        obs_std: standard deviation of the Gaussian observation noise, on the normalised scale
            (the reference uses 0.01 for the toy data and PhysioNet).
        encoder_cell: the ODE-RNN's update at an observation: ``gru`` (``torch.nn.GRUCell``) or
            ``mlp_gru`` (the reference implementation's GRU with MLP gates and a gated std).
        encoder_max_step: longest Euler step of the ODE-RNN's hidden-state evolution between
            two observations, in normalised time (the reference uses a fiftieth of the span).
        solver: how the latent ODE is integrated.
    """

    input_dim: int
    latent_dim: int = 10
    encoder_hidden: int = 20
    encoder_units: int = 100
    dynamics_units: int = 100
    dynamics_layers: int = 2
    dynamics_rotation: float = 0.0
    dynamics_bilinear: bool = False
    obs_std: float = 0.01
    encoder_cell: Literal["gru", "mlp_gru"] = "gru"
    encoder_max_step: float = 0.02
    solver: SolverConfig = field(default_factory=SolverConfig)

    def __post_init__(self) -> None:
        _check_literals(self)
        for name in ("input_dim", "latent_dim", "encoder_hidden", "encoder_units", "dynamics_units"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"ModelConfig.{name}", value,
                   "a positive integer")
        _check(isinstance(self.dynamics_layers, int) and self.dynamics_layers >= 0,
               "ModelConfig.dynamics_layers", self.dynamics_layers, "a non-negative integer")
        _check(self.dynamics_rotation >= 0, "ModelConfig.dynamics_rotation",
               self.dynamics_rotation, "non-negative")
        _check(isinstance(self.dynamics_bilinear, bool), "ModelConfig.dynamics_bilinear",
               self.dynamics_bilinear, "true or false")
        _check(self.obs_std > 0, "ModelConfig.obs_std", self.obs_std, "positive")
        _check(self.encoder_max_step > 0, "ModelConfig.encoder_max_step", self.encoder_max_step,
               "positive")
        _check(isinstance(self.solver, SolverConfig), "ModelConfig.solver", self.solver,
               "a SolverConfig")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The training loop.

    Attributes:
        batch_size: series per optimisation step.
        max_epochs: passes over the training set.
        max_steps: stop after this many optimisation steps (``None``: no limit).
        max_time_s: stop after this many seconds of training (``None``: no limit).
        optimizer: ``adam`` (default) or ``adamax`` (the reference's choice).
        lr: initial learning rate.
        lr_decay: multiplicative learning-rate decay per step.
        lr_min: the learning rate never decays below this.
        grad_clip: global gradient-norm clipping threshold (``None``: off).
        ema_decay: keep an exponential moving average of the weights, updated after every
            step with this decay (Polyak averaging; ``None``: off). Validation, the best
            checkpoint and the returned model then use the averaged weights, which are less
            noisy than the last step's.
        num_samples: K latent samples per series; with K > 1 the IWAE bound (Burda et al. 2016)
            replaces the ELBO.
        kl_warmup_delay: steps with KL weight 0 before warm-up starts.
        kl_warmup_rate: after the delay the KL weight is
            ``kl_scale * (1 - rate ** (step - delay))``.
        kl_scale: the KL weight the warm-up tends to. 1 is the ELBO of the per-point-averaged
            likelihood; the reference implementation averages the KL over the latent dimensions,
            which is ``1 / latent_dim`` here.
        task: which task each batch trains: ``both`` alternates at random (``extrap_prob``).
        extrap_prob: probability that a batch is an extrapolation batch when ``task="both"``.
        interp_fraction: fraction of a series' time points the encoder sees in interpolation.
        extrap_split: where in each series' time span the extrapolation task splits context from
            target (0.5 = the first half is observed).
        val_every: validate every this many epochs.
        val_metric: the validation metric for early stopping and the best checkpoint.
            Validation measures the task(s) the run trains and the task ``val_metric``
            names; ``val_loss`` and ``val_mse`` average those tasks.
        patience: stop after this many validations without improvement (``None``: never).
        checkpoint_every: write a resumable checkpoint every this many steps.
        log_every: report step metrics to the callbacks every this many steps.
        seed: seeds parameter initialisation, batching and sampling; the same seed gives the
            same run.
        progress: show a progress bar (only when stderr is a terminal).
        calibrate_noise: after training, set the forecaster's predictive noise per channel from
            the validation residuals, so that predictive intervals are calibrated (the fixed
            ``obs_std`` of the training objective is far narrower than the real error).
    """

    batch_size: int = 50
    max_epochs: int = 100
    max_steps: int | None = None
    max_time_s: float | None = None
    optimizer: Literal["adam", "adamax"] = "adam"
    lr: float = 1e-2
    lr_decay: float = 0.999
    lr_min: float = 1e-3
    grad_clip: float | None = 10.0
    ema_decay: float | None = None
    num_samples: int = 1
    kl_warmup_delay: int = 10
    kl_warmup_rate: float = 0.99
    kl_scale: float = 1.0
    task: Literal["interpolation", "extrapolation", "both"] = "both"
    extrap_prob: float = 0.5
    interp_fraction: float = 0.5
    extrap_split: float = 0.5
    val_every: int = 1
    val_metric: Literal["val_loss", "val_interp_mse", "val_extrap_mse", "val_mse"] = "val_mse"
    patience: int | None = 20
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    progress: bool = True
    calibrate_noise: bool = True

    def __post_init__(self) -> None:
        _check_literals(self)
        for name in ("batch_size", "max_epochs", "num_samples", "val_every", "checkpoint_every",
                     "log_every"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"TrainConfig.{name}", value,
                   "a positive integer")
        _check(self.max_steps is None or self.max_steps >= 1, "TrainConfig.max_steps",
               self.max_steps, "a positive integer or None")
        _check(self.max_time_s is None or self.max_time_s > 0, "TrainConfig.max_time_s",
               self.max_time_s, "positive or None")
        _check(self.lr > 0, "TrainConfig.lr", self.lr, "positive")
        _check(0 < self.lr_decay <= 1, "TrainConfig.lr_decay", self.lr_decay, "in (0, 1]")
        _check(0 < self.lr_min <= self.lr, "TrainConfig.lr_min", self.lr_min, "in (0, lr]")
        _check(self.grad_clip is None or self.grad_clip > 0, "TrainConfig.grad_clip",
               self.grad_clip, "positive or None")
        _check(self.ema_decay is None or 0 < self.ema_decay < 1, "TrainConfig.ema_decay",
               self.ema_decay, "in (0, 1) or None")
        _check(self.kl_warmup_delay >= 0, "TrainConfig.kl_warmup_delay", self.kl_warmup_delay,
               "non-negative")
        _check(0 <= self.kl_warmup_rate < 1, "TrainConfig.kl_warmup_rate", self.kl_warmup_rate,
               "in [0, 1)")
        _check(self.kl_scale >= 0, "TrainConfig.kl_scale", self.kl_scale, "non-negative")
        _check(0 <= self.extrap_prob <= 1, "TrainConfig.extrap_prob", self.extrap_prob, "in [0, 1]")
        _check(0 < self.interp_fraction <= 1, "TrainConfig.interp_fraction",
               self.interp_fraction, "in (0, 1]")
        _check(0 < self.extrap_split < 1, "TrainConfig.extrap_split", self.extrap_split,
               "in (0, 1)")
        _check(self.patience is None or self.patience >= 1, "TrainConfig.patience",
               self.patience, "a positive integer or None")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A nested plain dict of a config dataclass (JSON- and MLflow-params-friendly)."""
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"`config` must be a config dataclass; got {type(config).__name__}.")
    return dataclasses.asdict(config)


C = TypeVar("C")


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build ``cls`` from a nested dict, rejecting unknown keys.

    Raises:
        ConfigError: an unknown key, a missing required key, or a value that fails validation.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"`{cls.__name__}` must be built from a table/dict; got {data!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} for {cls.__name__}; valid keys are {sorted(fields)}."
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            value = config_from_dict(hint, value)
        elif hint is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"cannot build {cls.__name__}: {exc}.") from exc
