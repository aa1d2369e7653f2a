"""Train: build a forecaster from the config and fit it on the ingested split.

:func:`train` is the core (no MLflow); callbacks passed in receive every ``TrainEvent``, which
is how the tracking layer logs per-step metrics. Checkpoints go to ``checkpoint_dir``;
``resume=True`` continues exactly from the last one there (the library's exact resume).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latent_ode import Forecaster, fit
from latent_ode.errors import ConfigError
from pipelines.config import PipelineConfig
from pipelines.steps.ingest import IngestResult

__all__ = ["TrainStepResult", "resolve_device", "summary_metrics", "train"]

logger = logging.getLogger(__name__)


def resolve_device(spec: str) -> str:
    """Turn a device setting into a torch device string.

    Args:
        spec: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``. Under
            ``torchrun`` with ``auto``/``cuda``, each process takes ``cuda:LOCAL_RANK``.

    Raises:
        ConfigError: CUDA asked for but not available, or an unknown spec.
    """
    import torch

    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {spec!r} asked for, but CUDA is not available here; use --device cpu "
                "or auto."
            )
        if spec == "cuda" and "LOCAL_RANK" in os.environ:
            return f"cuda:{int(os.environ['LOCAL_RANK'])}"
        return spec
    raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {spec!r}.")


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
        device: a torch device string (see :func:`resolve_device`).
        callbacks: called with each ``TrainEvent``.
        checkpoint_dir: where resumable checkpoints are written.
        resume: continue from the last checkpoint in ``checkpoint_dir``.

    Raises:
        ConfigError: ``model.input_dim`` does not match the data, or the command runs under
            ``torchrun`` with more than one process (not supported yet).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        raise ConfigError(
            f"multi-process training (torchrun, WORLD_SIZE={world}) is not supported yet: "
            "latent_ode.fit trains in one process. Run the command without torchrun."
        )
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
