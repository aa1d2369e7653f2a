"""``latent-ode spark-predict``: the forecasts of ``latent-ode predict`` for a data set larger than
one machine, on Apache Spark.

The input and output are the frame format (:mod:`formats.frames`; docs/service.md "Frame
format"), and every answer comes from the same function ``latent-ode predict`` calls,
:func:`formats.frames.forecast_frame`, so the two agree to the solver's tolerance on the same
file and seed (a series' answer does not depend on the other series solved with it).

How the work is spread: the driver loads the model once, checks the input's columns against
its channels (a clear error before any task runs), and broadcasts the model's two files (a few
hundred kB). Rows are grouped by a hash bucket of ``series_id`` (``groupBy(bucket)
.applyInPandas``), so each task receives whole series, many at a time, and answers them in one
``Forecaster.predict`` call, as ``predict`` does with ``--batch-series``; each Python worker
loads the model once and keeps it. Series the solver could not answer have no rows, as in
``predict``; they come back to the driver through an accumulator and are reported.

CSV input is read by Spark as text and parsed per task with the long format's own reader
(:func:`formats.longformat.read_table_bytes`), so numbers, ISO-8601 times and missing-value
spellings mean what they mean to ``predict``. Parquet keeps its column types.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from formats.frames import QUERY, forecast_frame, frame_to_requests, output_columns
from formats.longformat import SERIES_ID, TIME, file_kind, read_table_bytes
from latent_ode import Forecaster
from latent_ode.errors import DataError
from pipelines.predict import ForecastOptions

__all__ = ["SparkPredictOptions", "SparkPredictSummary", "spark_predict", "spark_session"]

logger = logging.getLogger(__name__)

_BUCKET = "__latent_ode_bucket"
_CHECK_ROWS = 10_000  # rows the driver checks against the model before any task runs


@dataclass(frozen=True, kw_only=True)
class SparkPredictOptions(ForecastOptions):
    """What ``latent-ode spark-predict`` was asked (:class:`pipelines.predict.ForecastOptions`,
    as ``latent-ode predict``; ``batch_series``: about how many series one task answers in one
    model call).

    Attributes:
        data: the input frame: a ``.csv`` or ``.parquet`` file, or a folder of them (any path
            Spark reads, e.g. ``hdfs://`` or ``s3a://`` where the cluster is configured for it).
        out: the output folder (Parquet, Spark's layout: one part file per task).
    """

    data: str
    out: str


@dataclass
class SparkPredictSummary:
    """What :func:`spark_predict` wrote: rows, series answered, and the series without rows."""

    out: str
    rows: int = 0
    series: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def spark_session(master: str = "local[*]", app_name: str = "latent-ode predict") -> Any:
    """A SparkSession whose Python workers run this interpreter (the one with torch installed),
    in UTC, without the web UI. On a cluster, pass the cluster's master URL
    (``spark://HOST:7077``, ``yarn``, ``k8s://...``) and give the executors the same Python
    environment (``spark.pyspark.python``)."""
    from pyspark.sql import SparkSession

    # pyspark 4.3 warns on every pandas 3 conversion that pandas 3 is "not yet fully
    # supported"; the frames it converts here (text, doubles, timestamps) are tested both ways.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (SparkSession.builder.master(master).appName(app_name)
            .config("spark.pyspark.python", os.environ["PYSPARK_PYTHON"])
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .getOrCreate())


def _read(spark: Any, data: str) -> Any:
    kind = file_kind(_first_file(data) if Path(data).is_dir() else Path(data))
    if kind == "parquet":
        return spark.read.parquet(data), kind
    # Every column as text: each task parses its rows with the long format's CSV reader.
    return spark.read.option("header", True).option("inferSchema", False).csv(data), kind


def _first_file(folder: str) -> Path:
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".csv", ".parquet"))
    if not files:
        raise DataError(f"{folder!r} holds no .csv or .parquet file.")
    return files[0]


def _as_frame(pdf: pd.DataFrame, kind: str, label: str) -> pd.DataFrame:
    """A task's rows as ``predict`` would have read them."""
    if kind == "parquet":
        return pdf
    return read_table_bytes(pdf.to_csv(index=False).encode(), "csv", label)


def _model_files(forecaster: Forecaster) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="latent-ode-spark-") as tmp:
        path = forecaster.save(Path(tmp) / "forecaster")
        return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


_WORKER_MODELS: dict[str, Forecaster] = {}


def _worker_model(key: str, files: dict[str, bytes]) -> Forecaster:
    """The model in this Python worker, loaded from the broadcast files once per worker."""
    if key not in _WORKER_MODELS:
        folder = Path(tempfile.mkdtemp(prefix="latent-ode-spark-model-"))
        for name, data in files.items():
            (folder / name).write_bytes(data)
        _WORKER_MODELS[key] = Forecaster.load(folder)
    return _WORKER_MODELS[key]


def _spark_schema(columns: Sequence[str]) -> Any:
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    text = {SERIES_ID, "mode"}
    return StructType([StructField(c, StringType() if c in text else DoubleType(), True)
                       for c in columns])


def _check_columns(sdf: Any, kind: str, forecaster: Forecaster, data: str,
                   options: SparkPredictOptions) -> None:
    """The input's columns and first rows against the model, on the driver: a mistake is one
    clear message, not a failed task's stack trace."""
    for name in (SERIES_ID, TIME):
        if name not in sdf.columns:
            raise DataError(f"{data}: the input has no {name!r} column; the frame format's "
                            f"columns are {SERIES_ID}, {TIME}, one per channel and an optional "
                            f"{QUERY!r}.")
    head = _as_frame(sdf.limit(_CHECK_ROWS).toPandas(), kind, data)
    frame_to_requests(head, list(forecaster.channels), time_unit=forecaster.time_unit,
                      horizon=options.horizon, every=options.every)


class _ListParam:
    """An accumulator of (series id, reason) pairs (pyspark's AccumulatorParam protocol)."""

    def zero(self, value: list) -> list:
        return []

    def addInPlace(self, a: list, b: list) -> list:  # noqa: N802 (pyspark's name)
        a.extend(b)
        return a


def spark_predict(spark: Any, forecaster: Forecaster, options: SparkPredictOptions
                  ) -> SparkPredictSummary:
    """Forecast every series of ``options.data`` into the Parquet folder ``options.out``.

    Raises:
        DataError: a missing path, a column the model does not have, or bad rows (the first
            task's message, e.g. ``line 7, column 'time': ...`` counted within its task).
    """
    from pyspark.errors import PythonException
    from pyspark.sql import functions as F

    if "://" not in options.data and not Path(options.data).exists():
        raise DataError(f"data {options.data!r} does not exist; check the path.")
    sdf, kind = _read(spark, options.data)
    _check_columns(sdf, kind, forecaster, options.data, options)
    n_series = sdf.select(SERIES_ID).distinct().count()
    buckets = max(1, math.ceil(n_series / options.batch_series))
    columns = output_columns(forecaster.channels, options.quantiles)
    files = spark.sparkContext.broadcast(_model_files(forecaster))
    failed = spark.sparkContext.accumulator([], _ListParam())
    key = f"{id(forecaster)}-{os.getpid()}"
    label = f"{options.data} (a task's rows)"

    def answer(pdf: pd.DataFrame) -> pd.DataFrame:
        fc = _worker_model(key, files.value)
        result = forecast_frame(
            fc, _as_frame(pdf.drop(columns=[_BUCKET]), kind, label),
            quantiles=options.quantiles, num_samples=options.num_samples, seed=options.seed,
            horizon=options.horizon, every=options.every)
        if result.failed:
            failed.add(list(result.failed.items()))
        return result.frame[columns]

    bucketed = sdf.withColumn(_BUCKET, F.pmod(F.hash(F.col(SERIES_ID)), F.lit(buckets)))
    out = bucketed.groupBy(_BUCKET).applyInPandas(answer, schema=_spark_schema(columns))
    try:
        out.write.mode("overwrite").parquet(options.out)
    except PythonException as e:
        raise DataError(_python_error(e)) from None
    written = spark.read.parquet(options.out)
    summary = SparkPredictSummary(out=options.out, rows=written.count(),
                                  series=written.select(SERIES_ID).distinct().count(),
                                  failed=dict(failed.value))
    logger.info("wrote %d rows for %d series to %s", summary.rows, summary.series, options.out)
    return summary


def _python_error(e: Exception) -> str:
    """The Python exception's own last line out of a failed task's report."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(("latent_ode.errors.", "DataError", "ConfigError")):
            return ln.split(": ", 1)[-1]
    return lines[-1] if lines else "a Spark task failed"


def read_output(path: str | Path) -> pd.DataFrame:
    """A :func:`spark_predict` output folder as one pandas frame (for checks and small outputs)."""
    return pd.read_parquet(path)


def sort_frame(frame: pd.DataFrame, columns: Iterable[str] = (SERIES_ID, TIME)) -> pd.DataFrame:
    """Rows ordered by series and time (Spark's output order is the tasks')."""
    return frame.sort_values(list(columns), kind="stable").reset_index(drop=True)
