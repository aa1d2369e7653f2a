"""The forecast frame format: one table shape for the CLI, HTTP, the pyfunc and Spark.

Input (the long format of :mod:`formats.longformat` plus a ``query`` column)::

    series_id,time,hr,temp,query
    bed-7,0.0,71,,false
    bed-7,0.5,,36.9,false
    bed-7,2.0,,,true

- ``series_id`` (text), ``time`` (numbers in the model's time unit, or ISO-8601 datetimes),
  one column per model channel (empty = not observed; model channels absent from the table are
  unobserved; a column that is not a model channel is an error) and an optional boolean
  ``query`` column: rows with ``query`` true ask for a forecast at that time (their channel
  cells are ignored); other rows are observations. Observation rows where every channel is empty
  are dropped; observations need not be sorted (they are, per series, by time; two at the same
  time are an error); query rows are answered in the order given.

Output: one row per (series, query time), series in order of first appearance, queries in
the order given (then the ``horizon`` queries), columns :func:`output_columns`:
``series_id, time, mode``, then per model channel ``<c>_mean, <c>_std`` and ``<c>_q<level>`` per
asked quantile level, the level written as ``repr(float(level))`` (``hr_q0.05``). A series the
solver could not answer has no rows (:class:`FrameForecast` lists it).

Functions: :func:`frame_to_requests` (frame → the library's inputs), :func:`forecasts_to_frame`
(the library's answers → frame), :func:`forecast_frame` / :func:`predict_frame` (both, around
:meth:`latent_ode.Forecaster.predict`), :func:`response_to_frame` (the service's JSON answer →
frame). docs/service.md "Frame format" is the user-facing description.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from formats.longformat import (
    SERIES_ID,
    TIME,
    Locator,
    cell_value,
    column_list,
    numeric_column,
    parse_times,
    series_ids,
)
from formats.times import datetimes_to_float
from latent_ode import Forecast, Forecaster, Series, raise_on_failure
from latent_ode.errors import ConfigError, DataError

__all__ = [
    "MODE",
    "QUERY",
    "FrameForecast",
    "FrameRequests",
    "FrameSink",
    "forecast_frame",
    "forecasts_to_frame",
    "frame_to_requests",
    "horizon_times",
    "output_columns",
    "parse_quantiles",
    "predict_frame",
    "quantile_column",
    "response_to_frame",
]

QUERY = "query"
MODE = "mode"

_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0", ""}


def quantile_column(channel: str, level: float) -> str:
    """``hr_q0.05``: the column of one channel's quantile at ``level``."""
    return f"{channel}_q{float(level)!r}"


def output_columns(channels: Sequence[str], quantiles: Sequence[float] = ()) -> list[str]:
    """The output frame's columns, in order, for a model's channels and the asked levels."""
    columns = [SERIES_ID, TIME, MODE]
    for c in channels:
        columns += [f"{c}_mean", f"{c}_std", *(quantile_column(c, q) for q in quantiles)]
    return columns


def parse_quantiles(value: str | float | Sequence[float | str] | None) -> tuple[float, ...]:
    """Quantile levels from a list or a comma-separated string (``"0.05,0.5,0.95"``), in the
    order given, duplicates dropped; None or ``""`` is none.

    Raises:
        ConfigError: a level that is not a number strictly between 0 and 1.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, int | float):
        items = [value]
    else:
        items = list(value)
    levels = []
    for item in items:
        try:
            level = float(item)
        except (TypeError, ValueError):
            raise ConfigError(
                f"`quantiles` must be numbers between 0 and 1 separated by commas; got {item!r}."
            ) from None
        if not 0.0 < level < 1.0:
            raise ConfigError(f"`quantiles` must lie strictly between 0 and 1; got {item!r}.")
        levels.append(level)
    return tuple(dict.fromkeys(levels))


def horizon_times(last: float, horizon: float, every: float) -> np.ndarray:
    """Query times after ``last`` every ``every`` up to ``last + horizon`` (included, within a
    millionth of a step): ``last + every, last + 2 every, ...``.

    Raises:
        ConfigError: ``horizon`` or ``every`` not a positive finite number.
    """
    for name, value in (("horizon", horizon), ("every", every)):
        if not (np.isfinite(value) and value > 0):
            raise ConfigError(f"`{name}` must be a positive number of model time units; "
                              f"got {value!r}.")
    steps = int(np.floor(horizon / every + 1e-6))
    if steps < 1:
        raise ConfigError(f"`every` ({every!r}) is longer than `horizon` ({horizon!r}); give a "
                          "step no longer than the horizon.")
    return last + every * np.arange(1, steps + 1, dtype=np.float64)


@dataclass(frozen=True)
class FrameRequests:
    """A frame's series as the library takes them.

    Attributes:
        ids: the series ids, in order of first appearance (only series with queries).
        series: one :class:`latent_ode.Series` per id, all of the model's D channels.
        queries: one (Q,) float64 array of query times per id: the query rows in the order
            given, then the horizon's times.
        no_queries: ids of series that had observations but nothing to answer.
    """

    ids: list[str]
    series: list[Series]
    queries: list[np.ndarray]
    no_queries: list[str] = field(default_factory=list)


def _query_flags(frame: pd.DataFrame, where: Locator) -> np.ndarray:
    """The ``query`` column as booleans (absent: all False); text true/false/yes/no/1/0 and
    empty (= false) are accepted."""
    if QUERY not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    col = frame[QUERY]
    if pd.api.types.is_bool_dtype(col.dtype) and not col.isna().any():
        return col.to_numpy(dtype=bool)
    text = col.astype(object).where(col.notna(), "").astype(str).str.strip().str.lower()
    flags = text.isin(_TRUE).to_numpy()
    bad = ~(flags | text.isin(_FALSE).to_numpy())
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{where(i)}, column {QUERY!r}: must be true or false (or empty for false); got "
            f"{cell_value(col, i)!r}."
        )
    return flags


def frame_to_requests(
    frame: pd.DataFrame,
    channels: Sequence[str],
    *,
    time_unit: str = "hours",
    where: Locator | None = None,
    horizon: float | None = None,
    every: float | None = None,
) -> FrameRequests:
    """Check an input frame against a model's channels and turn it into the library's inputs.

    Args:
        frame: the input frame (see the module docstring); its rows in any order, the rows of
            different series may interleave.
        channels: the model's D channel names, in its order.
        time_unit: the model's time unit (ISO-8601 times are converted to it).
        where: names the frame's rows in messages (a file's lines); default: ``model input``
            with 0-based row indices.
        horizon, every: when given, each series also gets the queries
            :func:`horizon_times` ``(last observation, horizon, every)``.

    Returns:
        The series that have something to answer, and the ids of those that have not.

    Raises:
        DataError: a missing ``series_id`` or ``time`` column, a column that is not a model
            channel, an empty frame, a bad cell (located by row and column), two observations
            of a series at the same time, or a series with queries but no observed value.
        ConfigError: a bad ``horizon`` / ``every``.
    """
    if (horizon is None) != (every is None):
        raise ConfigError("`horizon` and `every` go together; give both or neither.")
    frame = frame.set_axis([str(c) for c in frame.columns], axis=1)
    where = where or Locator("model input", "frame", np.arange(len(frame)))
    found = list(frame.columns)
    for required in (SERIES_ID, TIME):
        if required not in found:
            raise DataError(
                f"{where.path}: the column {required!r} is missing; found {column_list(found)}. "
                f"A frame needs columns {SERIES_ID!r}, {TIME!r}, one per channel and optionally "
                f"{QUERY!r}."
            )
    given = [c for c in found if c not in (SERIES_ID, TIME, QUERY)]
    unknown = [c for c in given if c not in channels]
    if unknown:
        raise DataError(
            f"{where.path}: column(s) {column_list(unknown)} are not channels of the model; its "
            f"channels are {column_list(channels)}. Rename or drop those columns."
        )
    if len(frame) == 0:
        raise DataError(f"{where.path}: no rows; add one row per (series, time).")
    frame = frame.reset_index(drop=True)
    ids = series_ids(frame, where)
    times = parse_times(frame, where, time_unit)
    is_query = _query_flags(frame, where)
    values = np.full((len(frame), len(channels)), np.nan)
    obs_rows = np.flatnonzero(~is_query)
    if obs_rows.size:
        observed = frame.iloc[obs_rows]
        obs_where = where.subset(obs_rows)
        for name in given:
            values[obs_rows, channels.index(name)] = numeric_column(
                observed, name, obs_where, what="a channel value")
    inf = np.isinf(values)
    if inf.any():
        i, j = (int(k) for k in np.argwhere(inf)[0])
        raise DataError(f"{where(i)}, column {channels[j]!r}: values must be finite (or empty if "
                        f"not observed); got {values[i, j]}.")
    has_obs = ~np.isnan(values).all(axis=1) & ~is_query

    codes, uniques = pd.factorize(pd.Series(ids, dtype=object), sort=False)
    order = np.argsort(codes, kind="stable")  # rows grouped by series, frame order inside
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    out = FrameRequests(ids=[], series=[], queries=[])
    for rows in np.split(order, bounds):
        sid = str(uniques[codes[rows[0]]])
        obs = rows[has_obs[rows]]
        obs = obs[np.argsort(times[obs], kind="stable")]
        queries = times[rows[is_query[rows]]]
        if obs.size == 0:
            raise DataError(
                f"{where(int(rows[0]))}: series {sid!r} has no observed value in any of the "
                f"channels {column_list(given or channels)}; a series needs at least one "
                "observation row to be forecast."
            )
        same = np.flatnonzero(np.diff(times[obs]) == 0)
        if same.size:
            a, b = sorted((int(obs[same[0]]), int(obs[same[0] + 1])))
            raise DataError(
                f"{where(b)}: series {sid!r} has two observation rows at time "
                f"{cell_value(frame[TIME], b)!r} (the other at {where.pos(a)}); merge them into "
                "one row."
            )
        if horizon is not None and every is not None:
            queries = np.concatenate([queries, horizon_times(float(times[obs[-1]]), horizon,
                                                             every)])
        if queries.size == 0:
            out.no_queries.append(sid)
            continue
        out.ids.append(sid)
        out.series.append(Series(times=times[obs], values=values[obs], id=sid))
        out.queries.append(queries)
    return out


def forecasts_to_frame(
    ids: Sequence[str],
    forecasts: Sequence[Forecast],
    channels: Sequence[str],
    quantiles: Sequence[float] = (),
) -> pd.DataFrame:
    """The output frame of the forecasts that succeeded (a failed one has no rows).

    Args:
        ids: one id per forecast.
        forecasts: the library's answers, each with the D channels and at least ``quantiles``.
        channels: the model's D channel names.
        quantiles: the levels to write, in this order.

    Returns:
        Columns :func:`output_columns` ``(channels, quantiles)``; ``series_id`` and ``mode`` as
        text, every other column float64.
    """
    done = [(sid, f) for sid, f in zip(ids, forecasts, strict=True) if f.ok]
    d = len(channels)
    counts = [len(f.query_times) for _, f in done]

    def stack(get: Any) -> np.ndarray:
        parts = [np.asarray(get(f), dtype=np.float64).reshape(-1, d) for _, f in done]
        return np.concatenate(parts) if parts else np.empty((0, d))

    data: dict[str, Any] = {
        SERIES_ID: np.repeat(np.asarray([s for s, _ in done], dtype=object), counts),
        TIME: (np.concatenate([np.asarray(f.query_times, dtype=np.float64) for _, f in done])
               if done else np.empty(0)),
        MODE: np.asarray([m for _, f in done for m in f.mode], dtype=object),
    }
    mean, std = stack(lambda f: f.mean), stack(lambda f: f.std)
    qs = {q: stack(lambda f, q=q: f.quantiles[q]) for q in quantiles}
    for j, c in enumerate(channels):
        data[f"{c}_mean"] = mean[:, j]
        data[f"{c}_std"] = std[:, j]
        for q in quantiles:
            data[quantile_column(c, q)] = qs[q][:, j]
    out = pd.DataFrame(data)
    out[SERIES_ID] = out[SERIES_ID].astype(str)
    out[MODE] = out[MODE].astype(str)
    return out


@dataclass(frozen=True)
class FrameForecast:
    """:func:`forecast_frame`'s answer.

    Attributes:
        frame: the output frame (rows of the series that were answered).
        failed: series id → why the solver could not answer it (those have no rows).
        no_queries: ids of series with nothing to answer.
    """

    frame: pd.DataFrame
    failed: dict[str, str]
    no_queries: list[str]


def _predict(
    forecaster: Forecaster, frame: pd.DataFrame, quantiles: Sequence[float] | str,
    num_samples: int, seed: int, horizon: float | None, every: float | None,
    where: Locator | None,
) -> tuple[FrameRequests, tuple[float, ...], list[Forecast]]:
    levels = parse_quantiles(quantiles)
    req = frame_to_requests(frame, list(forecaster.channels), time_unit=forecaster.time_unit,
                            where=where, horizon=horizon, every=every)
    if not req.ids:
        return req, levels, []
    return req, levels, forecaster.predict(req.series, req.queries, num_samples=num_samples,
                                           quantiles=levels, seed=seed)


def forecast_frame(
    forecaster: Forecaster,
    frame: pd.DataFrame,
    *,
    quantiles: Sequence[float] | str = (),
    num_samples: int = 32,
    seed: int = 0,
    horizon: float | None = None,
    every: float | None = None,
    where: Locator | None = None,
) -> FrameForecast:
    """Forecast every series of an input frame in one ``Forecaster.predict`` call.

    A series' answer does not depend on the other series in the call (the latent noise is
    shared, the solve per series), so any split of a frame into batches of whole series gives
    the same rows (to the solver's tolerance).

    Args:
        forecaster: the model.
        frame: the input frame.
        quantiles: levels to report, in this order (a list, or a comma-separated string).
        num_samples, seed: the latent samples S and their seed.
        horizon, every: add query times after each series' last observation
            (:func:`horizon_times`).
        where: names the frame's rows in messages (see :func:`frame_to_requests`).

    Returns:
        The output frame, the series the solver could not answer, and those with no query.

    Raises:
        DataError / ConfigError: as :func:`frame_to_requests`; a bad quantile level.
    """
    req, levels, forecasts = _predict(forecaster, frame, quantiles, num_samples, seed, horizon,
                                      every, where)
    failed = {sid: f.message for sid, f in zip(req.ids, forecasts, strict=True) if not f.ok}
    return FrameForecast(forecasts_to_frame(req.ids, forecasts, forecaster.channels, levels),
                         failed, req.no_queries)


def predict_frame(
    forecaster: Forecaster,
    frame: pd.DataFrame,
    *,
    quantiles: Sequence[float] | str = (),
    num_samples: int = 32,
    seed: int = 0,
    horizon: float | None = None,
    every: float | None = None,
) -> pd.DataFrame:
    """:func:`forecast_frame`'s output frame, raising if the solver failed on any series.

    Raises:
        SolverError: ``.series`` lists the failed series (positions among those with queries).
        DataError / ConfigError: as :func:`forecast_frame`.
    """
    req, levels, forecasts = _predict(forecaster, frame, quantiles, num_samples, seed, horizon,
                                      every, None)
    return forecasts_to_frame(req.ids, raise_on_failure(forecasts), forecaster.channels, levels)


def response_to_frame(answer: Mapping[str, Any]) -> pd.DataFrame:
    """The service's JSON answer (``POST /v1/predict``) as an output frame.

    Query times sent as ISO-8601 strings become float time units (as the frame's ``time``
    always is); a series sent without an id is named by its position (``"0"``, ``"1"``, ...).
    Levels are the answer's, in its order.
    """
    channels = list(answer["channels"])
    series = answer["series"]
    levels = [q["quantile"] for q in series[0]["quantiles"]] if series else []
    parts = []
    for i, item in enumerate(series):
        raw = item["query_times"]
        times = (datetimes_to_float(list(raw), answer["time_unit"])
                 if raw and isinstance(raw[0], str) else np.asarray(raw, dtype=np.float64))
        part: dict[str, Any] = {
            SERIES_ID: str(item["id"]) if item.get("id") is not None else str(i),
            TIME: times,
            MODE: item["mode"],
        }
        mean = np.asarray(item["mean"], dtype=np.float64).reshape(len(times), -1)
        std = np.asarray(item["std"], dtype=np.float64).reshape(len(times), -1)
        qs = {q["quantile"]: np.asarray(q["values"], dtype=np.float64).reshape(len(times), -1)
              for q in item["quantiles"]}
        for j, c in enumerate(channels):
            part[f"{c}_mean"] = mean[:, j]
            part[f"{c}_std"] = std[:, j]
            for q in levels:
                part[quantile_column(c, q)] = qs[q][:, j]
        parts.append(pd.DataFrame(part))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=object if c in (SERIES_ID, MODE) else float)
                             for c in output_columns(channels, levels)})
    return pd.concat(parts, ignore_index=True)


class FrameSink:
    """Writes output frames, one batch after another, as one CSV or Parquet document.

    Every batch has the same columns (:func:`output_columns`); ``series_id`` and ``mode`` are
    written as text, the rest as float64 (CSV: each float as its shortest round-trip text).

    Args:
        sink: a file path or a binary buffer.
        kind: ``csv`` or ``parquet``.
        columns: the output columns.
    """

    def __init__(self, sink: str | Path | BinaryIO, kind: str, columns: Sequence[str]) -> None:
        self.schema = pa.schema([(c, pa.string() if c in (SERIES_ID, MODE) else pa.float64())
                                 for c in columns])
        self.kind = kind
        self._writer: Any
        if kind == "parquet":
            self._writer = pq.ParquetWriter(sink, self.schema)
        elif kind == "csv":
            self._writer = pa_csv.CSVWriter(
                sink, self.schema, write_options=pa_csv.WriteOptions(quoting_style="needed"))
        else:
            raise ConfigError(f"an output frame is csv or parquet; got {kind!r}.")
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        """Append ``frame``'s rows (its columns must be the sink's)."""
        self._writer.write_table(pa.Table.from_pandas(frame, schema=self.schema,
                                                      preserve_index=False))
        self.rows += len(frame)

    def close(self) -> None:
        """Finish the document (Parquet writes its footer; a CSV with no rows keeps its header)."""
        self._writer.close()

    def __enter__(self) -> FrameSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
