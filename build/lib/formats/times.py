"""Time units and the one conversion of ISO-8601 datetimes to float times.

A data set declares a time unit; numeric times are already in it. ISO-8601 datetimes, in a file
read by the pipelines or in a request to the service, become float time units since the Unix
epoch (1970-01-01T00:00:00Z), UTC: a datetime without an offset is read as UTC. Both layers call
:func:`datetimes_to_float`, so a model trained on a file answers a request in the same clock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import pandas as pd

from latent_ode.errors import ConfigError, DataError

__all__ = [
    "DATETIME_RANGE",
    "SECONDS_PER_UNIT",
    "TIME_UNITS",
    "TimeUnit",
    "check_time_unit",
    "datetimes_to_float",
    "parse_datetimes",
]

TimeUnit = Literal["seconds", "minutes", "hours", "days"]
TIME_UNITS: tuple[str, ...] = get_args(TimeUnit)
SECONDS_PER_UNIT: dict[str, float] = {
    "seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0,
}


#: ISO-8601 extended format only: a date, or a date and time (``T`` or a space between them)
#: with optional seconds, fraction and UTC offset. pandas' own "ISO8601" parser also takes
#: ``now``, ``today`` and compact forms such as ``20240101``, which a time column or a request
#: should not mean.
_ISO_8601 = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)

#: The datetimes a float time can come from, both days included: pandas' nanosecond range
#: (1677-09-21T00:12:43 to 2262-04-11T23:47:16), whole days inside it.
DATETIME_RANGE = ("1677-09-22", "2262-04-10")
_FIRST = pd.Timestamp(DATETIME_RANGE[0], tz="UTC")
_END = pd.Timestamp(DATETIME_RANGE[1], tz="UTC") + pd.Timedelta(days=1)


def check_time_unit(time_unit: str) -> None:
    """Check that ``time_unit`` is one of :data:`TIME_UNITS`.

    Args:
        time_unit: the unit to check.

    Raises:
        ConfigError: it is not a known unit.
    """
    if time_unit not in SECONDS_PER_UNIT:
        raise ConfigError(
            f"`time_unit` must be one of {', '.join(TIME_UNITS)}; got {time_unit!r}."
        )


def parse_datetimes(values: Sequence[object] | np.ndarray | pd.Series) -> pd.Series:
    """Parse datetimes to UTC timestamps, NaT where a value is not a usable datetime.

    A string must be an ISO-8601 extended date or datetime (``2024-05-01``,
    ``2024-05-01T13:45:00.5+02:00``); ``datetime``/``pd.Timestamp`` objects pass. A value that
    is anything else (a number, ``"now"``, ``"today"``, ``"20240101"``), names no real date, or
    lies outside :data:`DATETIME_RANGE` becomes NaT, so the caller names it in its own terms (a
    row of a file, an index of a request) instead of a pandas exception escaping.

    Args:
        values: (N,) strings, datetime objects or a datetime64 series.

    Returns:
        (N,) ``datetime64[ns, UTC]`` series (index 0..N-1), NaT where a value is unusable.
    """
    raw = pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values
    raw = raw.reset_index(drop=True)
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw.dtype):
        return pd.to_datetime(raw, utc=True).dt.as_unit("ns")
    usable = raw.map(_looks_like_datetime).astype(bool)
    candidates = raw.where(usable, None)
    try:
        parsed = pd.to_datetime(candidates, utc=True, format="ISO8601", errors="coerce")
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError):
        # One value outside pandas' range can fail the whole column even with errors="coerce";
        # only then is each value parsed on its own.
        parsed = pd.Series([_one_datetime(v) for v in candidates], dtype="datetime64[ns, UTC]")
    inside = (parsed >= _FIRST) & (parsed < _END)
    return parsed.where(inside).dt.as_unit("ns")


def _looks_like_datetime(value: object) -> bool:
    if isinstance(value, str):
        return _ISO_8601.fullmatch(value.strip()) is not None
    return isinstance(value, pd.Timestamp | np.datetime64) or hasattr(value, "isoformat")


def _one_datetime(value: object) -> pd.Timestamp:
    if value is None:
        return pd.NaT
    try:
        stamp = pd.to_datetime(value, utc=True, format="ISO8601")
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError):
        return pd.NaT
    return stamp if _FIRST <= stamp < _END else pd.NaT


def datetimes_to_float(values: Sequence[object] | np.ndarray | pd.Series, unit: str) -> np.ndarray:
    """Convert datetimes to float ``unit`` since the Unix epoch (1970-01-01T00:00:00Z).

    This is the project-wide convention for ISO-8601 times: the pipelines and the service both
    call this function. A datetime without a UTC offset is taken to be UTC; one with an offset is
    converted to UTC. Only what :func:`parse_datetimes` accepts is a datetime.

    Args:
        values: (N,) ISO-8601 strings, ``datetime``/``pd.Timestamp`` objects or ``datetime64``.
        unit: seconds, minutes, hours or days.

    Returns:
        (N,) float64 times in ``unit`` since the epoch.

    Raises:
        ConfigError: ``unit`` is not a known unit.
        DataError: a value is missing, is not an ISO-8601 date or datetime, or lies outside
            :data:`DATETIME_RANGE` (the message gives its index and the value).
    """
    check_time_unit(unit)
    raw = pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values
    raw = raw.reset_index(drop=True)
    parsed = parse_datetimes(raw)
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"time at index {i} must be an ISO-8601 datetime such as '2024-05-01T13:45:00Z' or a "
            f"date such as '2024-05-01', between {DATETIME_RANGE[0]} and {DATETIME_RANGE[1]}; "
            f"got {raw.iloc[i]!r}."
        )
    ns = parsed.dt.as_unit("ns").astype("int64").to_numpy()
    # Whole seconds and the nanosecond rest separately: float64 cannot hold ~1.7e18 ns exactly.
    seconds = (ns // 1_000_000_000).astype(np.float64) + (ns % 1_000_000_000) / 1e9
    return seconds / SECONDS_PER_UNIT[unit]
