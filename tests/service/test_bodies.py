"""Request bodies parsed by the route (``service.bodies``): large ones off the event loop, with
the errors FastAPI gives a declared body."""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

import service.bodies as bodies
from tests.service.service_helpers import make_series, series_json


def _big_body(**extra: Any) -> dict[str, Any]:
    """One series asking for enough query times that the body exceeds INLINE_BODY_BYTES."""
    (s,) = make_series(1, seed=6)
    queries = np.linspace(s.times[0], s.times[-1] + 2.0, 8_000)
    body = {"series": [series_json(s, queries)], "num_samples": 2, **extra}
    assert len(json.dumps(body)) > bodies.INLINE_BODY_BYTES
    return body


@pytest.fixture
def parse_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records, per body parsed, the name of the thread that parsed it."""
    seen: list[str] = []
    original = bodies._parse

    def recording(*args: Any) -> Any:
        seen.append(threading.current_thread().name)
        return original(*args)

    monkeypatch.setattr(bodies, "_parse", recording)
    return seen


def test_a_large_body_is_parsed_off_the_event_loop_and_a_small_one_on_it(
    client: TestClient, parse_threads: list[str]
) -> None:
    big = client.post("/v1/predict", json=_big_body())
    (s,) = make_series(1, seed=6)
    small = client.post("/v1/predict", json={"series": [series_json(s, [1.0])]})
    assert big.status_code == 200, big.text
    assert small.status_code == 200, small.text
    assert len(big.json()["series"][0]["mean"]) == 8_000
    # anyio's worker threads (anyio.to_thread) carry this name; the event loop's does not.
    assert [name == "AnyIO worker thread" for name in parse_threads] == [True, False]


@pytest.mark.parametrize("size", ["small", "large"])
def test_a_bad_body_gets_the_same_422_small_or_large(client: TestClient, size: str) -> None:
    body = _big_body(num_samples=0) if size == "large" else {
        "series": _big_body()["series"][:1], "num_samples": 0}
    if size == "small":
        body["series"][0]["query_times"] = [1.0]
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 422
    assert response.json() == {
        "detail": "`num_samples`: Input should be greater than or equal to 1; got 0."}


def test_json_nested_past_the_recursion_limit_is_a_400_not_a_500(client: TestClient) -> None:
    response = client.post("/v1/predict", content=b'{"series": ' + b"[" * 100_000,
                           headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"detail": "There was an error parsing the body"}


def test_an_empty_body_is_422_field_required(client: TestClient) -> None:
    response = client.post("/v1/predict", content=b"", headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json() == {"detail": "`body` is required but missing."}
