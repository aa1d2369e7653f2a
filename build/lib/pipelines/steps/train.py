"""Train: build a forecaster from the config and fit it on the ingested split.

:func:`train` is the core (no MLflow); callbacks passed in receive every ``TrainEvent``, which
is how the tracking layer logs per-step metrics. Checkpoints go to ``checkpoint_dir``;
``resume=True`` continues exactly from the last one there (the library's exact resume).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latent_ode import Forecaster, fit
from latent_ode.device import resolve_device
from latent_ode.errors import ConfigError
from pipelines.config import PipelineConfig, get_settings
from pipelines.steps.ingest import IngestResult

__all__ = [
    "TrainStepResult",
    "broadcast_from_rank0",
    "process_group",
    "training_device",
    "summary_metrics",
    "train",
    "world_size",
]

logger = logging.getLogger(__name__)


def training_device(override: str | None = None) -> str:
    """The torch device this training process uses, as a device string.

    Args:
        override: the command line's ``--device``; ``None`` takes ``LATENT_ODE_DEVICE`` (see
            :class:`pipelines.config.PipelineSettings`), whose default is ``auto``.

    Under ``torchrun`` (``LOCAL_RANK`` set), ``auto`` and ``cuda`` take ``cuda:LOCAL_RANK``: one
    GPU per process.

    Raises:
        ConfigError: CUDA asked for but not available, or an unknown setting.
    """
    local_rank = os.environ.get("LOCAL_RANK")
    device = resolve_device(
        override or get_settings().device,
        local_rank=int(local_rank) if local_rank is not None else None,
    )
    return str(device)


def world_size() -> int:
    """Number of training processes: ``WORLD_SIZE`` as set by ``torchrun``, else 1."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise ConfigError(
            f"WORLD_SIZE must be an integer; got {os.environ['WORLD_SIZE']!r}."
        ) from None


@contextmanager
def process_group(device: str) -> Iterator[tuple[int, int]]:
    """Join the ``torch.distributed`` process group that ``torchrun`` describes, if any.

    With ``WORLD_SIZE`` > 1 (``torchrun --nproc-per-node N ...``) this initialises the group
    from the environment (``env://``: ``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``), with the
    ``gloo`` backend on CPU and ``nccl`` on CUDA, and destroys it on exit.

    Args:
        device: the torch device string of this process.

    Yields:
        ``(rank, world_size)``; ``(0, 1)`` without ``torchrun``.
    """
    world = world_size()
    if world == 1:
        yield 0, 1
        return
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    logger.info("joined the %s process group: rank %d of %d", backend, dist.get_rank(), world)
    try:
        yield dist.get_rank(), world
    finally:
        dist.destroy_process_group()


def broadcast_from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` on every process (the value itself without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@dataclass(frozen=True)
class TrainStepResult:
    """A trained forecaster and its final metrics.

    Attributes:
        forecaster: the trained model (on the device it was trained on).
        metrics: validation metrics (``val_*``) of the kept weights, see :func:`summary_metrics`.
        result: the library's ``TrainResult``.
    """

    forecaster: Forecaster
    metrics: dict[str, float]
    result: Any


def train(
    cfg: PipelineConfig,
    data: IngestResult,
    *,
    device: str = "cpu",
    callbacks: Sequence[Callable[[Any], None]] = (),
    checkpoint_dir: Path | None = None,
    resume: bool = False,
) -> TrainStepResult:
    """Create a forecaster for ``data`` and fit it with ``cfg``'s model, solver and train settings.

    Args:
        cfg: the pipeline config.
        data: the ingested split (the normaliser is fitted on its train part).
        device: a torch device string (see :func:`training_device`).
        callbacks: called with each ``TrainEvent``.
        checkpoint_dir: where resumable checkpoints are written.
        resume: continue from the last checkpoint in ``checkpoint_dir``.

    Under an initialised ``torch.distributed`` process group (see :func:`process_group`) every
    process calls this with the same arguments; ``fit`` shards each batch, averages gradients,
    and only rank 0 calls ``callbacks`` and writes checkpoints.

    Raises:
        ConfigError: ``model.input_dim`` does not match the data.
    """
    model_cfg = cfg.model_config_for(data.channels)
    train_cfg = cfg.train_config()
    forecaster = Forecaster.create(
        model_cfg, data.normaliser, channels=data.channels, time_unit=data.time_unit,
        metadata={"source": data.source.uri}, seed=train_cfg.seed,
    ).to(device)
    logger.info(
        "training on %s: %d train / %d val series, %s", device, len(data.train), len(data.val),
        "resuming from the last checkpoint" if resume else "from scratch",
    )
    result = fit(
        forecaster, data.train, data.val, train_cfg, callbacks=tuple(callbacks),
        checkpoint_dir=checkpoint_dir, resume=resume,
    )
    metrics = summary_metrics(result)
    forecaster.metadata["metrics"] = metrics
    return TrainStepResult(forecaster=forecaster, metrics=metrics, result=result)


def summary_metrics(result: Any) -> dict[str, float]:
    """Validation metrics of the weights ``fit`` kept (the best validation, not the last).

    Returns:
        ``val_loss``, ``val_mse``, ``val_interp_mse``, ... from the validation at ``best_step``
        (empty if training never validated).
    """
    for entry in reversed(result.history):
        if entry.get("step") == result.best_step:
            return {k: float(v) for k, v in entry.items() if k.startswith("val_")}
    return {}


def one_torch_thread_unless_set() -> None:
    """Train with one torch thread unless the user chose a count with ``OMP_NUM_THREADS``.

    The models here are small (batch 50, 64 units): extra intra-op threads add synchronisation,
    not speed, and on a busy 2-core machine they contend with everything else. Measured there
    (load average 9-12): 4 epochs of periodic.toml took 18.5 s wall / 4.4 s CPU with one thread
    and 345 s wall / 101 s CPU with two. The service uses one thread too
    (``LATENT_ODE_TORCH_THREADS``).
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return
    import torch

    if torch.get_num_threads() != 1:
        logger.info("training with 1 torch thread (was %d); set OMP_NUM_THREADS to "
                    "choose", torch.get_num_threads())
        torch.set_num_threads(1)
