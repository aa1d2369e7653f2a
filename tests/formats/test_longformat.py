"""Long-format files: exact round-trips, ISO times, and one located error per bad input."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from formats.longformat import (
    SeriesTable,
    datetimes_to_float,
    read_long,
    to_frame,
    write_long,
)
from latent_ode.data import Series
from latent_ode.errors import ConfigError, DataError


def write_csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_tables_equal(a: SeriesTable, b: SeriesTable) -> None:
    assert a.ids == b.ids
    assert a.channels == b.channels
    assert a.time_unit == b.time_unit
    for sa, sb in zip(a.series, b.series, strict=True):
        # Exact: assert_array_equal treats NaN == NaN, so missing patterns must match too.
        np.testing.assert_array_equal(sa.times, sb.times)
        np.testing.assert_array_equal(sa.values, sb.values)


@pytest.fixture
def awkward_table() -> SeriesTable:
    """Floats that do not survive naive text formatting, sparse NaN patterns, tricky ids."""
    rng = np.random.default_rng(7)
    series = []
    ids = ["007", "a,b", 'quote"d', "ünï", "42"]
    for k, sid in enumerate(ids):
        t = np.sort(rng.uniform(-1e3, 1e3, size=5 + k))
        t = np.unique(t)
        v = rng.normal(size=(len(t), 3)) * 10.0 ** rng.integers(-300, 300, size=(len(t), 3))
        v[rng.uniform(size=v.shape) < 0.5] = np.nan
        v[:, 0] = np.where(np.isnan(v).all(axis=1), 1 / 3, v[:, 0])  # every row observed
        series.append(Series(times=t, values=v, id=sid))
    series.append(Series(times=np.array([0.1, 0.2]), values=np.array([[0.1, np.nan, -0.0],
                                                                     [np.nan, 5e-324, 1e308]]),
                         id="edge"))
    return SeriesTable(series=series, channels=["x", "y y", "z"], time_unit="minutes")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_write_read_round_trip_is_exact(
    tmp_path: Path, awkward_table: SeriesTable, suffix: str
) -> None:
    path = write_long(awkward_table, tmp_path / f"out{suffix}")
    back = read_long(path, time_unit="minutes")
    assert_tables_equal(back, awkward_table)


def test_read_csv_groups_interleaved_series_in_order_of_first_appearance(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "series_id,time,HR,Temp\n"
        "007,0,71,\n"
        "b,1.5,80,37.2\n"
        "007,0.5,,36.9\n"
        "b,2,,\n"          # all channels missing: dropped
        "007,2,72,37.0\n",
    )
    table = read_long(path)
    assert table.ids == ["007", "b"]
    assert table.channels == ["HR", "Temp"]
    assert table.time_unit == "hours"
    np.testing.assert_array_equal(table.series[0].times, [0.0, 0.5, 2.0])
    np.testing.assert_array_equal(
        table.series[0].values, [[71.0, np.nan], [np.nan, 36.9], [72.0, 37.0]]
    )
    np.testing.assert_array_equal(table.series[1].times, [1.5])
    np.testing.assert_array_equal(table.series[1].values, [[80.0, 37.2]])


def test_rows_with_every_channel_missing_are_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_csv(tmp_path, "series_id,time,a\ns,0,1\ns,1,\ns,2,NaN\ns,3,4\n")
    with caplog.at_level(logging.INFO, logger="formats.longformat"):
        table = read_long(path)
    np.testing.assert_array_equal(table.series[0].times, [0.0, 3.0])
    assert "dropped 2 row(s) where every channel is missing" in caplog.text


def test_channels_argument_selects_and_orders_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "series_id,time,a,b,c\ns,0,1,2,3\n")
    table = read_long(path, channels=["c", "a"])
    assert table.channels == ["c", "a"]
    np.testing.assert_array_equal(table.series[0].values, [[3.0, 1.0]])


def test_trailing_blank_line_is_ignored(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "series_id,time,a\ns,0,1\n\n")
    assert read_long(path).series[0].times.tolist() == [0.0]


def test_iso_times_become_float_units_since_epoch_utc(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "series_id,time,a\n"
        "s,1970-01-02T00:00:00Z,1\n"          # 24 h after the epoch
        "s,1970-01-02T02:30:00+01:00,2\n"     # 01:30 UTC
        "s,1970-01-02 03:00:00,3\n",          # naive = UTC
    )
    table = read_long(path, time_unit="hours")
    np.testing.assert_array_equal(table.series[0].times, [24.0, 25.5, 27.0])
    days = read_long(path, time_unit="days")
    np.testing.assert_array_equal(days.series[0].times, [1.0, 25.5 / 24, 27.0 / 24])


def test_iso_times_in_parquet_datetime_column(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pd.DataFrame(
        {
            "series_id": ["s", "s"],
            "time": pd.to_datetime(["2000-01-01T00:00:00Z", "2000-01-01T00:01:30Z"]),
            "a": [1.0, 2.0],
        }
    ).to_parquet(path)
    table = read_long(path, time_unit="seconds")
    np.testing.assert_array_equal(table.series[0].times, [946684800.0, 946684890.0])


@pytest.mark.parametrize(
    ("unit", "expected"),
    [("seconds", 90061.5), ("minutes", 90061.5 / 60), ("hours", 90061.5 / 3600),
     ("days", 90061.5 / 86400)],
)
def test_datetimes_to_float_units(unit: str, expected: float) -> None:
    got = datetimes_to_float(["1970-01-02T01:01:01.5Z", "1970-01-01T00:00:00"], unit)
    np.testing.assert_array_equal(got, [expected, 0.0])


def test_datetimes_to_float_rejects_non_iso_value() -> None:
    with pytest.raises(DataError, match=r"time at index 1 must be an ISO-8601 datetime .*'soon'"):
        datetimes_to_float(["2024-01-01", "soon"], "hours")


def test_datetimes_to_float_rejects_unknown_unit() -> None:
    with pytest.raises(ConfigError, match=r"`time_unit` must be one of seconds, minutes, hours, "
                       r"days; got 'weeks'"):
        datetimes_to_float(["2024-01-01"], "weeks")


def test_to_frame_layout(awkward_table: SeriesTable) -> None:
    frame = to_frame(awkward_table)
    assert list(frame.columns) == ["series_id", "time", "x", "y y", "z"]
    assert len(frame) == sum(len(s.times) for s in awkward_table.series)
    assert frame["series_id"].iloc[0] == "007"
    np.testing.assert_array_equal(frame["time"].iloc[-2:], [0.1, 0.2])


# ----------------------------------------------------------------------------- errors


ERROR_CASES = {
    "missing series_id": (
        "id,time,a\ns,0,1\n",
        r"data.csv: the column 'series_id' is missing; found 'id', 'time', 'a'",
    ),
    "no rows": (
        "series_id,time,a\n\n",
        r"data.csv: the file has a header but no data rows",
    ),
    "missing time": (
        "series_id,t,a\ns,0,1\n",
        r"the column 'time' is missing; found 'series_id', 't', 'a'",
    ),
    "no channels": (
        "series_id,time\ns,0\n",
        r"no channel columns; found only 'series_id', 'time'",
    ),
    "text in channel": (
        "series_id,time,a,b\ns,0,1,2\ns,1,3,high\n",
        r"data.csv, line 3, column 'b': a channel value must be a number or empty; got 'high'",
    ),
    "unparseable time": (
        "series_id,time,a\ns,0,1\ns,later,2\n",
        r"line 3, column 'time': times must be all numbers \(in hours\) or all ISO-8601 "
        r"datetimes .*got 'later'",
    ),
    "non-finite time": (
        "series_id,time,a\ns,0,1\ns,inf,2\n",
        r"line 3, column 'time': times must be finite; got inf",
    ),
    "empty time": (
        "series_id,time,a\ns,0,1\ns,,2\n",
        r"line 3, column 'time': every row needs a time; the cell is empty",
    ),
    "empty series id": (
        "series_id,time,a\ns,0,1\n,1,2\n",
        r"line 3, column 'series_id': every row needs a series id",
    ),
    "decreasing times": (
        "series_id,time,a\ns,0,1\nu,5,1\ns,2,2\ns,1.5,3\n",
        r"line 5: times of series 's' must increase; got 1.5 after 2.0 \(at line 4\)\. "
        r"Sort the file by time within each series",
    ),
    "duplicate time": (
        "series_id,time,a\ns,0,1\ns,1,2\ns,1,3\n",
        r"line 4: series 's' has two rows at time 1 \(the other at line 3\); merge duplicate",
    ),
    "series without observations": (
        "series_id,time,a,b\ns,0,1,\nempty,0,,\nempty,1,,\n",
        r"series 'empty' \(first row at line 3\) has no observed value in any of the channels "
        r"'a', 'b'",
    ),
    "infinite value": (
        "series_id,time,a,b\ns,0,1,2\ns,1,-inf,2\n",
        r"line 3, column 'a': values must be finite \(or empty if not observed\); got -inf",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_read_long_csv_errors_name_line_and_column(tmp_path: Path, case: str) -> None:
    text, message = ERROR_CASES[case]
    path = write_csv(tmp_path, text)
    with pytest.raises(DataError, match=message):
        read_long(path)


def test_time_column_of_datetimes_with_a_number_points_at_the_number(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "series_id,time,a\ns,2024-01-01T00:00Z,1\ns,3.5,2\n")
    with pytest.raises(DataError, match=r"line 3, column 'time': times must be all numbers .*"
                       r"got '3.5'"):
        read_long(path)


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "series_id,time,a\ns,0,1\n\ns,1,oops\n")
    with pytest.raises(DataError, match=r"line 4, column 'a'.*got 'oops'"):
        read_long(path)


def test_parquet_errors_give_zero_based_row_index(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pd.DataFrame({"series_id": ["s", "s", "s"], "time": [0.0, 1.0, 2.0],
                  "a": ["1", "2", "n/a?"]}).to_parquet(path)
    with pytest.raises(DataError, match=re.escape(
            f"{path}, row index 2 (0-based), column 'a': a channel value must be a number or "
            "empty; got 'n/a?'")):
        read_long(path)


def test_parquet_integer_series_ids_are_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "d.parquet"
    pd.DataFrame({"series_id": [7, 7, 9], "time": [0, 1, 0], "a": [1.0, 2.0, 3.0]}).to_parquet(path)
    assert read_long(path).ids == ["7", "9"]


def test_requested_channel_missing(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "series_id,time,a\ns,0,1\n")
    with pytest.raises(DataError, match=r"requested channel\(s\) 'b' not found; the file has "
                       r"channels 'a'"):
        read_long(path, channels=["a", "b"])


def test_unknown_extension(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "series_id,time,a\ns,0,1\n", name="data.xlsx")
    with pytest.raises(DataError, match=r"extension '\.xlsx'; use a \.csv or \.parquet file"):
        read_long(path)
    table = read_long(write_csv(tmp_path, "series_id,time,a\ns,0,1\n"))
    with pytest.raises(DataError, match=r"extension '\.txt'"):
        write_long(table, tmp_path / "out.txt")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data file '.*nope\.csv' does not exist"):
        read_long(tmp_path / "nope.csv")


def test_bad_time_unit(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "series_id,time,a\ns,0,1\n")
    with pytest.raises(ConfigError, match=r"`time_unit` must be one of .*; got 'fortnights'"):
        read_long(path, time_unit="fortnights")


def test_series_table_validates_itself() -> None:
    s = Series(times=np.array([0.0]), values=np.array([[1.0, 2.0]]), id="s")
    with pytest.raises(DataError, match=r"series 0 \('s'\) has 2 channels but `channels` names 1"):
        SeriesTable(series=[s], channels=["a"], time_unit="hours")
    with pytest.raises(DataError, match=r"series id 's' occurs more than once \(again at pos"):
        SeriesTable(series=[s, s], channels=["a", "b"], time_unit="hours")
    with pytest.raises(DataError, match=r"series 0 has an empty id"):
        SeriesTable(series=[Series(times=s.times, values=s.values)], channels=["a", "b"],
                    time_unit="hours")
    with pytest.raises(DataError, match=r"`channels` must be unique, non-empty names; got \['a'\]"):
        SeriesTable(series=[s], channels=["a", "a"], time_unit="hours")
    with pytest.raises(DataError, match=r"reserved column names \['time'\]"):
        SeriesTable(series=[s], channels=["a", "time"], time_unit="hours")
    with pytest.raises(ConfigError, match=r"`time_unit` must be one of .*; got 'ticks'"):
        SeriesTable(series=[s], channels=["a", "b"], time_unit="ticks")
