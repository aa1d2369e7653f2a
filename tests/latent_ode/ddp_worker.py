"""Worker for the distributed-training tests: ``python ddp_worker.py RANK WORLD PORT OUT [timed]``.

``timed``: train against a time budget while rank 0's callback is slow, so that the ranks' clocks
pass the budget at different steps.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from latent_ode import (
    DynamicsConfig,
    EncoderConfig,
    Forecaster,
    ModelConfig,
    Normaliser,
    TrainConfig,
    fit,
)
from pipelines.sources.periodic import periodic


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world)
    data = periodic(60, n_times=20, shared_grid=False, seed=0)
    norm = Normaliser.fit(data[:40], kind="none", time_scale=1.0)
    cfg = ModelConfig(input_dim=1, latent_dim=4,
                      encoder=EncoderConfig(hidden=8, units=16, max_step=0.1),
                      dynamics=DynamicsConfig(units=16))
    fc = Forecaster.create(cfg, norm, channels=["x"], time_unit="s", seed=rank)  # rank 0 wins
    events = []
    timed = sys.argv[5:] == ["timed"]
    if timed:
        cfg_train = TrainConfig(batch_size=10, max_epochs=1000, max_time_s=1.5, progress=False,
                                seed=0, log_every=1)
        callbacks = [events.append, lambda event: time.sleep(0.05)]
    else:
        cfg_train = TrainConfig(batch_size=10, max_epochs=2, progress=False, seed=0, log_every=2)
        callbacks = [events.append]
    res = fit(fc, data[:40], data[40:50], cfg_train, callbacks=callbacks,
              checkpoint_dir=out / f"ckpt{world}")
    torch.save({"weights": fc.model.state_dict(), "events": torch.tensor(len(events)),
                "best": torch.tensor(res.best_metric), "steps": torch.tensor(res.steps),
                "stopped": res.stopped}, out / f"rank{rank}-of-{world}.pt")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
