"""What the training loop carries from one step to the next, and what a checkpoint keeps of it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["TrainState"]


@dataclass(kw_only=True)
class TrainState:
    """The loop's position, its best validation so far and its history.

    Mutable on purpose: the loop advances it in place, and a checkpoint stores it whole
    (:meth:`to_dict`), so resuming restores exactly where the run was.

    Attributes:
        step: optimisation steps done.
        epoch: epochs completed.
        batch_in_epoch: batches of the current epoch done.
        perm: (N,) the order of the training series in the current epoch.
        best_metric: best value of ``TrainConfig.val_metric`` so far.
        best_step: the step at which it was reached.
        bad_validations: validations since the last improvement (early stopping).
        elapsed_s: training wall-clock seconds, across resumes.
        history: one dict per validation: ``step``, ``epoch`` and the validation metrics.
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    perm: torch.Tensor
    best_metric: float = math.inf
    best_step: int = 0
    bad_validations: int = 0
    elapsed_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)

    def record_validation(self, metrics: dict[str, float], val_metric: str) -> bool:
        """Append a validation at the current step to the history and update the best value
        and the early-stopping count.

        Args:
            metrics: the validation metrics (:func:`~latent_ode.training.validation.validate`).
            val_metric: the one that decides (lower is better).

        Returns:
            True when this validation is the best so far.
        """
        value = metrics[val_metric]
        improved = value < self.best_metric
        if improved:
            self.best_metric, self.best_step, self.bad_validations = value, self.step, 0
        else:
            self.bad_validations += 1
        self.history.append({"step": self.step, "epoch": self.epoch, **metrics})
        return improved

    def to_dict(self) -> dict[str, Any]:
        """Tensors and plain numbers only, for ``torch.load(weights_only=True)``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """The state :meth:`to_dict` returned (the checkpoints' ``loop`` entry, same keys since
        training checkpoints were first written)."""
        return cls(**data)
