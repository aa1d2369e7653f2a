"""Settings derived from the data: ``latent-ode pipeline run --data-file FILE`` without a config.

A user with their own long-format file should get a model that beats drawing lines between
their own measurements without reading about latent sizes and KL warm-ups. :func:`summarise`
measures the few things the settings depend on (how many series, channels and observations;
how long the series are and how far apart their observations lie) and :func:`derive_config`
turns that summary into a :class:`~pipelines.config.PipelineConfig`, one documented rule per
setting. Both are pure (no I/O, no MLflow), so each rule has a unit test.

:func:`merge_config` lays a user's TOML over the derived settings (the file wins where it sets a
key) and :func:`describe` writes the readable block the command prints and logs.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latent_ode import Series
from latent_ode.errors import DataError
from pipelines.config import DATA_LEVEL_OPTIONS, PipelineConfig, parse_config

__all__ = [
    "DEFAULT_MAX_TIME_S",
    "MIN_SERIES",
    "DataSummary",
    "derive_config",
    "describe",
    "merge_config",
    "summarise",
]

DEFAULT_MAX_TIME_S = 600.0
"""Training budget when the user gives none: 10 minutes, long enough for a small data set to
converge on a CPU, short enough to try again."""

MIN_SERIES = 3
"""Fewest series a file may have: one each for training, validation (early stopping) and test."""

logger = logging.getLogger(__name__)

# [data] keys that name where the series come from: --data-file replaces them all.
_SOURCE_KEYS = ("path", "dataset", "n_series", "seed", "options", *DATA_LEVEL_OPTIONS)


@dataclass(frozen=True, kw_only=True)
class DataSummary:
    """What the derived settings depend on.

    Attributes:
        n_series: number of series in the file.
        channels: the D channel names.
        time_unit: the unit the times are in.
        n_times: number of (series, time) rows with at least one observed channel.
        n_values: number of observed values (non-missing cells).
        max_span: the longest series' span (last time - first time).
        median_gap: median time between consecutive observations of a series (0 when no series
            has two).
        median_points: median number of time points per series.
    """

    n_series: int
    channels: list[str]
    time_unit: str
    n_times: int
    n_values: int
    max_span: float
    median_gap: float
    median_points: float


def summarise(series: list[Series], *, channels: list[str], time_unit: str) -> DataSummary:
    """Measure ``series`` for :func:`derive_config`.

    Raises:
        DataError: fewer than :data:`MIN_SERIES` series (no train/validation/test split).
    """
    if len(series) < MIN_SERIES:
        raise DataError(
            f"the data file has {len(series)} series; --data-file needs at least {MIN_SERIES} "
            "(one each to train, validate and test on), each with its own `series_id`. Add "
            "series, or check that `series_id` tells them apart."
        )
    gaps = np.concatenate([np.diff(s.times) for s in series])
    return DataSummary(
        n_series=len(series),
        channels=list(channels),
        time_unit=time_unit,
        n_times=sum(len(s.times) for s in series),
        n_values=int(sum(np.count_nonzero(~np.isnan(s.values)) for s in series)),
        max_span=max(float(s.times[-1] - s.times[0]) for s in series),
        median_gap=float(np.median(gaps)) if gaps.size else 0.0,
        median_points=float(np.median([len(s.times) for s in series])),
    )


def _size(n_train: int, d: int) -> tuple[int, int, int]:
    """(latent size L, encoder hidden size H, MLP units) for ``n_train`` series of ``d`` channels.

    Few series cannot fit many weights: the sizes grow with the square root of the number of
    training series (a quarter of it for the MLPs), so a few hundred series get a model of a few
    thousand weights and ten thousand series one near the paper's PhysioNet model (L 20, H 40,
    units 50-100). The latent state is never narrower than half the channels, so that every
    channel has room in it.
    """
    root = math.sqrt(max(n_train, 1))
    latent = int(np.clip(round(root / 3), 4, 20))
    latent = max(latent, min(32, math.ceil(d / 2)))
    hidden = int(np.clip(2 * latent, 8, 64))
    units = int(np.clip(round(root), 16, 100))
    return latent, hidden, units


def _split(n_series: int) -> tuple[float, float, float]:
    """(train, val, test) fractions by series.

    Small data need larger validation and test shares to measure anything (15% each below 1,000
    series); large data keep 10% each, as the paper.
    """
    if n_series < 1000:
        return 0.7, 0.15, 0.15
    return 0.8, 0.1, 0.1


def _model_name(path: Path) -> str:
    """A registry name from the file's stem: ``latent-ode-`` + lowercase letters, digits, dashes."""
    stem = re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-")
    return f"latent-ode-{stem or 'data'}"


def derive_config(
    summary: DataSummary, *, path: str | Path, max_time_s: float = DEFAULT_MAX_TIME_S,
    seed: int = 0,
) -> PipelineConfig:
    """The pipeline config for the file ``path`` that ``summary`` describes.

    The rules, and why:

    - data: the file, in the summary's time unit; standard normalisation (mean 0, std 1 per
      channel: no assumption about a channel's range, robust to outliers that min-max is not);
      split by series (:func:`_split`) with ``seed``. Time is divided by the longest training
      series' span (the normaliser's rule), so a series lives on [0, 1].
    - model: sizes from :func:`_size`; the decoder's baseline anchor on (each channel's decoded
      mean blended with its own linear interpolation / LOCF, :mod:`latent_ode.anchor`), which
      is what lets a small model never do worse than the baselines. The observation noise of
      the training likelihood is 0.3 on the standardised scale, about what is left of a real
      channel's spread between two visits: the reference's 0.01 (made for noise-free toy data)
      lets the likelihood drown the KL term and fits the training series' noise (on 300
      PhysioNet lab stays, 0.3 forecasts the last visit 6% better than 0.01 and as well as 0.5).
      Predictive intervals are calibrated on the validation split after training anyway.
    - encoder: its Euler step is half the median gap between observations (in normalised time,
      between 0.005 and 0.1): a step per observation gap at least, without hundreds of steps
      between two sparse visits.
    - solver: dopri5 at rtol 1e-3 / atol 1e-4 with a step limit, the reference's tolerances.
    - train: both tasks (a model that answers inside and after the data); batches of 50 series
      (fewer when there are fewer training series); Adam at 1e-2 decaying to 1e-3; a moving
      average of the weights (single-step validation errors swing on small data); the KL weight
      of the reference (1 / L), warmed up over about 10 epochs; early stopping on the
      validation MSE of both tasks, after 10 validations without improvement; the wall-clock
      budget ``max_time_s``; at most 1,000 epochs (the budget or early stopping ends first).
    - register / mlflow: a model and an experiment named after the file.

    Args:
        summary: from :func:`summarise`.
        path: the data file (recorded in the config as given).
        max_time_s: training budget in seconds.
        seed: seed of the split and of training.

    Returns:
        The validated config.
    """
    train_frac, val_frac, test_frac = _split(summary.n_series)
    n_train = max(1, summary.n_series - 2 * max(1, round(summary.n_series * val_frac)))
    latent, hidden, units = _size(n_train, len(summary.channels))
    span = summary.max_span if summary.max_span > 0 else 1.0
    max_step = float(np.clip(0.5 * summary.median_gap / span, 0.005, 0.1)) if summary.median_gap \
        else 0.02
    batch = int(min(50, n_train))
    steps_per_epoch = max(1, math.ceil(n_train / batch))
    warmup = 10 * steps_per_epoch
    name = _model_name(Path(path))
    raw: dict[str, Any] = {
        "data": {
            "path": str(path), "time_unit": summary.time_unit, "normalisation": "standard",
            "split": {"train": train_frac, "val": val_frac, "test": test_frac, "seed": seed},
        },
        "model": {
            "latent_dim": latent, "obs_std": 0.3,
            "encoder": {"hidden": hidden, "units": units, "max_step": round(max_step, 6)},
            "dynamics": {"units": units, "layers": 1},
            "decoder": {"anchor": True},
        },
        "solver": {"method": "dopri5", "rtol": 1e-3, "atol": 1e-4, "max_steps": 2000},
        "train": {
            "batch_size": batch, "max_epochs": 1000, "max_time_s": float(max_time_s),
            "lr": 1e-2, "lr_decay": 0.999, "lr_min": 1e-3, "ema_decay": 0.98,
            "kl_scale": round(1.0 / latent, 6), "kl_warmup_delay": warmup,
            "kl_warmup_rate": round(0.01 ** (1.0 / warmup), 6),
            "task": "both", "val_metric": "val_mse", "patience": 10,
            "checkpoint_every": 100, "log_every": 10, "seed": seed,
        },
        "register": {"model_name": name, "metric": "val_loss"},
        "mlflow": {"experiment": name},
    }
    return parse_config(raw, source="derived from the data")


def merge_config(derived: PipelineConfig, overrides: dict[str, Any], *,
                 source: str) -> PipelineConfig:
    """``derived`` with every key that ``overrides`` (a parsed TOML) sets taken from it.

    ``[data]`` keys that name another data source (``path``, ``dataset``, their options) are
    dropped: the data file given on the command line is the data.

    Raises:
        ConfigError: the merged config is invalid (the message names ``source``).
    """
    over = dict(overrides)
    if isinstance(over.get("data"), dict):
        dropped = sorted(k for k in over["data"] if k in _SOURCE_KEYS)
        if dropped:
            logger.info("%s: ignoring [data] %s: --data-file gives the data", source,
                        ", ".join(dropped))
        over["data"] = {k: v for k, v in over["data"].items() if k not in _SOURCE_KEYS}
    merged = _deep_merge(derived.to_dict(), over)
    return parse_config(merged, source=f"{source} over the settings derived from the data")


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def describe(summary: DataSummary, cfg: PipelineConfig, *, overridden_by: str | None = None) -> str:
    """The readable block that ``pipeline run --data-file`` prints and logs."""
    m, t, s = cfg.model, cfg.train, cfg.data.split
    lines = [
        f"settings derived from {cfg.data.path}"
        + (f" (keys set in {overridden_by} win)" if overridden_by else "") + ":",
        f"  data:      {summary.n_series} series, {len(summary.channels)} channels "
        f"({', '.join(summary.channels)}), {summary.n_times} time points, "
        f"{summary.n_values} values; median {summary.median_points:g} points a series",
        f"  time:      unit {summary.time_unit}; longest span {summary.max_span:g}, median gap "
        f"{summary.median_gap:g} -> time scale = the longest training span, encoder step "
        f"{m.encoder.max_step:g}",
        f"  split:     by series {s.train:g}/{s.val:g}/{s.test:g} (train/val/test), seed {s.seed}; "
        f"normalisation {cfg.data.normalisation}",
        f"  model:     latent {m.latent_dim}, encoder hidden {m.encoder.hidden}, units "
        f"{m.encoder.units}, baseline anchor {'on' if m.decoder.anchor else 'off'}",
        f"  training:  {t.task} tasks, batch {t.batch_size}, lr {t.lr:g}, budget "
        + (f"{t.max_time_s:g} s" if t.max_time_s is not None else "none")
        + f", early stopping on {t.val_metric} (patience {t.patience}), seed {t.seed}",
        f"  tracking:  experiment {cfg.mlflow.experiment!r}, registered model "
        f"{cfg.registry.model_name!r}",
    ]
    return "\n".join(lines)
