"""The per-request speed/accuracy knob: error against function evaluations and latency.

For each solver setting a request can ask for (the presets ``fast``, ``default`` and
``accurate`` as the service resolves them, and a few explicit tolerances), predicts the same
batch with ``Forecaster.predict`` (the library call the service makes, no HTTP) and reports:

- ``error``: the RMS difference of the predictive mean from a tight-tolerance reference
  (rtol 1e-7, atol 1e-9), on the model's normalised scale (so channels weigh alike), over the
  query times of every series: what the solver's shortcut costs;
- ``mse``: the mean squared error of that mean against the data held out of the context
  (normalised), for scale: a solver error far below it does not matter;
- ``nfe``: function evaluations of the solve (the most any series needed: the batch steps
  together), and its steps;
- ``latency``: the median wall-clock time of the predict call (``--repeats`` runs), for a batch
  of ``--series`` series and for one series.

The model: ``--model-dir`` (a saved forecaster, ``Forecaster.save``), else the demo model
(``pipelines/configs/periodic.toml``), trained once with ``--train-seconds`` and cached in
``bench/.cache/solver_knob/demo``. The data: the test split of the model's config; each
series is observed on its first half and asked about all its times (interpolation and
extrapolation). One torch thread. Writes ``bench/results/solver_knob.json``.

    python bench/solver_knob.py
    python bench/solver_knob.py --model-dir path/to/forecaster --config path/to/config.toml
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _results import write_results

from latent_ode import Forecaster, Series, SolverConfig

CACHE = Path(__file__).resolve().parent / ".cache" / "solver_knob"
REFERENCE = SolverConfig(rtol=1e-7, atol=1e-9, max_steps=100_000)
EXPLICIT = [(1e-1, 1e-2), (3e-2, 3e-3), (3e-4, 3e-5), (1e-6, 1e-7)]


def demo_config_path() -> Path:
    from pipelines.quickstart import default_config_path

    return Path(default_config_path())


def load_or_train(model_dir: Path | None, config: Path, train_seconds: float) -> Forecaster:
    """The forecaster in ``model_dir``, or the config's model trained once and cached."""
    if model_dir is not None:
        return Forecaster.load(model_dir)
    cached = CACHE / config.stem
    if (cached / "config.json").exists():
        return Forecaster.load(cached)
    from pipelines.config import load_config, parse_config
    from pipelines.steps.ingest import ingest
    from pipelines.steps.train import train

    raw = load_config(config).to_dict()
    raw["train"]["max_time_s"] = train_seconds
    cfg = parse_config(raw, source=str(config))
    started = time.perf_counter()
    result = train(cfg, ingest(cfg))
    logging.info("trained the %s model in %.0f s: %s", config.stem,
                 time.perf_counter() - started, result.metrics)
    result.forecaster.save(cached)
    return result.forecaster


def test_series(config: Path, n: int) -> list[Series]:
    from pipelines.config import load_config
    from pipelines.steps.ingest import ingest

    return ingest(load_config(config)).test[:n]


def halves(series: list[Series]) -> tuple[list[Series], list[np.ndarray], list[np.ndarray]]:
    """Each series' first half as context; all its times as queries; its values as truth."""
    context, queries, truth = [], [], []
    for s in series:
        k = max(1, len(s.times) // 2)
        context.append(Series(times=s.times[:k], values=s.values[:k]))
        queries.append(np.asarray(s.times, dtype=np.float64))
        truth.append(np.asarray(s.values, dtype=np.float64))
    return context, queries, truth


def run(fc: Forecaster, context: list[Series], queries: list[np.ndarray], solver: SolverConfig,
        samples: int, repeats: int) -> tuple[list[Any], float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        answers = fc.predict(context, queries, num_samples=samples, seed=0, solver=solver,
                             quantiles=(0.05, 0.5, 0.95))
        times.append(time.perf_counter() - started)
    return answers, statistics.median(times)


def normalised(fc: Forecaster, values: np.ndarray) -> np.ndarray:
    return (values - fc.normaliser.loc) / fc.normaliser.scale


def settings_to_measure(fc: Forecaster) -> list[tuple[str, SolverConfig]]:
    """The presets as the service resolves them for this model (default settings), then the
    explicit tolerances."""
    from service.config import Settings
    from service.predictor import resolve_solver, served_solver
    from service.schemas import SolverIn

    limits = Settings()
    served = served_solver(fc.model_config.solver, rtol=None, atol=None,
                           max_steps=limits.solver_max_steps)
    out = []
    for preset in ("fast", "default", "accurate"):
        config, _ = resolve_solver(SolverIn(preset=preset), served, series=1, num_samples=1,
                                   limits=limits)
        out.append((preset, config))
    out += [(f"rtol {r:g}, atol {a:g}", SolverConfig(method=served.method, rtol=r, atol=a,
                                                      max_steps=served.max_steps))
            for r, a in EXPLICIT]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--config", type=Path, default=None,
                   help="the pipeline config of the model and its data (default: the demo's)")
    p.add_argument("--train-seconds", type=float, default=240.0)
    p.add_argument("--series", type=int, default=64)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("bench/results/solver_knob.json"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    config = args.config or demo_config_path()
    fc = load_or_train(args.model_dir, config, args.train_seconds)
    context, queries, truth = halves(test_series(config, args.series))
    reference, _ = run(fc, context, queries, REFERENCE, args.samples, 1)
    ref_mean = np.concatenate([normalised(fc, a.mean) for a in reference])
    truth_all = np.concatenate([normalised(fc, t) for t in truth])
    observed = np.isfinite(truth_all)
    rows = []
    print(f"model {config.stem}: {args.series} series x {args.samples} samples, queries "
          f"{sum(q.size for q in queries)}; reference rtol {REFERENCE.rtol:g}, atol "
          f"{REFERENCE.atol:g}: nfe {reference[0].stats.nfe}")
    print("| setting | rtol | atol | nfe | steps | error vs reference | MSE vs data | "
          f"{args.series} series ms | 1 series ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, solver in settings_to_measure(fc):
        answers, seconds = run(fc, context, queries, solver, args.samples, args.repeats)
        _, one = run(fc, context[:1], queries[:1], solver, args.samples, args.repeats)
        mean = np.concatenate([normalised(fc, a.mean) for a in answers])
        error = float(np.sqrt(np.mean((mean - ref_mean) ** 2)))
        mse = float(np.mean((mean[observed] - truth_all[observed]) ** 2))
        stats = answers[0].stats
        row = {"setting": name, "method": solver.method, "rtol": solver.rtol,
               "atol": solver.atol, "nfe": stats.nfe, "steps": stats.steps,
               "error_vs_reference": error, "mse_vs_data": mse,
               "latency_batch_ms": 1e3 * seconds, "latency_one_ms": 1e3 * one,
               "failed": sum(not a.ok for a in answers)}
        rows.append(row)
        print(f"| {name} | {solver.rtol:g} | {solver.atol:g} | {stats.nfe} | {stats.steps} | "
              f"{error:.2e} | {mse:.4f} | {row['latency_batch_ms']:.1f} | "
              f"{row['latency_one_ms']:.1f} |", flush=True)
    write_results(args.out, {
        "model": config.stem, "model_dir": str(args.model_dir) if args.model_dir else None,
        "series": args.series, "samples": args.samples, "repeats": args.repeats,
        "reference": {"rtol": REFERENCE.rtol, "atol": REFERENCE.atol,
                      "nfe": reference[0].stats.nfe},
        "rows": rows,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "torch_threads": 1},
    })


if __name__ == "__main__":
    main()
