"""The ASGI wrappers around the app, outermost first (``create_app`` adds them in reverse):

- :class:`RequestContextMiddleware`: a request id on every answer (``X-Request-ID``, the
  client's when it sends a sane one, else a new one), one JSON access-log line per request on the
  ``service.access`` logger, and a 503 "the service is stopping" instead of uvicorn's 500 for a
  request still running when the shutdown grace period ends (uvicorn cancels its task).
- :class:`ApiKeyMiddleware`: the optional API key (``LATENT_ODE_API_KEY``) every page but the
  health probes and the admin endpoints (which have their own key) requires.
- :class:`BodyDeadlineMiddleware`: a deadline on reading the request body, so that a body
  trickled byte by byte ends with a 408 instead of holding a connection and a task for good
  (uvicorn's ``timeout_keep_alive`` only covers the time between requests).

:class:`RateLimitedLogFilter` keeps one log line from flooding the log (asyncio logs "socket.accept()
out of system resource" up to ``backlog`` times per second at the file-descriptor limit).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response

__all__ = [
    "ApiKeyMiddleware",
    "BodyDeadlineMiddleware",
    "RateLimitedLogFilter",
    "RequestContextMiddleware",
]

access_logger = logging.getLogger("service.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

STOPPING_DETAIL = (
    "the service is stopping and could not finish this request within its shutdown grace "
    "period; retry it (another replica or this one after its restart will answer)."
)


class RequestContextMiddleware:
    """Request id, JSON access log and the 503 of a request cut off by the shutdown."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = {**message, "headers": [
                    *message.get("headers", []), (b"x-request-id", request_id.encode())
                ]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when the grace period ends, and
            # answers a cancelled request with a bare 500 and a traceback.
            if status:
                raise
            await error_response(503, STOPPING_DETAIL)(scope, receive, send_with_id)
        finally:
            access_logger.info(json.dumps({
                "request_id": request_id,
                "method": scope["method"],
                "path": scope["path"],
                "status": status or 500,
                "duration_ms": round(1000.0 * (time.perf_counter() - started), 3),
                "client": (scope.get("client") or ("", 0))[0],
            }))


_OPEN_PATHS = ("/livez", "/readyz")
_ADMIN_PREFIX = "/v1/admin/"


class ApiKeyMiddleware:
    """Every page but ``/livez``, ``/readyz`` and ``/v1/admin/*`` needs
    ``Authorization: Bearer <key>`` when a key is configured (compared in constant time)."""

    def __init__(self, app: ASGIApp, key: str | None) -> None:
        self.app = app
        self.key = None if key is None else key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = self.key
        path = scope.get("path", "")
        if (scope["type"] != "http" or key is None or path in _OPEN_PATHS
                or path.startswith(_ADMIN_PREFIX)):
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = sent.partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), key):
            response = error_response(
                401,
                "missing or wrong API key; send the key from LATENT_ODE_API_KEY as "
                "`Authorization: Bearer <key>`.",
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _BodyTimeout(Exception):
    """The body did not arrive in time (raised out of ``receive``, caught by the middleware)."""


class BodyDeadlineMiddleware:
    """Answer 408 when a request's body has not fully arrived ``timeout_s`` after the request
    began; the body's last message ends the deadline (later ``receive`` calls wait for the
    client's disconnect, which may legitimately take long)."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = time.monotonic() + self.timeout_s
        body_done = False
        started = False

        async def receive_by_deadline() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            remaining = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(remaining, 0.0))
            except TimeoutError:
                raise _BodyTimeout from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive_by_deadline, send_tracking)
        except _BodyTimeout:
            if started:
                raise
            response = error_response(
                408,
                f"the request body did not arrive within {self.timeout_s:g} s "
                "(LATENT_ODE_BODY_TIMEOUT_S); send it at once, or split a large request.",
                headers={"Connection": "close"},
            )
            await response(scope, receive, send)


class RateLimitedLogFilter(logging.Filter):
    """Let a log record whose message starts with ``prefix`` through at most once per
    ``interval_s``; the next one let through says how many were dropped meanwhile."""

    def __init__(self, prefix: str, interval_s: float) -> None:
        super().__init__()
        self.prefix = prefix
        self.interval_s = interval_s
        self._last = -float("inf")
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(self.prefix):
            return True
        now = time.monotonic()
        if now - self._last < self.interval_s:
            self._dropped += 1
            return False
        self._last = now
        if self._dropped:
            record.msg = f"{record.getMessage()} ({self._dropped} alike dropped in the last " \
                f"{self.interval_s:g} s)"
            record.args = ()
            self._dropped = 0
        record.exc_info = None  # the traceback is the same every time: the errno says it all
        record.exc_text = None
        return True
