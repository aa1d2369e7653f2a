"""Request and response bodies of the HTTP API (one pydantic model per direction).

These models check what needs neither the model nor the settings: types, finite numbers,
quantiles in (0, 1), required fields. Checks that depend on the loaded model (channels, time
unit) or on the limits in the settings happen in :mod:`service.predictor`, which reads a
:class:`SeriesIn` as it is (it has the shape of ``service.predictor.SeriesData``). The library's
answer becomes the response in one place, :meth:`SeriesOut.from_forecast`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    WithJsonSchema,
)

from latent_ode import Forecast

__all__ = [
    "QUANTILE_RANGE",
    "ErrorResponse",
    "LivenessResponse",
    "ModelResponse",
    "PredictRequest",
    "PredictResponse",
    "QuantileOut",
    "ReadinessResponse",
    "ReloadRequest",
    "ReloadResponse",
    "SeriesIn",
    "SeriesOut",
    "ServedModel",
    "SolverIn",
    "SolverStatsOut",
    "SolverUsed",
]


def _time_value(value: Any) -> float | str:
    """A time is a finite JSON number or a string (parsed as ISO-8601 later)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(
            "must be a number in the model's time unit or an ISO-8601 string such as "
            "'2024-05-01T12:00:00Z'"
        )
    if isinstance(value, str):
        return value
    value = _as_float(value, "time")
    if not math.isfinite(value):
        raise ValueError("must be a finite number (JSON NaN/Infinity are not times)")
    return value


def _as_float(value: int | float, what: str) -> float:
    """``float(value)``, with a message for an integer beyond float range (a 400-digit one)."""
    try:
        return float(value)
    except OverflowError:
        raise ValueError(
            f"must be a number of at most {sys.float_info.max:.4g} in magnitude; got an integer "
            f"of {len(str(abs(value)))} digits, which is not a usable {what}"
        ) from None


def _observed_value(value: Any) -> float | None:
    """An observation is a finite JSON number, or ``null`` when the channel was not observed."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a number, or null where the channel was not observed")
    value = _as_float(value, "value")
    if not math.isfinite(value):
        raise ValueError(
            "must be a finite number; send null (not NaN/Infinity) for a value not observed"
        )
    return value


TimeValue = Annotated[
    float | str,
    PlainValidator(_time_value),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}],
            "description": "A number in the model's time unit, or an ISO-8601 datetime "
            "(converted to the model's time unit since 1970-01-01T00:00:00Z).",
        }
    ),
]
ObservedValue = Annotated[
    float | None,
    PlainValidator(_observed_value),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "null"}]}),
]


class SeriesIn(BaseModel):
    """One series to forecast: its observations and the times to answer."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, max_length=256, description="Echoed back; used in errors.")
    times: list[TimeValue] = Field(
        description="Observation times, strictly increasing: numbers or ISO-8601 strings."
    )
    values: list[list[ObservedValue]] = Field(
        description="One row per time; columns follow `channels` (or the model's channels). "
        "null = not observed."
    )
    channels: list[str] | None = Field(
        None,
        description="Names of the columns of `values`: a subset of the model's channels in any "
        "order. Channels not named are unobserved. Default: all of the model's channels.",
    )
    query_times: list[TimeValue] = Field(
        description="Times to forecast, in any order (duplicates allowed); answered in this order."
    )


_EXAMPLE_REQUEST: dict[str, Any] = {
    "series": [
        {
            "id": "bed-7",
            "times": [0.0, 0.4, 1.3],
            "values": [[1.0, None], [0.8, 2.1], [None, 1.9]],
            "query_times": [0.2, 2.0, 3.5],
        }
    ],
    "num_samples": 32,
    "quantiles": [0.05, 0.5, 0.95],
}


#: The quantile levels a request may ask for. The library computes in float32, where a level
#: such as 1e-300 or 0.999999999999 rounds to 0 or 1, whose normal quantile is infinite; within
#: these bounds every level's quantile is finite (|z| <= 4.76).
QUANTILE_RANGE = (1e-6, 1 - 1e-6)


SolverPreset = Literal["fast", "default", "accurate"]


class SolverIn(BaseModel):
    """How precisely to solve the latent ODE: a preset and/or explicit values (which replace
    the preset's). Bounded by the service's settings: tighter tolerances or more steps than
    they allow are refused (422, with the bound)."""

    model_config = ConfigDict(extra="forbid")

    preset: SolverPreset | None = Field(
        None, description="`fast` (tolerances x3), `default` (the served ones) or `accurate` "
        "(tolerances / 100, within the settings' bounds)."
    )
    rtol: Annotated[float, Field(strict=True, gt=0, lt=1)] | None = Field(
        None, description="Relative tolerance (at least LATENT_ODE_SOLVER_MIN_RTOL)."
    )
    atol: Annotated[float, Field(strict=True, gt=0, lt=1)] | None = Field(
        None, description="Absolute tolerance (at least LATENT_ODE_SOLVER_MIN_ATOL)."
    )
    max_steps: Annotated[int, Field(strict=True, ge=1)] | None = Field(
        None, description="Step limit per series (at most LATENT_ODE_SOLVER_MAX_STEPS)."
    )


def _preset_shorthand(value: Any) -> Any:
    """``"fast"`` is short for ``{"preset": "fast"}`` (one error path for both forms)."""
    return {"preset": value} if isinstance(value, str) else value


class PredictRequest(BaseModel):
    """``POST /v1/predict`` body: one or many series and how to summarise the forecast."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE_REQUEST]})

    series: list[SeriesIn] = Field(description="The series to forecast, answered in this order.")
    # Strict: `true` is not a sample count and "0.5" is not a level (lax pydantic took both).
    num_samples: Annotated[int, Field(strict=True, ge=1)] | None = Field(
        None, description="Latent samples per series (default and maximum: settings)."
    )
    quantiles: list[
        Annotated[float, Field(strict=True, ge=QUANTILE_RANGE[0], le=QUANTILE_RANGE[1])]
    ] = Field(
        default_factory=lambda: [0.05, 0.5, 0.95],
        max_length=99,
        description=f"Quantiles to report per query time and channel, each in "
        f"[{QUANTILE_RANGE[0]:g}, {QUANTILE_RANGE[1]:g}] (levels nearer 0 or 1 have no finite "
        "float32 normal quantile).",
    )
    seed: Annotated[int, Field(strict=True, ge=0, le=2**31 - 1)] | None = Field(
        None, description="Seed of the latent samples (default: settings)."
    )
    solver: Annotated[
        SolverIn | None,
        BeforeValidator(_preset_shorthand),
        WithJsonSchema({"anyOf": [{"type": "string", "enum": list(get_args(SolverPreset))},
                                  SolverIn.model_json_schema(), {"type": "null"}]}),
    ] = Field(
        None, description="Speed against accuracy: a preset name (`fast`, `default`, "
        "`accurate`) or an object with `preset`, `rtol`, `atol`, `max_steps`. Default: the "
        "served settings. The answer's `solver` says what was used.",
    )


class QuantileOut(BaseModel):
    """One asked quantile: its level and values (Q × D)."""

    quantile: float
    values: list[list[float]]


class SolverStatsOut(BaseModel):
    """What the ODE solver did for one series."""

    method: str
    rtol: float
    atol: float
    nfe: int = Field(description="Number of evaluations of the ODE right-hand side.")


class SolverUsed(BaseModel):
    """The solver settings a request was answered with."""

    preset: SolverPreset = Field(description="The preset the settings started from (`default` "
                                 "when the request named none); explicit values replace its.")
    method: str
    rtol: float
    atol: float
    max_steps: int


class SeriesOut(BaseModel):
    """The forecast of one series, in the user's units; rows follow `query_times`."""

    id: str | None
    query_times: list[float | str] = Field(description="The query times, as asked.")
    mode: list[Literal["interpolation", "extrapolation", "backcast"]]
    mean: list[list[float]] = Field(description="Q × D, columns follow the response's channels.")
    std: list[list[float]] = Field(description="Q × D.")
    quantiles: list[QuantileOut]
    solver: SolverStatsOut

    @classmethod
    def from_forecast(
        cls, item: SeriesIn, forecast: Forecast, levels: Sequence[float]
    ) -> SeriesOut:
        """The response for one series: the library's answer, echoing the request's id and
        query times as sent (ISO strings stay strings).

        Args:
            item: the series as asked.
            forecast: its answer (``forecast.ok``; failed series never reach a response).
            levels: the quantile levels the request asked for, in its order (``forecast`` may
                hold more: it was computed for a whole micro-batch).
        """
        stats = forecast.stats
        return cls(
            id=item.id,
            query_times=list(item.query_times),
            mode=forecast.mode,  # type: ignore[arg-type]
            mean=forecast.mean.tolist(),
            std=forecast.std.tolist(),
            quantiles=[
                QuantileOut(quantile=q, values=forecast.quantiles[q].tolist()) for q in levels
            ],
            solver=SolverStatsOut(
                method=stats.method, rtol=float(stats.rtol), atol=float(stats.atol),
                nfe=int(stats.nfe),
            ),
        )


class ServedModel(BaseModel):
    """Which model answered."""

    name: str
    version: str


class PredictResponse(BaseModel):
    """``POST /v1/predict`` answer, one entry per series in the order asked."""

    model: ServedModel
    channels: list[str]
    time_unit: str
    num_samples: int
    solver: SolverUsed = Field(description="The solver settings used (see the request's "
                               "`solver`); each series' `solver` says what its solve cost.")
    series: list[SeriesOut]

    model_config = ConfigDict(protected_namespaces=())


class ModelResponse(BaseModel):
    """``GET /v1/model``: the model being served."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    uri: str
    source: Literal["registry", "cache"]
    channels: list[str]
    time_unit: str
    device: str
    metrics: dict[str, float] = Field(description="Numeric entries of the model's metadata.")
    metadata: dict[str, Any]


class LivenessResponse(BaseModel):
    """``GET /livez``."""

    status: Literal["alive"]


class ReadinessResponse(BaseModel):
    """``GET /readyz`` when a model is loaded."""

    status: Literal["ready"]
    model: str
    version: str
    source: Literal["registry", "cache"] = Field(
        description="`cache` when the registry was unreachable and the model came from disk."
    )
    registry: Literal["reachable", "unreachable"] = Field(
        description="Whether the model registry answers now (asked at most every "
        "LATENT_ODE_REGISTRY_CHECK_INTERVAL_S); the loaded model keeps serving either way."
    )
    detail: str | None = Field(
        None, description="When the registry is unreachable: why, and what is served meanwhile."
    )


class ReloadRequest(BaseModel):
    """``POST /v1/admin/reload`` body (optional)."""

    model_config = ConfigDict(extra="forbid")

    version: str | None = Field(
        None,
        pattern=r"^[0-9]{1,18}$",
        description="A version number to load; default: the configured alias (e.g. champion).",
        examples=["3"],
    )


class ReloadResponse(BaseModel):
    """What a reload did."""

    name: str
    version: str
    previous_version: str | None
    source: Literal["registry", "cache"]


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: a sentence naming the field, the value and how to fix it."""

    detail: str
