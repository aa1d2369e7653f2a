"""Containers for irregularly sampled, partially observed multivariate series.

Dimension glossary used in every docstring and shape comment of the package:
``B`` series in a batch, ``T`` time points (padded per series), ``D`` observed channels,
``L`` latent size, ``H`` encoder hidden size, ``S`` latent samples, ``Q`` query times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from latent_ode.errors import DataError, ShapeError

__all__ = ["Observations", "Series", "collate", "validate_times"]


def validate_times(times: np.ndarray, *, name: str = "times", series_id: str = "") -> None:
    """Check that ``times`` is a finite, strictly increasing 1-D array.

    Raises:
        DataError: with the offending index and values.
    """
    where = f" in series {series_id!r}" if series_id else ""
    if times.ndim != 1:
        raise ShapeError(f"`{name}`{where} must be 1-D; got shape {tuple(times.shape)}.")
    bad = ~np.isfinite(times)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"`{name}`{where} must be finite; got {times[i]} at index {i}.")
    if times.size > 1:
        steps = np.diff(times)
        if (steps <= 0).any():
            i = int(np.argmax(steps <= 0)) + 1
            what = "a duplicate of" if steps[i - 1] == 0 else "after"
            raise DataError(
                f"`{name}`{where} must be strictly increasing; got {times[i]} {what} "
                f"{times[i - 1]} at index {i}. Sort the observations and merge duplicate times."
            )


@dataclass(frozen=True)
class Series:
    """One irregularly sampled series.

    Args:
        times: (T,) strictly increasing observation times.
        values: (T, D) observed values; NaN marks a channel not observed at that time.
        id: an identifier used in error messages.

    Raises:
        DataError: empty series, unsorted/duplicate/non-finite times, infinite values, or a time
            with no observed channel.
        ShapeError: ``values`` does not have one row per time.
    """

    times: np.ndarray
    values: np.ndarray
    id: str = ""

    def __post_init__(self) -> None:
        times = np.asarray(self.times, dtype=np.float64)
        values = np.asarray(self.values, dtype=np.float64)
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "values", values)
        where = f" in series {self.id!r}" if self.id else ""
        if times.ndim != 1 or times.size == 0:
            raise DataError(f"`times`{where} must be a non-empty 1-D array; got shape {times.shape}.")
        if values.ndim != 2 or values.shape[0] != times.shape[0]:
            raise ShapeError(
                f"`values`{where} must have shape (T, D) with T = len(times) = {times.shape[0]}; "
                f"got {values.shape}."
            )
        validate_times(times, series_id=self.id)
        if np.isinf(values).any():
            i, j = np.argwhere(np.isinf(values))[0]
            raise DataError(
                f"`values`{where} must be finite or NaN (missing); got {values[i, j]} at row {i}, "
                f"channel {j}."
            )
        observed = ~np.isnan(values)
        empty_rows = ~observed.any(axis=1)
        if empty_rows.any():
            i = int(np.argmax(empty_rows))
            raise DataError(
                f"`values`{where} has no observed channel at time {times[i]} (row {i}); drop rows "
                "where every channel is missing."
            )

    @property
    def num_channels(self) -> int:
        return int(self.values.shape[1])

    @property
    def mask(self) -> np.ndarray:
        """(T, D) boolean, True where a channel is observed."""
        return ~np.isnan(self.values)

    def select(self, rows: np.ndarray) -> Series:
        """The sub-series at the given row indices (or boolean mask), in time order."""
        return Series(times=self.times[rows], values=self.values[rows], id=self.id)


@dataclass(frozen=True)
class Observations:
    """A batch of series padded to a common length, one time axis per series.

    Padding positions repeat the series' last time and carry ``mask = False``, so solvers and
    encoders treat them as no-ops.

    Args:
        times: (B, T) per-series times, non-decreasing; strictly increasing on valid positions.
        values: (B, T, D) values; entries where ``mask`` is False are ignored (set to zero).
        mask: (B, T, D) bool, True where observed.
        lengths: (B,) number of valid time points of each series (at least 1).
    """

    times: Tensor
    values: Tensor
    mask: Tensor
    lengths: Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.times.ndim != 2:
            raise ShapeError(f"`times` must have shape (B, T); got {tuple(self.times.shape)}.")
        b, t = self.times.shape
        if self.values.ndim != 3 or self.values.shape[:2] != (b, t):
            raise ShapeError(
                f"`values` must have shape (B, T, D) = ({b}, {t}, D); got {tuple(self.values.shape)}."
            )
        if self.mask.shape != self.values.shape:
            raise ShapeError(
                f"`mask` must have the shape of `values` {tuple(self.values.shape)}; "
                f"got {tuple(self.mask.shape)}."
            )
        if self.lengths is None:
            object.__setattr__(
                self, "lengths", torch.full((b,), t, dtype=torch.long, device=self.times.device)
            )
        if self.lengths.shape != (b,):
            raise ShapeError(f"`lengths` must have shape (B,) = ({b},); got {tuple(self.lengths.shape)}.")
        object.__setattr__(self, "mask", self.mask.bool())
        # Unobserved entries must never influence anything: zero them once, here.
        object.__setattr__(self, "values", torch.where(self.mask, self.values, 0.0))

    @property
    def batch_size(self) -> int:
        return int(self.times.shape[0])

    @property
    def num_channels(self) -> int:
        return int(self.values.shape[2])

    @property
    def valid(self) -> Tensor:
        """(B, T) bool, True on real (non-padding) positions."""
        t = self.times.shape[1]
        return torch.arange(t, device=self.times.device)[None, :] < self.lengths[:, None]

    @property
    def first_time(self) -> Tensor:
        """(B,) time of each series' first observation."""
        return self.times[:, 0]

    @property
    def last_time(self) -> Tensor:
        """(B,) time of each series' last observation."""
        return self.times.gather(1, (self.lengths - 1)[:, None]).squeeze(1)

    def index(self, idx: Tensor | Sequence[int]) -> Observations:
        """The sub-batch of the given series indices."""
        idx = torch.as_tensor(idx, device=self.times.device, dtype=torch.long)
        return Observations(
            times=self.times[idx], values=self.values[idx], mask=self.mask[idx], lengths=self.lengths[idx]
        )


def collate(
    series: Sequence[Series],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Observations:
    """Pad variable-length series into one :class:`Observations` batch.

    Args:
        series: B series with the same number of channels D.
        dtype: floating dtype of times and values.
        device: where to put the tensors.

    Returns:
        Observations with T = the longest series; padding repeats each series' last time.

    Raises:
        DataError: ``series`` is empty.
        ShapeError: the series disagree on the number of channels.
    """
    if len(series) == 0:
        raise DataError("`series` must contain at least one series; got an empty list.")
    d = series[0].num_channels
    for i, s in enumerate(series):
        if s.num_channels != d:
            raise ShapeError(
                f"every series must have {d} channels like series 0; series {i} ({s.id!r}) has "
                f"{s.num_channels}."
            )
    b = len(series)
    t = max(len(s.times) for s in series)
    times = np.empty((b, t), dtype=np.float64)
    values = np.zeros((b, t, d), dtype=np.float64)
    mask = np.zeros((b, t, d), dtype=bool)
    lengths = np.empty(b, dtype=np.int64)
    for i, s in enumerate(series):
        n = len(s.times)
        times[i, :n] = s.times
        times[i, n:] = s.times[-1]
        m = s.mask
        values[i, :n] = np.where(m, s.values, 0.0)
        mask[i, :n] = m
        lengths[i] = n
    return Observations(
        times=torch.as_tensor(times, dtype=dtype, device=device),
        values=torch.as_tensor(values, dtype=dtype, device=device),
        mask=torch.as_tensor(mask, device=device),
        lengths=torch.as_tensor(lengths, device=device),
    )
