"""API documentation that works offline and matches the served model.

- ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) load their JavaScript, CSS and icon from
  ``service/static/vendor/`` (copied from the npm registry's ``swagger-ui-dist`` and ``redoc``
  packages; ``vendor/README.md`` says which versions and how), never from a CDN, and ReDoc
  without Google Fonts: both render on a machine without internet. A Content-Security-Policy
  keeps the browser from fetching anything else a bundle names.
- ``/openapi.json`` carries examples built from the served model: request bodies with its own
  channels (one channel, and all of them labelled "multichannel" when it has several), a 200
  answer computed by the model itself for that request, and error bodies whose ``detail`` is the
  one the service really answers. Without a model the request example is a labelled two-channel
  illustration. The document is built once per served model (a reload rebuilds it).
"""

from __future__ import annotations

import copy
import json
import logging
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from prometheus_client import generate_latest
from pydantic import BaseModel, ValidationError

from formats.validation_errors import format_validation_errors
from latent_ode import LatentODEError, Series
from service.content import accepted_kind, body_kind
from service.errors import BodySizeLimitMiddleware, ServiceError
from service.examples import example_request, synthetic_series
from service.model_store import LoadedModel, ModelStore
from service.predictor import prepare_series, served_solver
from service.routes import _model_response as model_response
from service.schemas import (
    PredictRequest,
    PredictResponse,
    ReloadRequest,
    SeriesIn,
    SeriesOut,
    ServedModel,
    SolverUsed,
)
from service.state import ServiceState

__all__ = ["docs_router", "install_openapi"]

logger = logging.getLogger(__name__)

VENDOR = "/static/vendor"

docs_router = APIRouter(include_in_schema=False)

#: The browser may load nothing from elsewhere, even what a bundle hard-codes (ReDoc's sidebar
#: shows Redocly's logo from cdn.redoc.ly; blocked, it hides it). Both pages have an inline
#: script and inline styles (FastAPI's templates), ReDoc a search worker from a blob: URL.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
            "'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:")


@docs_router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI on the service's own copy of its assets."""
    root = request.scope.get("root_path", "")
    page = get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title="latent-ode API (Swagger UI)",
        swagger_js_url=f"{root}{VENDOR}/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{VENDOR}/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{root}{VENDOR}/swagger-ui/favicon-32x32.png",
        # No call to the public validator.swagger.io badge.
        swagger_ui_parameters={"validatorUrl": None},
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


@docs_router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc on the service's own copy of its bundle, without Google Fonts."""
    root = request.scope.get("root_path", "")
    page = get_redoc_html(
        openapi_url=f"{root}/openapi.json",
        title="latent-ode API (ReDoc)",
        redoc_js_url=f"{root}{VENDOR}/redoc/redoc.standalone.js",
        redoc_favicon_url=f"{root}{VENDOR}/swagger-ui/favicon-32x32.png",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


# The admin errors' details, as service.routes.require_admin and the model store word them
# (tests/service/test_openapi_docs.py checks each against the real answer).
_ADMIN_401 = ("missing or wrong API key; send the key from LATENT_ODE_ADMIN_KEY in the X-API-Key "
              "header.")
_ADMIN_403 = ("admin endpoints are disabled because LATENT_ODE_ADMIN_KEY is not set; set it and "
              "restart the service to enable them.")
_ADMIN_404 = ("the registry has no version 99 of model {name!r}; register it or pick an existing "
              "version")
_ADMIN_503 = ("the MLflow tracking server http://mlflow:5000 is unreachable (<urlopen error [Errno "
              "111] Connection refused>)")

#: Shown when no model is loaded: a two-channel illustration, labelled as such.
_ILLUSTRATION = {
    "series": [{"id": "bed-7", "times": [0.0, 0.4, 1.3],
                "values": [[72.0, None], [75.5, 37.1], [None, 37.4]],
                "query_times": [0.2, 2.0, 3.5]}],
    "num_samples": 32,
    "quantiles": [0.05, 0.5, 0.95],
}

_QUANTILES = [0.05, 0.5, 0.95]


def _error(detail: str, summary: str) -> dict[str, Any]:
    return {"summary": summary, "value": {"detail": detail}}


def _not_ready_detail(state: ServiceState) -> str:
    """What ``/readyz`` and ``/v1/predict`` answer while no model is loaded: the store's own
    words now when it has none, else what a fresh store says after a failed start."""
    store = state.store
    if store.current is not None:
        store = ModelStore(state.settings)
        store.last_error = f"the registry failed ({_ADMIN_503}) and the disk cache has no " \
            "usable model (nothing cached yet)"
    try:
        store.require()
    except ServiceError as exc:
        return str(exc)
    raise AssertionError("a store without a model answers require() with an error")


def _schema_detail(schema: type[BaseModel], body: dict[str, Any]) -> str:
    """The 422 detail the service answers for ``body``, which ``schema`` refuses."""
    try:
        schema.model_validate(body)
    except ValidationError as exc:
        return format_validation_errors(exc.errors())
    raise AssertionError(f"{schema.__name__} accepts {body}")


def _too_large_detail(state: ServiceState) -> str:
    limit = state.settings.max_body_bytes
    response = BodySizeLimitMiddleware(None, max_bytes=limit)._too_large(str(limit + 1))  # type: ignore[arg-type]
    return str(json.loads(bytes(response.body))["detail"])


class _Examples:
    """The examples of one served model (or of none)."""

    def __init__(self, state: ServiceState, model: LoadedModel | None) -> None:
        self.state = state
        self.model = model
        self.requests: dict[str, dict[str, Any]] = {}
        self.answer: dict[str, Any] | None = None
        self.invalid: dict[str, dict[str, Any]] = {}
        if model is None:
            self.requests["illustration"] = {
                "summary": "Illustration for a two-channel model (no model is loaded: GET "
                "/v1/model names the served model's channels once one is)",
                "value": _ILLUSTRATION,
            }
            return
        self._build(model)

    def _build(self, model: LoadedModel) -> None:
        fc = model.forecaster
        channels = list(fc.channels)
        synthetic = synthetic_series(fc)
        span = float(fc.normaliser.time_scale)
        window = synthetic.times[:8]
        last = float(window[-1])
        queries = [float(np.round(q, 4)) for q in (
            window[1] + 0.5 * (window[2] - window[1]), window[5], last + 0.1 * span,
            last + 0.2 * span,
        )]
        short = {"query_times": queries, "max_observations": 8, "quantiles": _QUANTILES}
        first = channels[0]
        if len(channels) == 1:
            self.requests["one-channel"] = {
                "summary": f"The model's channel {first!r}: 8 observations, 2 query times inside "
                "their window (interpolation) and 2 after it (extrapolation)",
                "value": example_request(synthetic, **short),
            }
        else:
            self.requests["multichannel"] = {
                "summary": f"Multichannel: all {len(channels)} of the model's channels "
                f"({', '.join(channels)}), null where a channel was not observed; 2 query times "
                "inside the window, 2 after it",
                "value": example_request(synthetic, **short),
            }
            self.requests["one-channel"] = {
                "summary": f"One channel ({first!r}) of the {len(channels)}: the others count as "
                "unobserved",
                "value": example_request(synthetic, channels=[first], all_channels=channels,
                                         **short),
            }
        body = next(iter(self.requests.values()))["value"]
        try:
            self.answer = self._answer(model, body)
        except Exception:  # noqa: BLE001 - a broken example must not fail /openapi.json
            # tests/service/test_openapi_docs.py notices the missing example; the log says why.
            logger.exception("no 200 example in the OpenAPI document")
            self.answer = None
        self.invalid = self._invalid(model, body)

    def _answer(self, model: LoadedModel, body: dict[str, Any]) -> dict[str, Any] | None:
        """The model's own answer to ``body`` (None if it cannot give one)."""
        fc = model.forecaster
        request = PredictRequest.model_validate(body)
        item = request.series[0]
        series = Series(
            times=np.asarray(item.times, dtype=np.float64),
            values=np.array([[np.nan if v is None else v for v in row] for row in item.values],
                            dtype=np.float64),
            id=item.id,
        )
        settings = self.state.settings
        solver = served_solver(fc.model_config.solver, rtol=settings.solver_rtol,
                               atol=settings.solver_atol, max_steps=settings.solver_max_steps)
        try:
            forecast = fc.predict(
                [series], [np.asarray(item.query_times, dtype=np.float64)],
                num_samples=request.num_samples or 32, quantiles=request.quantiles,
                seed=settings.seed, solver=solver,
            )[0]
        except LatentODEError as exc:  # an example is not worth a failed /openapi.json
            logger.warning("no 200 example in the OpenAPI document: %s", exc)
            return None
        if not forecast.ok:
            return None
        response = PredictResponse(
            model=ServedModel(name=model.name, version=model.version),
            channels=list(fc.channels), time_unit=fc.time_unit,
            num_samples=request.num_samples or 32,
            solver=SolverUsed(preset="default", method=solver.method, rtol=solver.rtol,
                              atol=solver.atol, max_steps=solver.max_steps),
            series=[SeriesOut.from_forecast(item, forecast, request.quantiles)],
        )
        return response.model_dump(mode="json")

    def _invalid(self, model: LoadedModel, body: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Two bad variants of ``body`` and the details the service answers them with."""
        fc = model.forecaster
        out: dict[str, dict[str, Any]] = {}
        series = copy.deepcopy(body["series"][0])
        series["times"][1], series["times"][2] = series["times"][2], series["times"][1]
        try:
            prepare_series(
                [SeriesIn.model_validate(series)], channels=fc.channels, time_unit=fc.time_unit,
                time_scale=float(fc.normaliser.time_scale),
                encoder_max_step=float(fc.model_config.encoder.max_step),
                limits=self.state.limits, normaliser=fc.normaliser,
            )
        except ServiceError as exc:
            out["unsorted-times"] = _error(str(exc), "Observation times out of order")
        out["bad-quantile"] = _error(
            _schema_detail(PredictRequest, {**body, "quantiles": [0.05, 1.5]}),
            "A quantile level outside (0, 1)")
        return out


def _set_examples(operation: dict[str, Any], status: str, examples: dict[str, Any],
                  media_type: str = "application/json") -> None:
    response = operation.setdefault("responses", {}).setdefault(status, {"description": status})
    response.setdefault("content", {}).setdefault(media_type, {})["examples"] = examples


def _request_examples(operation: dict[str, Any], examples: dict[str, Any]) -> None:
    body = operation.setdefault("requestBody", {"content": {}})
    body.setdefault("content", {}).setdefault("application/json", {})["examples"] = examples


def _document(base: dict[str, Any], state: ServiceState, model: LoadedModel | None) -> dict[str, Any]:
    """``base`` (FastAPI's document) with the examples of ``model``.

    Missing operations are skipped (their examples go nowhere) rather than failing
    ``/openapi.json``; ``tests/service/test_openapi_docs.py`` notices an operation without them.
    """
    doc = copy.deepcopy(base)
    paths: dict[str, Any] = doc.get("paths", {})

    def operation(path: str, method: str) -> dict[str, Any]:
        return paths.get(path, {}).get(method, {})

    ex = _Examples(state, model)
    not_ready = {"not-ready": _error(_not_ready_detail(state), "No model loaded yet")}

    predict = operation("/v1/predict", "post")
    _request_examples(predict, ex.requests)
    if ex.answer is not None:
        _set_examples(predict, "200", {"forecast": {
            "summary": "The served model's answer to the first request example",
            "value": ex.answer}})
    if ex.invalid:
        _set_examples(predict, "422", ex.invalid)
    _set_examples(predict, "413", {"too-large": _error(_too_large_detail(state),
                                                       "Body over LATENT_ODE_MAX_BODY_BYTES")})
    _set_examples(predict, "503", not_ready)
    for status, check, value, summary in (
            ("415", body_kind, "application/xml", "A body type the endpoint does not read"),
            ("406", accepted_kind, "application/xml", "An Accept the endpoint cannot answer")):
        try:
            check(value)
        except ServiceError as exc:  # the detail the service answers with
            _set_examples(predict, status, {"unsupported": _error(str(exc), summary)})

    get_model = operation("/v1/model", "get")
    if model is not None:
        _set_examples(get_model, "200", {"served": {
            "summary": "The model being served", "value": model_response(model).model_dump(
                mode="json")}})
    _set_examples(get_model, "503", not_ready)

    _set_examples(operation("/livez", "get"), "200", {"alive": {
        "summary": "The process is up", "value": {"status": "alive"}}})
    readyz = operation("/readyz", "get")
    if model is not None:
        _set_examples(readyz, "200", {"ready": {"summary": "A model is loaded", "value": {
            "status": "ready", "model": model.name, "version": model.version,
            "source": model.source}}})
    _set_examples(readyz, "503", not_ready)

    text = generate_latest(state.metrics.registry).decode()
    metrics = operation("/metrics", "get")
    for media_type in metrics.get("responses", {}).get("200", {}).get("content", {}):
        _set_examples(metrics, "200", {"exposition": {
            "summary": "The start of the service's metrics",
            "value": "\n".join(text.splitlines()[:12]) + "\n"}}, media_type=media_type)

    reload = operation("/v1/admin/reload", "post")
    version = model.version if model is not None else "1"
    name = model.name if model is not None else "latent-ode"
    _request_examples(reload, {
        "alias": {"summary": "Reload the configured alias (e.g. champion): send no body or {}",
                  "value": {}},
        "version": {"summary": "Load version 3", "value": {"version": "3"}},
    })
    _set_examples(reload, "200", {"swapped": {"summary": "The new version is served", "value": {
        "name": name, "version": str(int(version) + 1) if version.isdigit() else version,
        "previous_version": version, "source": "registry"}}})
    _set_examples(reload, "401", {"wrong-key": _error(_ADMIN_401, "Missing or wrong X-API-Key")})
    _set_examples(reload, "403", {"disabled": _error(_ADMIN_403, "No LATENT_ODE_ADMIN_KEY")})
    _set_examples(reload, "404", {"no-version": _error(_ADMIN_404.format(name=name), "No such version")})
    _set_examples(reload, "422", {"bad-version": _error(
        _schema_detail(ReloadRequest, {"version": "latest"}), "A version that is not a number")})
    _set_examples(reload, "503", {"registry-down": _error(_ADMIN_503, "Registry unreachable")})
    return doc


def install_openapi(app: FastAPI, state: ServiceState) -> None:
    """Make ``app.openapi()`` (``/openapi.json``) carry the served model's examples."""
    # The model the document was built for, and the document: only the current one is kept.
    built: list[Any] = [object(), None]
    previous = app.openapi  # FastAPI's document (and what the app adds to it), cached on the app

    def openapi() -> dict[str, Any]:
        model = state.store.current
        if built[0] is not model:
            base = previous()
            built[:] = [model, _document(base, state, model)]
        return built[1]

    app.openapi = openapi  # type: ignore[method-assign]
