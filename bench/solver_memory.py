"""Peak memory and time of one training step against the time horizon, for both gradient modes.

Issue (library, item 1): the adjoint's memory must stay flat (<= 1.3x from 1x to 10x horizon)
while backpropagation through the solver grows.

One training step = encoder over 20 context observations, latent ODE solved to 50 target times
spread over a horizon of 5 x h time units (h = 1, 4, 10), Gaussian likelihood + KL, backward.
The number of outputs stays fixed so that what grows with the horizon is the solver's work; the
latent dynamics' output layer is scaled up (x4) so that, like a trained model, they move on a
time scale of about one unit and the solver's step count grows with the horizon.
Each (mode, h) runs in a fresh subprocess so that measurements do not share an allocator. Memory figures:

- ``saved_mb``: bytes of tensors autograd keeps for the backward pass (exact, from
  ``torch.autograd.graph.saved_tensors_hooks``), the memory the adjoint method exists to save;
- ``peak_rss_delta_mb``: growth of the process's peak resident memory during the step
  (includes transient buffers and allocator slack);
- ``cuda_peak_mb``: ``torch.cuda.max_memory_allocated`` when run on a GPU.

    python bench/solver_memory.py [--device cuda] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _results import write_results

HORIZONS = (1, 4, 10)
MODES = ("backprop", "adjoint")


def one_step(mode: str, h: int, batch: int, device: str) -> dict[str, float]:
    import numpy as np
    import torch

    from latent_ode import DynamicsConfig, EncoderConfig, ModelConfig, SolverConfig
    from latent_ode.data import Observations
    from latent_ode.model import LatentODE

    torch.manual_seed(0)
    cfg = ModelConfig(input_dim=4, latent_dim=20, encoder=EncoderConfig(hidden=20, max_step=0.1),
                      dynamics=DynamicsConfig(units=100, layers=2),
                      solver=SolverConfig(rtol=1e-3, atol=1e-4, gradient=mode, max_steps=100_000,
                                          adjoint_max_steps=100_000))
    model = LatentODE(cfg)
    with torch.no_grad():
        model.dynamics[-1].weight.mul_(4.0)
    model = model.to(device)
    rng = np.random.default_rng(0)
    ct = np.sort(rng.uniform(0, 1, (batch, 20)), axis=1)
    ct[:, 0] = 0.0  # every series starts at 0, so relative target times are shared too
    # One target grid shared by the batch, so the adjoint's union grid is the grid itself.
    tt = np.tile(np.linspace(1.0, 1.0 + 5.0 * h, 50), (batch, 1))

    def obs(times: np.ndarray) -> Observations:
        t = torch.as_tensor(times, dtype=torch.float32, device=device)
        v = torch.sin(t)[:, :, None].repeat(1, 1, 4)
        return Observations(times=t, values=v, mask=torch.ones_like(v, dtype=torch.bool))

    context, target = obs(ct), obs(tt)
    saved = [0]

    def pack(x: torch.Tensor) -> torch.Tensor:
        saved[0] += x.numel() * x.element_size()
        return x

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        out = model.loss(context, target, kl_weight=1.0)
    out.loss.backward()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = {"mode": mode, "horizon": h, "batch": batch, "time_s": elapsed,
              "saved_mb": saved[0] / 2**20, "peak_rss_delta_mb": (rss1 - rss0) / 1024,
              "nfe_forward": out.nfe, "solver_steps_forward": out.nfe // 6}
    if device.startswith("cuda"):
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--out", type=Path, default=Path("bench/results/solver_memory.json"))
    p.add_argument("--child", nargs=2, metavar=("MODE", "H"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(one_step(args.child[0], int(args.child[1]), args.batch, args.device)))
        return
    rows = []
    for mode in MODES:
        for h in HORIZONS:
            cmd = [sys.executable, __file__, "--child", mode, str(h), "--batch", str(args.batch),
                   "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            extra = f" cuda peak {row['cuda_peak_mb']:8.1f} MB" if "cuda_peak_mb" in row else ""
            print(f"{mode:9s} horizon {h:2d}x: {row['time_s']:7.2f} s, saved for backward "
                  f"{row['saved_mb']:8.1f} MB, peak RSS +{row['peak_rss_delta_mb']:7.1f} MB{extra}, "
                  f"forward NFE {row['nfe_forward']}", flush=True)
    summary: dict[str, object] = {"device": args.device, "batch": args.batch, "rows": rows}
    for mode in MODES:
        by_h = {r["horizon"]: r for r in rows if r["mode"] == mode}
        for key in ("saved_mb", "peak_rss_delta_mb", "cuda_peak_mb"):
            if key in by_h[1] and by_h[1][key] > 0:
                summary[f"{mode}_{key}_ratio_10x_vs_1x"] = by_h[10][key] / by_h[1][key]
        summary[f"{mode}_time_ratio_10x_vs_1x"] = by_h[10]["time_s"] / by_h[1]["time_s"]
    for k, v in summary.items():
        if k.endswith("ratio_10x_vs_1x"):
            print(f"{k}: {v:.2f}")
    write_results(args.out, summary)


if __name__ == "__main__":
    main()
