"""Per-channel value normalisation and time scaling, fitted on the training split only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from latent_ode.data import Series
from latent_ode.errors import ConfigError, DataError, ShapeError

__all__ = ["Normaliser"]

Kind = Literal["standard", "minmax", "none"]


@dataclass(frozen=True)
class Normaliser:
    """``(value - loc) / scale`` per channel and ``time / time_scale``.

    Only time differences enter the model (the latent dynamics are autonomous), so no time origin
    is needed; the time scale makes the longest training series span about one unit.

    Attributes:
        kind: how ``loc`` and ``scale`` were fitted: ``standard`` (mean/std), ``minmax``
            (min/range, the PhysioNet protocol of Rubanova et al. 2019) or ``none``.
        loc: (D,) per-channel location.
        scale: (D,) per-channel scale, positive.
        time_scale: positive divisor of times.
    """

    kind: Kind
    loc: np.ndarray
    scale: np.ndarray
    time_scale: float

    def __post_init__(self) -> None:
        if self.kind not in ("standard", "minmax", "none"):
            raise ConfigError(
                f"`kind` must be 'standard', 'minmax' or 'none'; got {self.kind!r}."
            )
        loc = np.asarray(self.loc, dtype=np.float64)
        scale = np.asarray(self.scale, dtype=np.float64)
        object.__setattr__(self, "loc", loc)
        object.__setattr__(self, "scale", scale)
        if loc.ndim != 1 or loc.shape != scale.shape:
            raise ShapeError(f"`loc` and `scale` must both have shape (D,); got {loc.shape} and "
                             f"{scale.shape}.")
        if not (np.isfinite(scale).all() and (scale > 0).all() and np.isfinite(loc).all()):
            raise ConfigError(f"`scale` must be finite and positive and `loc` finite; got "
                              f"loc={loc.tolist()}, scale={scale.tolist()}.")
        if not (np.isfinite(self.time_scale) and self.time_scale > 0):
            raise ConfigError(f"`time_scale` must be positive; got {self.time_scale!r}.")

    @property
    def num_channels(self) -> int:
        return int(self.loc.shape[0])

    @classmethod
    def fit(cls, series: Sequence[Series], *, kind: Kind = "standard",
            time_scale: float | None = None) -> Normaliser:
        """Fit on training series.

        Args:
            series: the training split.
            kind: ``standard``, ``minmax`` or ``none``.
            time_scale: fixed time divisor; ``None`` fits the longest series' time span.

        Raises:
            DataError: no series, or a channel with no observed value at all.
        """
        if len(series) == 0:
            raise DataError("`series` must not be empty to fit a Normaliser.")
        values = np.concatenate([s.values for s in series], axis=0)  # (sum T, D)
        d = values.shape[1]
        if kind == "none":
            loc, scale = np.zeros(d), np.ones(d)
        else:
            seen = ~np.isnan(values)
            empty = np.flatnonzero(~seen.any(axis=0))
            if empty.size:
                raise DataError(
                    f"channel(s) {empty.tolist()} are never observed in the training series; "
                    "drop them or add data where they are observed."
                )
            if kind == "standard":
                loc = np.nanmean(values, axis=0)
                scale = np.nanstd(values, axis=0)
            else:
                loc = np.nanmin(values, axis=0)
                scale = np.nanmax(values, axis=0) - loc
            # A constant channel keeps its values (scale 1) rather than dividing by zero.
            scale = np.where(scale > 1e-12, scale, 1.0)
        if time_scale is None:
            span = max(float(s.times[-1] - s.times[0]) for s in series)
            time_scale = span if span > 0 else 1.0
        return cls(kind=kind, loc=loc, scale=scale, time_scale=float(time_scale))

    def values_to_model(self, values: np.ndarray) -> np.ndarray:
        """(..., D) user units -> normalised units (NaN stays NaN)."""
        self._check_width(values)
        return (values - self.loc) / self.scale

    def values_from_model(self, values: np.ndarray) -> np.ndarray:
        """(..., D) normalised units -> user units."""
        self._check_width(values)
        return values * self.scale + self.loc

    def std_from_model(self, std: np.ndarray) -> np.ndarray:
        """(..., D) standard deviations, normalised -> user units."""
        self._check_width(std)
        return std * self.scale

    def _check_width(self, values: np.ndarray) -> None:
        if values.shape[-1] != self.num_channels:
            raise ShapeError(f"values must have {self.num_channels} channels in the last "
                             f"dimension; got shape {values.shape}.")

    def transform(self, series: Series) -> Series:
        """A series in model units: times divided by ``time_scale``, values normalised."""
        return Series(times=series.times / self.time_scale,
                      values=self.values_to_model(series.values), id=series.id)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "loc": self.loc.tolist(), "scale": self.scale.tolist(),
                "time_scale": self.time_scale}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normaliser:
        expected = {"kind", "loc", "scale", "time_scale"}
        if set(data) != expected:
            raise ConfigError(f"a Normaliser dict needs exactly the keys {sorted(expected)}; got "
                              f"{sorted(data)}.")
        return cls(kind=data["kind"], loc=np.asarray(data["loc"], dtype=np.float64),
                   scale=np.asarray(data["scale"], dtype=np.float64),
                   time_scale=float(data["time_scale"]))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Normaliser) and self.kind == other.kind
                and np.array_equal(self.loc, other.loc) and np.array_equal(self.scale, other.scale)
                and self.time_scale == other.time_scale)

    __hash__ = None  # type: ignore[assignment]
