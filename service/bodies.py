"""Request bodies parsed off the event loop when they are large.

FastAPI parses and validates a declared body on the event loop: a 2.4 MB predict body takes
about 0.4 s there (``json.loads`` 0.1 s, validation 0.3 s), during which ``/livez`` and every
other request wait. :func:`parse_json_body` does the same work, with the same 422 errors, in a
worker thread once a body exceeds :data:`INLINE_BODY_BYTES`; validation calls Python for every
time value, so the event loop gets the GIL back between them (``json.loads`` itself still holds
it, about 40 ms per MB).
"""

from __future__ import annotations

import email.message
import json
from typing import Any, TypeVar

import anyio
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

__all__ = ["INLINE_BODY_BYTES", "body_schema", "parse_json_body"]

M = TypeVar("M", bound=BaseModel)

#: Bodies up to this size are parsed on the event loop: a thread hop costs more than that.
INLINE_BODY_BYTES = 64 * 1024

_NO_BODY = object()


def _is_json(content_type: str | None) -> bool:
    """FastAPI's rule: no Content-Type, or application/json or application/*+json."""
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json"))


def _parse(raw: bytes, content_type: str | None, model: type[M]) -> M:
    value: Any = _NO_BODY
    if raw:
        if _is_json(content_type):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise RequestValidationError([{
                    "type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error",
                    "input": {}, "ctx": {"error": exc.msg},
                }], body=exc.doc) from exc
            except (ValueError, RecursionError) as exc:
                # Not UTF-8/16/32, or nested past Python's recursion limit: what FastAPI answers.
                raise HTTPException(400, "There was an error parsing the body") from exc
        else:
            value = raw  # refused by validation; the error handler names the Content-Type
    if value is _NO_BODY:
        raise RequestValidationError([{"type": "missing", "loc": ("body",),
                                       "msg": "Field required", "input": None}])
    try:
        # from_attributes: the errors FastAPI gives a declared body (its messages and types).
        return model.model_validate(value, from_attributes=True)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()], body=value) from None


async def parse_json_body(request: Request, model: type[M]) -> M:
    """The request's body validated as ``model``, with FastAPI's errors for a declared body
    (422 ``RequestValidationError``; 400 for undecodable bytes); in a worker thread when it is
    larger than :data:`INLINE_BODY_BYTES`.

    Args:
        request: the request (its body is read here).
        model: the pydantic model of the body.

    Raises:
        RequestValidationError: not JSON, or not a valid ``model``.
        HTTPException: 400, bytes that are no text encoding JSON allows.
    """
    raw = await request.body()
    content_type = request.headers.get("content-type")
    if len(raw) <= INLINE_BODY_BYTES:
        return _parse(raw, content_type, model)
    return await anyio.to_thread.run_sync(_parse, raw, content_type, model)


def body_schema(model: type[BaseModel]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI ``requestBody`` of a route that parses ``model`` itself, and the component
    schemas it refers to (to add to the document's ``components.schemas``)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components = schema.pop("$defs", {})
    components[model.__name__] = schema
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"required": True, "content": {"application/json": {"schema": ref}}}, components
