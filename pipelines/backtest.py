"""The backtest at the pipeline edge: a model from a URI, series from a file or a split, and the
result as a printed table, a CSV/JSON file, an MLflow table and a chart.

The computation is the library's (:func:`latent_ode.backtest.backtest`); this module only reads,
formats and logs. ``latent-ode backtest`` (:mod:`pipelines.cli`) and the evaluate step
(:mod:`pipelines.steps.evaluate`) both use it.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from formats.model_artifact import forecaster_path  # noqa: E402
from latent_ode import DataError, Forecaster, Series  # noqa: E402
from latent_ode.backtest import BacktestResult  # noqa: E402
from pipelines.plots import MAX_CHANNELS  # noqa: E402

__all__ = ["BACKTEST_PLOT", "BACKTEST_TABLE", "OUTPUT_SUFFIXES", "align_channels",
           "backtest_frame", "check_output", "format_table", "load_forecaster", "log_backtest",
           "plot_backtest", "training_mean", "write_result"]

logger = logging.getLogger(__name__)

BACKTEST_TABLE = "backtest.json"
"""The MLflow table artifact (``mlflow.log_table``), prefixed by the split in evaluate."""
BACKTEST_PLOT = "backtest_error.png"
"""The chart, under ``plots/`` (prefixed by the split in evaluate)."""
OUTPUT_SUFFIXES = (".csv", ".json")
_METHOD_LABEL = {"model": "model", "locf": "LOCF", "linear": "linear interp."}


def load_forecaster(uri: str, *, device: str = "cpu") -> Forecaster:
    """The forecaster behind a model URI.

    Args:
        uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/model`` (a logged
            pyfunc model), ``runs:/RUN_ID/forecaster`` (a train run's artifacts), or a local
            folder: a downloaded pyfunc model (with ``MLmodel``) or a saved forecaster (with
            ``config.json``).
        device: where to put the model.

    Raises:
        DataError: a local folder that holds neither.
        MlflowException: an unknown model, alias, version or run.
    """
    local = Path(uri)
    if "://" not in uri and ":/" not in uri:
        if not local.is_dir():
            raise DataError(f"--model {uri!r} is neither a model URI (models:/NAME@ALIAS, "
                            "runs:/RUN_ID/model) nor a folder.")
        return _load_dir(local, uri, device)
    with tempfile.TemporaryDirectory(prefix="latent-ode-backtest-") as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp)
        return _load_dir(Path(path), uri, device)


def _load_dir(path: Path, uri: str, device: str) -> Forecaster:
    if (path / "config.json").is_file():
        return Forecaster.load(path, device=device)
    inner = forecaster_path(path)
    if (inner / "config.json").is_file():
        return Forecaster.load(inner, device=device)
    raise DataError(f"--model {uri!r} holds no forecaster (no config.json, nor a pyfunc model's "
                    "artifacts/forecaster); pass a model logged by the pipeline.")


def training_mean(forecaster: Forecaster) -> np.ndarray | None:
    """(D,) the training mean in the data's units, which the baselines predict for a channel a
    context never observes: the normaliser's location when it is ``standard``, else ``None``
    (the backtested data's own mean)."""
    norm = forecaster.normaliser
    return np.asarray(norm.loc, dtype=np.float64) if norm.kind == "standard" else None


def align_channels(series: Sequence[Series], channels: Sequence[str],
                   model_channels: Sequence[str]) -> list[Series]:
    """``series`` with the model's channels in the model's order; a model channel the data
    lack is unobserved (NaN).

    Raises:
        DataError: the data have a channel the model lacks.
    """
    extra = [c for c in channels if c not in model_channels]
    if extra:
        raise DataError(f"the data have channels the model lacks: {extra}; the model's channels "
                        f"are {list(model_channels)}. Drop or rename those columns.")
    index = [list(channels).index(c) if c in channels else -1 for c in model_channels]
    out = []
    for s in series:
        values = np.full((s.times.size, len(model_channels)), np.nan)
        for j, i in enumerate(index):
            if i >= 0:
                values[:, j] = s.values[:, i]
        out.append(Series(times=s.times, values=values, id=s.id))
    return out


def check_output(path: Path | None) -> None:
    """Refuse an output file of an unknown kind before any work is done.

    Raises:
        DataError: the suffix is neither ``.csv`` nor ``.json``.
    """
    if path is not None and path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DataError(f"--out must end in .csv or .json; got {str(path)!r}.")


def backtest_frame(result: BacktestResult) -> pd.DataFrame:
    """The table (:meth:`BacktestResult.rows`) as a DataFrame: one row per channel and bucket."""
    return pd.DataFrame(result.rows())


def _fmt(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{x:.4g}"


def format_table(result: BacktestResult, *, time_unit: str) -> str:
    """The table as aligned text: channel, lead range, count, MAE and RMSE per method."""
    head = ["channel", f"lead ({time_unit})", "n"]
    head += [f"{_METHOD_LABEL[m]} {s}" for s in ("MAE", "RMSE") for m in result.methods]
    lines = [head]
    for row in result.rows():
        lead = ("all" if row["bucket"] == "all"
                else f"{_fmt(float(row['lead_from']))}-{_fmt(float(row['lead_to']))}")
        cells = [str(row["channel"]), lead, str(row["count"])]
        cells += [_fmt(float(row[f"{m}_{s}"])) for s in ("mae", "rmse") for m in result.methods]
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    text = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in lines]
    summary = (f"{result.regime} backtest: {result.windows} windows of {result.series} series"
               + (f", {result.failed} failed ({', '.join(result.failed_ids)})"
                  if result.failed else ""))
    return "\n".join([summary, *text])


def _json_number(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def write_result(result: BacktestResult, path: Path, *, time_unit: str) -> Path:
    """Write the table as CSV (one row per channel and bucket) or JSON (the same rows, with the
    regime, time unit, methods, bucket edges and window counts; NaN as ``null``).

    Raises:
        DataError: the suffix is neither ``.csv`` nor ``.json``.
    """
    check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        backtest_frame(result).to_csv(path, index=False)
    else:
        doc = {"regime": result.regime, "time_unit": time_unit, "methods": list(result.methods),
               "bucket_edges": result.bucket_edges.tolist(), "windows": result.windows,
               "series": result.series, "failed": result.failed,
               "failed_ids": list(result.failed_ids),
               "rows": [{k: _json_number(v) for k, v in r.items()} for r in result.rows()]}
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return path


def plot_backtest(result: BacktestResult, *, time_unit: str, title: str = "") -> Figure:
    """MAE against the lead, one panel per channel (the :data:`MAX_CHANNELS` most scored), the
    model beside each baseline, in the channel's own units."""
    order = np.argsort(-result.total_count, kind="stable")
    shown = [j for j in order[:MAX_CHANNELS] if result.total_count[j] > 0]
    cols = min(3, max(len(shown), 1))
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    edges = result.bucket_edges
    mid = (edges[:-1] + edges[1:]) / 2
    styles = {"model": "o-", "locf": "s--", "linear": "^:"}
    for ax, j in zip(axes.flat, shown, strict=False):
        for m, name in enumerate(result.methods):
            ax.plot(mid, result.mae[m, :, j], styles[name], label=_METHOD_LABEL[name],
                    color=None if name == "model" else "grey")
        ax.set_title(f"{result.channels[j]} (n={result.total_count[j]})", fontsize="small")
        ax.set_xlabel(f"lead after the cut ({time_unit})")
        ax.set_ylabel(f"MAE ({result.channels[j]} units)")
        ax.set_xlim(0, edges[-1])
        ax.set_ylim(bottom=0)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    fig.suptitle(title or f"{result.regime} backtest: {result.windows} windows of "
                 f"{result.series} series", fontsize="small")
    # One legend for every panel, below them, where it covers no point.
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize="small",
               frameon=False)
    fig.tight_layout(rect=(0, 0.07 if rows == 1 else 0.04, 1, 1))
    return fig


def log_backtest(result: BacktestResult, *, time_unit: str, prefix: str = "") -> None:
    """Log the table (``mlflow.log_table``, ``<prefix>backtest.json``) and the chart
    (``plots/<prefix>backtest_error.png``) to the active run."""
    mlflow.log_table(backtest_frame(result), artifact_file=f"{prefix}{BACKTEST_TABLE}")
    fig = plot_backtest(result, time_unit=time_unit)
    try:
        mlflow.log_figure(fig, f"plots/{prefix}{BACKTEST_PLOT}")
    finally:
        plt.close(fig)

