"""Time units and the one conversion of ISO-8601 datetimes to float times.

A data set declares a time unit; numeric times are already in it. ISO-8601 datetimes, in a file
read by the pipelines or in a request to the service, become float time units since the Unix
epoch (1970-01-01T00:00:00Z), UTC: a datetime without an offset is read as UTC. Both layers call
:func:`datetimes_to_float`, so a model trained on a file answers a request in the same clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import pandas as pd

from latent_ode.errors import ConfigError, DataError

__all__ = ["SECONDS_PER_UNIT", "TIME_UNITS", "TimeUnit", "check_time_unit", "datetimes_to_float"]

TimeUnit = Literal["seconds", "minutes", "hours", "days"]
TIME_UNITS: tuple[str, ...] = get_args(TimeUnit)
SECONDS_PER_UNIT: dict[str, float] = {
    "seconds": 1.0, "minutes": 60.0, "hours": 3600.0, "days": 86400.0,
}


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


def datetimes_to_float(values: Sequence[object] | np.ndarray | pd.Series, unit: str) -> np.ndarray:
    """Convert datetimes to float ``unit`` since the Unix epoch (1970-01-01T00:00:00Z).

    This is the project-wide convention for ISO-8601 times: the pipelines and the service both
    call this function. A datetime without a UTC offset is taken to be UTC; one with an offset is
    converted to UTC.

    Args:
        values: (N,) ISO-8601 strings, ``datetime``/``pd.Timestamp`` objects or ``datetime64``.
        unit: seconds, minutes, hours or days.

    Returns:
        (N,) float64 times in ``unit`` since the epoch.

    Raises:
        ConfigError: ``unit`` is not a known unit.
        DataError: a value is missing or is not an ISO-8601 datetime (the message gives its index).
    """
    check_time_unit(unit)
    raw = pd.Series(values, dtype=object) if not isinstance(values, pd.Series) else values
    raw = raw.reset_index(drop=True)
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(raw.dtype):
        parsed = pd.to_datetime(raw, utc=True)
    else:
        parsed = pd.to_datetime(raw, utc=True, format="ISO8601", errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"time at index {i} must be an ISO-8601 datetime such as '2024-05-01T13:45:00Z'; "
            f"got {raw.iloc[i]!r}."
        )
    ns = parsed.dt.as_unit("ns").astype("int64").to_numpy()
    # Whole seconds and the nanosecond rest separately: float64 cannot hold ~1.7e18 ns exactly.
    seconds = (ns // 1_000_000_000).astype(np.float64) + (ns % 1_000_000_000) / 1e9
    return seconds / SECONDS_PER_UNIT[unit]
