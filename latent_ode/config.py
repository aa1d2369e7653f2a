"""Frozen, keyword-only configuration objects that check themselves when built.

Every config class checks, in ``__post_init__``, each field's type against its annotation
(:func:`_check_types`: ``int``, ``float``, ``bool``, ``str``, ``Literal``, ``X | None`` and nested
configs) and then its range. Errors name the key and say what was expected:
"`TrainConfig.lr` must be a float; got 'fast'." when built directly, "`train.lr` must be ..."
when built by :func:`config_from_dict` with ``key="train"``.

The names of the encoder cells, latent dynamics and decoders come from their registries
(:mod:`latent_ode.cells`, :mod:`latent_ode.dynamics`, :mod:`latent_ode.decoders`).

The same nested dict is logged to MLflow as params and saved beside the weights as
``config.json`` (:func:`config_to_dict` / :func:`config_from_dict` round-trip exactly). Model
dicts in the flat format before the nesting (``encoder_hidden``, ``dynamics_units``, ...) still
load: :func:`nest_flat_model_keys` maps them.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from latent_ode.cells import CELLS
from latent_ode.decoders import DECODERS
from latent_ode.dynamics import DYNAMICS
from latent_ode.errors import ConfigError
from latent_ode.registry import Registry

__all__ = [
    "DecoderConfig",
    "DynamicsConfig",
    "EncoderConfig",
    "ModelConfig",
    "SolverConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "nest_flat_model_keys",
]


class _FieldError(ConfigError):
    """A field failed its check; :func:`config_from_dict` re-raises it under the full key."""

    def __init__(self, where: str, name: str, value: Any, rule: str) -> None:
        super().__init__(f"`{where}.{name}` must be {rule}; got {value!r}.")
        self.name, self.value, self.rule = name, value, rule


def _check(cond: bool, obj: Any, name: str, rule: str) -> None:
    """Raise unless ``cond``: field ``name`` of ``obj`` breaks ``rule`` ("in (0, 1)")."""
    if not cond:
        raise _FieldError(type(obj).__name__, name, getattr(obj, name), rule)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _optional_arg(hint: Any) -> Any | None:
    """``X`` for ``X | None`` (``Optional[X]``), else ``None``."""
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(get_args(hint)) == 2:
            return args[0]
    return None


def _matches(hint: Any, value: Any) -> bool:
    inner = _optional_arg(hint)
    if inner is not None:
        return value is None or _matches(inner, value)
    if get_origin(hint) is Literal:
        return any(type(value) is type(a) and value == a for a in get_args(hint))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # an integer is a fine float (TOML `lr = 1`); it is stored as a float
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    raise TypeError(f"config annotation {hint!r} is not supported by the type check")


def _expected(hint: Any) -> str:
    """What a value of type ``hint`` is, in words: "a float", "one of 'a', 'b'"."""
    inner = _optional_arg(hint)
    if inner is not None:
        return f"{_expected(inner)} or None"
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    words = {bool: "true or false", int: "an integer", float: "a float", str: "a string"}
    if hint in words:
        return words[hint]
    article = "an" if hint.__name__[0] in "AEIOU" else "a"
    return f"{article} {hint.__name__}"


def _check_types(obj: Any) -> None:
    """Check every field of the config dataclass ``obj`` against its annotation, in order.

    Integers given for ``float`` fields are stored as floats, so that a config built with
    ``lr=1`` equals (and saves as) one built with ``lr=1.0``.

    Raises:
        ConfigError: the first field whose value does not have the annotated type.
    """
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        hint = hints[f.name]
        _check(_matches(hint, value), obj, f.name, _expected(hint))
        if isinstance(value, int) and not isinstance(value, bool) and float in (
                hint, _optional_arg(hint)):
            object.__setattr__(obj, f.name, float(value))


def _check_name(obj: Any, name: str, registry: Registry[Any]) -> None:
    """Field ``name`` of ``obj`` must name an entry of ``registry``."""
    _check(getattr(obj, name) in registry, obj, name,
           "one of " + ", ".join(repr(n) for n in registry.names()))


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
        _check_types(self)
        _check(0 < self.rtol < 1, self, "rtol", "in (0, 1)")
        _check(0 < self.atol < 1, self, "atol", "in (0, 1)")
        _check(self.max_steps >= 1, self, "max_steps", "a positive integer")
        _check(self.adjoint_max_steps >= 1, self, "adjoint_max_steps", "a positive integer")


@dataclass(frozen=True, kw_only=True)
class EncoderConfig:
    """The ODE-RNN encoder (Rubanova et al. 2019, Sec. 3.3).

    Attributes:
        cell: the update at an observation, a name in :data:`latent_ode.cells.CELLS`: ``gru``
            (``torch.nn.GRUCell``) or ``mlp_gru`` (the reference implementation's GRU with MLP
            gates and a gated std).
        hidden: H, size of the ODE-RNN hidden state.
        units: hidden units of the hidden-state ODE's MLP (and of the cell's MLPs, if any).
        max_step: longest Euler step of the hidden-state evolution between two observations, in
            normalised time (the reference uses a fiftieth of the span).
    """

    cell: str = "gru"
    hidden: int = 20
    units: int = 100
    max_step: float = 0.02

    def __post_init__(self) -> None:
        _check_types(self)
        _check_name(self, "cell", CELLS)
        _check(self.hidden >= 1, self, "hidden", "a positive integer")
        _check(self.units >= 1, self, "units", "a positive integer")
        _check(self.max_step > 0, self, "max_step", "positive")


@dataclass(frozen=True, kw_only=True)
class DynamicsConfig:
    """The latent dynamics f in dz/dt = f(z).

    Attributes:
        kind: a name in :data:`latent_ode.dynamics.DYNAMICS`; ``mlp`` (the only one today) is
            the reference's MLP, optionally with the two terms below.
        units: hidden units of each layer of the MLP.
        layers: number of hidden layers of the MLP (the reference implementation uses two).
        rotation: when positive, the latent dynamics are ``A z + MLP(z)`` with a learnable ``A``
            that starts as rotations in ``latent_dim // 2`` planes, at angular frequencies drawn
            uniformly from ``[rotation / 3, rotation]`` radians per unit of normalised time;
            0 (default): the MLP alone. For oscillating data this shortens the initial plateau
            where the model predicts the mean curve.
        bilinear: add a bilinear term ``(P z + a) * s tanh((Q z + b) / s)`` (elementwise,
            s = 3), so that the dynamics can multiply two latent coordinates (a frequency and a
            phase, say) rather than approximate the product with the MLP's tanh units. The
            second factor saturates, so the dynamics grow at most linearly and cannot blow up in
            finite time as quadratic ones can. Off by default.
    """

    kind: str = "mlp"
    units: int = 100
    layers: int = 2
    rotation: float = 0.0
    bilinear: bool = False

    def __post_init__(self) -> None:
        _check_types(self)
        _check_name(self, "kind", DYNAMICS)
        _check(self.units >= 1, self, "units", "a positive integer")
        _check(self.layers >= 0, self, "layers", "a non-negative integer")
        _check(self.rotation >= 0, self, "rotation", "non-negative")


@dataclass(frozen=True, kw_only=True)
class DecoderConfig:
    """The map from the latent state to the channel means.

    Attributes:
        kind: a name in :data:`latent_ode.decoders.DECODERS`; ``linear`` (the only one today):
            ``W z + b`` as in Rubanova et al. 2019.
        anchor: blend each channel's decoded mean with the linear interpolation of that
            channel's context observations (LOCF after them), with a learned per-channel trust
            that decays with the time to the nearest observation (:mod:`latent_ode.anchor`), so
            the model can fall back on the baseline where it cannot beat it. Off by default.
    """

    kind: str = "linear"
    anchor: bool = False

    def __post_init__(self) -> None:
        _check_types(self)
        _check_name(self, "kind", DECODERS)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture of the Latent ODE (Rubanova et al. 2019, Sec. 3).

    Attributes:
        input_dim: D, number of observed channels.
        latent_dim: L, size of the latent state z.
        obs_std: standard deviation of the Gaussian observation noise of the training objective,
            on the normalised scale (the reference uses 0.01 for the toy data and PhysioNet).
        learn_obs_std: learn one noise std per channel, starting at ``obs_std`` and floored at
            ``obs_std_min``; the objective then weighs each channel by how well it can be
            predicted, instead of one fixed noise for all (a channel whose scaled values vary by
            1e-3 is otherwise invisible next to a noise of 0.01).
        obs_std_min: the floor of the learned noise std.
        encoder: the ODE-RNN encoder.
        dynamics: the latent dynamics.
        decoder: the decoder.
        solver: how the latent ODE is integrated.
    """

    input_dim: int
    latent_dim: int = 10
    obs_std: float = 0.01
    learn_obs_std: bool = False
    obs_std_min: float = 1e-4
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)

    def __post_init__(self) -> None:
        _check_types(self)
        _check(self.input_dim >= 1, self, "input_dim", "a positive integer")
        _check(self.latent_dim >= 1, self, "latent_dim", "a positive integer")
        _check(self.obs_std > 0, self, "obs_std", "positive")
        _check(0 < self.obs_std_min <= self.obs_std, self, "obs_std_min", "in (0, obs_std]")


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
            names; ``val_loss`` and ``val_mse`` average those tasks. ``val_error_ratio``: per
            task, the mean over channels of the model's MSE on the held-out points (those the
            encoder did not see) divided by the baseline's (linear interpolation, LOCF), averaged
            over the tasks measured: 1 minus the pooled skill, so that a run stops where it
            beats the baselines most rather than where its error, dominated by the
            hardest channels, is lowest.
        patience: stop after this many validations without improvement (``None``: never).
        checkpoint_every: write a resumable checkpoint every this many steps.
        log_every: report step metrics to the callbacks every this many steps.
        seed: seeds parameter initialisation, batching and sampling; the same seed gives the
            same run.
        progress: show a progress bar (only when stderr is a terminal).
        calibrate_noise: after training, set the forecaster's predictive noise per channel from
            the validation residuals, so that predictive intervals are calibrated (the fixed
            ``obs_std`` of the training objective is far narrower than the real error).
        calibrate_blend: after training (before the noise), fit per regime, channel and gap
            bin the weight of the model's answer against the channel's own baseline (linear
            interpolation, the last observation carried forward) by least squares on the
            validation split's held-out points (:mod:`latent_ode.blend`), so that a channel the
            model predicts worse than drawing lines is answered (mostly) by the lines. Off by
            default.
        balance_channels: exponent ``a`` of each channel's weight in the training objective,
            ``(mean count / channel's count) ** a`` over the training split's observations,
            scaled so that the observations' mean weight is 1 and clipped to [0.1, 10]. 0 (the
            default): every observation weighs the same, so frequent channels dominate; 1: every
            channel weighs the same, as the pooled figures of ``evaluate`` (and P1) average over
            channels.
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
    val_metric: Literal["val_loss", "val_interp_mse", "val_extrap_mse", "val_mse",
                        "val_error_ratio"] = "val_mse"
    patience: int | None = 20
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    progress: bool = True
    calibrate_noise: bool = True
    calibrate_blend: bool = False
    balance_channels: float = 0.0

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("batch_size", "max_epochs", "num_samples", "val_every", "checkpoint_every",
                     "log_every"):
            _check(getattr(self, name) >= 1, self, name, "a positive integer")
        _check(self.max_steps is None or self.max_steps >= 1,
               self, "max_steps", "a positive integer or None")
        _check(self.max_time_s is None or self.max_time_s > 0, self, "max_time_s", "positive or None")
        _check(self.lr > 0, self, "lr", "positive")
        _check(0 < self.lr_decay <= 1, self, "lr_decay", "in (0, 1]")
        _check(0 < self.lr_min <= self.lr, self, "lr_min", "in (0, lr]")
        _check(self.grad_clip is None or self.grad_clip > 0, self, "grad_clip", "positive or None")
        _check(self.ema_decay is None or 0 < self.ema_decay < 1, self, "ema_decay", "in (0, 1) or None")
        _check(self.kl_warmup_delay >= 0, self, "kl_warmup_delay", "non-negative")
        _check(0 <= self.kl_warmup_rate < 1, self, "kl_warmup_rate", "in [0, 1)")
        _check(self.kl_scale >= 0, self, "kl_scale", "non-negative")
        _check(0 <= self.extrap_prob <= 1, self, "extrap_prob", "in [0, 1]")
        _check(0 < self.interp_fraction <= 1, self, "interp_fraction", "in (0, 1]")
        _check(0 < self.extrap_split < 1, self, "extrap_split", "in (0, 1)")
        _check(self.patience is None or self.patience >= 1, self, "patience", "a positive integer or None")
        _check(0 <= self.balance_channels <= 1, self, "balance_channels", "in [0, 1]")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A nested plain dict of a config dataclass (JSON- and MLflow-params-friendly).

    Raises:
        ConfigError: ``config`` is not a dataclass instance.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ConfigError(f"`config` must be a config dataclass; got {type(config).__name__}.")
    return dataclasses.asdict(config)


# The flat model keys before the nesting (checkpoints and TOML files written until then).
_FLAT_MODEL_KEYS = {
    "encoder_cell": ("encoder", "cell"),
    "encoder_hidden": ("encoder", "hidden"),
    "encoder_units": ("encoder", "units"),
    "encoder_max_step": ("encoder", "max_step"),
    "dynamics_units": ("dynamics", "units"),
    "dynamics_layers": ("dynamics", "layers"),
    "dynamics_rotation": ("dynamics", "rotation"),
    "dynamics_bilinear": ("dynamics", "bilinear"),
}


def nest_flat_model_keys(data: Mapping[str, Any], *, key: str = "model") -> dict[str, Any]:
    """A model dict with the flat keys of the old format moved into their sections.

    ``{"encoder_hidden": 20, "latent_dim": 4}`` becomes ``{"encoder": {"hidden": 20},
    "latent_dim": 4}``; a dict already nested comes back equal.

    Args:
        data: a model dict, flat, nested or a mix.
        key: where ``data`` sits, for error messages.

    Raises:
        ConfigError: a flat key and its nested spelling are both given.
    """
    out = {k: v for k, v in data.items() if k not in _FLAT_MODEL_KEYS}
    for old, (section, name) in _FLAT_MODEL_KEYS.items():
        if old not in data:
            continue
        sub = out.get(section, {})
        if not isinstance(sub, Mapping) or name in sub:
            raise ConfigError(f"`{key}.{old}` and `{key}.{section}.{name}` both set the same "
                              f"value; keep only `{key}.{section}.{name}`.")
        out[section] = {**sub, name: data[old]}
    return out


C = TypeVar("C")


def config_from_dict(cls: type[C], data: Mapping[str, Any], *, key: str | None = None) -> C:
    """Build the config dataclass ``cls`` from a nested dict, checking every key once.

    Nested sections are built from nested dicts; a ``ModelConfig`` dict may use the old flat
    keys (:func:`nest_flat_model_keys`).

    Args:
        cls: the config class.
        data: its keys and values, as read from TOML or JSON.
        key: where ``data`` sits (``"train"``, ``"model"``), so that errors name the full key
            (``train.lr``); default: the class name.

    Returns:
        The validated, frozen config.

    Raises:
        ConfigError: an unknown or missing key, or a value of the wrong type or out of range,
            named with its full key and what was expected.
    """
    where = key or cls.__name__
    if not isinstance(data, Mapping):
        raise ConfigError(f"`{where}` must be a table of {cls.__name__} keys; got {data!r}.")
    if cls is ModelConfig:
        data = nest_flat_model_keys(data, key=where)
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {unknown} for {cls.__name__}"
            + (f" in `{where}`" if key else "") + f"; valid keys are {sorted(fields)}."
        )
    missing = [name for name, f in fields.items() if name not in data
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing key `{where}.{missing[0]}`; add it.")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and not isinstance(value, hint):
            value = config_from_dict(hint, value, key=f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except _FieldError as exc:  # name the key as the caller knows it: `train.lr`
        raise _FieldError(where, exc.name, exc.value, exc.rule) from None
