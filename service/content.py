"""Content negotiation of ``POST /v1/predict``: CSV and Parquet bodies in, CSV and Parquet out.

The route speaks JSON only; :class:`PredictContentMiddleware` sits between it and the client:

- **Request**: a ``text/csv`` or ``application/vnd.apache.parquet`` (or ``application/x-parquet``)
  body in the frame format (:mod:`formats.frames`; docs/service.md "Frame format") is parsed in a
  worker thread, checked against the served model's channels (errors name the body's line or
  row and column), and handed to the route as the JSON request it equals (a Parquet body with
  more rows than any valid request holds is a 413 before it is decoded); ``quantiles``
  (comma-separated or repeated), ``num_samples``, ``seed``, ``horizon`` and ``every`` come from
  the query string. The body-size limit applies to the bytes sent (the middleware is inside
  :class:`service.errors.BodySizeLimitMiddleware`), the work budget and every request limit to
  the request it becomes (the route checks them). Other types get 415.
- **Response**: ``Accept`` picks JSON (the default, also for ``*/*``), ``text/csv`` or Parquet;
  a 200 answer is converted to the output frame in a worker thread; errors stay JSON
  (``{"detail": ...}``). An Accept naming none of them gets 406.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from typing import Any

import anyio
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from formats.frames import (
    FrameSink,
    frame_to_requests,
    output_columns,
    parse_quantiles,
    response_to_frame,
)
from formats.longformat import Locator, read_table_bytes
from latent_ode import Forecaster
from latent_ode.errors import LatentODEError
from service.errors import (
    BodyTooLargeError,
    InputError,
    NotAcceptableError,
    ServiceError,
    UnsupportedMediaTypeError,
    error_response,
    status_for,
)
from service.predictor import Limits

__all__ = ["CSV", "FRAME_ANSWER_CONTENT", "JSON", "PARQUET", "PREDICT_PATH",
           "PredictContentMiddleware",
           "accepted_kind", "body_kind"]

JSON = "application/json"
CSV = "text/csv"
PARQUET = "application/vnd.apache.parquet"
PARQUET_ALIAS = "application/x-parquet"
PREDICT_PATH = "/v1/predict"

#: The OpenAPI ``content`` of the answers besides JSON (the route's 200 response).
FRAME_ANSWER_CONTENT: dict[str, Any] = {
    CSV: {"schema": {"type": "string"}},
    PARQUET: {"schema": {"type": "string", "format": "binary"}},
}

_KIND_OF = {JSON: "json", CSV: "csv", PARQUET: "parquet", PARQUET_ALIAS: "parquet"}
_MEDIA = {"json": JSON, "csv": "text/csv; charset=utf-8", "parquet": PARQUET}
_SUPPORTED = f"{JSON}, {CSV} or {PARQUET} ({PARQUET_ALIAS})"
_PARAMS = ("quantiles", "num_samples", "seed", "horizon", "every")
_LABEL = "the request body"


def body_kind(content_type: str | None) -> str:
    """``json``, ``csv`` or ``parquet`` for a request's Content-Type (none: JSON, as FastAPI
    reads it).

    Raises:
        UnsupportedMediaTypeError: any other type (415).
    """
    if not content_type:
        return "json"
    media = content_type.split(";")[0].strip().lower()
    if media.startswith("application/") and media.endswith("+json"):
        return "json"
    if media in _KIND_OF:
        return _KIND_OF[media]
    raise UnsupportedMediaTypeError(
        f"Content-Type {content_type!r} is not supported; send {_SUPPORTED}."
    )


def accepted_kind(accept: str | None) -> str:
    """The answer's kind for an Accept header: the supported type with the highest ``q``
    (ties: the first listed); ``*/*`` and ``application/*`` are JSON, ``text/*`` CSV.

    Raises:
        NotAcceptableError: no supported type is acceptable (406).
    """
    if not accept or not accept.strip():
        return "json"
    best: tuple[float, int, str] | None = None
    for position, item in enumerate(accept.split(",")):
        media, *params = (part.strip().lower() for part in item.split(";"))
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        kind = {"*/*": "json", "application/*": "json", "text/*": "csv"}.get(media,
                                                                            _KIND_OF.get(media))
        if kind is None or not q > 0:
            continue
        if best is None or (q, -position) > (best[0], -best[1]):
            best = (q, position, kind)
    if best is None:
        raise NotAcceptableError(
            f"cannot answer in {accept!r}; this endpoint answers {_SUPPORTED}."
        )
    return best[2]


def _query_options(query: QueryParams) -> dict[str, Any]:
    """The frame body's options from the query string, checked."""
    unknown = sorted(set(query.keys()) - set(_PARAMS))
    if unknown:
        raise InputError(
            f"unknown query parameter(s) {unknown}; a CSV or Parquet body takes "
            f"{', '.join(_PARAMS)}."
        )
    options: dict[str, Any] = {}
    try:
        options["quantiles"] = list(parse_quantiles(",".join(query.getlist("quantiles"))))
    except LatentODEError as exc:
        raise InputError(f"query parameter {exc}") from None
    for name, kind in (("num_samples", int), ("seed", int), ("horizon", float),
                       ("every", float)):
        if name not in query:
            continue
        text = query[name]
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise InputError(f"query parameter `{name}` must be {what}; got {text!r}.") from None
        if kind is float and not math.isfinite(value):
            raise InputError(f"query parameter `{name}` must be finite; got {text!r}.")
        options[name] = value
    return options


def _rows(values: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else v for v in row] for row in values.tolist()]


def _check_parquet_rows(data: bytes, limits: Limits) -> None:
    """Refuse a Parquet body with more rows than any valid request holds, from its footer and
    before decoding it (a few kB of compressed Parquet can hold millions of rows)."""
    try:
        rows = pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
    except (pa.ArrowException, OSError, ValueError):
        return  # not Parquet: read_table_bytes says so, with the reader's reason
    most = limits.max_series_per_request * (limits.max_points_per_series
                                            + limits.max_query_times_per_series)
    if rows > most:
        raise BodyTooLargeError(
            f"the Parquet body holds {rows} rows; a request holds at most {most} "
            "(LATENT_ODE_MAX_SERIES_PER_REQUEST x (LATENT_ODE_MAX_POINTS_PER_SERIES + "
            "LATENT_ODE_MAX_QUERY_TIMES_PER_SERIES)); send fewer series or points per request."
        )


def frame_request(data: bytes, kind: str, forecaster: Forecaster,
                  options: dict[str, Any], limits: Limits) -> bytes:
    """A CSV or Parquet body as the JSON ``POST /v1/predict`` request it equals.

    Raises:
        BodyTooLargeError: a Parquet body with more rows than ``limits`` (the settings) allow
            any request.
        DataError / ConfigError: a bad body (line or row, and column, named) or horizon.
        InputError: a series with nothing to answer.
    """
    if kind == "parquet":
        _check_parquet_rows(data, limits)
    frame = read_table_bytes(data, kind, _LABEL)
    if kind == "csv":  # lines with nothing at all on them are not rows
        frame = frame.loc[~frame.isna().all(axis=1)]
    where = Locator(_LABEL, kind, frame.index.to_numpy())
    req = frame_to_requests(frame, list(forecaster.channels), time_unit=forecaster.time_unit,
                            where=where, horizon=options.get("horizon"),
                            every=options.get("every"))
    if req.no_queries:
        raise InputError(
            f"{_LABEL}: series {req.no_queries[0]!r} has no query rows; add rows with "
            "query=true at the times to forecast, or pass ?horizon=H&every=DT."
        )
    body: dict[str, Any] = {
        "series": [{"id": sid, "times": s.times.tolist(), "values": _rows(s.values),
                    "query_times": q.tolist()}
                   for sid, s, q in zip(req.ids, req.series, req.queries, strict=True)],
        "quantiles": options["quantiles"],
    }
    for name in ("num_samples", "seed"):
        if name in options:
            body[name] = options[name]
    return json.dumps(body, allow_nan=False).encode()


def frame_answer(content: bytes, kind: str) -> bytes:
    """The route's JSON answer as an output frame in CSV or Parquet."""
    answer = json.loads(content)
    frame = response_to_frame(answer)
    levels = [q["quantile"] for q in answer["series"][0]["quantiles"]] if answer["series"] else []
    buffer = io.BytesIO()
    with FrameSink(buffer, kind, output_columns(answer["channels"], levels)) as sink:
        sink.write(frame)
    return buffer.getvalue()


def _with_headers(scope: Scope, replace: dict[bytes, bytes]) -> Scope:
    headers = [(k, v) for k, v in scope["headers"] if k not in replace]
    return {**scope, "headers": headers + list(replace.items())}


class PredictContentMiddleware:
    """CSV/Parquet request bodies and answers for ``POST /v1/predict`` (see the module
    docstring); every other request passes through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"] != PREDICT_PATH):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            out_kind = accepted_kind(headers.get("accept"))
            in_kind = body_kind(headers.get("content-type"))
            if in_kind != "json":
                scope, receive = await self._as_json(scope, receive, in_kind)
        except (ServiceError, LatentODEError) as exc:
            await error_response(status_for(exc), str(exc))(scope, receive, send)
            return
        if out_kind == "json":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _Converting(send, out_kind))

    @staticmethod
    async def _as_json(scope: Scope, receive: Receive, kind: str) -> tuple[Scope, Receive]:
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        options = _query_options(QueryParams(scope.get("query_string", b"")))
        # The model's channels and time unit check the body; no model: the route answers 503.
        state = scope["app"].state.service
        model = state.store.require()
        body = await anyio.to_thread.run_sync(
            frame_request, b"".join(chunks), kind, model.forecaster, options, state.settings)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        scope = _with_headers(scope, {b"content-type": JSON.encode(),
                                      b"content-length": str(len(body)).encode()})
        return scope, replay


class _Converting:
    """A ``send`` that turns a 200 JSON answer into CSV or Parquet (errors pass unchanged)."""

    def __init__(self, send: Send, kind: str) -> None:
        self.send, self.kind = send, kind
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            if message["status"] != 200:
                await self.send(message)
                return
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        content = await anyio.to_thread.run_sync(frame_answer, b"".join(self.chunks), self.kind)
        headers: Sequence[tuple[bytes, bytes]] = [
            (k, v) for k, v in self.start.get("headers", [])
            if k not in (b"content-type", b"content-length")
        ]
        await self.send({**self.start, "headers": [
            *headers, (b"content-type", _MEDIA[self.kind].encode()),
            (b"content-length", str(len(content)).encode()),
        ]})
        await self.send({"type": "http.response.body", "body": content, "more_body": False})
