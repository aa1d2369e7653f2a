"""formats.times: the one ISO-8601 → float conversion, shared by the pipelines and the service."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from formats.times import TIME_UNITS, check_time_unit, datetimes_to_float
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
    import pipelines.longformat
    import service.predictor

    assert pipelines.longformat.datetimes_to_float is datetimes_to_float
    assert service.predictor.datetimes_to_float is datetimes_to_float
    assert pipelines.longformat.TIME_UNITS is TIME_UNITS
