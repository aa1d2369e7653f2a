"""Scale the predictive noise per regime and gap bin so that 90% intervals cover 90%.

:func:`~latent_ode.training.calibration.calibrate_noise` fits each channel's residual variance
as a line in the gap to its nearest observation. A line is a shape, and the errors need not
follow it: on the periodic demo it left the nearest fifth of interpolation gaps covered 0.81
and the farthest 0.85 where 0.90 was asked, with 0.90 in the middle. :class:`NoiseScale`
corrects that shape after the fact, split-conformal style: on the validation split's held-out
points, per regime and per equal-count bin of the gap (channels pooled), the factor ``c`` by
which the noise must be multiplied for 90% of the points to fall inside their central 90%
interval. Each point's least such factor is exact for the interval that is served, the samples'
mixture of N(sample, (c·σ)²): the truth is inside while the mixture's CDF at it lies in
[0.05, 0.95], which is monotone in ``c``, so bisection finds the threshold
(``calibration._needed_scale``); ``c`` is the bin's 0.9-quantile of those.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from latent_ode.blend import infs_to_nulls, lookup_gap_bins, nulls_to_inf
from latent_ode.errors import ConfigError

__all__ = ["NoiseScale"]

_REGIMES = 3


@dataclass(frozen=True)
class NoiseScale:
    """Per regime and gap bin, the factor the predictive noise is multiplied by.

    Attributes:
        factors: (3, K) positive factors; regimes in :func:`window_position`'s order.
        edges: (3, K - 1) increasing gap-bin edges in normalised time (``inf`` where a regime
            has a single bin).
    """

    factors: np.ndarray
    edges: np.ndarray

    def __post_init__(self) -> None:
        f = np.asarray(self.factors, dtype=np.float64)
        e = np.asarray(self.edges, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] != _REGIMES or f.shape[1] < 1:
            raise ConfigError(f"`noise_scale.factors` must have shape (3, K); got {f.shape}.")
        if not (np.isfinite(f).all() and (f > 0).all()):
            raise ConfigError(f"`noise_scale.factors` must be positive numbers; got "
                              f"{f.tolist()}.")
        if e.shape != (_REGIMES, f.shape[1] - 1) or np.isnan(e).any() or (
                e[:, 1:] < e[:, :-1]).any():
            raise ConfigError(f"`noise_scale.edges` must be a (3, K - 1) = "
                              f"{(_REGIMES, f.shape[1] - 1)} array of increasing gaps; got "
                              f"shape {e.shape}.")
        object.__setattr__(self, "factors", f)
        object.__setattr__(self, "edges", e)

    def tensor(self, position: Tensor, gap: Tensor) -> Tensor:
        """(B, Q, D) factors for queries at ``position`` (B, Q) with gaps ``gap`` (B, Q, D)."""
        return lookup_gap_bins(self.factors[:, None, :], self.edges[:, None, :], position, gap)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (``inf`` edges written as ``null``)."""
        return {"factors": self.factors.tolist(), "edges": infs_to_nulls(self.edges)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NoiseScale:
        """What :meth:`to_dict` wrote.

        Raises:
            ConfigError: missing keys or arrays of the wrong shape or range.
        """
        if not isinstance(data, Mapping) or set(data) != {"factors", "edges"}:
            raise ConfigError(f"`noise_scale` must be a table with the keys ['edges', "
                              f"'factors']; got {data!r}.")
        try:
            factors = np.asarray(data["factors"], dtype=np.float64)
            edges = np.asarray(nulls_to_inf(data["edges"]), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"`noise_scale` must hold arrays of numbers: {exc}") from exc
        if edges.size == 0 and factors.ndim == 2:
            edges = edges.reshape(factors.shape[0], factors.shape[1] - 1)
        return cls(factors=factors, edges=edges)
