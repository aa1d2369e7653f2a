"""Evaluate: the library's metrics on the test split, and forecast plots.

Metrics are prefixed with the split: ``test_interp_mse``, ``test_extrap_mse``, ... (the library's
names: interpolation/extrapolation MSE and NLL, 90% interval coverage, the LOCF and
linear-interpolation baselines; MSE on the normalised scale). ``register`` compares validation
metrics from training (``val_*``), so the test split never chooses the champion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from latent_ode import evaluate as evaluate_forecaster
from pipelines.config import PipelineConfig
from pipelines.steps.ingest import IngestResult

__all__ = ["EvaluateResult", "evaluate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluateResult:
    """Metrics per split (prefixed with the split name) and plots of test series.

    Attributes:
        metrics: e.g. ``test_interp_mse``, ``test_coverage_90``, ``test_locf_extrap_mse``.
        figures: ``(file_name, matplotlib Figure)``; the caller saves and closes them.
    """

    metrics: dict[str, float]
    figures: list[tuple[str, Any]] = field(default_factory=list)


def evaluate(
    cfg: PipelineConfig,
    forecaster: Any,
    data: IngestResult,
    *,
    splits: tuple[str, ...] = ("test",),
) -> EvaluateResult:
    """Evaluate ``forecaster`` on ``splits`` of ``data`` and draw ``cfg.evaluate.num_plots`` test series.

    Args:
        cfg: the pipeline config (``[evaluate]``).
        forecaster: a trained ``latent_ode.Forecaster``.
        data: the ingested split.
        splits: which splits to score.
    """
    from pipelines.plots import plot_forecasts

    ev = cfg.evaluate
    metrics: dict[str, float] = {}
    for split in splits:
        result = evaluate_forecaster(
            forecaster, data.split(split), num_samples=ev.num_samples, seed=ev.seed
        )
        metrics.update({f"{split}_{k}": float(v) for k, v in result.metrics.items()})
    logger.info("evaluation: %s", ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    figures = []
    if ev.num_plots:
        figures = plot_forecasts(
            forecaster, data.test[: ev.num_plots], num_samples=max(ev.num_samples, 32),
            seed=ev.seed,
        )
    return EvaluateResult(metrics=metrics, figures=figures)
