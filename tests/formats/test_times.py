"""formats.times: the one ISO-8601 → float conversion, shared by the pipelines and the service."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest

from formats.times import TIME_UNITS, check_time_unit, datetimes_to_float, parse_datetimes
from latent_ode.errors import ConfigError, DataError


def test_offsets_are_converted_and_naive_times_are_utc() -> None:
    out = datetimes_to_float(
        ["1970-01-02T00:00:00Z", "1970-01-02T02:00:00+02:00", "1970-01-02T00:00:00",
         dt.datetime(1970, 1, 3, tzinfo=dt.UTC)],
        "hours",
    )
    np.testing.assert_array_equal(out, [24.0, 24.0, 24.0, 48.0])


def test_sub_second_precision_survives_large_epochs() -> None:
    out = datetimes_to_float(["2024-05-01T13:45:00.000001Z"], "seconds")
    assert out[0] == 1714571100.000001


@pytest.mark.parametrize(("unit", "value"), [("seconds", 86400.0), ("minutes", 1440.0),
                                             ("hours", 24.0), ("days", 1.0)])
def test_every_unit(unit: str, value: float) -> None:
    assert unit in TIME_UNITS
    assert datetimes_to_float(["1970-01-02"], unit)[0] == value


def test_errors_name_the_index_and_the_unit() -> None:
    with pytest.raises(DataError, match=r"time at index 1 must be an ISO-8601 datetime .*got 'soon'"):
        datetimes_to_float(["1970-01-02", "soon"], "hours")
    with pytest.raises(ConfigError, match=r"`time_unit` must be one of seconds, minutes, hours, "
                                          r"days; got 'weeks'"):
        check_time_unit("weeks")


def test_the_pipelines_and_the_service_share_this_conversion() -> None:
    import formats.longformat
    import service.predictor

    assert formats.longformat.datetimes_to_float is datetimes_to_float
    assert service.predictor.datetimes_to_float is datetimes_to_float
    assert formats.longformat.TIME_UNITS is TIME_UNITS


@pytest.mark.parametrize(
    "value",
    ["0001-01-01T00:00:00Z", "2262-04-11T00:00:00Z", "2300-01-01", "1677-09-21", "now", "today",
     "20240101", "2024-02-30", "1e308", 1e308],
)
def test_values_outside_the_range_or_not_iso_8601_are_data_errors(value: object) -> None:
    with pytest.raises(DataError, match=(
        r"^time at index 1 must be an ISO-8601 datetime such as '2024-05-01T13:45:00Z' or a date "
        r"such as '2024-05-01', between 1677-09-22 and 2262-04-10; got "
        + re.escape(repr(value)) + r"\.$"
    )):
        datetimes_to_float(["2024-05-01", value], "hours")


def test_the_first_and_last_day_of_the_range_convert() -> None:
    out = datetimes_to_float(["1677-09-22T00:00:00Z", "2262-04-10T23:59:59Z"], "days")
    np.testing.assert_allclose(out, [-106751.0, 106750 + 86399 / 86400], rtol=0, atol=1e-9)


def test_parse_datetimes_marks_each_unusable_value() -> None:
    parsed = parse_datetimes(["2024-05-01 12:00", "now", "0001-01-01", dt.datetime(2024, 5, 1)])
    assert parsed.isna().tolist() == [False, True, True, False]


def test_a_file_with_an_out_of_range_time_is_a_located_data_error(tmp_path: Path) -> None:
    from formats.longformat import read_long

    path = tmp_path / "data.csv"
    path.write_text("series_id,time,a\ns,2024-01-01T00:00:00Z,1\ns,0001-01-01T00:00:00Z,2\n")
    with pytest.raises(DataError, match=r"data.csv, line 3, column 'time': times must be all "
                       r"numbers \(in hours\) or all ISO-8601 datetimes such as "
                       r"'2024-05-01T13:45:00Z' between 1677-09-22 and 2262-04-10; got "
                       r"'0001-01-01T00:00:00Z'\."):
        read_long(path)
