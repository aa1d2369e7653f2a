"""When a GPU pays: training-step and prediction time against batch size, CPU and CUDA side by side.

The model is `bench/train_periodic.py`'s (latent 10, ODE-RNN with the ``mlp_gru`` cell, rotating
latent dynamics, dopri5 at rtol 1e-3) on `periodic` series of 100 times on [0, 5]. Training: one
step (interpolation task, backprop through the solver) at batch 50, 200 and 800 on one grid
shared by the batch. Prediction: ``Forecaster.predict`` with 32 latent samples at 100 query times
on [0, 7.5], for 1, 16 and 256 series with their own times (a service request's shape). Every
figure is the mean of several repetitions after a warm-up, each device in the same process, so
the ratios between devices are what to read. (A timed training run is one ``fit`` call, whose
closing validation over 5 series is included: a few percent of the repetitions' time.)

    python bench/device_scaling.py                 # CPU, and CUDA when present
    python bench/device_scaling.py --threads 4
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from _results import write_results

from latent_ode import (
    DynamicsConfig,
    EncoderConfig,
    Forecaster,
    ModelConfig,
    Normaliser,
    SolverConfig,
    TrainConfig,
    fit,
)
from pipelines.sources.periodic import periodic

CONFIG = ModelConfig(input_dim=1, latent_dim=10,
                     encoder=EncoderConfig(cell="mlp_gru", hidden=20, units=100, max_step=0.25),
                     dynamics=DynamicsConfig(units=100, rotation=6.0),
                     solver=SolverConfig(rtol=1e-3, atol=1e-4))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_step_s(device: str, batch: int, norm: Normaliser, data: list, repeats: int) -> float:
    fc = Forecaster.create(CONFIG, norm, channels=["x"], time_unit="s", seed=0).to(device)
    train, val = data[:800], data[800:805]

    def run(steps: int) -> None:
        fit(fc, train, val, TrainConfig(max_steps=steps, batch_size=batch, progress=False, seed=0,
                                        patience=None, val_every=10**6))

    run(2)  # warm-up: allocator, kernels, the first validation
    _sync(device)
    t0 = time.perf_counter()
    run(repeats)
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def predict_s(device: str, batch: int, norm: Normaliser, data: list, repeats: int) -> float:
    fc = Forecaster.create(CONFIG, norm, channels=["x"], time_unit="s", seed=0).to(device)
    queries = [np.linspace(0.0, 7.5, 100)] * batch
    fc.predict(data[:batch], queries, num_samples=32)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fc.predict(data[:batch], queries, num_samples=32)
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("bench/results/device_scaling.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    shared = periodic(1000, n_times=100, t_max=5.0, shared_grid=True, seed=0)
    own = periodic(256, n_times=100, t_max=5.0, shared_grid=False, seed=0)
    norm = Normaliser.fit(shared[:800], kind="none", time_scale=1.0)
    rows: list[dict[str, object]] = []
    cases = (("train_step", (50, 200, 800), train_step_s, shared),
             ("predict", (1, 16, 256), predict_s, own))
    for device in devices:
        for what, batches, measure, data in cases:
            for batch in batches:
                s = measure(device, batch, norm, data, args.repeats)
                rows.append({"what": what, "device": device, "batch": batch, "seconds": s,
                             "series_per_s": batch / s})
                print(f"{what:10s}  {device:4s} batch {batch:4d}: {s * 1e3:8.1f} ms  "
                      f"{batch / s:8.1f} series/s", flush=True)
    summary: dict[str, object] = {
        "threads": args.threads, "repeats": args.repeats,
        "cuda_device": torch.cuda.get_device_name(0) if "cuda" in devices else None, "rows": rows,
    }
    if "cuda" in devices:
        ratios = {}
        for r in rows:
            if r["device"] == "cuda":
                cpu = next(c for c in rows if c["device"] == "cpu" and c["what"] == r["what"]
                           and c["batch"] == r["batch"])
                ratios[f"{r['what']}_batch{r['batch']}_cpu_over_cuda_time"] = cpu["seconds"] / r["seconds"]
        summary["ratios"] = ratios
        for k, v in ratios.items():
            print(f"{k}: {v:.2f}")
    write_results(args.out, summary)


if __name__ == "__main__":
    main()
