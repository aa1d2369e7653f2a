"""Every bad input gets its 4xx and a `detail` that names the field, the value and the fix."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app

OK = {"times": [0, 1, 2], "values": [[70, 37], [71, None], [None, 37.2]], "query_times": [1.5]}


def S(**changes: Any) -> dict[str, Any]:
    """The valid series OK with some fields changed."""
    return {**OK, **changes}


@pytest.fixture(scope="module")
def small(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A client with tiny limits, so that each limit is easy to cross."""
    from service.config import Settings

    settings = Settings(
        tracking_uri=registry.tracking_uri,
        model_uri="models:/latent-ode-test@champion",
        model_cache_dir=tmp_path_factory.mktemp("cache"),
        torch_threads=0,
        max_points_per_series=5,
        max_series_per_request=2,
        max_query_times_per_series=3,
        max_body_bytes=4096,
    )
    with TestClient(create_app(settings)) as client:
        yield client


BAD_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "unsorted times": (
        {"series": [S(times=[0, 2, 1])]},
        "series[0]: `times` must be strictly increasing; got 1.0 after 2.0 at index 2. Sort the "
        "observations and merge duplicate times.",
    ),
    "duplicate times": (
        {"series": [S(times=[0, 1, 1], id="bed-7")]},
        "series[0] ('bed-7'): `times` must be strictly increasing; got 1.0 a duplicate of 1.0 at "
        "index 2. Sort the observations and merge duplicate times.",
    ),
    "wrong number of channels": (
        {"series": [S(values=[[70, 37], [71], [None, 37.2]], id="bed-7")]},
        "series[0] ('bed-7'): `values[1]` has 1 columns; expected 2, one per entry of the model's channels "
        "(see GET /v1/model), with null where not observed.",
    ),
    "rows do not follow times": (
        {"series": [S(values=[[70, 37], [71, 1]])]},
        "series[0]: `values` has 2 rows but `times` has 3; send one row per observation time.",
    ),
    "unknown channel": (
        {"series": [S(channels=["hr", "spo2"])]},
        "series[0]: `channels[1]` is 'spo2', which is not a channel of this model; the model's "
        "channels are ['hr', 'temp'].",
    ),
    "repeated channel": (
        {"series": [S(channels=["hr", "hr"])]},
        "series[0]: `channels[1]` repeats 'hr'; name each channel once.",
    ),
    "empty channels": (
        {"series": [S(channels=[])]},
        "series[0]: `channels` is empty; name the columns of `values`, or leave `channels` out to "
        "use the model's channels ['hr', 'temp'].",
    ),
    "no series": ({"series": []}, "`series` is empty; send at least one series."),
    "empty series": (
        {"series": [OK, S(times=[], values=[])]},
        "series[1]: `times` is empty; send at least one observation.",
    ),
    "no query times": (
        {"series": [S(query_times=[])]},
        "series[0]: `query_times` is empty; send at least one query time.",
    ),
    "all-missing row": (
        {"series": [S(values=[[70, 37], [None, None], [None, 37.2]])]},
        "series[0]: `values` has no observed channel at time 1.0 (row 1); drop rows where every "
        "channel is missing.",
    ),
    "too many points": (
        {"series": [S(times=[0, 1, 2, 3, 4, 5], values=[[1, 1]] * 6)]},
        "series[0]: `times` has 6 observations; the limit is 5 (LATENT_ODE_MAX_POINTS_PER_SERIES); "
        "send fewer, or split the series into consecutive windows of at most 5 observations.",
    ),
    "too many series": (
        {"series": [OK, OK, OK]},
        "`series` has 3 series; the limit is 2 (LATENT_ODE_MAX_SERIES_PER_REQUEST); split the "
        "request.",
    ),
    "too many query times": (
        {"series": [S(query_times=[1, 2, 3, 4])]},
        "series[0]: `query_times` has 4 query times; the limit is 3 "
        "(LATENT_ODE_MAX_QUERY_TIMES_PER_SERIES); split the queries over requests.",
    ),
    "query absurdly far ahead": (
        {"series": [S(query_times=[1, 100])]},
        "series[0]: `query_times[1]` is 100.0, 98 after the last observation; queries may lie at "
        "most 20 outside the observed window [0.0, 2.0], the largest of LATENT_ODE_MAX_HORIZON_"
        "SPAN_MULTIPLE = 10 x span 2, LATENT_ODE_MAX_HORIZON_TRAINED_SPANS = 1 x the model's "
        "trained span 9.945, and LATENT_ODE_MAX_HORIZON_ABS = 0; ask for nearer times.",
    ),
    "query absurdly far back": (
        {"series": [S(query_times=[-50])]},
        "series[0]: `query_times[0]` is -50.0, 50 before the first observation; queries may lie "
        "at most 20 outside the observed window [0.0, 2.0], the largest of LATENT_ODE_MAX_HORIZON_"
        "SPAN_MULTIPLE = 10 x span 2, LATENT_ODE_MAX_HORIZON_TRAINED_SPANS = 1 x the model's "
        "trained span 9.945, and LATENT_ODE_MAX_HORIZON_ABS = 0; ask for nearer times.",
    ),
    "observation gap too long for the encoder": (
        {"series": [S(times=[0, 1, 1e6], query_times=[1])]},
        "series[0]: reading this series takes the encoder 5027657 steps (3 observations plus "
        "5027654 steps of at most 0.1989 time units through the gaps between them, over 1e+06 time "
        "units); the limit is 20000 (LATENT_ODE_MAX_ENCODER_STEPS). Split the series into "
        "consecutive windows that each need fewer steps (fewer observations, a shorter span: the "
        "model was trained on spans of about 9.945).",
    ),
    "not an ISO-8601 time": (
        {"series": [S(times=["2024-05-01T00:00:00Z", "yesterday", "2024-05-03"])]},
        "series[0]: `times`: time at index 1 must be an ISO-8601 datetime such as "
        "'2024-05-01T13:45:00Z' or a date such as '2024-05-01', between 1677-09-22 and "
        "2262-04-10; got 'yesterday'.",
    ),
    "numbers mixed with ISO-8601": (
        {"series": [S(times=["2024-05-01T00:00:00Z", 1, 2])]},
        "series[0]: `times` mixes numbers and ISO-8601 strings (index 0 is '2024-05-01T00:00:00Z', "
        "index 1 is 1.0); use one kind for all times of a series.",
    ),
    "boolean value": (
        {"series": [S(values=[[True, 37], [71, None], [None, 37.2]])]},
        "`series[0].values[0][0]`: must be a number, or null where the channel was not observed; "
        "got true.",
    ),
    "string value": (
        {"series": [S(values=[["70", 37], [71, None], [None, 37.2]])]},
        "`series[0].values[0][0]`: must be a number, or null where the channel was not observed; "
        "got '70'.",
    ),
    "object as time": (
        {"series": [S(times=[{"a": 1}, 1, 2])]},
        "`series[0].times[0]`: must be a number in the model's time unit or an ISO-8601 string "
        "such as '2024-05-01T12:00:00Z'; got {\"a\": 1}.",
    ),
    "quantile 0": (
        {"series": [OK], "quantiles": [0.0]},
        "`quantiles[0]`: Input should be greater than or equal to 0.000001; got 0.0.",
    ),
    "quantile above 1": (
        {"series": [OK], "quantiles": [0.5, 1.5]},
        "`quantiles[1]`: Input should be less than or equal to 0.999999; got 1.5.",
    ),
    "num_samples 0": (
        {"series": [OK], "num_samples": 0},
        "`num_samples`: Input should be greater than or equal to 1; got 0.",
    ),
    "num_samples above the maximum": (
        {"series": [OK], "num_samples": 100000},
        "`num_samples` is 100000; the maximum is 256 (LATENT_ODE_MAX_NUM_SAMPLES); ask for fewer "
        "samples.",
    ),
    "unknown field": ({"series": [OK], "foo": 1}, "`foo` is not a known field; remove it."),
    "missing fields": (
        {"series": [{"times": [0]}]},
        "`series[0].values` is required but missing; `series[0].query_times` is required but "
        "missing.",
    ),
    "series not a list": (
        {"series": {"a": 1}}, "`series`: Input should be a valid list; got {\"a\": 1}."
    ),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_body_gets_422_with_detail(small: TestClient, case: str) -> None:
    body, detail = BAD_BODIES[case]
    response = small.post("/v1/predict", json=body)
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": detail}


RAW_BODIES: dict[str, tuple[str, str]] = {
    "NaN literal": (
        '{"series": [{"times": [0, 1], "values": [[NaN, 1], [1, 1]], "query_times": [1]}]}',
        "`series[0].values[0][0]`: must be a finite number; send null (not NaN/Infinity) for a "
        "value not observed; got NaN.",
    ),
    "Infinity literal": (
        '{"series": [{"times": [0, Infinity], "values": [[1, 1], [1, 1]], "query_times": [1]}]}',
        "`series[0].times[1]`: must be a finite number (JSON NaN/Infinity are not times); got "
        "Infinity.",
    ),
    "malformed JSON": (
        '{"series": [',
        "the request body is not valid JSON (Expecting value at character 12); send a JSON "
        "object like the example in the OpenAPI docs (/docs).",
    ),
    "a JSON array": (
        "[1, 2]",
        "`body`: Input should be a valid dictionary or object to extract fields from; got [1, 2].",
    ),
}


@pytest.mark.parametrize("case", list(RAW_BODIES))
def test_bad_raw_body_gets_422_with_detail(small: TestClient, case: str) -> None:
    raw, detail = RAW_BODIES[case]
    response = small.post(
        "/v1/predict", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": detail}


def test_wrong_content_type(small: TestClient) -> None:
    response = small.post(
        "/v1/predict", content=json.dumps({"series": [OK]}), headers={"content-type": "text/plain"}
    )
    # 415, not 422 (issue 17): the body's type, not its content, is what is wrong.
    assert response.status_code == 415
    assert response.json() == {
        "detail": "Content-Type 'text/plain' is not supported; send application/json, text/csv "
        "or application/vnd.apache.parquet (application/x-parquet)."
    }


def test_missing_body(small: TestClient) -> None:
    response = small.post("/v1/predict")
    assert (response.status_code, response.json()) == (
        422, {"detail": "`body` is required but missing."}
    )


def test_oversized_body_with_content_length_is_413(small: TestClient) -> None:
    response = small.post(
        "/v1/predict", content=b"x" * 5000, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {
        "detail": "the request body is 5000 bytes; the limit is 4096 bytes "
        "(LATENT_ODE_MAX_BODY_BYTES); send fewer series or points per request."
    }


def test_oversized_chunked_body_is_413(small: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    response = small.post(
        "/v1/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json() == {
        "detail": "the request body is more than 4096 bytes; the limit is 4096 bytes "
        "(LATENT_ODE_MAX_BODY_BYTES); send fewer series or points per request."
    }


def test_a_body_under_the_limit_still_works_when_chunked(small: TestClient) -> None:
    raw = json.dumps({"series": [OK]}).encode()

    def chunks() -> Iterator[bytes]:
        yield raw[:10]
        yield raw[10:]

    response = small.post(
        "/v1/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text


def test_unknown_route_and_method(small: TestClient) -> None:
    assert small.get("/nope").json() == {"detail": "no route /nope; see /docs for the API"}
    response = small.get("/v1/predict")
    assert (response.status_code, response.json()) == (
        405, {"detail": "GET is not allowed on /v1/predict; see /docs for the API"}
    )


def test_unexpected_error_is_a_generic_500_with_traceback_in_log(
    small: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = small.app.state.service.store  # type: ignore[attr-defined]

    def broken() -> None:
        raise RuntimeError("kaboom inside the store")

    monkeypatch.setattr(store, "require", broken)
    client = TestClient(small.app, raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="service.errors"):
        response = client.post("/v1/predict", json={"series": [OK]})
    assert response.status_code == 500
    assert response.json() == {
        "detail": "internal server error; the traceback is in the service log"
    }
    assert "kaboom" not in response.text
    assert any("kaboom inside the store" in (r.exc_text or "") for r in caplog.records)
