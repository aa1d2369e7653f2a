"""The one exception hierarchy of the library.

Every error a user can cause is a :class:`LatentODEError`; the ones about bad arguments are also
``ValueError`` and solver failures are also ``RuntimeError`` so that generic handlers still work.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "LatentODEError",
    "ShapeError",
    "SolverError",
]


class LatentODEError(Exception):
    """Base class of every error raised on purpose by ``latent_ode``."""


class ConfigError(LatentODEError, ValueError):
    """A configuration object was built with an invalid value."""


class DataError(LatentODEError, ValueError):
    """Observations are invalid: unsorted or duplicate times, NaN/inf values, empty series."""


class ShapeError(LatentODEError, ValueError):
    """Tensors or arrays have shapes that do not fit together."""


class SolverError(LatentODEError, RuntimeError):
    """The ODE solver failed (too many steps, step-size underflow, non-finite state).

    Attributes:
        series: indices (into the batch that was solved) of the series that failed.
        reason: short machine-readable cause: ``"max_steps"``, ``"dt_underflow"``,
            ``"non_finite"`` or ``"failed"``.
        time_reached: per failed series, the time the solver reached, or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        series: tuple[int, ...] = (),
        reason: str = "failed",
        time_reached: tuple[float, ...] = (),
    ) -> None:
        super().__init__(message)
        self.series = tuple(series)
        self.reason = reason
        self.time_reached = tuple(time_reached)


class CheckpointError(LatentODEError):
    """A checkpoint is missing, malformed, or does not match the model it is loaded into."""
