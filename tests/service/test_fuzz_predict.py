"""A seeded fuzz of the service: no 5xx, no non-finite number in a 200, a detail in every 4xx.

1,500 requests to POST /v1/predict in-process (TestClient), then 1,000 through a real uvicorn
process across every route (methods, admin keys and bodies, unknown paths, raw bodies).

Each request starts from a valid body and gets a few mutations drawn from a pool of hostile
values (huge and tiny numbers, 400-digit integers, NaN-like strings, ISO-8601 times outside any
range, wrong types, empty and nested lists, unknown keys) or is replaced by a raw body (broken
JSON, non-UTF-8 bytes, a wrong content type). The limits are small so that each request is cheap
and each limit is crossed often.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.conftest import free_port, stop_process, wait_for_http
from tests.service.service_helpers import ADMIN_KEY

SEED = 20261130
REQUESTS = 1500
UVICORN_REQUESTS = 1000

HOSTILE: list[Any] = [
    0, -1, 1, 0.5, 1e-300, -1e-300, 1e308, -1e308, 1.7976931348623157e308, 2**63, -(2**63),
    10**400, True, False, None, "", "0", "0.5", "1e308", "NaN", "Infinity", "now", "today",
    "2024-05-01", "2024-05-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
    "2262-04-12", "1677-09-21", "2024-02-30", "20240501", "\u0000", "é" * 300, [], [[]], [1, 2],
    [None], [[None, None]], {}, {"a": 1}, [0.5] * 50, list(range(200)), 1 - 1e-12, 1e-7,
]
ISO = ["2024-05-01T00:00:00Z", "2024-05-01T01:00:00Z", "2024-05-01T02:30:00+02:00"]


def _valid(rng: random.Random) -> dict[str, Any]:
    n = rng.randint(1, 4)
    times: list[Any] = sorted(rng.sample(range(0, 50), n))
    times = [t / 5 for t in times]
    queries: list[Any] = [rng.uniform(-3, 15) for _ in range(rng.randint(1, 5))]
    if rng.random() < 0.2:
        times = sorted(ISO[:n] if n <= 3 else ISO)
        queries = [rng.choice(ISO)]
    series: dict[str, Any] = {
        "times": times,
        "values": [[rng.uniform(30, 90), rng.choice([None, rng.uniform(36, 38)])]
                   for _ in times],
        "query_times": queries,
    }
    if rng.random() < 0.3:
        series["id"] = rng.choice(["bed-7", "", "x" * 300, "ü"])
    if rng.random() < 0.2:
        series["channels"] = rng.choice([["hr", "temp"], ["temp", "hr"]])
    body: dict[str, Any] = {"series": [series] * rng.randint(1, 3)}
    if rng.random() < 0.5:
        body["num_samples"] = rng.randint(1, 8)
    if rng.random() < 0.5:
        body["quantiles"] = sorted(rng.sample([0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99], 2))
    if rng.random() < 0.3:
        body["seed"] = rng.randint(0, 100)
    return body


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into a JSON value (dict keys and list indices)."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:6]):
            yield from _paths(v, (*prefix, i))


def _mutate(body: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    body = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(_paths(body))[1:])
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        roll = rng.random()
        if roll < 0.75:
            parent[path[-1]] = copy.deepcopy(rng.choice(HOSTILE))
        elif roll < 0.85 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[rng.choice(["extra", "Series", "num_samples", "quantiles"])] = rng.choice(HOSTILE)
        else:
            parent.append(copy.deepcopy(rng.choice(HOSTILE)))
    return body


RAW: list[tuple[bytes, str]] = [
    (b"", "application/json"),
    (b"{", "application/json"),
    (b"[]", "application/json"),
    (b"null", "application/json"),
    (b'{"series": [{"times": [NaN], "values": [[1, 2]], "query_times": [1]}]}',
     "application/json"),
    (b'{"series": [{"times": [Infinity], "values": [[1, 2]], "query_times": [1]}]}',
     "application/json"),
    (b"\xff\xfe\x00garbage", "application/json"),
    (b'{"series": []}', "text/plain"),
    (b'{"series": [' + b"[" * 5000 + b"]" * 5000 + b"]}", "application/json"),
]


def _finite(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-finite literal {name} in a 200 answer")

    return json.loads(text, parse_constant=refuse)


def _check_finite(value: Any, where: str = "") -> None:
    """No null and no non-finite float anywhere in the numeric parts of an answer."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k not in ("id", "query_times"):
                _check_finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")
    else:
        assert value is not None, f"null at {where}"
        if isinstance(value, float):
            assert math.isfinite(value), f"{value} at {where}"


@pytest.fixture(scope="module")
def fuzz_client(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from service.config import Settings

    settings = Settings(
        tracking_uri=registry.tracking_uri,
        model_uri="models:/latent-ode-test@champion",
        model_cache_dir=tmp_path_factory.mktemp("cache"),
        torch_threads=0,
        max_points_per_series=40,
        max_series_per_request=4,
        max_query_times_per_series=60,
        max_num_samples=8,
        default_num_samples=4,
        max_body_bytes=64 * 1024,
        max_encoder_steps=2000,
        max_request_work=2000,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_fuzzed_requests_never_get_a_5xx_or_a_non_finite_number(fuzz_client: TestClient) -> None:
    rng = random.Random(SEED)
    seen: dict[int, int] = {}
    send: Callable[..., Any] = fuzz_client.post
    for n in range(REQUESTS):
        if rng.random() < 0.05:
            content, content_type = rng.choice(RAW)
            response = send("/v1/predict", content=content,
                            headers={"Content-Type": content_type})
            sent: Any = content[:200]
        else:
            sent = _valid(rng) if rng.random() < 0.15 else _mutate(_valid(rng), rng)
            response = send("/v1/predict", json=sent)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        context = f"request {n}: {str(sent)[:600]} -> {response.status_code} {response.text[:600]}"
        assert response.status_code < 500, context
        if response.status_code == 200:
            _check_finite(_finite(response.text))
        else:
            detail = response.json().get("detail")
            assert isinstance(detail, str) and detail, context
    # The fuzz reached both answers and refusals, or it tested little.
    assert seen.get(200, 0) >= 100 and seen.get(422, 0) >= 500, seen


ROUTES: list[tuple[str, str]] = [
    ("GET", "/livez"), ("GET", "/readyz"), ("GET", "/v1/model"), ("GET", "/metrics"),
    ("GET", "/openapi.json"), ("POST", "/v1/admin/reload"), ("GET", "/v1/predict"),
    ("DELETE", "/v1/model"), ("GET", "/nowhere"), ("PATCH", "/livez"), ("FOO", "/v1/predict"),
]


def _other_request(rng: random.Random) -> tuple[str, str, dict[str, Any]]:
    """Any route but a predict body: methods, admin keys and bodies, unknown paths."""
    method, path = rng.choice(ROUTES)
    kwargs: dict[str, Any] = {}
    if path == "/v1/admin/reload":
        kwargs["headers"] = {"X-API-Key": rng.choice(["wrong", "", "x" * 500, ADMIN_KEY])}
        kwargs["json"] = rng.choice([None, {}, {"version": "1"}, {"version": "99"},
                                     {"version": rng.choice(HOSTILE)}, rng.choice(HOSTILE)])
    elif rng.random() < 0.3:
        path += rng.choice(["?x=1", "/extra", "%00", "?" + "a" * 2000])
    return method, path, kwargs


@pytest.mark.integration
def test_fuzz_against_a_real_uvicorn_process_across_routes(registry: Any, tmp_path: Path) -> None:
    """The same fuzz through uvicorn's HTTP parser and every route, raw bodies included."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                       os.environ.get("PYTHONPATH", "")]),
        "LATENT_ODE_TRACKING_URI": registry.tracking_uri,
        "LATENT_ODE_MODEL_URI": "models:/latent-ode-test@champion",
        "LATENT_ODE_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "LATENT_ODE_ADMIN_KEY": ADMIN_KEY,
        "LATENT_ODE_MAX_NUM_SAMPLES": "8",
        "LATENT_ODE_DEFAULT_NUM_SAMPLES": "4",
        "LATENT_ODE_MAX_BODY_BYTES": str(64 * 1024),
        "LATENT_ODE_MAX_QUERY_TIMES_PER_SERIES": "60",
        "LATENT_ODE_MAX_REQUEST_WORK": "2000",
    }
    code = f"from service.server import run; run('127.0.0.1', {port})"
    log = tmp_path / "service.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    rng = random.Random(SEED + 1)
    seen: dict[int, int] = {}
    try:
        wait_for_http(f"{base}/readyz", timeout=120, proc=proc)
        with httpx.Client(base_url=base, timeout=60) as client:
            for n in range(UVICORN_REQUESTS):
                roll = rng.random()
                if roll < 0.2:
                    method, path, kwargs = _other_request(rng)
                    sent: Any = (method, path, kwargs)
                    response = client.request(method, path, **kwargs)
                elif roll < 0.25:
                    content, content_type = rng.choice(RAW)
                    sent = content[:200]
                    response = client.post("/v1/predict", content=content,
                                           headers={"Content-Type": content_type})
                else:
                    sent = _valid(rng) if rng.random() < 0.15 else _mutate(_valid(rng), rng)
                    response = client.post("/v1/predict", json=sent)
                seen[response.status_code] = seen.get(response.status_code, 0) + 1
                context = (f"request {n}: {str(sent)[:600]} -> {response.status_code} "
                           f"{response.text[:600]}")
                assert response.status_code < 500, context
                if response.status_code == 200:
                    if "json" in response.headers.get("content-type", ""):
                        _finite(response.text)  # no NaN/Infinity literal in any JSON answer
                else:
                    detail = response.json().get("detail")
                    assert isinstance(detail, str) and detail, context
    finally:
        stop_process(proc)
    assert "Traceback" not in log.read_text(errors="replace"), log.read_text()[-3000:]
    assert seen.get(200, 0) >= 100 and seen.get(422, 0) >= 200, seen
