"""The training loop: both tasks, KL warm-up, validation, early stopping, exact resume.

The loop knows nothing of MLflow: it reports through callbacks (``TrainEvent``) and writes
resumable checkpoints (tensors and plain numbers only, loaded with ``weights_only=True``).
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from latent_ode.config import TrainConfig, config_to_dict
from latent_ode.data import Observations, Series, collate
from latent_ode.errors import CheckpointError, DataError
from latent_ode.forecaster import BACKCAST, EXTRAPOLATION, INTERPOLATION, Forecaster, window_position
from latent_ode.model import LatentODE
from latent_ode.tasks import extrapolation_task, interpolation_task, seen_in_context

__all__ = ["TrainEvent", "TrainResult", "fit", "to_model_batch"]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "last.pt"


@dataclass(frozen=True)
class TrainEvent:
    """What a callback receives.

    Attributes:
        kind: ``step`` (every ``log_every`` steps) or ``epoch`` (after validation).
        step: optimisation steps done.
        epoch: epochs done (a fraction during an epoch is not reported).
        metrics: name -> value.
    """

    kind: Literal["step", "epoch"]
    step: int
    epoch: int
    metrics: dict[str, float]


@dataclass(frozen=True)
class TrainResult:
    """The outcome of :func:`fit`.

    Attributes:
        best_metric: best value of ``config.val_metric``.
        best_step: step at which it was reached (those weights are in the forecaster).
        steps: optimisation steps done.
        epochs: epochs completed.
        stopped: why training stopped: ``max_epochs``, ``max_steps``, ``max_time``, ``early_stop``.
        elapsed_s: training wall-clock seconds (across resumes).
        history: one dict of validation metrics per validation.
    """

    best_metric: float
    best_step: int
    steps: int
    epochs: int
    stopped: str
    elapsed_s: float
    history: list[dict[str, float]] = field(default_factory=list)


def to_model_batch(forecaster: Forecaster, series: Sequence[Series]) -> Observations:
    """Normalise series, shift each to start at time 0, and pad them into one batch."""
    norm = forecaster.normaliser
    shifted = [Series(times=s.times - s.times[0], values=s.values, id=s.id) for s in series]
    return collate([norm.transform(s) for s in shifted], device=forecaster.device)


def _kl_weight(config: TrainConfig, step: int) -> float:
    if step < config.kl_warmup_delay:
        return 0.0
    return config.kl_scale * (1.0 - config.kl_warmup_rate ** (step - config.kl_warmup_delay))


def _lr(config: TrainConfig, step: int) -> float:
    return max(config.lr_min, config.lr * config.lr_decay**step)


def _batch_loss(model: LatentODE, batch: Observations, config: TrainConfig, task: str,
                kl_weight: float, generator: torch.Generator, num_samples: int,
                noise: torch.Generator | None = None, shard: tuple[int, int] = (0, 1)):
    """The objective on one batch. ``generator`` draws the task (the same on every process);
    ``noise`` draws the latent samples; ``shard = (rank, world)`` keeps this process's share."""
    if task == "extrapolation":
        context, target = extrapolation_task(batch, config.extrap_split)
    else:
        context, target = interpolation_task(batch, config.interp_fraction, generator=generator)
    rank, world = shard
    if world > 1:
        idx = torch.arange(rank, batch.batch_size, world, device=batch.times.device)
        context, target = context.index(idx), target.index(idx)
    return model.loss(context, target, num_samples=num_samples, kl_weight=kl_weight,
                      generator=generator if noise is None else noise)


def _distributed() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed process group, (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _noise_generator(config: TrainConfig, step: int, rank: int) -> torch.Generator:
    # Re-seeded every step from (seed, step, rank): resuming needs no per-process state.
    return torch.Generator().manual_seed((config.seed * 1_000_003 + step) * 1009 + rank)


def _average_gradients(model: LatentODE, world: int, time_up: bool) -> bool:
    """Average the gradients across processes in one all-reduce, and agree on the time budget.

    The processes' clocks do not agree on the step at which a time budget runs out; one that
    stopped alone would leave the others waiting in the next all-reduce for ever. So each
    process's "my time is up" rides in the same buffer, and all stop when any says so.
    """
    params = list(model.parameters())
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [grads[0].new_full((1,), float(time_up))])
    torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        p.grad = (flat[offset:offset + g.numel()] / world).view_as(g)
        offset += g.numel()
    return bool(flat[-1] > 0)


def _slice(obs: Observations, idx: torch.Tensor) -> Observations:
    sub = obs.index(idx)
    t = int(sub.lengths.max())  # drop padding columns no series of this batch needs
    return Observations(times=sub.times[:, :t], values=sub.values[:, :t], mask=sub.mask[:, :t],
                        lengths=sub.lengths)


# Each task's prefix in the validation metrics' names (val_interp_mse, val_extrap_loss, ...).
_PREFIX = {"interpolation": "interp", "extrapolation": "extrap"}


def _validation_tasks(config: TrainConfig) -> tuple[str, ...]:
    """The tasks validation measures: those the run trains, and the one ``val_metric`` names.

    A single-task run does not pay for validating the other task (half of validation, about
    4% of a `periodic` bench run's time budget).
    """
    return tuple(task for task, prefix in _PREFIX.items()
                 if config.task in (task, "both") or config.val_metric == f"val_{prefix}_mse")


@torch.no_grad()
def _validate(model: LatentODE, val: Observations, config: TrainConfig) -> dict[str, float]:
    """Deterministic validation metrics: the same context subsets and noise every time.

    ``val_loss`` and ``val_mse`` average the tasks of :func:`_validation_tasks`.
    """
    gen = torch.Generator().manual_seed(config.seed + 7919)
    out: dict[str, float] = {}
    tasks = _validation_tasks(config)
    for task in tasks:
        total_loss = total_mse = 0.0
        n = val.batch_size
        for start in range(0, n, config.batch_size):
            idx = torch.arange(start, min(start + config.batch_size, n), device=val.times.device)
            res = _batch_loss(model, _slice(val, idx), config, task, 1.0, gen, 1)
            total_loss += float(res.loss) * len(idx)
            total_mse += float(res.mse.sum())
        out[f"val_{_PREFIX[task]}_loss"] = total_loss / n
        out[f"val_{_PREFIX[task]}_mse"] = total_mse / n
    out["val_loss"] = sum(out[f"val_{_PREFIX[t]}_loss"] for t in tasks) / len(tasks)
    out["val_mse"] = sum(out[f"val_{_PREFIX[t]}_mse"] for t in tasks) / len(tasks)
    return out


@contextmanager
def _progress(config: TrainConfig, total: int, *, enabled: bool = True
              ) -> Iterator[Callable[[int, dict[str, float]], None]]:
    """A tqdm bar on a terminal (validation results go to the log either way)."""
    if enabled and config.progress and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, unit="step", dynamic_ncols=True)
        try:
            yield lambda n, m: (bar.update(n), bar.set_postfix(
                {k: f"{v:.4g}" for k, v in m.items()}, refresh=False))
        finally:
            bar.close()
    else:
        yield lambda n, m: None


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: a kill mid-write never leaves a torn checkpoint


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for torn or foreign files
        raise CheckpointError(
            f"cannot resume from {path}: not a readable training checkpoint "
            f"({type(exc).__name__}). Delete it to start afresh."
        ) from exc


def fit(
    forecaster: Forecaster,
    train: Sequence[Series],
    val: Sequence[Series],
    config: TrainConfig,
    *,
    callbacks: Sequence[Callable[[TrainEvent], None]] = (),
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train the forecaster's model in place on both tasks; keep the best validated weights.

    Args:
        forecaster: model, normaliser (already fitted on ``train``) and device.
        train: training series in the user's units.
        val: validation series (early stopping and the best checkpoint).
        config: the loop's settings; ``config.seed`` makes the run repeatable.
        callbacks: called with every :class:`TrainEvent`.
        checkpoint_dir: where ``last.pt`` is written every ``checkpoint_every`` steps.
        resume: continue from ``checkpoint_dir/last.pt`` if it exists; the run then ends where
            an uninterrupted run with the same seed ends.

    Distributed data parallel: when a ``torch.distributed`` process group is initialised (e.g.
    under ``torchrun``), every process takes an equal share of each batch, gradients are averaged
    across processes after each backward pass, and only rank 0 calls the callbacks and writes
    checkpoints. Every process validates on the whole validation split, so all of them take the
    same early-stopping decision; a time budget is agreed in the gradient all-reduce, so all stop
    at the same step.

    Returns:
        TrainResult; the forecaster holds the best weights and ``metadata["training"]``.

    Raises:
        DataError: empty splits. CheckpointError: an unreadable checkpoint. SolverError: the
        latent ODE solve failed during training.
    """
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"`train` and `val` must not be empty; got {len(train)} and {len(val)} "
                        "series.")
    model = forecaster.model
    rank, world = _distributed()
    if world > 1:
        if config.batch_size < world:
            raise DataError(f"`batch_size` ({config.batch_size}) must be at least the number of "
                            f"processes ({world}) for distributed training.")
        for p in model.parameters():  # every process starts from rank 0's weights
            torch.distributed.broadcast(p.data, src=0)
        logger.info("distributed training: rank %d of %d", rank, world)
    train_obs = to_model_batch(forecaster, train)
    val_obs = to_model_batch(forecaster, val)
    device = forecaster.device
    opt_cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.Adamax
    optimizer = opt_cls(model.parameters(), lr=config.lr)
    gen = torch.Generator().manual_seed(config.seed)
    n = train_obs.batch_size
    steps_per_epoch = math.ceil(n / config.batch_size)

    state: dict[str, Any] = {
        "step": 0, "epoch": 0, "batch_in_epoch": 0, "perm": torch.randperm(n, generator=gen),
        "best_metric": math.inf, "best_step": 0, "bad_validations": 0, "elapsed_s": 0.0,
        "history": [],
    }
    # The model that is validated and kept: the weights' moving average, or the weights.
    averaged = (None if config.ema_decay is None else
                AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay)))
    kept = model if averaged is None else averaged.module
    best_weights = copy.deepcopy(model.state_dict())
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    if resume and ckpt_path is not None and ckpt_path.exists():
        saved = _load_checkpoint(ckpt_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        best_weights = saved["best_weights"]
        state = saved["loop"]
        if averaged is not None:
            averaged.load_state_dict(saved["averaged"])
        logger.info("resumed from %s at step %d (epoch %d)", ckpt_path, state["step"], state["epoch"])
    elif resume:
        logger.warning("--resume: no checkpoint at %s; starting from scratch", ckpt_path)

    def snapshot() -> None:
        if ckpt_path is None or rank != 0:
            return
        _save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "generator": gen.get_state(), "best_weights": best_weights, "loop": state,
            "config": config_to_dict(config),
            **({"averaged": averaged.state_dict()} if averaged is not None else {}),
        })

    def emit(event: TrainEvent) -> None:
        if rank != 0:
            return
        for cb in callbacks:
            cb(event)

    total = config.max_epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    started = time.monotonic() - state["elapsed_s"]
    stopped = "max_epochs"
    model.train()
    running: dict[str, float] = {}

    def budget_spent() -> bool:
        return config.max_time_s is not None and time.monotonic() - started >= config.max_time_s

    time_up = False  # with several processes: agreed through the gradient all-reduce
    with _progress(config, total, enabled=rank == 0) as advance:
        advance(state["step"], {})
        while state["epoch"] < config.max_epochs:
            while state["batch_in_epoch"] < steps_per_epoch:
                if config.max_steps is not None and state["step"] >= config.max_steps:
                    stopped = "max_steps"
                    break
                if time_up or (world == 1 and budget_spent()):
                    stopped = "max_time"
                    break
                k = state["batch_in_epoch"]
                idx = state["perm"][k * config.batch_size:(k + 1) * config.batch_size].to(device)
                batch = _slice(train_obs, idx)
                if config.task == "both":
                    extrap = float(torch.rand((), generator=gen)) < config.extrap_prob
                    task = "extrapolation" if extrap else "interpolation"
                else:
                    task = config.task
                step = state["step"]
                lr = _lr(config, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                klw = _kl_weight(config, step)
                res = _batch_loss(model, batch, config, task, klw, gen, config.num_samples,
                                  noise=_noise_generator(config, step, rank), shard=(rank, world))
                optimizer.zero_grad(set_to_none=True)
                res.loss.backward()
                if world > 1:
                    time_up = _average_gradients(model, world, budget_spent())
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                if averaged is not None:
                    averaged.update_parameters(model)
                state["step"] += 1
                state["batch_in_epoch"] += 1
                metrics = {"loss": float(res.loss.detach()), "mse": float(res.mse.detach().mean()),
                           "kl": float(res.kl.detach().mean()), "nfe": float(res.nfe), "lr": lr,
                           "kl_weight": klw}
                for key, value in metrics.items():
                    running[key] = running.get(key, 0.0) + value
                advance(1, {"loss": metrics["loss"], "mse": metrics["mse"]})
                if state["step"] % config.log_every == 0:
                    avg = {f"train_{k}": v / config.log_every for k, v in running.items()}
                    running = {}
                    emit(TrainEvent(kind="step", step=state["step"], epoch=state["epoch"],
                                    metrics=avg))
                if state["step"] % config.checkpoint_every == 0:
                    state["elapsed_s"] = time.monotonic() - started
                    snapshot()
            else:
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
                state["perm"] = torch.randperm(n, generator=gen)
                if state["epoch"] % config.val_every == 0 or state["epoch"] == config.max_epochs:
                    if _after_validation(kept, val_obs, config, state, emit):
                        best_weights = copy.deepcopy(kept.state_dict())
                    if config.patience is not None and state["bad_validations"] >= config.patience:
                        stopped = "early_stop"
                        break
                continue
            break
    if not state["history"] or state["history"][-1]["step"] != state["step"]:
        if _after_validation(kept, val_obs, config, state, emit):
            best_weights = copy.deepcopy(kept.state_dict())
    state["elapsed_s"] = time.monotonic() - started
    snapshot()
    model.load_state_dict(best_weights)
    model.eval()
    if config.calibrate_noise:
        (forecaster.noise_std, forecaster.extrap_noise_std,
         forecaster.backcast_noise_std) = calibrate_noise(forecaster, val_obs, config)
        logger.info("calibrated predictive noise std per channel: %s inside the observed "
                    "window, %s after it, %s before it",
                    *([round(float(x), 5) for x in n] for n in (
                        forecaster.noise_std, forecaster.extrap_noise_std,
                        forecaster.backcast_noise_std)))
    result = TrainResult(best_metric=state["best_metric"], best_step=state["best_step"],
                         steps=state["step"], epochs=state["epoch"], stopped=stopped,
                         elapsed_s=state["elapsed_s"], history=list(state["history"]))
    forecaster.metadata["training"] = {
        "best_metric": result.best_metric, "val_metric": config.val_metric,
        "best_step": result.best_step, "steps": result.steps, "epochs": result.epochs,
        "stopped": stopped, "elapsed_s": result.elapsed_s,
        # The validation metrics of the weights kept (the best validation), not of the last.
        **{k: v for k, v in next((h for h in result.history if h["step"] == result.best_step),
                                 {}).items() if k.startswith("val_")},
    }
    logger.info("training stopped (%s) after %d steps, %.1f s; best %s = %.5g at step %d",
                stopped, result.steps, result.elapsed_s, config.val_metric, result.best_metric,
                result.best_step)
    return result


# Fewer held-out validation points than this in a regime and channel: too few to estimate a
# variance from; the regime takes the pooled value.
_MIN_CALIBRATION_POINTS = 20


@torch.no_grad()
def calibrate_noise(forecaster: Forecaster, val: Observations, config: TrainConfig,
                    *, num_samples: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel predictive noise std from validation residuals (normalised scale), before,
    inside and after each series' observed window.

    The targets are the held-out points of both tasks (those the encoder did not see), each
    counted where it lies against its context (:func:`~latent_ode.forecaster.window_position`).
    In each regime the predictive variance should match the mean squared residual of the
    predictive mean: noise² = mean(residual²) - mean(latent variance), floored at the model's
    ``obs_std``. The regimes differ (docs/library.md, Uncertainty): on the periodic demo one
    noise for all covered 0.84 of the held-out interpolation points and 0.98 of the forecast ones
    where 0.90 was asked.

    A channel with fewer than ``_MIN_CALIBRATION_POINTS`` held-out points in a regime (a
    backcast often has few: only interpolation contexts that miss a series' first points make
    them) takes the value of all regimes pooled; one with no held-out point at all keeps
    ``obs_std``.

    Returns:
        (inside the window, after it, before it), each (D,): ``Forecaster.noise_std``,
        ``extrap_noise_std`` and ``backcast_noise_std``.
    """
    gen = torch.Generator().manual_seed(config.seed + 104729)
    d = val.num_channels
    # Per regime (BACKCAST, INTERPOLATION, EXTRAPOLATION) and channel: squared residuals,
    # latent variance, counts.
    sq = torch.zeros(3, d, dtype=torch.float64)
    var = torch.zeros(3, d, dtype=torch.float64)
    count = torch.zeros(3, d, dtype=torch.float64)
    for task in ("interpolation", "extrapolation"):
        for start in range(0, val.batch_size, config.batch_size):
            idx = torch.arange(start, min(start + config.batch_size, val.batch_size),
                               device=val.times.device)
            batch = _slice(val, idx)
            if task == "extrapolation":
                context, target = extrapolation_task(batch, config.extrap_split)
            else:
                context, target = interpolation_task(batch, config.interp_fraction, generator=gen)
            samples, _ = forecaster.sample_normalised(context, target.times,
                                                      num_samples=num_samples, seed=config.seed)
            heldout = target.mask & ~seen_in_context(context, target)
            position = window_position(target.times, context.first_time,
                                       context.last_time)[..., None]
            resid = (samples.mean(0) - target.values) ** 2
            spread = samples.var(0, unbiased=False)
            for k in range(3):
                m = heldout & (position == k)
                sq[k] += (resid * m).sum((0, 1)).double().cpu()
                var[k] += (spread * m).sum((0, 1)).double().cpu()
                count[k] += m.sum((0, 1)).double().cpu()
    floor = forecaster.model.config.obs_std

    def noise(sq: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(((sq - var) / count.clamp_min(1.0)).clamp_min(floor**2))

    pooled = torch.where(count.sum(0) > 0, noise(sq.sum(0), var.sum(0), count.sum(0)),
                         torch.full((d,), floor, dtype=torch.float64))
    each = [torch.where(count[k] >= _MIN_CALIBRATION_POINTS, noise(sq[k], var[k], count[k]),
                        pooled).numpy() for k in range(3)]
    return each[INTERPOLATION], each[EXTRAPOLATION], each[BACKCAST]


def _after_validation(model: LatentODE, val_obs: Observations, config: TrainConfig,
                      state: dict[str, Any], emit: Callable[[TrainEvent], None]) -> bool:
    """Validate, record, report; True when this is the best model so far."""
    model.eval()
    metrics = _validate(model, val_obs, config)
    model.train()
    value = metrics[config.val_metric]
    improved = value < state["best_metric"]
    if improved:
        state["best_metric"], state["best_step"], state["bad_validations"] = value, state["step"], 0
    else:
        state["bad_validations"] += 1
    state["history"].append({"step": state["step"], "epoch": state["epoch"], **metrics})
    logger.info("epoch %d step %d: %s", state["epoch"], state["step"],
                ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    emit(TrainEvent(kind="epoch", step=state["step"], epoch=state["epoch"],
                    metrics={**metrics, "best_" + config.val_metric: state["best_metric"]}))
    return improved
