"""The training loop: both tasks, KL warm-up, validation, early stopping, exact resume.

The loop knows nothing of MLflow: it reports through callbacks (:class:`TrainEvent`) and writes
resumable checkpoints (:mod:`~latent_ode.training.checkpointing`). Its state between steps is a
:class:`~latent_ode.training.state.TrainState`; each other concern (data parallelism, the weight
average, the schedules, validation, the noise calibration, the progress bar) is a module of its
own in this package.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import monotonic  # the training clock (module-level: a test replaces it)
from typing import Literal

import numpy as np
import torch

from latent_ode.config import TrainConfig
from latent_ode.data import Observations, Series
from latent_ode.errors import DataError
from latent_ode.forecaster import Forecaster
from latent_ode.model import LatentODE
from latent_ode.tasks import minibatch, task_pair, to_model_batch, training_task
from latent_ode.training.averaging import WeightAverage
from latent_ode.training.calibration import calibrate_blend, calibrate_noise
from latent_ode.training.checkpointing import Checkpointer
from latent_ode.training.distributed import ProcessGroup
from latent_ode.training.progress import Advance, progress_bar
from latent_ode.training.schedules import kl_weight, learning_rate
from latent_ode.training.state import TrainState
from latent_ode.training.validation import validate

__all__ = ["StopReason", "TrainEvent", "TrainResult", "fit"]

logger = logging.getLogger(__name__)

# The bounds of a channel's weight in the objective (TrainConfig.balance_channels).
_MIN_CHANNEL_WEIGHT, _MAX_CHANNEL_WEIGHT = 0.1, 10.0

StopReason = Literal["max_epochs", "max_steps", "max_time", "early_stop"]


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
    stopped: StopReason
    elapsed_s: float
    history: list[dict[str, float]] = field(default_factory=list)


def _noise_generator(config: TrainConfig, step: int, rank: int) -> torch.Generator:
    # Re-seeded every step from (seed, step, rank): resuming needs no per-process state.
    return torch.Generator().manual_seed((config.seed * 1_000_003 + step) * 1009 + rank)


class _Run:
    """One call of :func:`fit`: the parts it trains with, and its steps, epochs and validations.

    Attributes:
        best_weights: the state dict of the best validated weights so far.
        time_up: with several processes, the time budget as all of them agreed on it at the
            last gradient all-reduce.
    """

    def __init__(self, forecaster: Forecaster, train: Observations, val: Observations,
                 config: TrainConfig, group: ProcessGroup,
                 callbacks: Sequence[Callable[[TrainEvent], None]],
                 checkpoint_dir: str | Path | None) -> None:
        self.model: LatentODE = forecaster.model
        self.device = forecaster.device
        self.train, self.val, self.config, self.group = train, val, config, group
        self.callbacks = callbacks
        opt_cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.Adamax
        self.optimizer = opt_cls(self.model.parameters(), lr=config.lr)
        # Draws the batch order and the tasks, identically on every process.
        self.generator = torch.Generator().manual_seed(config.seed)
        self.steps_per_epoch = math.ceil(train.batch_size / config.batch_size)
        self.state = TrainState(perm=torch.randperm(train.batch_size, generator=self.generator))
        self.average = WeightAverage(self.model, config.ema_decay)
        self.best_weights = copy.deepcopy(self.model.state_dict())
        self.checkpointer = Checkpointer.create(
            checkpoint_dir, writes=group.reports, model=self.model, optimizer=self.optimizer,
            generator=self.generator, average=self.average, config=config)
        self.time_up = False
        self._started = 0.0  # set by start_clock, once the resumed elapsed time is known
        self._running: dict[str, float] = {}

    def resume(self) -> None:
        """Continue from the checkpoint, if there is one."""
        restored = self.checkpointer.resume()
        if restored is not None:
            self.state, self.best_weights = restored

    def start_clock(self) -> None:
        """Count the time from now on top of the time the resumed run had already spent."""
        self._started = monotonic() - self.state.elapsed_s

    def budget_spent(self) -> bool:
        """This process's clock has passed ``max_time_s``."""
        limit = self.config.max_time_s
        return limit is not None and monotonic() - self._started >= limit

    def total_steps(self) -> int:
        """The steps the run takes at most (for the progress bar)."""
        total = self.config.max_epochs * self.steps_per_epoch
        return total if self.config.max_steps is None else min(total, self.config.max_steps)

    def stop_reason(self) -> StopReason | None:
        """Why the run must stop before the next step, if it must."""
        config, state = self.config, self.state
        if state.epoch >= config.max_epochs:
            return "max_epochs"
        if config.max_steps is not None and state.step >= config.max_steps:
            return "max_steps"
        # With several processes only the agreed budget counts: see average_gradients.
        if self.time_up or (not self.group.distributed and self.budget_spent()):
            return "max_time"
        return None

    def step(self, advance: Advance) -> None:
        """One optimisation step on the next batch of the epoch."""
        config, state = self.config, self.state
        k = state.batch_in_epoch
        idx = state.perm[k * config.batch_size:(k + 1) * config.batch_size].to(self.device)
        batch = minibatch(self.train, idx)
        task = training_task(config, self.generator)
        lr = learning_rate(config, state.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        klw = kl_weight(config, state.step)
        # The generator draws the task's context the same on every process; then each process
        # keeps its share and draws its own latent noise.
        context, target = self.group.shard(*task_pair(
            batch, task, interp_fraction=config.interp_fraction,
            extrap_split=config.extrap_split, generator=self.generator))
        res = self.model.loss(context, target, num_samples=config.num_samples, kl_weight=klw,
                              generator=_noise_generator(config, state.step, self.group.rank))
        self.optimizer.zero_grad(set_to_none=True)
        res.loss.backward()
        if self.group.distributed:
            self.time_up = self.group.average_gradients(self.model, self.budget_spent())
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        self.average.update(self.model)
        state.step += 1
        state.batch_in_epoch += 1
        metrics = {"loss": float(res.loss.detach()), "mse": float(res.mse.detach().mean()),
                   "kl": float(res.kl.detach().mean()), "nfe": float(res.nfe), "lr": lr,
                   "kl_weight": klw}
        for key, value in metrics.items():
            self._running[key] = self._running.get(key, 0.0) + value
        advance(1, {"loss": metrics["loss"], "mse": metrics["mse"]})
        if state.step % config.log_every == 0:
            avg = {f"train_{k}": v / config.log_every for k, v in self._running.items()}
            self._running = {}
            self.emit(TrainEvent(kind="step", step=state.step, epoch=state.epoch, metrics=avg))
        if state.step % config.checkpoint_every == 0:
            self.snapshot()

    def train_until_stopped(self, advance: Advance) -> StopReason:
        """Take steps, end epochs and validate until a limit or early stopping says stop."""
        while True:
            if self.epoch_done():
                early_stop = self.end_epoch()
                if early_stop:
                    return "early_stop"
            stopped = self.stop_reason()
            if stopped is not None:
                return stopped
            self.step(advance)

    def epoch_done(self) -> bool:
        """Whether the current epoch's batches are all done (also right after resuming from a
        checkpoint written at an epoch's last step)."""
        return self.state.batch_in_epoch >= self.steps_per_epoch

    def end_epoch(self) -> bool:
        """Start the next epoch's batch order; validate when due.

        Returns:
            True when validation has run out of patience (early stopping).
        """
        config, state = self.config, self.state
        state.epoch += 1
        state.batch_in_epoch = 0
        state.perm = torch.randperm(self.train.batch_size, generator=self.generator)
        if state.epoch % config.val_every != 0 and state.epoch != config.max_epochs:
            return False
        self.validate()
        return config.patience is not None and state.bad_validations >= config.patience

    def validate(self) -> None:
        """Validate the kept model, record and report it; keep its weights when best so far."""
        kept = self.average.kept
        kept.eval()
        metrics = validate(kept, self.val, self.config)
        kept.train()
        state = self.state
        if state.record_validation(metrics, self.config.val_metric):
            self.best_weights = copy.deepcopy(kept.state_dict())
        logger.info("epoch %d step %d: %s", state.epoch, state.step,
                    ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
        best = {f"best_{self.config.val_metric}": state.best_metric}
        self.emit(TrainEvent(kind="epoch", step=state.step, epoch=state.epoch,
                             metrics={**metrics, **best}))

    def validated_last_step(self) -> bool:
        """The last step's weights have been validated."""
        return bool(self.state.history) and self.state.history[-1]["step"] == self.state.step

    def snapshot(self) -> None:
        """Write the resumable checkpoint, with the time spent so far."""
        self.state.elapsed_s = monotonic() - self._started
        self.checkpointer.save(self.state, self.best_weights)

    def emit(self, event: TrainEvent) -> None:
        """Report to the callbacks (on the reporting process only)."""
        if self.group.reports:
            for cb in self.callbacks:
                cb(event)


def calibrate(forecaster: Forecaster, val: Sequence[Series], config: TrainConfig, *,
              val_obs: Observations | None = None) -> None:
    """What :func:`fit` does once training ends, on the validation series: the blend towards
    the baselines (``config.calibrate_blend``), then the predictive noise
    (``config.calibrate_noise``) on the blended answers (calibration.py), both against the
    user's own values, unclipped, as :meth:`Forecaster.predict` answers them.

    ``val_obs``: ``to_model_batch(forecaster, val)`` when the caller has it.
    """
    if val_obs is None:
        val_obs = to_model_batch(forecaster, val)
    raw = (to_model_batch(forecaster, val, clip=False)
           if forecaster.normaliser.clip is not None else None)
    if config.calibrate_blend:
        forecaster.blend = calibrate_blend(forecaster, val_obs, config, raw=raw)
        logger.info("blend towards the baselines, weight of the model per regime (backcast, "
                    "interpolation, forecast), channel and gap bin: %s",
                    forecaster.blend.weights.round(3).tolist())
    if config.calibrate_noise:
        calibrate_noise(forecaster, val_obs, config, raw=raw).apply(forecaster)
        logger.info("calibrated predictive noise std per channel: %s inside the observed "
                    "window, %s after it, %s before it; variance growth per unit of gap %s",
                    *([round(float(x), 5) for x in n] for n in (
                        forecaster.noise_std, forecaster.extrap_noise_std,
                        forecaster.backcast_noise_std, forecaster.noise_growth.ravel())))


def channel_weights(train: Sequence[Series], balance: float, model: LatentODE
                    ) -> torch.Tensor | None:
    """(D,) weights of the channels' terms in the objective (``TrainConfig.balance_channels``),
    on the model's device; ``None`` for ``balance`` 0."""
    if balance == 0:
        return None
    counts = np.sum([np.isfinite(s.values).sum(axis=0) for s in train], axis=0).astype(float)
    seen = counts > 0
    weight = np.ones_like(counts)
    weight[seen] = (counts[seen].mean() / counts[seen]) ** balance
    weight /= (weight * counts).sum() / counts.sum()  # the observations' mean weight is 1
    weight = np.clip(weight, _MIN_CHANNEL_WEIGHT, _MAX_CHANNEL_WEIGHT)
    device = next(model.parameters()).device
    return torch.as_tensor(weight, dtype=torch.float32, device=device)


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
        DataError: empty splits, or fewer series per batch than processes. CheckpointError: an
        unreadable checkpoint. SolverError: the latent ODE solve failed during training.
    """
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"`train` and `val` must not be empty; got {len(train)} and {len(val)} "
                        "series.")
    model = forecaster.model
    model.channel_weight = channel_weights(train, config.balance_channels, model)
    group = ProcessGroup.current()
    group.join(model, config.batch_size)
    val_obs = to_model_batch(forecaster, val)
    run = _Run(forecaster, to_model_batch(forecaster, train), val_obs, config, group, callbacks,
               checkpoint_dir)
    if resume:
        run.resume()
    run.start_clock()
    model.train()
    with progress_bar(run.total_steps(), enabled=config.progress and group.reports) as advance:
        advance(run.state.step, {})
        stopped = run.train_until_stopped(advance)
    if not run.validated_last_step():
        run.validate()
    run.snapshot()
    model.load_state_dict(run.best_weights)
    model.eval()
    calibrate(forecaster, val, config, val_obs=val_obs)
    state = run.state
    result = TrainResult(best_metric=state.best_metric, best_step=state.best_step,
                         steps=state.step, epochs=state.epoch, stopped=stopped,
                         elapsed_s=state.elapsed_s, history=list(state.history))
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
