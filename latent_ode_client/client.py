"""An HTTP client of the latent-ode service: frames or arrays in, forecast frames out.

Retries a request that did not reach the service or that the service could not take on now
(connection errors, 502, 503, 504) with bounded exponential backoff, honouring a
``Retry-After`` header; any other error answer raises :class:`ServiceError` carrying the
service's status and ``detail``.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pandas as pd

from latent_ode_client.frames import answer_to_frame, arrays_to_series, frame_to_series

__all__ = ["RETRY_STATUSES", "LatentODEClient", "ServiceError"]

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({502, 503, 504})
"""Answers worth another try: a proxy without a backend, no model yet or a stopping service,
a gateway timeout."""
_RETRY_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError,
                 httpx.ReadError, httpx.WriteError)


class ServiceError(Exception):
    """The service answered an error, or could not be reached within the retries.

    Attributes:
        status: the HTTP status, or ``None`` when no answer came (connection errors).
        detail: the service's ``detail`` (or the body, or the connection error).
        request_id: the ``x-request-id`` the service gave the request ("" if none), for its log.
    """

    def __init__(self, status: int | None, detail: str, *, request_id: str = "") -> None:
        self.status = status
        self.detail = detail
        self.request_id = request_id
        what = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{what}: {detail}")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else str(detail)
    return str(body)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class LatentODEClient:
    """Talk to a latent-ode service.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        api_key: sent as ``Authorization: Bearer <key>`` (the service's ``LATENT_ODE_API_KEY``).
        timeout: seconds per request.
        max_retries: further tries after a connection error or a 502/503/504 (0: none).
        backoff_s: the first wait; it doubles after each try, up to ``max_backoff_s``.
        max_backoff_s: the longest wait, also the cap on a ``Retry-After``.
        transport: an ``httpx`` transport (tests; a proxy).
        sleep: how to wait (tests).

    Raises:
        ValueError: a negative retry setting.
    """

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int = 5, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if max_retries < 0 or backoff_s < 0 or max_backoff_s < 0:
            raise ValueError(f"retry settings must not be negative; got max_retries={max_retries}"
                             f", backoff_s={backoff_s}, max_backoff_s={max_backoff_s}.")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout,
                                  transport=transport)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._sleep = sleep

    def __enter__(self) -> LatentODEClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call, retried as the class says; the JSON answer.

        Raises:
            ServiceError: an error answer, or no answer within the retries.
        """
        for attempt in range(self.max_retries + 1):
            wait = min(self.backoff_s * 2**attempt, self.max_backoff_s)
            try:
                response = self._http.request(method, path, **kwargs)
            except _RETRY_ERRORS as exc:
                if attempt == self.max_retries:
                    raise ServiceError(None, f"could not reach {self._http.base_url}{path} after "
                                             f"{attempt + 1} tries: {exc}") from exc
                logger.warning("%s %s: %s; retrying in %.2f s", method, path, exc, wait)
                self._sleep(wait)
                continue
            if response.is_success:
                return response.json()
            error = ServiceError(response.status_code, _detail(response),
                                 request_id=response.headers.get("x-request-id", ""))
            if response.status_code not in RETRY_STATUSES or attempt == self.max_retries:
                raise error
            asked = _retry_after(response)
            if asked is not None:
                wait = min(asked, self.max_backoff_s)
            logger.warning("%s %s: %s; retrying in %.2f s", method, path, error, wait)
            self._sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def model(self) -> dict[str, Any]:
        """``GET /v1/model``: the served model's name, version, channels and time unit."""
        return dict(self.request("GET", "/v1/model"))

    def predict_json(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/predict`` with a JSON body as the API documents it; the JSON answer."""
        return dict(self.request("POST", "/v1/predict", json=body))

    def _body(self, series: list[dict[str, Any]], quantiles: Sequence[float],
              num_samples: int | None, seed: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"series": series, "quantiles": [float(q) for q in quantiles]}
        if num_samples is not None:
            body["num_samples"] = num_samples
        if seed is not None:
            body["seed"] = seed
        return body

    def predict(self, frame: pd.DataFrame, *, quantiles: Sequence[float] = (),
                num_samples: int | None = None, seed: int | None = None) -> pd.DataFrame:
        """Forecasts of a long-format frame (``series_id``, ``time``, channels, ``query``), as
        an output frame (:mod:`latent_ode_client.frames`).

        Args:
            frame: observation rows (``query`` false) and rows asking for a forecast
                (``query`` true) of one or many series.
            quantiles: levels to add as ``<channel>_q<level>`` columns (none by default).
            num_samples: latent samples (the service's default when ``None``).
            seed: seed of the latent samples (the service's default when ``None``).

        Raises:
            ValueError: the frame is not a forecast frame.
            ServiceError: the service refused the request (status and ``detail``).
        """
        body = self._body(frame_to_series(frame), quantiles, num_samples, seed)
        return answer_to_frame(self.predict_json(body), quantiles)

    def predict_arrays(self, times: Sequence[Any], values: Any, query_times: Sequence[Any], *,
                       channels: Sequence[str] | None = None, series_id: str = "0",
                       quantiles: Sequence[float] = (), num_samples: int | None = None,
                       seed: int | None = None) -> pd.DataFrame:
        """Forecasts of one series given as arrays: ``times`` (T,), ``values`` (T, D) (NaN: not
        observed; columns are ``channels``, or the model's channels in order), at
        ``query_times`` (Q,); an output frame of Q rows.

        Raises:
            ValueError: ``values`` is not (T, D).
            ServiceError: the service refused the request.
        """
        item = arrays_to_series(times, values, query_times, channels=channels,
                                series_id=series_id)
        body = self._body([item], quantiles, num_samples, seed)
        return answer_to_frame(self.predict_json(body), quantiles)
