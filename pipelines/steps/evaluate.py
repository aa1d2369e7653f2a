"""Evaluate: the library's held-out metrics on the validation and test splits, and plots.

Metric names are the library's (:func:`latent_ode.evaluate`) under the split:
``<split>/<regime>/<stat>[/<channel> | /h<k>]``, e.g. ``val/forecast/mse``, ``test/interp/skill``,
``test/forecast/coverage_90/h5``, ``test/interp/mae_units/HR`` (the table in
``docs/pipelines.md``). The first ``/`` segment groups them in the MLflow UI. Characters MLflow
refuses in a metric name (anything but letters, digits, ``_ - . : /`` and space) become ``_`` in
channel names. ``register`` gates on ``val/<regime>/skill``, so the test split never chooses the
champion. The rolling-origin backtest of the test split (``[evaluate] backtest_cuts``,
:mod:`latent_ode.backtest`) adds ``test/backtest/<stat>/<channel>`` (``mae_units``,
``rmse_units``, ``baseline_mae_units``, ``baseline_rmse_units``, ``count``) and
``test/backtest/{count,windows,failed}``. Training's own validation metrics (``val_loss``,
``val_mse``...) are a different thing (the training objective's check) and keep their names.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latent_ode import DataError, EvalResult
from latent_ode import evaluate as evaluate_forecaster
from latent_ode.backtest import BacktestConfig, BacktestResult, backtest
from pipelines.config import PipelineConfig
from pipelines.steps.ingest import IngestResult

__all__ = ["EVAL_SPLITS", "EvaluateResult", "evaluate", "metric_name"]

logger = logging.getLogger(__name__)

EVAL_SPLITS = ("val", "test")
"""The splits scored by default: validation (for ``register``) and test (the report)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-.:/ ]")


def metric_name(split: str, name: str) -> str:
    """``<split>/<name>`` with characters MLflow refuses in a metric name replaced by ``_``."""
    return _UNSAFE.sub("_", f"{split}/{name}")


@dataclass(frozen=True)
class EvaluateResult:
    """Metrics of every scored split, the library's results, and the plots.

    Attributes:
        metrics: ``<split>/<regime>/<stat>...`` -> value (see the module docstring).
        results: split -> :class:`latent_ode.EvalResult` (per-channel and per-horizon arrays).
        figures: ``(file_name, matplotlib Figure)``; the caller saves and closes them.
        backtests: split -> the rolling-origin backtest (``test`` when ``backtest_cuts`` > 0);
            the caller logs its table (:func:`pipelines.backtest.backtest_frame`).
    """

    metrics: dict[str, float]
    results: dict[str, EvalResult] = field(default_factory=dict)
    figures: list[tuple[str, Any]] = field(default_factory=list)
    backtests: dict[str, BacktestResult] = field(default_factory=dict)


def evaluate(
    cfg: PipelineConfig,
    forecaster: Any,
    data: IngestResult,
    *,
    splits: tuple[str, ...] = EVAL_SPLITS,
) -> EvaluateResult:
    """Score ``forecaster`` on ``splits`` of ``data``; draw the test split's charts and
    ``cfg.evaluate.num_plots`` test series in both regimes.

    The baselines predict a channel never observed in a context as its training mean.

    Args:
        cfg: the pipeline config (``[evaluate]``).
        forecaster: a trained ``latent_ode.Forecaster``.
        data: the ingested split.
        splits: which splits to score (the charts need ``test`` among them).
    """
    from pipelines.backtest import BACKTEST_PLOT, plot_backtest
    from pipelines.plots import plot_channel_skill, plot_forecasts, plot_horizon

    ev = cfg.evaluate
    train_values = np.concatenate([s.values for s in data.train], axis=0)
    fallback = np.nanmean(train_values, axis=0)  # (D,) training mean, user units
    metrics: dict[str, float] = {}
    results: dict[str, EvalResult] = {}
    for split in splits:
        result = evaluate_forecaster(forecaster, data.split(split), num_samples=ev.num_samples,
                                     seed=ev.seed, fallback=fallback)
        results[split] = result
        metrics.update({metric_name(split, k): float(v) for k, v in result.metrics.items()})
    logger.info("evaluation: %s", ", ".join(
        f"{k}={metrics[k]:.4g}" for k in sorted(metrics) if k.count("/") == 2))
    figures: list[tuple[str, Any]] = []
    if "test" in results:
        figures += plot_channel_skill(results["test"], split="test")
        figures += plot_horizon(results["test"], split="test")
    backtests = _backtest(cfg, forecaster, data, splits, fallback)
    for split, bt in backtests.items():
        metrics.update({metric_name(split, k): v for k, v in bt.metrics().items()})
        title = (f"{split} split: rolling-origin backtest, {bt.windows} windows of "
                 f"{bt.series} series")
        figures.append((f"{split}_{BACKTEST_PLOT}",
                        plot_backtest(bt, time_unit=data.time_unit, title=title)))
    if ev.num_plots:
        shown = data.test[: ev.num_plots]
        n = max(ev.num_samples, 32)
        figures += plot_forecasts(forecaster, shown, num_samples=n, seed=ev.seed)
        figures += plot_forecasts(forecaster, shown, num_samples=n, seed=ev.seed, mode="interp")
    return EvaluateResult(metrics=metrics, results=results, figures=figures, backtests=backtests)


def _backtest(cfg: PipelineConfig, forecaster: Any, data: IngestResult, splits: tuple[str, ...],
              fallback: np.ndarray) -> dict[str, BacktestResult]:
    """The test split's rolling-origin backtest, or nothing (``backtest_cuts = 0``, test not
    scored, or no series long enough to cut: said in the log)."""
    ev = cfg.evaluate
    if not ev.backtest_cuts or "test" not in splits:
        return {}
    config = BacktestConfig(cuts=ev.backtest_cuts, horizon=ev.backtest_horizon,
                            num_samples=ev.num_samples, seed=ev.seed)
    try:
        return {"test": backtest(forecaster, data.test, config, fallback=fallback)}
    except DataError as exc:  # e.g. single-point series: the other metrics still stand
        logger.warning("no backtest of the test split: %s", exc)
        return {}
