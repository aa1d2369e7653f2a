"""The validation metrics training selects and stops on."""

from __future__ import annotations

import torch

from latent_ode.config import TrainConfig
from latent_ode.data import Observations
from latent_ode.model import LatentODE
from latent_ode.tasks import TASK_PREFIX, task_batches, validation_tasks

__all__ = ["validate"]

# Offsets the validation draws from the training seed, so they are not the training's draws.
_SEED_OFFSET = 7919


@torch.no_grad()
def validate(model: LatentODE, val: Observations, config: TrainConfig) -> dict[str, float]:
    """Deterministic validation metrics: the same context subsets and noise every time.

    Args:
        model: the model to measure (put in eval mode by the caller).
        val: the validation split (normalised), N series.
        config: ``batch_size``, the tasks (:func:`~latent_ode.tasks.validation_tasks`), their
            settings and ``seed``.

    Returns:
        ``val_<task>_loss`` and ``val_<task>_mse`` (``<task>`` = ``interp``, ``extrap``) per task
        measured, the objective at KL weight 1 and the mean squared error per series; and
        ``val_loss`` and ``val_mse``, their averages over the tasks measured.
    """
    gen = torch.Generator().manual_seed(config.seed + _SEED_OFFSET)
    tasks = validation_tasks(config)
    loss = dict.fromkeys(tasks, 0.0)
    mse = dict.fromkeys(tasks, 0.0)
    for item in task_batches(val, tasks, batch_size=config.batch_size,
                             interp_fraction=config.interp_fraction,
                             extrap_split=config.extrap_split, generator=gen):
        # The same generator draws the contexts and the latent noise, interleaved batch by batch.
        res = model.loss(item.context, item.target, num_samples=1, kl_weight=1.0, generator=gen)
        loss[item.task] += float(res.loss) * item.size
        mse[item.task] += float(res.mse.sum())
    n = val.batch_size
    out: dict[str, float] = {}
    for task in tasks:
        out[f"val_{TASK_PREFIX[task]}_loss"] = loss[task] / n
        out[f"val_{TASK_PREFIX[task]}_mse"] = mse[task] / n
    out["val_loss"] = sum(out[f"val_{TASK_PREFIX[t]}_loss"] for t in tasks) / len(tasks)
    out["val_mse"] = sum(out[f"val_{TASK_PREFIX[t]}_mse"] for t in tasks) / len(tasks)
    return out
