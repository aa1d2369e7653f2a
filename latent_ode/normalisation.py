"""Per-channel value normalisation and time scaling, fitted on the training split only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from latent_ode.data import Series
from latent_ode.errors import ConfigError, DataError, ShapeError

__all__ = ["Normaliser"]

Kind = Literal["standard", "minmax", "robust", "none"]

# ``robust`` winsorises each channel at these quantiles of its training values: one mistyped
# entry (a pH of 735 among values near 7.4) would otherwise dominate the objective, while a
# heavy-tailed lab (creatinine from 0.1 to 20) keeps its real range.
ROBUST_QUANTILES = (0.1, 99.9)


@dataclass(frozen=True)
class Normaliser:
    """``(value - loc) / scale`` per channel and ``time / time_scale``.

    Only time differences enter the model (the latent dynamics are autonomous), so no time origin
    is needed; the time scale makes the longest training series span about one unit.

    Attributes:
        kind: how ``loc`` and ``scale`` were fitted: ``standard`` (mean/std), ``minmax``
            (min/range, the PhysioNet protocol of Rubanova et al. 2019), ``robust`` (median and
            interquartile range / 1.349, values winsorised at the training 0.1% and 99.9%
            quantiles: one mistyped entry no longer squeezes a channel's real values into a
            sliver of its range) or ``none``.
        loc: (D,) per-channel location.
        scale: (D,) per-channel scale, positive.
        time_scale: positive divisor of times.
        clip: (2, D) lower and upper bounds of the normalised values (``robust``: the training
            values' 0.1% and 99.9% quantiles), or ``None``: no bounds.
    """

    kind: Kind
    loc: np.ndarray
    scale: np.ndarray
    time_scale: float
    clip: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("standard", "minmax", "robust", "none"):
            raise ConfigError(
                f"`kind` must be 'standard', 'minmax', 'robust' or 'none'; got {self.kind!r}."
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
        if self.clip is not None:
            clip = np.asarray(self.clip, dtype=np.float64)
            object.__setattr__(self, "clip", clip)
            if clip.shape != (2, loc.shape[0]) or not (np.isfinite(clip).all()
                                                      and (clip[0] <= clip[1]).all()):
                raise ConfigError(f"`clip` must be (2, D) finite bounds, lower <= upper; got "
                                  f"{clip.tolist()}.")

    @property
    def num_channels(self) -> int:
        return int(self.loc.shape[0])

    @classmethod
    def fit(cls, series: Sequence[Series], *, kind: Kind = "standard",
            time_scale: float | None = None,
            channels: Sequence[str] | None = None) -> Normaliser:
        """Fit on training series.

        Args:
            series: the training split.
            kind: ``standard``, ``minmax`` or ``none``.
            time_scale: fixed time divisor; ``None`` fits the longest series' time span.
            channels: the D channel names, used in messages (else channels are named by index).

        Raises:
            DataError: no series, or a channel with no observed value at all.
        """
        if len(series) == 0:
            raise DataError("`series` must not be empty to fit a Normaliser.")
        values = np.concatenate([s.values for s in series], axis=0)  # (sum T, D)
        d = values.shape[1]
        clip = None
        if kind == "none":
            loc, scale = np.zeros(d), np.ones(d)
        else:
            seen = ~np.isnan(values)
            empty = np.flatnonzero(~seen.any(axis=0))
            if empty.size:
                named = ([channels[i] for i in empty] if channels is not None
                         and len(channels) == d else empty.tolist())
                raise DataError(
                    f"channel(s) {named} are never observed in the training series; "
                    "drop them or add data where they are observed."
                )
            if kind == "standard":
                loc = np.nanmean(values, axis=0)
                scale = np.nanstd(values, axis=0)
            elif kind == "robust":
                # Median and the interquartile range scaled to a normal's std (1.349); a
                # channel whose quartiles coincide (a flag) falls back on its std.
                loc = np.nanmedian(values, axis=0)
                q1, q3 = np.nanpercentile(values, [25, 75], axis=0)
                scale = np.where(q3 - q1 > 1e-12, (q3 - q1) / 1.349, np.nanstd(values, axis=0))
                scale = np.where(scale > 1e-12, scale, 1.0)
                clip = (np.nanpercentile(values, ROBUST_QUANTILES, axis=0) - loc) / scale
            else:
                loc = np.nanmin(values, axis=0)
                scale = np.nanmax(values, axis=0) - loc
            # A constant channel keeps its values (scale 1) rather than dividing by zero.
            scale = np.where(scale > 1e-12, scale, 1.0)
        if time_scale is None:
            span = max(float(s.times[-1] - s.times[0]) for s in series)
            time_scale = span if span > 0 else 1.0
        return cls(kind=kind, loc=loc, scale=scale, time_scale=float(time_scale),
                   clip=clip)

    def values_to_model(self, values: np.ndarray, *, clip: bool = True) -> np.ndarray:
        """(..., D) user units -> normalised units (NaN stays NaN); ``clip=False``: without
        the winsorising bounds (the user's own values on the model's scale, which is what the
        baselines are drawn from: :mod:`latent_ode.blend`)."""
        self._check_width(values)
        out = (values - self.loc) / self.scale
        return out if self.clip is None or not clip else np.clip(out, self.clip[0], self.clip[1])

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

    def transform(self, series: Series, *, clip: bool = True) -> Series:
        """A series in model units: times divided by ``time_scale``, values normalised
        (``clip``: see :meth:`values_to_model`)."""
        return Series(times=series.times / self.time_scale,
                      values=self.values_to_model(series.values, clip=clip), id=series.id)

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "loc": self.loc.tolist(), "scale": self.scale.tolist(),
               "time_scale": self.time_scale}
        if self.clip is not None:
            out["clip"] = self.clip.tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normaliser:
        expected = {"kind", "loc", "scale", "time_scale"}
        if not expected <= set(data) <= expected | {"clip"}:
            raise ConfigError(f"a Normaliser dict needs exactly the keys {sorted(expected)} (and "
                              f"optionally 'clip'); got {sorted(data)}.")
        return cls(kind=data["kind"], loc=np.asarray(data["loc"], dtype=np.float64),
                   scale=np.asarray(data["scale"], dtype=np.float64),
                   time_scale=float(data["time_scale"]), clip=data.get("clip"))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Normaliser) and self.kind == other.kind
                and np.array_equal(self.loc, other.loc) and np.array_equal(self.scale, other.scale)
                and self.time_scale == other.time_scale
                and (self.clip is None) == (other.clip is None)
                and (self.clip is None or np.array_equal(self.clip, other.clip)))

    __hash__ = None  # type: ignore[assignment]
