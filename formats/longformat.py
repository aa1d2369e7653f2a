"""Long-format series tables on disk: one row per (series, time), one column per channel.

File layout (CSV or Parquet, chosen by the file extension)::

    series_id,time,HR,Temp
    bed-7,0.0,71,
    bed-7,0.5,,36.9
    bed-9,0.0,80,37.2

- ``series_id`` is read as text (``007`` stays ``007``).
- ``time`` holds numbers, already in the table's time unit, or ISO-8601 datetimes, which are
  converted to float time units since the Unix epoch, UTC (a datetime without an offset is
  read as UTC); :func:`formats.times.datetimes_to_float` (re-exported here) is the one place
  that does this conversion.
- Every other column is a channel. An empty cell (or ``NaN``/``NA``/``null`` in a CSV, a null in
  Parquet) means "not observed".
- Rows must be sorted by time within each series; the rows of different series may interleave.
  Series keep the order in which their first row appears in the file.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from formats.times import (
    DATETIME_RANGE,
    TIME_UNITS,
    TimeUnit,
    check_time_unit,
    datetimes_to_float,
    parse_datetimes,
)
from latent_ode.data import Series
from latent_ode.errors import DataError

__all__ = [
    "CSV_MISSING",
    "SERIES_ID",
    "TIME",
    "TIME_UNITS",
    "Locator",
    "SeriesTable",
    "TimeUnit",
    "cell_value",
    "column_list",
    "datetimes_to_float",
    "file_kind",
    "iter_table",
    "numeric_column",
    "parse_times",
    "read_long",
    "read_table",
    "read_table_bytes",
    "reading",
    "series_ids",
    "to_frame",
    "write_long",
]

logger = logging.getLogger(__name__)

SERIES_ID = "series_id"
TIME = "time"


# Cell texts a CSV channel column treats as "not observed" (besides the empty cell).
CSV_MISSING = ["", "NaN", "nan", "NA", "N/A", "null", "NULL", "None"]
_PANDAS_MAJOR = int(pd.__version__.split(".")[0])
_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class SeriesTable:
    """A set of series that share channels and a time unit.

    Args:
        series: the series, each with ``D = len(channels)`` columns and a unique, non-empty id.
        channels: the D channel names, in column order.
        time_unit: unit of every series' times: seconds, minutes, hours or days.

    Raises:
        ConfigError: ``time_unit`` is not a known unit.
        DataError: duplicate or empty channel names or series ids, or a series whose number of
            channels differs from ``len(channels)``.
    """

    series: list[Series]
    channels: list[str]
    time_unit: str

    def __post_init__(self) -> None:
        check_time_unit(self.time_unit)
        channels = [str(c) for c in self.channels]
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "series", list(self.series))
        reserved = {SERIES_ID, TIME}.intersection(channels)
        if reserved:
            raise DataError(
                f"`channels` must not contain the reserved column names {sorted(reserved)}; "
                "rename those channels."
            )
        if "" in channels or len(set(channels)) != len(channels):
            dup = sorted({c for c in channels if channels.count(c) > 1 or c == ""})
            raise DataError(
                f"`channels` must be unique, non-empty names; got {dup!r} more than once or empty."
            )
        seen: set[str] = set()
        for i, s in enumerate(self.series):
            if s.num_channels != len(channels):
                raise DataError(
                    f"series {i} ({s.id!r}) has {s.num_channels} channels but `channels` names "
                    f"{len(channels)}; give one name per column of `values`."
                )
            if not s.id:
                raise DataError(
                    f"series {i} has an empty id; give every series a unique, non-empty `id`."
                )
            if s.id in seen:
                raise DataError(
                    f"series id {s.id!r} occurs more than once (again at position {i}); "
                    "series ids must be unique."
                )
            seen.add(s.id)

    @property
    def ids(self) -> list[str]:
        """The series ids, in table order."""
        return [s.id for s in self.series]

    def __len__(self) -> int:
        return len(self.series)


class Locator:
    """Turns a row of the frame being checked into the position a person looks for in the file.

    Args:
        path: the file (or a label such as ``the request body``), named in every message.
        kind: ``csv`` (positions are line numbers, 1 = header); anything else (``parquet``, an
            in-memory frame) gives the 0-based row index.
        rows: for each row of the frame, its 0-based data row in the file (rows may have been
            dropped before checking).
    """

    def __init__(self, path: Path | str, kind: str, rows: np.ndarray) -> None:
        self.path = path
        self.kind = kind
        self.rows = rows

    def pos(self, i: int) -> str:
        row = int(self.rows[i])
        if self.kind == "csv":
            # Line 1 is the header, so data row 0 is on line 2.
            return f"line {row + 2}"
        return f"row index {row} (0-based)"

    def __call__(self, i: int) -> str:
        return f"{self.path}, {self.pos(i)}"

    def subset(self, keep: np.ndarray) -> Locator:
        """The locator of ``frame[keep]`` (a boolean mask or positions)."""
        return Locator(self.path, self.kind, self.rows[keep])


def file_kind(path: Path) -> str:
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"cannot tell the format of {str(path)!r} from its extension {path.suffix!r}; "
            "use a .csv or .parquet file."
        )
    return kind


def read_table(path: Path, kind: str) -> pd.DataFrame:
    """The whole file as a DataFrame (CSV: text ids, blank lines kept as rows).

    Raises:
        DataError: the file is missing, empty, not UTF-8 (line and column named) or unreadable.
    """
    _check_file(path)
    with reading(str(path), kind, path.read_bytes):
        return _parse_frame(path, kind)


def iter_table(path: Path, kind: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The file in chunks of at most ``chunk_rows`` rows, never all of it in memory.

    Each chunk's index holds its 0-based data rows in the file (CSV: row i is on line i + 2).

    Raises:
        DataError: as :func:`read_table`, when the chunk that holds the problem is read.
    """
    _check_file(path)
    with reading(str(path), kind, path.read_bytes):
        if kind == "parquet":
            start = 0
            for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
                chunk = batch.to_pandas()
                chunk.index = pd.RangeIndex(start, start + len(chunk))
                start += len(chunk)
                yield chunk
            return
        yield from _read_csv(path, chunksize=chunk_rows)


def read_table_bytes(data: bytes, kind: str, label: str) -> pd.DataFrame:
    """A CSV or Parquet document held in memory (an HTTP body), read as :func:`read_table` reads
    a file; ``label`` names it in messages (e.g. ``the request body``).

    Raises:
        DataError: empty, not UTF-8 (line and column named) or unreadable.
    """
    if not data:
        raise DataError(
            f"{label}, line 1: the body is empty; a long-format table starts with a header line "
            f"such as '{SERIES_ID},{TIME},HR'."
        )
    with reading(label, kind, lambda: data):
        if kind == "parquet":
            return pd.read_parquet(io.BytesIO(data))
        return _read_csv(io.BytesIO(data))


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist; check the path.")
    if path.stat().st_size == 0:
        raise DataError(
            f"{path}, line 1: the file is empty (0 bytes); a long-format file starts with a "
            f"header line such as '{SERIES_ID},{TIME},HR'."
        )


@contextmanager
def reading(label: str, kind: str, raw: Callable[[], bytes]) -> Iterator[None]:
    """Turn the readers' errors into one located :class:`DataError` naming ``label``;
    ``raw`` gives the document's bytes, read only to locate a byte that is not UTF-8."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise DataError(_not_utf8(label, raw(), exc)) from None
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{label}, line 1: no header line (the file holds only blank lines); a long-format "
            f"file starts with a header line such as '{SERIES_ID},{TIME},HR'."
        ) from None
    except (ValueError, OSError, pa.ArrowException) as exc:  # parse errors are ValueErrors
        raise DataError(
            f"cannot read {label!r} as {kind} ({type(exc).__name__}: {_first_line(exc)}); "
            f"check that it is a {kind} file in the long format of docs/pipelines.md."
        ) from None


def _not_utf8(label: str, raw: bytes, exc: UnicodeDecodeError) -> str:
    """Where in the document the first byte that is not UTF-8 sits (line and column, from 1)."""
    try:
        raw.decode("utf-8")
        start = exc.start  # not reproducible on the whole document: the reader's own offset
    except UnicodeDecodeError as whole:
        start = whole.start
    line = raw.count(b"\n", 0, start) + 1
    column = start - (raw.rfind(b"\n", 0, start) + 1) + 1
    return (f"{label}, line {line}, column {column} (byte {start}): the byte "
            f"{raw[start:start + 1]!r} is not UTF-8 text; save the file as UTF-8.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"


def _parse_frame(path: Path, kind: str) -> pd.DataFrame:
    if kind == "parquet":
        return pd.read_parquet(path)
    return _read_csv(path)


def _read_csv(source: Path | io.BytesIO, chunksize: int | None = None) -> Any:
    """``pd.read_csv`` with the long format's conventions (a DataFrame, or an iterator of them
    when ``chunksize`` is given)."""
    header = pd.read_csv(source, nrows=0).columns
    if isinstance(source, io.BytesIO):
        source.seek(0)
    dtypes = {c: str for c in header if c == SERIES_ID}
    na_values = {c: ([""] if c in (SERIES_ID, TIME) else CSV_MISSING) for c in header}
    # Exact decimal -> float parsing, so that write_long/read_long round-trip: the default from
    # pandas 3 on (where the option is deprecated), "round_trip" before.
    exact: dict[str, str] = {} if _PANDAS_MAJOR >= 3 else {"float_precision": "round_trip"}
    return pd.read_csv(
        source,
        dtype=dtypes,
        keep_default_na=False,
        na_values=na_values,
        # Keep blank lines as rows so that row i is always on line i + 2.
        skip_blank_lines=False,
        chunksize=chunksize,
        **exact,  # type: ignore[arg-type]
    )


def cell_value(col: pd.Series, i: int) -> object:
    """The cell as a plain Python value, so that messages show ``0.5``, not ``np.float64(0.5)``."""
    v = col.iloc[i]
    return v.item() if isinstance(v, np.generic) else v


def column_list(columns: Sequence[object]) -> str:
    return ", ".join(repr(str(c)) for c in columns)


def numeric_column(
    frame: pd.DataFrame, column: str, where: Locator, *, what: str
) -> np.ndarray:
    """The column as float64, or a DataError at the first cell that is not a number."""
    col = frame[column]
    if pd.api.types.is_bool_dtype(col.dtype) or not pd.api.types.is_numeric_dtype(col.dtype):
        as_num = pd.to_numeric(col, errors="coerce")
        bad = (as_num.isna() & col.notna()).to_numpy()
        if pd.api.types.is_bool_dtype(col.dtype):
            bad = col.notna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{where(i)}, column {column!r}: {what} must be a number or empty; got "
                f"{cell_value(col, i)!r}. Fix or blank out that cell."
            )
        # Only missing cells (e.g. an all-empty object column in Parquet).
        return np.full(len(col), np.nan)
    return col.to_numpy(dtype=np.float64, na_value=np.nan)


def parse_times(frame: pd.DataFrame, where: Locator, time_unit: str) -> np.ndarray:
    col = frame[TIME]
    missing = col.isna().to_numpy()
    if missing.any():
        i = int(np.argmax(missing))
        raise DataError(
            f"{where(i)}, column {TIME!r}: every row needs a time; the cell is empty. "
            "Fill in the time or delete the row."
        )
    if pd.api.types.is_bool_dtype(col.dtype):
        raise DataError(
            f"{where(0)}, column {TIME!r}: times must be numbers or ISO-8601 datetimes; got "
            f"{cell_value(col, 0)!r}."
        )
    if pd.api.types.is_numeric_dtype(col.dtype):
        times = col.to_numpy(dtype=np.float64)
    elif isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(col.dtype):
        times = datetimes_to_float(col, time_unit)
    else:
        text = col.astype(str).str.strip()
        numeric = pd.to_numeric(text, errors="coerce").notna().to_numpy()
        if numeric.all():
            # Python's float() parsing: exact, like the CSV reader's round_trip mode.
            times = np.array([float(v) for v in text], dtype=np.float64)
        else:
            # NaT for non-ISO text ("now"), impossible dates and dates outside pandas' range.
            parsed = parse_datetimes(text)
            # The first row decides which kind the column holds; report the first misfit.
            bad = ~numeric if numeric[0] else parsed.isna().to_numpy()
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(
                    f"{where(i)}, column {TIME!r}: times must be all numbers (in {time_unit}) or "
                    f"all ISO-8601 datetimes such as '2024-05-01T13:45:00Z' between "
                    f"{DATETIME_RANGE[0]} and {DATETIME_RANGE[1]}; got "
                    f"{cell_value(col, i)!r}."
                )
            times = datetimes_to_float(parsed, time_unit)
    bad = ~np.isfinite(times)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{where(i)}, column {TIME!r}: times must be finite; got {cell_value(col, i)!r}."
        )
    return times


def series_ids(frame: pd.DataFrame, where: Locator) -> np.ndarray:
    col = frame[SERIES_ID]
    missing = col.isna().to_numpy()
    if missing.any():
        i = int(np.argmax(missing))
        raise DataError(
            f"{where(i)}, column {SERIES_ID!r}: every row needs a series id; the cell is empty."
        )
    ids = col.astype(str).str.strip().to_numpy(dtype=object)
    empty = ids == ""
    if empty.any():
        i = int(np.argmax(empty))
        raise DataError(
            f"{where(i)}, column {SERIES_ID!r}: every row needs a series id; got {cell_value(col, i)!r}."
        )
    return ids


def read_long(
    path: str | Path,
    *,
    time_unit: str = "hours",
    channels: list[str] | None = None,
) -> SeriesTable:
    """Read a long-format CSV or Parquet file into a :class:`SeriesTable`.

    Rows where every channel is missing are dropped (the number is logged).

    Args:
        path: a ``.csv`` or ``.parquet`` (``.pq``) file; see the module docstring for the layout.
        time_unit: unit of numeric times, and the unit ISO-8601 datetimes are converted to
            (float units since 1970-01-01T00:00:00Z): seconds, minutes, hours or days.
        channels: the channel columns to read, in this order; other columns are ignored.
            ``None`` reads every column but ``series_id`` and ``time``, in file order.

    Returns:
        The table; series in order of first appearance in the file, each with strictly
        increasing times.

    Raises:
        ConfigError: ``time_unit`` is not a known unit.
        DataError: the file is missing, of an unknown type or has no rows; the ``series_id``
            or ``time`` column, or a requested channel, is missing; there is no channel column;
            a cell of a channel is text or infinite; a time is empty, not finite or not
            parseable; times do not increase within a series or repeat; or a series has no
            observed value. The message names the file, the line (CSV, 1 = header) or 0-based
            row index (Parquet) and the column.
    """
    check_time_unit(time_unit)
    path = Path(path)
    kind = file_kind(path)
    frame = read_table(path, kind)
    frame.columns = [str(c) for c in frame.columns]
    found = list(frame.columns)
    for required in (SERIES_ID, TIME):
        if required not in found:
            raise DataError(
                f"{path}: the column {required!r} is missing; found {column_list(found)}. "
                f"A long-format file needs columns {SERIES_ID!r}, {TIME!r} and one per channel."
            )
    available = [c for c in found if c not in (SERIES_ID, TIME)]
    if channels is None:
        channels = available
    else:
        absent = [c for c in channels if c not in available]
        if absent:
            raise DataError(
                f"{path}: requested channel(s) {column_list(absent)} not found; the file has "
                f"channels {column_list(available)}."
            )
        ignored = [c for c in available if c not in channels]
        if ignored:
            logger.info("%s: ignoring columns not among `channels`: %s", path, ignored)
    if not channels:
        raise DataError(
            f"{path}: no channel columns; found only {column_list(found)}. Add one column per "
            "observed variable after 'series_id' and 'time'."
        )

    if kind == "csv":
        # Lines with nothing at all on them (e.g. a trailing blank line) are not rows.
        blank = frame.isna().all(axis=1).to_numpy()
        if blank.any():
            frame = frame.loc[~blank]
    if len(frame) == 0:
        raise DataError(
            f"{path}: the file has a header but no data rows; add one row per (series, time)."
        )
    loc = Locator(path, kind, rows=frame.index.to_numpy())
    frame = frame.reset_index(drop=True)

    ids = series_ids(frame, loc)
    values = np.empty((len(frame), len(channels)), dtype=np.float64)
    for j, name in enumerate(channels):
        values[:, j] = numeric_column(frame, name, loc, what="a channel value")
    times = parse_times(frame, loc, time_unit)
    inf = np.isinf(values)
    if inf.any():
        i, j = (int(k) for k in np.argwhere(inf)[0])
        raise DataError(
            f"{loc(i)}, column {channels[j]!r}: values must be finite (or empty if not observed); "
            f"got {values[i, j]}."
        )

    codes, uniques = pd.factorize(pd.Series(ids, dtype=object), sort=False)
    order = np.argsort(codes, kind="stable")  # rows grouped by series, file order kept inside
    same = codes[order][1:] == codes[order][:-1]
    step = np.diff(times[order])
    bad = same & (step <= 0)
    if bad.any():
        # Report the offending row that comes first in the file.
        later = order[1:][bad]
        k = int(np.argmin(later))
        cur, prev = int(later[k]), int(order[:-1][bad][k])
        sid = ids[cur]
        if times[cur] == times[prev]:
            raise DataError(
                f"{loc(cur)}: series {sid!r} has two rows at time {cell_value(frame[TIME], cur)!r} "
                f"(the other at {loc.pos(prev)}); merge duplicate (series, time) "
                "rows into one."
            )
        raise DataError(
            f"{loc(cur)}: times of series {sid!r} must increase; got {cell_value(frame[TIME], cur)!r} "
            f"after {cell_value(frame[TIME], prev)!r} (at {loc.pos(prev)}). Sort the file "
            "by time within each series."
        )

    observed = ~np.isnan(values)
    has_obs = observed.any(axis=1)
    per_series = np.bincount(codes, weights=has_obs, minlength=len(uniques))
    if (per_series == 0).any():
        c = int(np.argmax(per_series == 0))
        first = int(np.argmax(codes == c))
        raise DataError(
            f"{path}: series {uniques[c]!r} (first row at {loc.pos(first)}) has no "
            f"observed value in any of the channels {column_list(channels)}; remove it or fill "
            "in its values."
        )
    n_empty = int((~has_obs).sum())
    if n_empty:
        logger.info("%s: dropped %d row(s) where every channel is missing", path, n_empty)

    keep = order[has_obs[order]]  # rows grouped by series, empty rows left out
    kept_codes = codes[keep]
    times, values = times[keep], values[keep]  # one gather; each series is then a slice
    bounds = np.flatnonzero(np.diff(kept_codes)) + 1
    starts = np.concatenate([[0], bounds]).astype(int)
    ends = np.concatenate([bounds, [len(keep)]]).astype(int)
    series = [
        Series(times=times[a:b], values=values[a:b], id=str(uniques[kept_codes[a]]))
        for a, b in zip(starts, ends, strict=True)
    ]
    logger.info(
        "%s: read %d series, %d rows, %d channels (time unit: %s)",
        path, len(series), len(keep), len(channels), time_unit,
    )
    return SeriesTable(series=series, channels=list(channels), time_unit=time_unit)


def to_frame(table: SeriesTable) -> pd.DataFrame:
    """The table as a long-format DataFrame.

    Args:
        table: the series to lay out.

    Returns:
        Columns ``series_id`` (str), ``time`` (float64) and one float64 column per channel; one row
        per (series, time), series in table order, NaN where a channel is not observed.
    """
    n = [len(s.times) for s in table.series]
    if table.series:
        times = np.concatenate([s.times for s in table.series])
        values = np.concatenate([s.values for s in table.series], axis=0)
    else:
        times = np.empty(0)
        values = np.empty((0, len(table.channels)))
    data: dict[str, object] = {
        SERIES_ID: pd.array(np.repeat(np.asarray(table.ids, dtype=object), n), dtype=str),
        TIME: times,
    }
    for j, name in enumerate(table.channels):
        data[name] = values[:, j]
    return pd.DataFrame(data)


def write_long(table: SeriesTable, path: str | Path) -> Path:
    """Write a table as a long-format CSV or Parquet file that :func:`read_long` reads back exactly.

    Args:
        table: the series to write.
        path: destination ``.csv`` or ``.parquet`` (``.pq``) file; parent folders are created.

    Returns:
        The path written.

    Raises:
        DataError: the extension is neither CSV nor Parquet.
    """
    path = Path(path)
    kind = file_kind(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = to_frame(table)
    if kind == "parquet":
        frame.to_parquet(path, index=False)
    else:
        # Arrow's CSV writer: ~10x faster than DataFrame.to_csv, floats as their shortest
        # round-trip text (read_long parses them exactly), NaN (null) as an empty cell.
        arrow = pa.Table.from_pandas(frame, preserve_index=False)
        pa_csv.write_csv(arrow, path, write_options=pa_csv.WriteOptions(quoting_style="needed"))
    logger.info("wrote %d series, %d rows to %s", len(table), len(frame), path)
    return path
