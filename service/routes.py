"""HTTP routes: schema in → predictor → schema out. No tensors here, no status-code mapping."""

from __future__ import annotations

import hmac
import logging
import math
import re
from pathlib import PurePosixPath
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Depends, Request, Security
from fastapi.responses import Response
from fastapi.security import APIKeyHeader

from formats.params import flatten
from service.bodies import body_schema, parse_json_body
from service.content import FRAME_ANSWER_CONTENT
from service.errors import AdminDisabledError, AuthError
from service.metrics import CONTENT_TYPE_LATEST
from service.model_store import LoadedModel
from service.predictor import (
    Job,
    PreparedSeries,
    check_encoder_budget,
    check_work_budget,
    prepare_series,
    resolve_sampling,
    resolve_solver,
    served_solver,
)
from service.redaction import redact
from service.schemas import (
    ErrorResponse,
    LivenessResponse,
    ModelResponse,
    PredictRequest,
    PredictResponse,
    ReadinessResponse,
    ReloadRequest,
    ReloadResponse,
    SeriesOut,
    ServedModel,
    SolverUsed,
)
from service.state import State

__all__ = ["BODY_COMPONENTS", "router"]

logger = logging.getLogger(__name__)

router = APIRouter()

_api_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="The key in LATENT_ODE_ADMIN_KEY."
)


def _err(description: str) -> dict[str, Any]:
    return {"model": ErrorResponse, "description": description}


_INLINE_POINTS = 4_000
_INLINE_NUMBERS = 20_000

_PREDICT_ERRORS: dict[int | str, dict[str, Any]] = {
    200: {"description": "The forecast: JSON, or the output frame as CSV or Parquet when "
                         "`Accept` asks (docs/service.md \"Frame format\").",
          "content": FRAME_ANSWER_CONTENT},
    406: _err("`Accept` names no type this endpoint answers in."),
    413: _err("The body is larger than LATENT_ODE_MAX_BODY_BYTES."),
    415: _err("The body's Content-Type is not JSON, CSV or Parquet."),
    422: _err("Invalid input or the solver's step budget was exceeded; `detail` says which."),
    503: _err("No model is loaded yet."),
}


_PREDICT_BODY, _PREDICT_COMPONENTS = body_schema(PredictRequest)
#: Schemas of bodies that routes parse themselves (``service.bodies``), for the OpenAPI document.
BODY_COMPONENTS: dict[str, Any] = dict(_PREDICT_COMPONENTS)


@router.post(
    "/v1/predict",
    response_model=PredictResponse,
    responses=_PREDICT_ERRORS,
    summary="Forecast one or many series at any query times.",
    tags=["predict"],
    openapi_extra={"requestBody": _PREDICT_BODY},
)
async def predict(state: State, request: Request) -> Response:
    """Mean, std and quantiles per query time and channel, in the user's units."""
    # Parsed here rather than declared: a large body is parsed off the event loop.
    body = await parse_json_body(request, PredictRequest)
    model = state.store.require()
    fc = model.forecaster
    num_samples, seed = resolve_sampling(body.num_samples, body.seed, state.limits)
    settings = state.settings
    served = served_solver(fc.model_config.solver, rtol=settings.solver_rtol,
                           atol=settings.solver_atol, max_steps=settings.solver_max_steps)
    solver, preset = resolve_solver(body.solver, served, series=len(body.series),
                                    num_samples=num_samples, limits=state.limits)
    levels = tuple(dict.fromkeys(body.quantiles))
    queries = sum(len(s.query_times) for s in body.series)
    # From counts alone, before any conversion: an oversized request costs nothing more.
    numbers = check_work_budget(queries, num_samples=num_samples, num_quantiles=len(levels),
                                num_channels=len(fc.channels), limits=state.limits)

    def prepare() -> list[PreparedSeries]:
        prepared = prepare_series(
            body.series,
            channels=fc.channels,
            time_unit=fc.time_unit,
            time_scale=float(fc.normaliser.time_scale),
            encoder_max_step=float(fc.model_config.encoder.max_step),
            limits=state.limits,
            normaliser=fc.normaliser,
        )
        check_encoder_budget(prepared, state.limits)
        return prepared

    points = sum(len(s.times) + len(s.query_times) for s in body.series)
    # A thread hop costs more than checking a small request (and waits for the GIL behind the
    # inference thread); a large one is checked off the event loop.
    if points <= _INLINE_POINTS:
        prepared = prepare()
    else:
        prepared = await anyio.to_thread.run_sync(prepare)
    job = Job(model=model, series=prepared, num_samples=num_samples, seed=seed, quantiles=levels,
              solver=solver)
    # Clients take turns in the batcher's fair queue: the peer address names a client (behind
    # a proxy, uvicorn's --forwarded-allow-ips makes it the forwarded one).
    client = request.client.host if request.client is not None else ""
    forecasts = await state.batcher.submit(job, client=client)

    def answer() -> bytes:
        response = PredictResponse(
            model=ServedModel(name=model.name, version=model.version),
            channels=list(fc.channels),
            time_unit=fc.time_unit,
            num_samples=num_samples,
            solver=SolverUsed(preset=preset or "default", method=solver.method, rtol=solver.rtol,
                              atol=solver.atol, max_steps=solver.max_steps),
            series=[
                SeriesOut.from_forecast(s, f, levels)
                for s, f in zip(body.series, forecasts, strict=True)
            ],
        )
        # Serialised here, once: returning the model would make FastAPI validate it again.
        return response.model_dump_json().encode()

    # Building and serialising a large answer takes long enough (0.1 s per ~10^5 numbers) to
    # stall /livez and every other request if done on the event loop.
    if numbers <= _INLINE_NUMBERS:
        content = answer()
    else:
        content = await anyio.to_thread.run_sync(answer)
    return Response(content, media_type="application/json")


_JSONValue = dict[str, "_JSONValue"] | list["_JSONValue"] | str | int | float | bool | None


def _json_safe(value: object) -> _JSONValue:
    """Metadata as JSON: non-finite floats become null, unknown objects their ``str``."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int):
        return value
    return redact(str(value))


def _public_source(source: _JSONValue) -> _JSONValue:
    """The training data's location without the server's file system: a local path or
    ``file://`` URI keeps only its file name; other URIs stay (credentials redacted)."""
    if not isinstance(source, str):
        return source
    if source.startswith(("file:", "/")) or re.match(r"^[A-Za-z]:[\\/]", source):
        return PurePosixPath(source.replace("\\", "/")).name
    return source


_METRICS_SECTION = "metrics"


def _model_metrics(metadata: dict[str, _JSONValue]) -> dict[str, float]:
    """The model's metrics: the finite numbers of its metadata's ``metrics`` section, keyed by
    dotted path (``metrics.val_mse``).

    Only that section: the library's training record (``metadata["training"]``) holds the same
    validation values, which the pipelines copy into ``metrics``; listing both named every metric
    twice. The whole record stays in the response's ``metadata``.
    """
    section = metadata.get(_METRICS_SECTION)
    if not isinstance(section, dict):
        return {}
    leaves = flatten(section, prefix=f"{_METRICS_SECTION}.")
    return {
        key: float(value) for key, value in leaves.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }


def _model_response(model: LoadedModel) -> ModelResponse:
    fc = model.forecaster
    metadata = _json_safe(dict(fc.metadata))
    assert isinstance(metadata, dict)  # a dict stays a dict
    if "source" in metadata:
        metadata["source"] = _public_source(metadata["source"])
    return ModelResponse(
        name=model.name,
        version=model.version,
        uri=model.uri,
        source=model.source,
        channels=list(fc.channels),
        time_unit=fc.time_unit,
        device=model.device,
        metrics=_model_metrics(metadata),
        metadata=metadata,
    )


@router.get(
    "/v1/model",
    response_model=ModelResponse,
    responses={503: _err("No model is loaded yet.")},
    summary="The model being served.",
    tags=["model"],
)
async def get_model(state: State) -> ModelResponse:
    """Name, version, channels, time unit and training metrics of the served model."""
    return _model_response(state.store.require())


@router.get(
    "/livez", response_model=LivenessResponse, summary="Liveness: the process is up.",
    tags=["health"],
)
async def livez() -> LivenessResponse:
    """The process is up (says nothing about the model)."""
    return LivenessResponse(status="alive")


@router.get(
    "/readyz",
    response_model=ReadinessResponse,
    response_model_exclude_none=True,
    responses={503: _err("No model is loaded; `detail` says why.")},
    summary="Readiness: a model is loaded (and where it came from).",
    tags=["health"],
)
async def readyz(state: State) -> ReadinessResponse:
    """Ready when a model is loaded; says whether it came from the registry or the disk cache,
    and whether the registry answers now (ready either way: the loaded model serves)."""
    model = state.store.require()
    error = await state.registry.error()
    detail = None
    if error is not None:
        detail = (
            f"the registry is unreachable ({error}); serving the loaded model {model.name} "
            f"version {model.version} (from the {model.source}) until it is back"
        )
    return ReadinessResponse(
        status="ready", model=model.name, version=model.version, source=model.source,
        registry="unreachable" if error else "reachable", detail=detail,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    summary="Prometheus metrics of the service.",
    tags=["health"],
)
async def metrics(state: State) -> Response:
    """Prometheus metrics in the text exposition format."""
    return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def require_admin(
    state: State, key: Annotated[str | None, Security(_api_key)] = None
) -> None:
    """Admin endpoints need ``X-API-Key`` equal to ``LATENT_ODE_ADMIN_KEY`` (constant time)."""
    configured = state.settings.admin_key
    if configured is None:
        raise AdminDisabledError(
            "admin endpoints are disabled because LATENT_ODE_ADMIN_KEY is not set; set it and "
            "restart the service to enable them."
        )
    if key is None or not hmac.compare_digest(
        key.encode(), configured.get_secret_value().encode()
    ):
        raise AuthError(
            "missing or wrong API key; send the key from LATENT_ODE_ADMIN_KEY in the X-API-Key "
            "header."
        )


@router.post(
    "/v1/admin/reload",
    response_model=ReloadResponse,
    responses={
        401: _err("Missing or wrong X-API-Key."),
        403: _err("Admin endpoints are disabled (no LATENT_ODE_ADMIN_KEY)."),
        404: _err("No such model version or alias in the registry."),
        422: _err("Invalid body."),
        503: _err("The registry is unreachable or the download failed; the old model stays."),
    },
    dependencies=[Depends(require_admin)],
    summary="Load the current champion (or a given version) and swap it in.",
    tags=["admin"],
)
async def reload(
    state: State, body: Annotated[ReloadRequest | None, Body()] = None
) -> ReloadResponse:
    """Requests in flight finish on the model they started with; new ones get the new model."""
    version = body.version if body is not None else None
    async with state.reload_lock:
        try:
            model, previous = await anyio.to_thread.run_sync(state.store.reload, version)
        except Exception:
            state.metrics.reloads.labels(outcome="failed").inc()
            raise
    state.metrics.reloads.labels(outcome="ok").inc()
    state.metrics.set_model(model.name, model.version, model.source)
    if state.peers is not None:  # several workers: each loads it before this answers
        await state.peers.announce(model.version)
    return ReloadResponse(
        name=model.name,
        version=model.version,
        previous_version=previous.version if previous else None,
        source=model.source,
    )

