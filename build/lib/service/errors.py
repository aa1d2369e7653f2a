"""The service's error types and the one place that maps them to HTTP status codes.

Routes, the predictor, the batcher and the model store raise the exceptions below (or the
library's own :mod:`latent_ode.errors`); :func:`install_error_handlers` turns each into a JSON body
``{"detail": "..."}`` with the status from :data:`STATUS_BY_ERROR`. Anything not listed there is a
500 with a generic message; its traceback goes to the log only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from formats.validation_errors import format_validation_errors
from latent_ode.errors import ConfigError, DataError, ShapeError, SolverError

__all__ = [
    "STATUS_BY_ERROR",
    "AdminDisabledError",
    "AuthError",
    "BodySizeLimitMiddleware",
    "BodyTooLargeError",
    "InputError",
    "ModelNotReadyError",
    "ModelVersionNotFoundError",
    "RegistryUnavailableError",
    "ServiceError",
    "SolverBudgetError",
    "install_error_handlers",
    "status_for",
]

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base class of the errors the service raises on purpose; ``str(exc)`` is the detail."""


class InputError(ServiceError, ValueError):
    """A request is well-formed JSON of the right types but cannot be answered as sent."""


class SolverBudgetError(ServiceError):
    """The solver failed or exceeded its step budget for series of this request.

    Attributes:
        series: indices (into the request's ``series`` list) of the series that failed.
    """

    def __init__(self, message: str, *, series: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.series = tuple(series)


class BodyTooLargeError(ServiceError):
    """The request body is larger than ``LATENT_ODE_MAX_BODY_BYTES``."""


class ModelNotReadyError(ServiceError):
    """No model is loaded (the registry and the disk cache both failed at start-up)."""


class RegistryUnavailableError(ServiceError):
    """The MLflow registry could not be reached or a model could not be loaded from it."""


class ModelVersionNotFoundError(ServiceError):
    """The registry has no such model version or alias."""


class AuthError(ServiceError):
    """Missing or wrong admin API key."""


class AdminDisabledError(ServiceError):
    """An admin endpoint was called but no admin key is configured."""


#: The single error-type → status table. Order matters: the first matching base class wins.
STATUS_BY_ERROR: tuple[tuple[type[BaseException], int], ...] = (
    (BodyTooLargeError, 413),
    (InputError, 422),
    (SolverBudgetError, 422),
    (DataError, 422),
    (ShapeError, 422),
    (ConfigError, 422),
    (SolverError, 422),
    (RequestValidationError, 422),
    (AuthError, 401),
    (AdminDisabledError, 403),
    (ModelVersionNotFoundError, 404),
    (ModelNotReadyError, 503),
    (RegistryUnavailableError, 503),
)


def status_for(exc: BaseException) -> int:
    """The HTTP status of an exception (500 for anything unexpected)."""
    if isinstance(exc, StarletteHTTPException):
        return exc.status_code
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


def error_response(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON error body every handler answers with."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), bytes)
           for e in errors):
        # FastAPI parses a body as JSON only when the Content-Type says so.
        content_type = request.headers.get("content-type")
        detail = (
            "the request body must be JSON sent with the header Content-Type: application/json; "
            f"got Content-Type {content_type!r}."
        )
    else:
        detail = format_validation_errors(errors)
    return error_response(status_for(exc), detail)


async def _http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.url.path}; see /docs for the API"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}; see /docs for the API"
    return error_response(exc.status_code, str(detail), headers=getattr(exc, "headers", None))


async def _service_error_handler(request: Request, exc: Exception) -> JSONResponse:
    status = status_for(exc)
    if status >= 500:
        logger.warning("%s %s -> %d: %s", request.method, request.url.path, status, exc)
    return error_response(status, str(exc))


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.error(
        "unexpected error answering %s %s", request.method, request.url.path, exc_info=exc
    )
    return error_response(500, "internal server error; the traceback is in the service log")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error type into its status and ``detail``."""
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    for cls, _status in STATUS_BY_ERROR:
        if cls is not RequestValidationError:
            app.add_exception_handler(cls, _service_error_handler)
    app.add_exception_handler(Exception, _unexpected_handler)


class BodySizeLimitMiddleware:
    """Answer 413 for bodies over ``max_bytes`` before anything parses them.

    Checks ``Content-Length`` first, then counts the bytes of the (possibly chunked) body as it
    arrives, buffering at most ``max_bytes``, and replays the buffered body to the app.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self, size: str) -> JSONResponse:
        exc = BodyTooLargeError(
            f"the request body is {size} bytes; the limit is {self.max_bytes} bytes "
            "(LATENT_ODE_MAX_BODY_BYTES); send fewer series or points per request."
        )
        return error_response(status_for(exc), str(exc))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = -1
                if length > self.max_bytes:
                    await self._too_large(str(length))(scope, receive, send)
                    return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._too_large(f"more than {self.max_bytes}")(scope, receive, send)
                return
            chunks.append(body)
            more = message.get("more_body", False)
        replayed = False
        whole = b"".join(chunks)

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
