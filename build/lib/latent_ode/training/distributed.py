"""Data-parallel training over a ``torch.distributed`` process group (e.g. under ``torchrun``).

Every process holds the whole model and the whole batch order; each takes an equal share of each
batch (:meth:`ProcessGroup.shard`), the gradients are averaged in one all-reduce
(:meth:`ProcessGroup.average_gradients`), and only rank 0 reports and writes checkpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from latent_ode.data import Observations
from latent_ode.errors import DataError

__all__ = ["ProcessGroup"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place among the training processes.

    Attributes:
        rank: this process's index, 0 for the one that reports.
        world: the number of processes (1 without a process group).
    """

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> ProcessGroup:
        """The initialised ``torch.distributed`` group, or a single process without one."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return cls(rank=torch.distributed.get_rank(), world=torch.distributed.get_world_size())
        return cls()

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world > 1

    @property
    def reports(self) -> bool:
        """This process calls the callbacks and writes checkpoints (rank 0)."""
        return self.rank == 0

    def join(self, model: nn.Module, batch_size: int) -> None:
        """Start every process from rank 0's weights.

        Raises:
            DataError: ``batch_size`` is smaller than the number of processes.
        """
        if not self.distributed:
            return
        if batch_size < self.world:
            raise DataError(f"`batch_size` ({batch_size}) must be at least the number of "
                            f"processes ({self.world}) for distributed training.")
        for p in model.parameters():
            torch.distributed.broadcast(p.data, src=0)
        logger.info("distributed training: rank %d of %d", self.rank, self.world)

    def shard(self, context: Observations, target: Observations
              ) -> tuple[Observations, Observations]:
        """This process's share of a batch's pair: series ``rank``, ``rank + world``, ..."""
        if not self.distributed:
            return context, target
        idx = torch.arange(self.rank, context.batch_size, self.world, device=context.times.device)
        return context.index(idx), target.index(idx)

    def average_gradients(self, model: nn.Module, time_up: bool) -> bool:
        """Average the gradients across processes in one all-reduce, and agree on the time budget.

        The processes' clocks do not agree on the step at which a time budget runs out; one that
        stopped alone would leave the others waiting in the next all-reduce for ever. So each
        process's "my time is up" rides in the same buffer, and all stop when any says so.

        Args:
            model: the model whose ``.grad`` are replaced by their averages.
            time_up: this process's clock has passed the budget.

        Returns:
            True when any process's time is up (``time_up`` itself with one process).
        """
        if not self.distributed:
            return time_up
        params = list(model.parameters())
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads]
                         + [grads[0].new_full((1,), float(time_up))])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        for p, g in zip(params, grads, strict=True):
            p.grad = (flat[offset:offset + g.numel()] / self.world).view_as(g)
            offset += g.numel()
        return bool(flat[-1] > 0)
