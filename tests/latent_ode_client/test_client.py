"""The client on its own: frame conversion, retries, errors and the API key, against
``httpx.MockTransport`` (the real service is in ``test_client_uvicorn.py``)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from latent_ode_client import LatentODEClient, ServiceError, answer_to_frame, frame_to_series

ANSWER: dict[str, Any] = {
    "model": {"name": "m", "version": "1"}, "channels": ["hr", "temp"], "time_unit": "hours",
    "num_samples": 8,
    "series": [
        {"id": "a", "query_times": [1.5, 4.0], "mode": ["interpolation", "extrapolation"],
         "mean": [[70.0, 37.0], [71.0, 37.1]], "std": [[1.0, 0.1], [2.0, 0.2]],
         "quantiles": [{"quantile": 0.05, "values": [[68.0, 36.8], [67.0, 36.7]]},
                       {"quantile": 0.95, "values": [[72.0, 37.2], [75.0, 37.5]]}],
         "solver": {"method": "dopri5", "rtol": 1e-3, "atol": 1e-4, "nfe": 20}},
        {"id": "7", "query_times": [0.5], "mode": ["backcast"], "mean": [[60.0, 36.0]],
         "std": [[3.0, 0.3]],
         "quantiles": [{"quantile": 0.05, "values": [[55.0, 35.5]]},
                       {"quantile": 0.95, "values": [[65.0, 36.5]]}],
         "solver": {"method": "dopri5", "rtol": 1e-3, "atol": 1e-4, "nfe": 20}},
    ],
}


def test_answer_to_frame_lays_out_the_frame_format() -> None:
    out = answer_to_frame(ANSWER, [0.95, 0.05])
    assert list(out.columns) == ["series_id", "time", "mode", "hr_mean", "hr_std", "hr_q0.95",
                                 "hr_q0.05", "temp_mean", "temp_std", "temp_q0.95",
                                 "temp_q0.05"]
    assert list(out["series_id"]) == ["a", "a", "7"]
    assert list(out["time"]) == [1.5, 4.0, 0.5] and out["time"].dtype == np.float64
    assert list(out["mode"]) == ["interpolation", "extrapolation", "backcast"]
    assert list(out["temp_q0.05"]) == [36.8, 36.7, 35.5]
    assert list(out["hr_std"]) == [1.0, 2.0, 3.0]
    assert list(answer_to_frame(ANSWER, []).columns) == [
        "series_id", "time", "mode", "hr_mean", "hr_std", "temp_mean", "temp_std"]


def test_frame_to_series_groups_by_series_and_names_the_channels() -> None:
    frame = pd.DataFrame({
        "series_id": [1, 1, 1, 2, 2, 1],
        "time": [0.0, 1.0, 2.0, 0.0, 3.0, 5.0],
        "temp": [37.0, np.nan, np.nan, 36.5, np.nan, np.nan],
        "hr": [70.0, 71.0, np.nan, np.nan, np.nan, np.nan],
        "query": [False, False, False, False, True, True],
    })
    assert frame_to_series(frame) == [
        # The row at time 2 observes nothing: dropped.
        {"id": "1", "times": [0.0, 1.0], "values": [[37.0, 70.0], [None, 71.0]],
         "channels": ["temp", "hr"], "query_times": [5.0]},
        {"id": "2", "times": [0.0], "values": [[36.5, None]], "channels": ["temp", "hr"],
         "query_times": [3.0]},
    ]
    stamps = pd.DataFrame({"series_id": ["x", "x"], "time": pd.to_datetime(
        ["2024-01-01T00:00", "2024-01-01T06:00"]), "hr": [70.0, np.nan], "query": [False, True]})
    (item,) = frame_to_series(stamps)
    assert item["times"] == ["2024-01-01T00:00:00+00:00"]
    assert item["query_times"] == ["2024-01-01T06:00:00+00:00"]


@pytest.mark.parametrize(("frame", "match"), [
    (pd.DataFrame({"series_id": ["a"], "time": [0.0], "hr": [1.0]}),
     r"lacks the column\(s\) \['query'\]"),
    (pd.DataFrame({"series_id": ["a"], "time": [0.0], "hr": [1.0], "query": ["yes"]}),
     "the `query` column must be true/false"),
    (pd.DataFrame({"series_id": ["a"], "time": [0.0], "hr": [1.0], "query": [False]}),
     "series 'a' has no query row"),
    (pd.DataFrame({"series_id": ["a", "a"], "time": [0.0, np.inf], "hr": [1.0, np.nan],
                   "query": [False, True]}), "times must be finite"),
])
def test_bad_frames_say_what_is_wrong(frame: pd.DataFrame, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        frame_to_series(frame)


def _client(handler: Any, waits: list[float] | None = None, **kwargs: Any) -> LatentODEClient:
    return LatentODEClient("http://service", transport=httpx.MockTransport(handler),
                           sleep=(waits.append if waits is not None else lambda _s: None),
                           **kwargs)


def test_retries_back_off_and_honour_retry_after_then_succeed() -> None:
    answers = [httpx.Response(503, json={"detail": "no model loaded yet"}),
               httpx.Response(502, text="bad gateway"),
               httpx.Response(503, json={"detail": "busy"}, headers={"Retry-After": "7"}),
               httpx.Response(504),
               httpx.Response(200, json=ANSWER)]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[len(seen) - 1]

    waits: list[float] = []
    with _client(handler, waits, max_retries=4, backoff_s=0.5, max_backoff_s=3.0) as client:
        out = client.predict_json({"series": []})
    assert out == ANSWER
    # 0.5, 1.0, then Retry-After 7 capped at 3, then 4.0 capped at 3.
    assert waits == [0.5, 1.0, 3.0, 3.0]
    assert len(seen) == 5


def test_retries_are_bounded_and_the_last_error_carries_status_and_detail() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, json={"detail": "no model loaded yet"},
                              headers={"x-request-id": "r-1"})

    waits: list[float] = []
    with pytest.raises(ServiceError, match="HTTP 503: no model loaded yet") as exc, \
            _client(handler, waits, max_retries=2, backoff_s=0.1) as client:
        client.model()
    assert (exc.value.status, exc.value.detail, exc.value.request_id) == (
        503, "no model loaded yet", "r-1")
    assert waits == [0.1, 0.2]


def test_connection_errors_are_retried_then_reported() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(ServiceError, match=r"no answer: could not reach http://service/v1/model "
                                           r"after 3 tries: connection refused") as exc, \
            _client(handler, max_retries=2) as client:
        client.model()
    assert exc.value.status is None and len(calls) == 3


def test_a_client_error_is_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(422, json={"detail": "series 0: `times` must increase"})

    with pytest.raises(ServiceError, match="HTTP 422: series 0: `times` must increase"), \
            _client(handler) as client:
        client.predict_arrays([0.0, 1.0], [[1.0], [2.0]], [3.0])
    assert len(calls) == 1


def test_the_api_key_is_sent_as_a_bearer_token() -> None:
    headers = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"name": "m"})

    with _client(handler, api_key="s3cret") as client:
        client.model()
    with _client(handler) as client:
        client.model()
    assert headers == ["Bearer s3cret", None]


def test_bad_retry_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="retry settings must not be negative; got max_retries=-1"):
        LatentODEClient("http://service", max_retries=-1)


def test_the_client_imports_only_httpx_pandas_and_numpy() -> None:
    code = (
        "import sys\n"
        "for name in ('torch', 'mlflow', 'fastapi', 'pydantic', 'uvicorn', 'latent_ode',\n"
        "             'service', 'pipelines', 'formats', 'pyarrow', 'matplotlib'):\n"
        "    sys.modules[name] = None  # makes `import name` raise ImportError\n"
        "import latent_ode_client\n"
        "from latent_ode_client import LatentODEClient\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
