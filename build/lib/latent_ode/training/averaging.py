"""The moving average of the weights (Polyak averaging, ``TrainConfig.ema_decay``)."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["WeightAverage"]


class WeightAverage:
    """The model that validation measures and training keeps: the exponential moving average of
    the weights after every step, or, without a decay, the weights themselves.

    Args:
        model: the model being trained.
        decay: ``avg = decay * avg + (1 - decay) * weights`` after each step (the first step's
            weights start the average); ``None``: no average.
    """

    def __init__(self, model: nn.Module, decay: float | None) -> None:
        self._averaged = (None if decay is None else
                          AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay)))
        self.kept: nn.Module = model if self._averaged is None else self._averaged.module

    def update(self, model: nn.Module) -> None:
        """Fold the weights after a step into the average (nothing without one)."""
        if self._averaged is not None:
            self._averaged.update_parameters(model)

    def state_dict(self) -> dict[str, Any] | None:
        """The average's resumable state, ``None`` without one."""
        return None if self._averaged is None else self._averaged.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (nothing without an average)."""
        if self._averaged is not None:
            self._averaged.load_state_dict(state)
