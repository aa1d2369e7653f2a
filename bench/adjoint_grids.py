"""The adjoint on series with their own times: union grid against warped time, beside backprop.

torchdiffeq's adjoint needs one time grid for the batch. On the union of the batch's times (up
to B x Q points when every series has its own times) its backward pass restarts at every grid
point; the warped grid (``SolverConfig.adjoint_grid = "warped"``, docs/library.md) has Q + 1
points whatever the times. One training step (encoder, latent ODE, likelihood, KL, backward) of
the training test's model (latent 6, 20 irregular times per series on [0, 2]) is timed for each
way, in one process, after a warm-up; also the largest gradient difference from backprop.

    python bench/adjoint_grids.py [--batch 50] [--times 20]
    python bench/adjoint_grids.py --physionet      # the first 50 PhysioNet 2012 stays instead
    python bench/adjoint_grids.py --physionet --skip-union

With ``--physionet`` the batch is the first ``--batch`` ICU stays of set A (41 channels, their
own hours, min-max normalised, time in days), the model is ``physionet.toml``'s (latent 20).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _results import write_results

from latent_ode import DynamicsConfig, EncoderConfig, ModelConfig, Normaliser, SolverConfig, collate
from latent_ode.model import LatentODE
from latent_ode.tasks import interpolation_task
from pipelines.sources.periodic import periodic

WAYS = {"backprop": ("backprop", "auto"), "adjoint_union": ("adjoint", "union"),
        "adjoint_warped": ("adjoint", "warped")}


def step(model: LatentODE, context, target) -> None:
    """One training step's gradient computation, the same latent noise every time."""
    model.zero_grad()
    out = model.loss(context, target, kl_weight=1.0, generator=torch.Generator().manual_seed(1))
    out.loss.backward()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--times", type=int, default=20, help="observation times per series")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--physionet", action="store_true", help="real ICU stays instead of periodic")
    p.add_argument("--skip-union", action="store_true", help="leave out the (slow) union grid")
    p.add_argument("--out", type=Path, default=Path("bench/results/adjoint_grids.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.physionet:
        from pipelines.sources.physionet import default_physionet_archives, read_physionet

        table, _ = read_physionet(default_physionet_archives()[:1], limit=args.batch)
        norm = Normaliser.fit(table.series, kind="minmax", time_scale=24.0)
        batch = collate([norm.transform(x) for x in table.series])
        model_kw = dict(input_dim=batch.values.shape[2], latent_dim=20,
                        encoder=EncoderConfig(hidden=40, units=50, max_step=0.1),
                        dynamics=DynamicsConfig(units=50, layers=1))
    else:
        batch = collate(periodic(args.batch, n_times=args.times, t_max=2.0, shared_grid=False,
                                          seed=0))
        model_kw = dict(input_dim=1, latent_dim=6, encoder=EncoderConfig(max_step=0.1))
    context, target = interpolation_task(batch, 0.5, generator=torch.Generator().manual_seed(0))
    # The adjoint's union grid: the batch's target times relative to each series' start, and 0.
    t0 = LatentODE(ModelConfig(**model_kw)).reference_time(context, target.times)
    union = int(torch.unique(torch.cat([torch.zeros(1), (target.times - t0[:, None]).flatten()])).numel())
    rows: dict[str, dict[str, float]] = {}
    grads: dict[str, list[torch.Tensor]] = {}
    ways = {k: v for k, v in WAYS.items() if not (args.skip_union and k == "adjoint_union")}
    for name, (gradient, grid) in ways.items():
        torch.manual_seed(0)
        cfg = ModelConfig(**model_kw,
                          solver=SolverConfig(gradient=gradient, adjoint_grid=grid))
        model = LatentODE(cfg)

        step(model, context, target)  # warm-up
        started = time.perf_counter()
        for _ in range(args.repeats):
            step(model, context, target)
        rows[name] = {"step_s": (time.perf_counter() - started) / args.repeats}
        grads[name] = [q.grad.clone() for q in model.parameters()]
        print(f"{name:15s} {rows[name]['step_s'] * 1e3:9.1f} ms a training step", flush=True)
    for name in set(ways) - {"backprop"}:
        rows[name]["max_rel_grad_diff_vs_backprop"] = max(
            float((g - b).abs().max() / b.abs().max())
            for g, b in zip(grads[name], grads["backprop"], strict=True))
    summary: dict[str, object] = {
        "data": "physionet" if args.physionet else "periodic", "batch": args.batch,
        "times_per_series": int(target.times.shape[1]), "union_grid_points": union,
        "warped_grid_points": int(target.times.shape[1]) + 1, "threads": args.threads, "rows": rows,
        "warped_over_backprop_time": rows["adjoint_warped"]["step_s"] / rows["backprop"]["step_s"],
    }
    line = (f"union grid {union} points, warped grid {summary['warped_grid_points']}; warped / backprop "
            f"{summary['warped_over_backprop_time']:.1f}x; gradient difference from backprop (warped) "
            f"{rows['adjoint_warped']['max_rel_grad_diff_vs_backprop']:.1e}")
    if "adjoint_union" in rows:
        summary["union_over_warped_time"] = rows["adjoint_union"]["step_s"] / rows["adjoint_warped"]["step_s"]
        line += (f"; union / warped time {summary['union_over_warped_time']:.1f}x, gradient difference "
                 f"(union) {rows['adjoint_union']['max_rel_grad_diff_vs_backprop']:.1e}")
    print(line)
    write_results(args.out, summary)


if __name__ == "__main__":
    main()
