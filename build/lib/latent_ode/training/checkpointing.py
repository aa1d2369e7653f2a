"""The resumable training checkpoint ``last.pt``: tensors and plain numbers only, written
atomically, read with ``weights_only=True``.

It holds the model, the optimiser, the batch-order generator, the best weights so far, the
loop's :class:`~latent_ode.training.state.TrainState`, the config (for the reader's eyes) and,
with ``ema_decay``, the moving average.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from latent_ode.config import TrainConfig, config_to_dict
from latent_ode.errors import CheckpointError
from latent_ode.training.averaging import WeightAverage
from latent_ode.training.state import TrainState

__all__ = ["CHECKPOINT_FILE", "Checkpointer"]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "last.pt"


@dataclass(frozen=True)
class Checkpointer:
    """Writes and reads one run's checkpoint; everything it saves is resumed.

    Attributes:
        path: ``checkpoint_dir/last.pt``, or ``None``: no checkpoints.
        writes: whether this process writes (only rank 0 does under data parallelism).
        model: the model being trained.
        optimizer: its optimiser.
        generator: the generator of the batch order and the tasks.
        average: the moving average of the weights.
        config: the run's settings.
    """

    path: Path | None
    writes: bool
    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    average: WeightAverage
    config: TrainConfig

    @classmethod
    def create(cls, checkpoint_dir: str | Path | None, *, writes: bool, model: nn.Module,
               optimizer: torch.optim.Optimizer, generator: torch.Generator,
               average: WeightAverage, config: TrainConfig) -> Checkpointer:
        """A checkpointer writing ``last.pt`` into ``checkpoint_dir`` (created now), or none
        when it is ``None``; the other arguments are the attributes."""
        path = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_FILE
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path=path, writes=writes, model=model, optimizer=optimizer,
                   generator=generator, average=average, config=config)

    def save(self, state: TrainState, best_weights: dict[str, torch.Tensor]) -> None:
        """Write the checkpoint (when this process writes one at all)."""
        if self.path is None or not self.writes:
            return
        average = self.average.state_dict()
        payload = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(), "best_weights": best_weights,
            "loop": state.to_dict(), "config": config_to_dict(self.config),
            **({"averaged": average} if average is not None else {}),
        }
        tmp = self.path.with_suffix(".tmp")
        torch.save(payload, tmp)
        tmp.replace(self.path)  # atomic: a kill mid-write never leaves a torn checkpoint

    def resume(self) -> tuple[TrainState, dict[str, torch.Tensor]] | None:
        """Load the checkpoint into the model, optimiser, generator and average.

        Returns:
            The loop's state and the best weights so far; ``None`` when there is no checkpoint
            (the run then starts afresh, with a warning).

        Raises:
            CheckpointError: the file is not a readable training checkpoint.
        """
        if self.path is None or not self.path.exists():
            logger.warning("--resume: no checkpoint at %s; starting from scratch", self.path)
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for torn or foreign files
            raise CheckpointError(
                f"cannot resume from {self.path}: not a readable training checkpoint "
                f"({type(exc).__name__}). Delete it to start afresh."
            ) from exc
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.generator.set_state(saved["generator"])
        if self.config.ema_decay is not None:
            self.average.load_state_dict(saved["averaged"])
        state = TrainState.from_dict(saved["loop"])
        logger.info("resumed from %s at step %d (epoch %d)", self.path, state.step, state.epoch)
        return state, saved["best_weights"]
