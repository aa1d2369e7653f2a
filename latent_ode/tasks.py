"""The two tasks: how a batch of observations becomes (context, target) pairs, and which task
a batch trains or a held-out split is measured on.

Interpolation (Rubanova et al. 2019, Sec. 4.1): the encoder sees a random subset of each
series' time points and the model reconstructs all of them. Extrapolation: the encoder sees the
points before a split time and the model forecasts the points after it.

Training (:mod:`latent_ode.training`), its validation, the noise calibration and
:func:`latent_ode.evaluate` all draw their tasks here: :func:`task_pair` is the one place a task
name becomes a pair, :func:`training_task` and :func:`validation_tasks` the one place a task is
chosen, and :func:`task_batches` the one loop over a held-out split.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from latent_ode.config import TrainConfig
from latent_ode.data import Observations, Series, collate
from latent_ode.errors import ShapeError
from latent_ode.forecaster import Forecaster

__all__ = ["TASKS", "TASK_PREFIX", "Task", "TaskBatch", "compact", "extrapolation_task",
           "interpolation_task", "minibatch", "seen_in_context", "split_raw", "task_batches",
           "task_pair", "to_model_batch", "training_task", "validation_tasks", "with_raw"]

Task = Literal["interpolation", "extrapolation"]
TASKS: tuple[Task, ...] = ("interpolation", "extrapolation")
# Each task's prefix in metric names (val_interp_mse, extrap_mse, ...).
TASK_PREFIX: dict[Task, str] = {"interpolation": "interp", "extrapolation": "extrap"}


def compact(obs: Observations, keep: Tensor) -> Observations:
    """Keep the time points where ``keep`` (B, T) is True, packed to the left.

    Every series must keep at least one valid point. Padding repeats each series' last kept
    time, with an all-False mask.
    """
    t = keep.shape[1]
    keep = keep & obs.valid
    lengths = keep.sum(dim=1)
    assert bool((lengths >= 1).all()), "compact() needs one kept point per series"
    ar = torch.arange(t, device=keep.device)
    # Kept positions sort first, in time order: (B, T) permutation.
    order = torch.argsort(torch.where(keep, ar, ar + t), dim=1, stable=True)
    new_t = int(lengths.max())
    order = order[:, :new_t]  # (B, T')
    valid = ar[None, :new_t] < lengths[:, None]  # (B, T')
    last = order.gather(1, (lengths - 1)[:, None])  # (B, 1) index of the last kept point
    order = torch.where(valid, order, last)
    d = obs.values.shape[2]
    idx3 = order[:, :, None].expand(-1, -1, d)
    return Observations(
        times=obs.times.gather(1, order),
        values=obs.values.gather(1, idx3),
        mask=obs.mask.gather(1, idx3) & valid[:, :, None],
        lengths=lengths,
    )


def interpolation_task(obs: Observations, fraction: float, *,
                       generator: torch.Generator | None = None) -> tuple[Observations, Observations]:
    """Context: a random ``fraction`` of each series' points; target: all points.

    Each series keeps exactly ``round(fraction * length)`` of its points (at least one), drawn
    without replacement: the reference protocol shows the encoder a random 50 of 100 points.
    (A coin per point would keep a varying number, and the encoder's loop runs as many times as
    the longest context of the batch: about 62 at fraction 0.5 and batch 50.)
    """
    # Drawn on the CPU (where seeded generators live) so that a seed picks the same points on
    # any device.
    u = torch.rand(obs.times.shape, generator=generator).to(obs.times.device)
    u = torch.where(obs.valid, u, 2.0)  # padding ranks last
    rank = u.argsort(dim=1).argsort(dim=1)
    count = torch.round(fraction * obs.lengths).clamp_min(1)
    keep = (rank < count[:, None]) & obs.valid
    return compact(obs, keep), obs


def extrapolation_task(obs: Observations, split: float) -> tuple[Observations, Observations]:
    """Context: points before ``first + split * span``; target: the points from there on.

    Series with a single point cannot be split; their target is their context.
    """
    first, last = obs.first_time, obs.last_time
    cut = first + split * (last - first)  # (B,)
    before = (obs.times < cut[:, None]) & obs.valid
    before[:, 0] = True
    after = (~before) & obs.valid
    single = ~after.any(dim=1)
    after = torch.where(single[:, None], before, after)
    return compact(obs, before), compact(obs, after)


def seen_in_context(context: Observations, target: Observations) -> torch.Tensor:
    """(B, T_target, D) True where the target value was also given to the encoder."""
    same_time = target.times[:, :, None] == context.times[:, None, :]  # (B, Tt, Tc)
    valid_ctx = context.mask  # (B, Tc, D)
    return torch.einsum("btc,bcd->btd", same_time.float(), valid_ctx.float()) > 0


def minibatch(obs: Observations, idx: Tensor) -> Observations:
    """The series ``idx`` (B,) of ``obs``, without the padding columns none of them needs."""
    sub = obs.index(idx)
    t = int(sub.lengths.max())
    return Observations(times=sub.times[:, :t], values=sub.values[:, :t], mask=sub.mask[:, :t],
                        lengths=sub.lengths)


def task_pair(obs: Observations, task: Task, *, interp_fraction: float, extrap_split: float,
              generator: torch.Generator | None = None) -> tuple[Observations, Observations]:
    """The (context, target) pair of ``task`` on ``obs``.

    Args:
        obs: B series (normalised).
        task: ``interpolation`` or ``extrapolation``.
        interp_fraction: the share of each series' points the encoder sees in interpolation.
        extrap_split: where in each series' span extrapolation splits context from target.
        generator: draws the interpolation context (extrapolation draws nothing).

    Returns:
        (context, target), each B series.
    """
    if task == "extrapolation":
        return extrapolation_task(obs, extrap_split)
    return interpolation_task(obs, interp_fraction, generator=generator)


def training_task(config: TrainConfig, generator: torch.Generator) -> Task:
    """The task the next training batch trains: ``config.task``, or with ``both`` a draw from
    ``generator`` (extrapolation with probability ``config.extrap_prob``)."""
    if config.task == "both":
        extrap = float(torch.rand((), generator=generator)) < config.extrap_prob
        return "extrapolation" if extrap else "interpolation"
    return config.task


def validation_tasks(config: TrainConfig) -> tuple[Task, ...]:
    """The tasks validation measures: those the run trains, and the one ``val_metric`` names.

    A single-task run does not pay for validating the other task (half of validation, about
    4% of a `periodic` bench run's time budget).
    """
    return tuple(task for task in TASKS if config.task in (task, "both")
                 or config.val_metric == f"val_{TASK_PREFIX[task]}_mse")


@dataclass(frozen=True)
class TaskBatch:
    """One minibatch of a held-out split, as one task's pair.

    Attributes:
        task: the task.
        start: index of the batch's first series in the split.
        size: number of series in the batch (B).
        context: what the encoder sees (B series).
        target: what the model is measured on (B series).
    """

    task: Task
    start: int
    size: int
    context: Observations
    target: Observations


def task_batches(obs: Observations, tasks: Sequence[Task], *, batch_size: int,
                 interp_fraction: float, extrap_split: float, generator: torch.Generator,
                 trim: bool = True) -> Iterator[TaskBatch]:
    """The loop over a held-out split: for each task, its minibatches in order, as task pairs.

    Lazy: each pair is drawn when asked for, so draws the caller makes from ``generator``
    between items (e.g. the latent noise of validation) fall between the pairs' draws, as in a
    plain loop. Only interpolation draws from ``generator``, so the draws do not depend on the
    order of ``tasks``.

    Args:
        obs: the whole split (normalised), N series.
        tasks: the tasks to measure, in order.
        batch_size: series per minibatch.
        interp_fraction: see :func:`task_pair`.
        extrap_split: see :func:`task_pair`.
        generator: draws the interpolation contexts.
        trim: drop the padding columns no series of a minibatch needs (less work). The context
            drawn depends on the padded width, so ``False`` keeps the draws of a minibatch that
            carries the whole split's padding (what :func:`latent_ode.evaluate` has always drawn).

    Yields:
        :class:`TaskBatch` per task and minibatch.
    """
    n = obs.batch_size
    for task in tasks:
        for start in range(0, n, batch_size):
            idx = torch.arange(start, min(start + batch_size, n), device=obs.times.device)
            batch = minibatch(obs, idx) if trim else obs.index(idx)
            context, target = task_pair(batch, task, interp_fraction=interp_fraction,
                                        extrap_split=extrap_split, generator=generator)
            yield TaskBatch(task=task, start=start, size=len(idx), context=context, target=target)


def to_model_batch(forecaster: Forecaster, series: Sequence[Series], *,
                   clip: bool = True) -> Observations:
    """Normalise series, shift each to start at time 0, and pad them into one batch on the
    forecaster's device: the split a task is drawn from (``clip=False``: the values unclipped,
    :meth:`~latent_ode.normalisation.Normaliser.values_to_model`)."""
    norm = forecaster.normaliser
    shifted = [Series(times=s.times - s.times[0], values=s.values, id=s.id) for s in series]
    return collate([norm.transform(s, clip=clip) for s in shifted], device=forecaster.device)


def with_raw(obs: Observations, raw: Observations) -> Observations:
    """One batch of 2D channels: ``obs`` (what the model reads) then ``raw`` (the same series
    unclipped, ``to_model_batch(..., clip=False)``), for :func:`split_raw` to separate again.
    Tasks draw time points, not channels, so a task pair drawn on it holds both versions of
    the same points."""
    if raw.values.shape != obs.values.shape or not torch.equal(raw.mask, obs.mask):
        raise ShapeError(f"`raw` must be the same series as `obs`; got values of shape "
                         f"{tuple(raw.values.shape)} against {tuple(obs.values.shape)}.")
    return Observations(times=obs.times, values=torch.cat([obs.values, raw.values], dim=2),
                        mask=torch.cat([obs.mask, raw.mask], dim=2), lengths=obs.lengths)


def split_raw(obs: Observations) -> tuple[Observations, Observations]:
    """(model, raw) halves of a batch made by :func:`with_raw`: what the
    model reads, and the user's own values on its scale (what the baselines and the scores use)."""
    d = obs.values.shape[2] // 2
    model = Observations(times=obs.times, values=obs.values[..., :d], mask=obs.mask[..., :d],
                         lengths=obs.lengths)
    raw = Observations(times=obs.times, values=obs.values[..., d:], mask=obs.mask[..., d:],
                       lengths=obs.lengths)
    return model, raw
