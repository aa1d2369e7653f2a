"""PhysioNet 2012 on the forecasting protocol of recent work ("P1"), with the baselines beside.

P1 is the protocol of t-PatchGNN (Zhang et al., ICML 2024), also used by GraFITi and Hi-Patch
(``../shared/notes/protocols.md``). On the project's sets A+B (8,000 stays; the published figures
use A+B+C):

- split by stay 60 / 20 / 20 train / val / test with a fixed seed (``--split-seed``, 42);
- per variable (x - min) / (max - min), min and max over the observed values of train + val;
- forecasting: the model sees every observation with t < 24 h; the targets are every observed
  (time, variable) with t >= 24 h; error summed per variable over the test stays and divided by
  that variable's count, then the mean over the variables that have targets;
- interpolation, on the same test stays: a seeded random half of each stay's time points is
  hidden (exactly round(n / 2), as ``latent_ode.tasks.interpolation_task`` keeps), the model sees
  the rest, and each channel's hidden values are scored against linear interpolation of that
  channel's seen values (constant beyond the first and last seen value).

Baselines: last observation carried forward (LOCF; a channel never seen in the first 24 h takes
its train+val mean, scaled) and per-channel linear interpolation. The published P1 table
(t-PatchGNN's Table 1, Hi-Patch and GraFITi as quoted) is printed beside our figures. The test
stays are used for nothing but these scores.

Writes ``bench/results/physionet_p1.json`` (``--out``): pooled model/LOCF MSE and MAE, per
variable counts and errors for both tasks, the interpolation summary, the seed, the training
seconds and the device.

    python bench/physionet_p1.py --max-steps 1000 --train-seconds 1800 --seed 0   # the docs' runs
    python bench/physionet_p1.py --train-seconds 900 --seed 0
    python bench/physionet_p1.py --baselines-only          # the protocol and baselines alone
    python bench/physionet_p1.py --limit 400 --train-seconds 60   # a quick smoke run
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _results import write_results

from latent_ode import Series

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ARCHIVES = [ROOT.parent / "shared" / "data" / "physionet2012" / f"set-{x}.tar.gz" for x in "ab"]
CUT_HOURS = 24.0

#: Published P1 figures on PhysioNet (MSE x1e-3, MAE x1e-2); protocols.md.
PUBLISHED: dict[str, tuple[float, float]] = {
    "Hi-Patch": (4.86, 3.62),
    "GraFITi": (4.89, 3.65),
    "t-PatchGNN": (4.98, 3.72),
    "GRU-D": (5.59, 4.08),
    "Warpformer": (5.94, 4.21),
    "Latent-ODE (t-PatchGNN's adaptation)": (6.05, 4.23),
    "mTAND": (6.23, 4.51),
    "Neural Flow": (7.20, 4.67),
    "CRU": (8.56, 5.16),
    "PatchTST": (12.00, 6.02),
}


# --------------------------------------------------------------------------------------------
# The protocol: split, scaling, tasks


def split_by_stay(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of a 60 / 20 / 20 train / val / test split of ``n`` stays (disjoint, seeded)."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = round(0.2 * n)
    n_val = round(0.2 * n)
    return perm[n_test + n_val:], perm[n_test:n_test + n_val], perm[:n_test]


@dataclass(frozen=True)
class Scaling:
    """P1's per-variable min-max scaling, fitted on the observed values of train + val."""

    lo: np.ndarray  # (D,)
    span: np.ndarray  # (D,) max - min; 1 where a variable is constant
    mean: np.ndarray  # (D,) mean of the observed values, for LOCF of an unseen channel

    @classmethod
    def fit(cls, series: list[Series]) -> Scaling:
        values = np.concatenate([s.values for s in series], axis=0)  # (sum T, D)
        lo, hi = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
        return cls(lo=lo, span=span, mean=np.nanmean(values, axis=0))

    def scale(self, values: np.ndarray) -> np.ndarray:
        return (values - self.lo) / self.span


@dataclass(frozen=True)
class Task:
    """One stay's context and targets: the model sees ``context`` and answers at ``query``."""

    context: Series
    query: np.ndarray  # (Q,) target times
    target: np.ndarray  # (Q, D) observed values at the target times, NaN where not observed


def forecast_task(s: Series, cut: float = CUT_HOURS) -> Task | None:
    """Observe t < ``cut``, target every observation at t >= ``cut``; None if either is empty."""
    seen = s.times < cut
    if not seen.any() or seen.all():
        return None
    return Task(context=Series(times=s.times[seen], values=s.values[seen], id=s.id),
                query=s.times[~seen], target=s.values[~seen])


def interpolation_task(s: Series, rng: np.random.Generator) -> Task | None:
    """Hide a random half of the stay's time points (exactly ``n - round(n / 2)`` of them)."""
    n = s.times.size
    keep = max(1, round(0.5 * n))
    if keep >= n:
        return None
    seen = np.zeros(n, dtype=bool)
    seen[rng.choice(n, size=keep, replace=False)] = True
    return Task(context=Series(times=s.times[seen], values=s.values[seen], id=s.id),
                query=s.times[~seen], target=s.values[~seen])


def locf(task: Task, fallback: np.ndarray) -> np.ndarray:
    """(Q, D) each channel's last value seen in the context (``fallback`` where never seen)."""
    ctx = task.context.values
    out = np.broadcast_to(fallback, task.target.shape).copy()
    for d in range(ctx.shape[1]):
        seen = np.flatnonzero(~np.isnan(ctx[:, d]))
        if seen.size:
            out[:, d] = ctx[seen[-1], d]
    return out


def linear(task: Task, fallback: np.ndarray) -> np.ndarray:
    """(Q, D) per-channel linear interpolation of the context's seen values (flat outside them)."""
    ctx, t = task.context.values, task.context.times
    out = np.broadcast_to(fallback, task.target.shape).copy()
    for d in range(ctx.shape[1]):
        seen = ~np.isnan(ctx[:, d])
        if seen.any():
            out[:, d] = np.interp(task.query, t[seen], ctx[seen, d])
    return out


# --------------------------------------------------------------------------------------------
# The metric


class PerVariable:
    """Sums of squared and absolute errors per variable, on the scaled values (P1's metric)."""

    def __init__(self, d: int) -> None:
        self.sq = np.zeros(d)
        self.ab = np.zeros(d)
        self.count = np.zeros(d, dtype=np.int64)

    def add(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add (Q, D) scaled predictions against (Q, D) scaled targets (NaN = no target)."""
        mask = ~np.isnan(target)
        err = np.where(mask, pred - np.where(mask, target, 0.0), 0.0)
        self.sq += (err**2).sum(axis=0)
        self.ab += np.abs(err).sum(axis=0)
        self.count += mask.sum(axis=0)

    def mse(self) -> np.ndarray:
        """(D,) per-variable MSE; NaN where a variable has no target."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.sq / np.maximum(self.count, 1), np.nan)

    def mae(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.count > 0, self.ab / np.maximum(self.count, 1), np.nan)

    def pooled(self) -> dict[str, float]:
        """P1's figure: the mean over the variables that have targets of the per-variable error."""
        return {"mse": float(np.nanmean(self.mse())), "mae": float(np.nanmean(self.mae()))}


# --------------------------------------------------------------------------------------------
# The model


def train_model(train: list[Series], val: list[Series], channels: list[str], config_path: Path,
                seconds: float, steps: int | None, seed: int, device: str,
                calibrate_blend: bool | None = None) -> tuple[Any, float, int]:
    """Train the pipeline's model on ``train`` (early stopping on ``val``) for at most
    ``seconds`` and ``steps`` (``calibrate_blend``: overrides the config's); returns the
    forecaster, the seconds (training and calibration) and the steps taken."""
    import tomllib

    from latent_ode import Normaliser
    from pipelines.config import parse_config
    from pipelines.steps.ingest import DataSource, IngestResult
    from pipelines.steps.train import train as train_step

    raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    raw["train"] = {**raw.get("train", {}), "max_time_s": seconds, "seed": seed, "progress": False}
    if steps is not None:
        raw["train"]["max_steps"] = steps
    if calibrate_blend is not None:
        raw["train"]["calibrate_blend"] = calibrate_blend
    cfg = parse_config(raw, source=str(config_path))
    # The model's normalisation is the config's (physionet.toml: P1's min-max), fitted on
    # train + val as P1's scaling is.
    normaliser = Normaliser.fit(train + val, kind=cfg.data.normalisation)
    data = IngestResult(train=train, val=val, test=[], channels=channels, time_unit="hours",
                        normaliser=normaliser,
                        source=DataSource(kind="physionet", uri="P1 split of sets A+B"))
    start = time.perf_counter()
    result = train_step(cfg, data, device=device)
    return result.forecaster, time.perf_counter() - start, result.result.steps


@dataclass(frozen=True)
class P1Data:
    """The P1 split of the archives: stays, scaling (fitted on train + val) and test tasks."""

    channels: list[str]
    train: list[Series]
    val: list[Series]
    test: list[Series]
    scaling: Scaling
    forecast_tasks: list[Task]
    interp_tasks: list[Task]


def load_p1(archives: list[Path], *, split_seed: int = 42, interp_seed: int = 0,
            limit: int | None = None) -> P1Data:
    """Read the archives and draw P1's split, scaling and test tasks (this script's and
    ``bench/p1_ensemble.py``'s)."""
    from pipelines.sources.physionet import read_physionet

    table, _ = read_physionet([str(a) for a in archives], limit=limit)
    stays = table.series
    tr, va, te = split_by_stay(len(stays), split_seed)
    train, val, test = ([stays[i] for i in idx] for idx in (tr, va, te))
    rng = np.random.default_rng(interp_seed)
    return P1Data(channels=list(table.channels), train=train, val=val, test=test,
                  scaling=Scaling.fit(train + val),
                  forecast_tasks=[t for t in (forecast_task(s) for s in test) if t is not None],
                  interp_tasks=[t for t in (interpolation_task(s, rng) for s in test)
                                if t is not None])


def recalibrate(forecaster: Any, val: list[Series], config_path: Path, seed: int, *,
                blend: bool) -> float:
    """Fit the blend (when ``blend``) and the predictive noise of a trained forecaster on
    ``val`` again, as :func:`latent_ode.fit` does when training ends; returns the seconds."""
    import dataclasses

    from latent_ode.training.loop import calibrate
    from pipelines.config import load_config

    start = time.perf_counter()
    config = dataclasses.replace(load_config(config_path).train, seed=seed, calibrate_blend=blend,
                                 calibrate_noise=True)
    forecaster.blend = None
    calibrate(forecaster, val, config)
    return time.perf_counter() - start


def predict(forecaster: Any, tasks: list[Task], batch: int, num_samples: int
            ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(Q, D) predictive means and (Q, D) booleans "inside the central 90% interval" (NaN
    targets: False) in the user's units for each task, in batches of stays."""
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for i in range(0, len(tasks), batch):
        chunk = tasks[i:i + batch]
        answers = forecaster.predict([t.context for t in chunk], [t.query for t in chunk],
                                     num_samples=num_samples, quantiles=(0.05, 0.95))
        for t, a in zip(chunk, answers, strict=True):
            with np.errstate(invalid="ignore"):
                inside = (t.target >= a.quantiles[0.05]) & (t.target <= a.quantiles[0.95])
            out.append((a.mean, inside))
    return out


class Coverage:
    """Share of held-out values inside their 90% interval, overall and per fifth of a distance
    (the horizon after the cut, or the gap to the nearest seen time point)."""

    def __init__(self) -> None:
        self.inside: list[np.ndarray] = []
        self.distance: list[np.ndarray] = []

    def add(self, inside: np.ndarray, target: np.ndarray, distance: np.ndarray) -> None:
        """(Q, D) inside flags, (Q, D) targets (NaN: none) and (Q,) distances of the queries."""
        mask = ~np.isnan(target)
        self.inside.append(inside[mask])
        self.distance.append(np.broadcast_to(distance[:, None], target.shape)[mask])

    def summary(self, edges: np.ndarray | None = None) -> dict[str, Any]:
        """Overall coverage and per fifth: equal-width fifths of ``edges`` (min, max) when given,
        else equal-count fifths of the distances."""
        inside, dist = np.concatenate(self.inside), np.concatenate(self.distance)
        if edges is None:  # equal counts by rank (many gaps tie)
            which = np.empty(dist.size, dtype=np.int64)
            which[np.argsort(dist, kind="stable")] = np.arange(dist.size) * 5 // max(dist.size, 1)
            bounds = np.quantile(dist, np.linspace(0, 1, 6))
        else:
            bounds = np.linspace(edges[0], edges[1], 6)
            which = np.clip(np.searchsorted(bounds, dist, side="right") - 1, 0, 4)
        fifths = [float(inside[which == k].mean()) if (which == k).any() else None for k in range(5)]
        return {"coverage_90": float(inside.mean()), "by_fifth": fifths,
                "fifth_bounds": [float(b) for b in bounds]}


# --------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archives", nargs="+", type=Path, default=DEFAULT_ARCHIVES)
    p.add_argument("--config", type=Path, default=ROOT / "pipelines" / "configs" / "physionet.toml",
                   help="pipeline config whose [model], [solver] and [train] build the model")
    p.add_argument("--train-seconds", type=float, default=900.0, help="training time budget")
    p.add_argument("--max-steps", type=int, default=None,
                   help="training step budget (deterministic per seed, unlike a time budget)")
    p.add_argument("--seed", type=int, default=0, help="model seed (one seed per run)")
    p.add_argument("--split-seed", type=int, default=42)
    p.add_argument("--interp-seed", type=int, default=0, help="seed of the hidden halves")
    p.add_argument("--limit", type=int, default=None, help="read only this many stays (smoke runs)")
    p.add_argument("--num-samples", type=int, default=8, help="latent samples per prediction")
    p.add_argument("--batch", type=int, default=250, help="stays per prediction batch")
    p.add_argument("--device", default="cpu")
    p.add_argument("--baselines-only", action="store_true", help="skip the model")
    p.add_argument("--blend", action=argparse.BooleanOptionalAction, default=None,
                   help="fit the blend towards the baselines after training (default: the "
                        "config's [train] calibrate_blend)")
    p.add_argument("--compare-blend", action="store_true",
                   help="also score the same trained model without its blend (side by side)")
    p.add_argument("--save-model", type=Path, default=None,
                   help="save the trained forecaster to this folder (to score it again later)")
    p.add_argument("--model", type=Path, default=None,
                   help="score this saved forecaster instead of training one (its split and "
                        "seeds must be the ones given here)")
    p.add_argument("--recalibrate", action="store_true",
                   help="with --model: fit its blend (--blend) and predictive noise again on "
                        "the validation stays, as training ends (to compare calibrations on "
                        "one trained model)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "physionet_p1.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(1)
    data = load_p1(args.archives, split_seed=args.split_seed, interp_seed=args.interp_seed,
                   limit=args.limit)
    channels, train, val, test = data.channels, data.train, data.val, data.test
    scaling, f_tasks, i_tasks = data.scaling, data.forecast_tasks, data.interp_tasks
    print(f"{len(train) + len(val) + len(test)} stays: {len(train)} train / {len(val)} val / "
          f"{len(test)} test")

    d = len(channels)
    fc = {k: PerVariable(d) for k in ("model", "locf")}
    ip = {k: PerVariable(d) for k in ("model", "linear")}
    fallback = scaling.mean
    for t in f_tasks:
        fc["locf"].add(scaling.scale(locf(t, fallback)), scaling.scale(t.target))
    for t in i_tasks:
        ip["linear"].add(scaling.scale(linear(t, fallback)), scaling.scale(t.target))

    train_seconds, train_steps = 0.0, 0
    cover = {"forecast": Coverage(), "interp": Coverage()}
    without: dict[str, Any] | None = None
    blend: dict[str, Any] | None = None
    if not args.baselines_only:
        if args.model is not None:
            from latent_ode import Forecaster

            forecaster = Forecaster.load(args.model, device=args.device)
            if args.recalibrate:
                train_seconds = recalibrate(forecaster, val, args.config, args.seed,
                                            blend=args.blend is not False)
        else:
            forecaster, train_seconds, train_steps = train_model(
                train, val, channels, args.config, args.train_seconds, args.max_steps, args.seed,
                args.device, calibrate_blend=args.blend)
        if args.save_model is not None:
            forecaster.save(args.save_model)
        fc["model"], ip["model"], cover = score(forecaster, f_tasks, i_tasks, scaling, args)
        if forecaster.blend is not None:
            blend = forecaster.blend.to_dict()
        if args.compare_blend and forecaster.blend is not None:
            # The same trained model without the correction (its noise stays the one calibrated
            # on the blended answers: compare the errors, not the coverage).
            forecaster.blend = None
            f_raw, i_raw, _ = score(forecaster, f_tasks, i_tasks, scaling, args)
            without = {"model": f_raw.pooled(),
                       "interpolation": {"model_mse": i_raw.pooled()["mse"],
                                         "model_mae": i_raw.pooled()["mae"]},
                       "per_variable": {name: {"model_mse": _num(f_raw.mse()[j]),
                                               "interp_model_mse": _num(i_raw.mse()[j])}
                                        for j, name in enumerate(channels)}}

    has_model = not args.baselines_only
    per_variable: dict[str, dict[str, float | int | None]] = {}
    total = int(fc["locf"].count.sum())

    num = _num
    for j, name in enumerate(channels):
        per_variable[name] = {
            "count": int(fc["locf"].count[j]),
            "share": float(fc["locf"].count[j] / max(total, 1)),
            "model_mse": num(fc["model"].mse()[j]) if has_model else None,
            "model_mae": num(fc["model"].mae()[j]) if has_model else None,
            "locf_mse": num(fc["locf"].mse()[j]),
            "locf_mae": num(fc["locf"].mae()[j]),
            "interp_count": int(ip["linear"].count[j]),
            "interp_model_mse": num(ip["model"].mse()[j]) if has_model else None,
            "interp_linear_mse": num(ip["linear"].mse()[j]),
        }
    summary: dict[str, Any] = {
        "protocol": "P1 (t-PatchGNN) on PhysioNet 2012 sets A+B; scaled units",
        "date": time.strftime("%Y-%m-%d"),
        "stays": {"train": len(train), "val": len(val), "test": len(test),
                  "forecast_tasks": len(f_tasks), "interp_tasks": len(i_tasks)},
        "model": fc["model"].pooled() if has_model else None,
        "locf": fc["locf"].pooled(),
        "interpolation": {"model_mse": ip["model"].pooled()["mse"] if has_model else None,
                          "linear_mse": ip["linear"].pooled()["mse"],
                          "model_mae": ip["model"].pooled()["mae"] if has_model else None,
                          "linear_mae": ip["linear"].pooled()["mae"]},
        "per_variable": per_variable,
        # Forecast: fifths of the 24 h after the cut; interpolation: equal-count fifths of the
        # gap to the nearest time point the model saw.
        "coverage": ({"forecast": cover["forecast"].summary(np.array([0.0, 48.0 - CUT_HOURS])),
                      "interp": cover["interp"].summary()} if has_model else None),
        "published": {k: {"mse": v[0] * 1e-3, "mae": v[1] * 1e-2} for k, v in PUBLISHED.items()},
        # The same trained model evaluated without its blend towards the baselines
        # (--compare-blend), and the blend's weights (latent_ode/blend.py).
        "without_blend": without,
        "blend": blend,
        "seeds": [args.seed] if has_model else [],
        "split_seed": args.split_seed,
        "interp_seed": args.interp_seed,
        "config": str(args.config),
        "train_seconds": train_seconds,
        "train_steps": train_steps,
        "max_steps": args.max_steps,
        "device": args.device if args.device != "cpu" else
        f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s))",
    }
    _print(summary, channels, has_model)
    write_results(args.out, summary)


def _num(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


def score(forecaster: Any, f_tasks: list[Task], i_tasks: list[Task], scaling: Scaling,
          args: argparse.Namespace) -> tuple[PerVariable, PerVariable, dict[str, Coverage]]:
    """The model's per-variable forecast and interpolation errors on the tasks (scaled), and
    its interval coverage."""
    d = scaling.lo.size
    fc, ip = PerVariable(d), PerVariable(d)
    cover = {"forecast": Coverage(), "interp": Coverage()}
    for t, (mean, inside) in zip(f_tasks, predict(forecaster, f_tasks, args.batch,
                                                  args.num_samples), strict=True):
        fc.add(scaling.scale(mean), scaling.scale(t.target))
        cover["forecast"].add(inside, t.target, t.query - t.context.times[-1])
    for t, (mean, inside) in zip(i_tasks, predict(forecaster, i_tasks, args.batch,
                                                  args.num_samples), strict=True):
        ip.add(scaling.scale(mean), scaling.scale(t.target))
        gap = np.abs(t.query[:, None] - t.context.times[None, :]).min(axis=1)
        cover["interp"].add(inside, t.target, gap)
    return fc, ip, cover


def _print(summary: dict[str, Any], channels: list[str], has_model: bool) -> None:
    print("\nP1 forecasting, per variable (scaled MSE x1e-3), and interpolation on the same test stays")
    print(f"{'variable':<12}{'share':>7}{'model':>9}{'LOCF':>9}{'ratio':>7}   "
          f"{'interp':>9}{'linear':>9}{'ratio':>7}")
    for name in channels:
        v = summary["per_variable"][name]
        if v["count"] == 0 and v["interp_count"] == 0:
            continue

        def f(x: float | None) -> str:
            return f"{x * 1e3:9.2f}" if x is not None else f"{'-':>9}"

        def r(a: float | None, b: float | None) -> str:
            return f"{a / b:7.2f}" if a is not None and b else f"{'-':>7}"

        print(f"{name:<12}{v['share'] * 100:6.1f}%{f(v['model_mse'])}{f(v['locf_mse'])}"
              f"{r(v['model_mse'], v['locf_mse'])}   {f(v['interp_model_mse'])}"
              f"{f(v['interp_linear_mse'])}{r(v['interp_model_mse'], v['interp_linear_mse'])}")
    print("\npooled (mean over variables)      MSE x1e-3   MAE x1e-2")
    if has_model:
        print(f"  ours (Latent ODE)               {summary['model']['mse'] * 1e3:9.2f}   "
              f"{summary['model']['mae'] * 1e2:9.2f}")
    if summary["without_blend"] is not None:
        raw = summary["without_blend"]
        print(f"  ours without the blend          {raw['model']['mse'] * 1e3:9.2f}   "
              f"{raw['model']['mae'] * 1e2:9.2f}   (interpolation "
              f"{raw['interpolation']['model_mse'] * 1e3:.2f}e-3)")
    print(f"  LOCF                            {summary['locf']['mse'] * 1e3:9.2f}   "
          f"{summary['locf']['mae'] * 1e2:9.2f}")
    for k, (mse, mae) in PUBLISHED.items():
        label = k[:20] + " (published)"
        print(f"  {label:<32}{mse:9.2f}   {mae:9.2f}")
    if summary["coverage"] is not None:
        for regime, c in summary["coverage"].items():
            fifths = ", ".join("-" if x is None else f"{x:.2f}" for x in c["by_fifth"])
            print(f"90% interval coverage, {regime}: {c['coverage_90']:.3f} (by fifth of the "
                  f"distance: {fifths})")
    ip = summary["interpolation"]
    print(f"\ninterpolation (mean over variables): linear {ip['linear_mse'] * 1e3:.2f}e-3"
          + (f", model {ip['model_mse'] * 1e3:.2f}e-3" if has_model else ""))


if __name__ == "__main__":
    main()
