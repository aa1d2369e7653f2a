"""``latent-ode predict``: forecasts for every series of a CSV or Parquet file, in batches.

The input file is in the frame format (:mod:`formats.frames`; docs/service.md "Frame format"),
the output file is the output frame. Both are streamed: the input is read in chunks of rows
(CSV through pandas' chunked reader, Parquet by record batches), whole series are gathered
into batches of ``batch_series`` and each batch is forecast and appended to the output, so a
file larger than memory works. Streaming needs the rows of a series to be contiguous (a file
sorted or grouped by ``series_id``; within a series any order): a series whose rows reappear
after another series began is an error naming both lines. The output is written to
``OUT.partial`` and renamed to ``OUT`` when complete, so a failed run leaves no half file.
"""

from __future__ import annotations

import logging
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from formats.frames import FrameSink, forecast_frame, output_columns, parse_quantiles
from formats.longformat import SERIES_ID, Locator, file_kind, iter_table, series_ids
from formats.model_artifact import forecaster_path
from latent_ode import Forecaster
from latent_ode.errors import ConfigError, DataError, SolverError

__all__ = ["ForecastOptions", "PredictOptions", "PredictSummary", "load_forecaster", "predict_file",
           "series_batches"]

logger = logging.getLogger(__name__)

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # models:/, runs:/, s3://, ... (not C:\)


@dataclass(frozen=True, kw_only=True)
class ForecastOptions:
    """What to forecast for each series, as ``latent-ode predict`` and ``spark-predict`` take it.

    Attributes:
        horizon, every: add query times after each series' last observation, every ``every``
            up to ``horizon`` (model time units); both or neither.
        quantiles: levels to report, in this order.
        num_samples, seed: latent samples and their seed.
        batch_series: series per ``Forecaster.predict`` call.
    """

    horizon: float | None = None
    every: float | None = None
    quantiles: tuple[float, ...] = ()
    num_samples: int = 32
    seed: int = 0
    batch_series: int = 256

    def __post_init__(self) -> None:
        if (self.horizon is None) != (self.every is None):
            raise ConfigError("--horizon and --every go together; give both (e.g. --horizon 24 "
                              "--every 1) or neither.")
        for name in ("num_samples", "batch_series"):
            if getattr(self, name) < 1:
                raise ConfigError(f"`{name}` must be at least 1; got {getattr(self, name)}.")
        object.__setattr__(self, "quantiles", parse_quantiles(self.quantiles))


@dataclass(frozen=True, kw_only=True)
class PredictOptions(ForecastOptions):
    """What ``latent-ode predict`` was asked (:class:`ForecastOptions`, plus the following).

    Attributes:
        model: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN/PATH`` (any MLflow
            artifact URI), or a local folder: a saved forecaster (``config.json``) or a
            downloaded pyfunc model (``MLmodel``).
        data_file: the input frame, ``.csv`` or ``.parquet``.
        out: the output frame, ``.csv`` or ``.parquet``.
        chunk_rows: rows read from the input at a time.
        device: where the model runs.
    """

    model: str
    data_file: Path
    out: Path
    chunk_rows: int = 100_000
    device: str = "cpu"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.chunk_rows < 1:
            raise ConfigError(f"`chunk_rows` must be at least 1; got {self.chunk_rows}.")


@dataclass
class PredictSummary:
    """What ``predict_file`` did.

    Attributes:
        out: the file written.
        series: series forecast (with rows in the output).
        rows: output rows.
        failed: series id → why the solver could not answer it (no rows).
        no_queries: series with nothing to answer (no query rows and no ``--horizon``).
    """

    out: Path
    series: int = 0
    rows: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    no_queries: list[str] = field(default_factory=list)


def load_forecaster(model: str, *, device: str = "cpu") -> Forecaster:
    """The forecaster behind a model URI or local folder (see :class:`PredictOptions`).

    MLflow URIs are resolved against ``MLFLOW_TRACKING_URI`` (MLflow's default store when
    unset), as every command does.

    Raises:
        DataError: a folder that holds neither ``config.json`` nor ``MLmodel``, or a path that
            is neither a folder nor a URI.
        MlflowException: the registry or run does not know the URI.
        CheckpointError: the forecaster's files are invalid.
    """
    local = Path(model)
    if local.is_dir():
        return _load_dir(local, model, device)
    if not _URI.match(model):
        raise DataError(f"--model {model!r} is neither a folder nor a model URI; give "
                        "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model or the "
                        "folder of a saved forecaster.")
    import mlflow  # slow to import; only this branch needs it

    with tempfile.TemporaryDirectory(prefix="latent-ode-predict-") as tmp:
        path = Path(mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=tmp))
        return _load_dir(path, model, device)


def _load_dir(path: Path, model: str, device: str) -> Forecaster:
    if (path / "config.json").is_file():
        return Forecaster.load(path, device=device)
    if (path / "MLmodel").is_file():
        return Forecaster.load(forecaster_path(path), device=device)
    raise DataError(f"--model {model!r} holds neither a saved forecaster (config.json) nor an "
                    "MLflow model (MLmodel); give the folder `Forecaster.save` wrote or a model "
                    "URI.")


def series_batches(path: Path, *, batch_series: int, chunk_rows: int
                   ) -> Iterator[tuple[pd.DataFrame, Locator]]:
    """The file's rows in batches of ``batch_series`` whole series (the last batch may hold
    fewer), each with the locator naming its rows' lines (CSV) or row indices (Parquet).

    Raises:
        DataError: the file's own errors (:func:`formats.longformat.iter_table`), an empty
            series id, or a series whose rows are not contiguous.
    """
    kind = file_kind(path)
    finished: set[str] = set()
    # Whole series not yet handed out, and where each starts: rows of `frame` before `last`.
    frame, ids = pd.DataFrame(), np.empty(0, dtype=object)
    for chunk in iter_table(path, kind, chunk_rows):
        if kind == "csv":  # lines with nothing at all on them are not rows
            chunk = chunk.loc[~chunk.isna().all(axis=1)]
        if len(chunk) == 0:
            continue
        chunk_ids = series_ids(chunk.reset_index(drop=True),
                               Locator(path, kind, chunk.index.to_numpy()))
        frame = pd.concat([frame, chunk]) if len(frame) else chunk
        new = len(ids)
        ids = np.concatenate([ids, chunk_ids])
        starts = np.concatenate([[0], np.flatnonzero(ids[1:] != ids[:-1]) + 1])
        # Series that begin in this chunk (the one running on from the last chunk is known).
        for a in starts[starts >= new]:
            if a > 0 and ids[a] in finished:
                raise DataError(
                    f"{Locator(path, kind, frame.index.to_numpy())(int(a))}: series "
                    f"{ids[a]!r} continues after other series' rows; `latent-ode predict` reads "
                    "the file in batches of series, so the rows of a series must be "
                    "contiguous. Sort the file by series_id (any order within a series)."
                )
            finished.add(ids[a])
        # The last series may go on in the next chunk: only the ones before it are whole.
        while len(starts) > batch_series:
            end = int(starts[batch_series])
            yield frame.iloc[:end], Locator(path, kind, frame.index.to_numpy()[:end])
            frame, ids, starts = frame.iloc[end:], ids[end:], starts[batch_series:] - end
    if len(frame):
        yield frame, Locator(path, kind, frame.index.to_numpy())


def _count_rows(path: Path) -> int | None:
    """Data rows of the file, for the progress bar (CSV: lines - 1, one pass over the bytes)."""
    if file_kind(path) == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    lines, last = 0, b"\n"
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            lines += block.count(b"\n")
            last = block[-1:]
    return max(lines + (last != b"\n") - 1, 0)


def predict_file(options: PredictOptions, forecaster: Forecaster | None = None
                 ) -> PredictSummary:
    """Forecast every series of ``options.data_file`` into ``options.out``.

    Args:
        options: the command's options.
        forecaster: the model; loaded from ``options.model`` when None.

    Returns:
        What was written, and the series the solver could not answer.

    Raises:
        DataError: bad input (file, line or row, and column named) or output extension.
        SolverError: the solver answered no series at all.
    """
    out_kind = file_kind(options.out)
    file_kind(options.data_file)
    if not options.data_file.is_file():
        raise DataError(f"data file {str(options.data_file)!r} does not exist; check the path.")
    fc = forecaster or load_forecaster(options.model, device=options.device)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    partial = options.out.with_name(options.out.name + ".partial")
    summary = PredictSummary(out=options.out)
    columns = output_columns(fc.channels, options.quantiles)
    bar = tqdm(total=_count_rows(options.data_file), unit="row", file=sys.stderr,
               desc="predict", disable=None, dynamic_ncols=True)
    try:
        with bar, FrameSink(partial, out_kind, columns) as sink:
            for batch, where in series_batches(options.data_file,
                                               batch_series=options.batch_series,
                                               chunk_rows=options.chunk_rows):
                result = forecast_frame(
                    fc, batch, quantiles=options.quantiles, num_samples=options.num_samples,
                    seed=options.seed, horizon=options.horizon, every=options.every,
                    where=where)
                sink.write(result.frame)
                summary.series += result.frame[SERIES_ID].nunique()
                summary.failed.update(result.failed)
                summary.no_queries += result.no_queries
                bar.update(len(batch))
            summary.rows = sink.rows
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    if summary.failed and summary.series == 0:
        partial.unlink(missing_ok=True)
        first = next(iter(summary.failed.items()))
        raise SolverError(f"the solver answered none of the {len(summary.failed)} series; the "
                          f"first, {first[0]!r}: {first[1]}")
    partial.replace(options.out)
    logger.info("wrote %d rows for %d series to %s", summary.rows, summary.series, options.out)
    return summary
