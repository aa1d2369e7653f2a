"""Frames to ``POST /v1/predict`` bodies and JSON answers back to frames, in the forecast frame
format (``docs/service.md`` "Frame format").

Input frame (long format): ``series_id``, ``time`` (numbers in the model's time unit, or
ISO-8601 text / datetimes), one column per channel (NaN = not observed) and a boolean ``query``
column whose true rows ask for a forecast at their time. Output frame: one row per (series,
query time), series in order of first appearance and query times in the order given, with
``series_id`` (text), ``time``, ``mode`` and, per model channel in the model's order,
``<channel>_mean``, ``<channel>_std`` and ``<channel>_q<level>`` for each asked level
(``repr(float(level))``: ``hr_q0.05``).

Only pandas, numpy and the standard library: this module is part of the client, which must not
need the service's dependencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["QUERY", "SERIES_ID", "TIME", "answer_to_frame", "arrays_to_series",
           "frame_to_series", "quantile_column"]

SERIES_ID = "series_id"
TIME = "time"
QUERY = "query"


def quantile_column(channel: str, level: float) -> str:
    """The output column of ``channel``'s quantile ``level``: ``hr_q0.05``."""
    return f"{channel}_q{float(level)!r}"


def _time_value(value: Any) -> float | str:
    """A time as the service takes it: a finite number, or ISO-8601 text."""
    if isinstance(value, pd.Timestamp | np.datetime64):
        stamp = pd.Timestamp(value)
        return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).isoformat()
    if isinstance(value, str):
        return value
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"times must be finite numbers or ISO-8601 text; got {value!r}.")
    return number


def _cell(value: Any) -> float | None:
    return None if pd.isna(value) else float(value)


def frame_to_series(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The request's ``series`` entries for a long-format frame.

    Each series names its channels (the frame's channel columns) so that the service places
    them; observation rows with no observed channel are dropped.

    Raises:
        ValueError: a required column is missing, ``query`` is not boolean, a series has no
            query row, or a time is not finite.
    """
    missing = [c for c in (SERIES_ID, TIME, QUERY) if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks the column(s) {missing}; a forecast frame has "
                         f"series_id, time, query (true: forecast this time) and one column "
                         f"per channel; got {list(frame.columns)}.")
    if not (pd.api.types.is_bool_dtype(frame[QUERY]) or frame[QUERY].isin([True, False]).all()):
        raise ValueError(f"the `{QUERY}` column must be true/false; got "
                         f"{sorted(set(frame[QUERY].astype(str)))[:5]}.")
    channels = [str(c) for c in frame.columns if c not in (SERIES_ID, TIME, QUERY)]
    out = []
    for sid, group in frame.groupby(frame[SERIES_ID].astype(str), sort=False):
        is_query = group[QUERY].astype(bool).to_numpy()
        obs = group.loc[~is_query]
        obs = obs.loc[obs[channels].notna().any(axis=1)] if channels else obs.iloc[:0]
        queries = group.loc[is_query, TIME]
        if queries.empty:
            raise ValueError(f"series {sid!r} has no query row (query = true); add a row per "
                             "time to forecast.")
        out.append({
            "id": sid,
            "times": [_time_value(t) for t in obs[TIME]],
            "values": [[_cell(v) for v in row] for row in obs[channels].itertuples(index=False)],
            "channels": channels,
            "query_times": [_time_value(t) for t in queries],
        })
    return out


def arrays_to_series(times: Sequence[Any], values: Any, query_times: Sequence[Any], *,
                     channels: Sequence[str] | None = None,
                     series_id: str = "0") -> dict[str, Any]:
    """One request series from arrays: ``times`` (T,), ``values`` (T, D) with NaN for not
    observed (columns: ``channels``, or the model's channels in order), ``query_times`` (Q,).

    Raises:
        ValueError: ``values`` is not (T, D), or a time is not finite.
    """
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim == 1:
        vals = vals[:, None]
    if vals.ndim != 2 or vals.shape[0] != len(times):
        raise ValueError(f"`values` must have one row per time ({len(times)}); got shape "
                         f"{vals.shape}.")
    item: dict[str, Any] = {
        "id": series_id, "times": [_time_value(t) for t in times],
        "values": [[_cell(v) for v in row] for row in vals],
        "query_times": [_time_value(t) for t in query_times],
    }
    if channels is not None:
        item["channels"] = [str(c) for c in channels]
    return item


def answer_to_frame(answer: dict[str, Any], quantiles: Sequence[float]) -> pd.DataFrame:
    """The output frame of a ``POST /v1/predict`` JSON answer.

    Args:
        answer: the JSON answer (``channels``, ``series`` with ``id``, ``query_times``,
            ``mode``, ``mean``, ``std`` and ``quantiles``).
        quantiles: the levels asked, in the order their columns come.
    """
    channels = [str(c) for c in answer["channels"]]
    columns = [SERIES_ID, TIME, "mode"]
    for c in channels:
        columns += [f"{c}_mean", f"{c}_std", *(quantile_column(c, q) for q in quantiles)]
    frames = []
    for item in answer["series"]:
        q = len(item["query_times"])
        times = item["query_times"]
        data: dict[str, Any] = {
            SERIES_ID: [str(item["id"])] * q,
            TIME: (np.asarray(times, dtype=np.float64) if all(
                isinstance(t, int | float) for t in times) else list(times)),
            "mode": list(item["mode"]),
        }
        mean = np.asarray(item["mean"], dtype=np.float64).reshape(q, len(channels))
        std = np.asarray(item["std"], dtype=np.float64).reshape(q, len(channels))
        by_level = {float(entry["quantile"]): np.asarray(entry["values"], dtype=np.float64)
                    .reshape(q, len(channels)) for entry in item["quantiles"]}
        for j, c in enumerate(channels):
            data[f"{c}_mean"] = mean[:, j]
            data[f"{c}_std"] = std[:, j]
            for level in quantiles:
                data[quantile_column(c, level)] = by_level[float(level)][:, j]
        frames.append(pd.DataFrame(data, columns=columns))
    if not frames:
        return pd.DataFrame({c: [] for c in columns})
    out = pd.concat(frames, ignore_index=True)
    out[SERIES_ID] = out[SERIES_ID].astype(str)
    return out
