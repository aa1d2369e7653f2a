"""POST /v1/predict at the edges of what it accepts (issue 16 items 2, 3, 5, 12, 13): no 500 and
no non-finite number for inputs at or past the limits, a 422 whose detail says what and how to
fix it, and a request's total work bounded by a budget."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app

OK = {"times": [0, 1, 2], "values": [[70, 37], [71, None], [None, 37.2]], "query_times": [1.5]}
ISO = ["2024-05-01T00:00:00Z", "2024-05-01T01:00:00Z", "2024-05-01T02:00:00Z"]


def S(**changes: Any) -> dict[str, Any]:
    """The valid series OK with some fields changed."""
    return {**OK, **changes}


def _finite_json(text: str) -> Any:
    """Parse a body, failing on NaN/Infinity literals and on null where a number belongs."""

    def refuse(name: str) -> None:
        raise AssertionError(f"non-finite literal {name} in a 200 answer")

    return json.loads(text, parse_constant=refuse)


def _numbers_are_finite(answer: dict[str, Any]) -> None:
    for series in answer["series"]:
        rows = series["mean"] + series["std"]
        rows += [row for q in series["quantiles"] for row in q["values"]]
        for row in rows:
            assert all(isinstance(v, float) and math.isfinite(v) for v in row), row


@pytest.fixture(scope="module")
def budget(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A client with small per-request budgets (work 1000, encoder steps 30, answer 400)."""
    from service.config import Settings

    settings = Settings(
        tracking_uri=registry.tracking_uri,
        model_uri="models:/latent-ode-test@champion",
        model_cache_dir=tmp_path_factory.mktemp("cache"),
        torch_threads=0,
        max_request_work=1000,
        max_request_encoder_steps=30,
        max_answer_values=400,
    )
    with TestClient(create_app(settings)) as client:
        yield client


# ----------------------------------------------------------------------------- item 2: no 500
@pytest.mark.parametrize(
    ("series", "detail"),
    [
        (
            S(times=["0001-01-01T00:00:00Z", *ISO[1:]]),
            "series[0]: `times`: time at index 0 must be an ISO-8601 datetime such as "
            "'2024-05-01T13:45:00Z' or a date such as '2024-05-01', between 1677-09-22 and "
            "2262-04-10; got '0001-01-01T00:00:00Z'.",
        ),
        (
            S(times=ISO, query_times=["2300-01-01T00:00:00Z"]),
            "series[0]: `query_times`: time at index 0 must be an ISO-8601 datetime such as "
            "'2024-05-01T13:45:00Z' or a date such as '2024-05-01', between 1677-09-22 and "
            "2262-04-10; got '2300-01-01T00:00:00Z'.",
        ),
        (
            S(times=[0, 1, 1e308]),
            "series[0]: reading this series takes the encoder inf steps (3 observations "
            "plus inf steps of at most 0.1989 time units through the gaps between them, "
            "over 1e+308 time units); the limit is 20000 (LATENT_ODE_MAX_ENCODER_STEPS). Split "
            "the series into consecutive windows that each need fewer steps (fewer observations, "
            "a shorter span: the model was trained on spans of about 9.945).",
        ),
        (
            S(times=[-1e308, 1, 2], query_times=[1.5]),
            "series[0]: reading this series takes the encoder inf steps (3 observations plus inf "
            "steps of at most 0.1989 time units through the gaps between them, over 1e+308 time "
            "units); the limit is 20000 (LATENT_ODE_MAX_ENCODER_STEPS). Split the series into "
            "consecutive windows that each need fewer steps (fewer observations, a shorter span: "
            "the model was trained on spans of about 9.945).",
        ),
    ],
    ids=["year 1", "year 2300", "time 1e308", "overflowing span"],
)
def test_times_outside_any_range_are_422_not_500(
    client: TestClient, series: dict[str, Any], detail: str
) -> None:
    response = client.post("/v1/predict", json={"series": [series]})
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": detail}


@pytest.mark.parametrize("field", ["times", "values", "query_times"])
def test_a_401_digit_integer_is_422_naming_the_field(client: TestClient, field: str) -> None:
    huge = "1" + "0" * 400
    series = {
        "times": f"[0, 1, {huge}]" if field == "times" else "[0, 1, 2]",
        "values": f"[[{huge}, 37], [71, null], [null, 37.2]]" if field == "values"
        else "[[70, 37], [71, null], [null, 37.2]]",
        "query_times": f"[{huge}]" if field == "query_times" else "[1.5]",
    }
    body = '{"series": [{' + ", ".join(f'"{k}": {v}' for k, v in series.items()) + "}]}"
    response = client.post(
        "/v1/predict", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    where = {"times": "times[2]", "values": "values[0][0]", "query_times": "query_times[0]"}
    what = "value" if field == "values" else "time"
    assert response.json()["detail"].startswith(
        f"`series[0].{where[field]}`: must be a number of at most 1.798e+308 in magnitude; got "
        f"an integer of 401 digits, which is not a usable {what}"
    ), response.json()


# ------------------------------------------------------------ item 3: no non-finite number in a 200
@pytest.mark.parametrize("level", [1e-300, 0.999999999999, 1e-7])
def test_quantile_levels_without_a_finite_quantile_are_refused(
    client: TestClient, level: float
) -> None:
    response = client.post("/v1/predict", json={"series": [OK], "quantiles": [0.5, level]})
    assert response.status_code == 422, response.text
    bound = "greater than or equal to 0.000001" if level < 0.5 else "less than or equal to 0.999999"
    assert response.json() == {
        "detail": f"`quantiles[1]`: Input should be {bound}; got {level!r}."
    }


def test_the_most_extreme_levels_accepted_have_finite_quantiles(client: TestClient) -> None:
    body = {"series": [S(query_times=[-5.0, 1.5, 9.0])], "quantiles": [1e-6, 0.5, 1 - 1e-6]}
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    answer = _finite_json(response.text)
    _numbers_are_finite(answer)
    low, mid, high = (q["values"] for q in answer["series"][0]["quantiles"])
    for lo, md, hi in zip(low, mid, high, strict=True):
        assert all(a < b < c for a, b, c in zip(lo, md, hi, strict=True))


# ------------------------------------------------------------------ item 12: accepted silently
@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (
            {"series": [OK], "num_samples": True},
            "`num_samples`: Input should be a valid integer; got true.",
        ),
        (
            {"series": [OK], "quantiles": ["0.5"]},
            "`quantiles[0]`: Input should be a valid number; got '0.5'.",
        ),
        ({"series": [OK], "seed": True}, "`seed`: Input should be a valid integer; got true."),
        (
            {"series": [OK], "num_samples": 1e308},
            "`num_samples`: Input should be a valid integer; got 1e+308.",
        ),
    ],
    ids=["num_samples true", "quantile as a string", "seed true", "num_samples 1e308"],
)
def test_the_schema_is_strict_for_sampling_fields(
    client: TestClient, body: dict[str, Any], detail: str
) -> None:
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": detail}


@pytest.mark.parametrize("word", ["now", "today", "20240501"])
def test_only_iso_8601_dates_and_datetimes_are_times(client: TestClient, word: str) -> None:
    response = client.post("/v1/predict", json={"series": [S(times=[ISO[0], word, ISO[2]])]})
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": (
        "series[0]: `times`: time at index 1 must be an ISO-8601 datetime such as "
        "'2024-05-01T13:45:00Z' or a date such as '2024-05-01', between 1677-09-22 and "
        f"2262-04-10; got {word!r}."
    )}


def test_an_observation_far_outside_the_models_range_is_refused(
    client: TestClient, registry: Any
) -> None:
    values = [[70, 37], [1e308, None], [None, 37.2]]
    response = client.post("/v1/predict", json={"series": [S(values=values, id="bed-7")]})
    assert response.status_code == 422, response.text
    norm = registry.forecaster.normaliser
    loc, scale = norm.loc[0], norm.scale[0]
    assert response.json() == {"detail": (
        f"series[0] ('bed-7'): `values[1]` has 1e+308 for channel 'hr', which is "
        f"{abs((1e308 - loc) / scale):.3g} of the model's scales ({scale:g}) from its location "
        f"({loc:g}); values of this channel must lie in [{loc - 1e6 * scale:.6g}, "
        f"{loc + 1e6 * scale:.6g}] (LATENT_ODE_MAX_ABS_NORMALISED_VALUE = 1e+06). Check the "
        "value and its unit."
    )}


def test_iso_times_are_echoed_as_sent_in_errors(client: TestClient) -> None:
    unsorted = S(times=[ISO[0], ISO[2], ISO[1]])
    response = client.post("/v1/predict", json={"series": [unsorted]})
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": (
        "series[0]: `times` must be strictly increasing; got '2024-05-01T01:00:00Z' after "
        "'2024-05-01T02:00:00Z' at index 2. Sort the observations and merge duplicate times."
    )}
    far = S(times=ISO, query_times=["2024-05-03T00:00:00Z"])
    response = client.post("/v1/predict", json={"series": [far]})
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": (
        "series[0]: `query_times[0]` is '2024-05-03T00:00:00Z', 46 after the last observation; "
        "queries may lie at most 20 outside the observed window ['2024-05-01T00:00:00Z', "
        "'2024-05-01T02:00:00Z'], the largest of LATENT_ODE_MAX_HORIZON_SPAN_MULTIPLE = 10 x "
        "span 2, LATENT_ODE_MAX_HORIZON_TRAINED_SPANS = 1 x the model's trained span 9.945, and "
        "LATENT_ODE_MAX_HORIZON_ABS = 0; ask for nearer times."
    )}


# ----------------------------------------------------------- item 13: a single observation
def test_a_series_with_one_observation_is_forecast_by_default(client: TestClient) -> None:
    series = {"times": [5.0], "values": [[72.0, None]], "query_times": [5.0, 9.5, 0.5]}
    response = client.post("/v1/predict", json={"series": [series]})
    assert response.status_code == 200, response.text
    answer = _finite_json(response.text)
    _numbers_are_finite(answer)
    assert answer["series"][0]["mode"] == ["interpolation", "extrapolation", "backcast"]


def test_one_observation_is_still_bounded_by_the_trained_span(client: TestClient) -> None:
    series = {"times": [5.0], "values": [[72.0, None]], "query_times": [16.0]}
    response = client.post("/v1/predict", json={"series": [series]})
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(
        "series[0]: `query_times[0]` is 16.0, 11 after the last observation; queries may lie at "
        "most 9.945 outside the observed window [5.0, 5.0]"
    )


# ------------------------------------------------------------------ item 5: the work budget
def test_work_over_the_budget_is_refused_with_how_to_split(budget: TestClient) -> None:
    body = {"series": [S(query_times=[0.5] * 20), S(query_times=[1.0] * 20)], "num_samples": 32}
    response = budget.post("/v1/predict", json=body)
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": (
        "this request asks for 40 query times x 32 samples = 1280 units of work; the budget is "
        "1000 per request (LATENT_ODE_MAX_REQUEST_WORK). Split it into requests of at most 31 "
        "query times in all at 32 samples, or ask for fewer samples."
    )}
    half = {**body, "series": body["series"][:1]}
    assert budget.post("/v1/predict", json=half).status_code == 200


def test_encoder_steps_over_the_request_budget_are_refused(budget: TestClient) -> None:
    # 3 observations 1 apart: 3 + 2 x ceil(1 / 0.1989) = 15 steps each; three series need 45.
    series = S(times=[0, 1, 2])
    response = budget.post("/v1/predict", json={"series": [series] * 3, "num_samples": 1})
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": (
        "reading this request's 3 series takes the encoder 45 steps; the budget is 30 per "
        "request (LATENT_ODE_MAX_REQUEST_ENCODER_STEPS). Split the series over several requests "
        "(each series' steps: one per observation plus one per encoder step of its gaps)."
    )}
    assert budget.post(
        "/v1/predict", json={"series": [series] * 2, "num_samples": 1}
    ).status_code == 200


def test_an_answer_over_the_size_cap_is_refused(budget: TestClient) -> None:
    body = {"series": [S(query_times=[0.5] * 20)], "num_samples": 1, "quantiles": [0.1, 0.5, 0.9]}
    response = budget.post("/v1/predict", json=body)  # 20 x 2 x (2 + 3) = 200 numbers: fine
    assert response.status_code == 200, response.text
    body["quantiles"] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    response = budget.post("/v1/predict", json=body)
    assert response.status_code == 422, response.text
    assert response.json() == {"detail": (
        "the answer to this request would hold 440 numbers (20 query times x 2 channels x (mean, "
        "std and 9 quantile levels)); the limit is 400 (LATENT_ODE_MAX_ANSWER_VALUES). Split it "
        "into requests of at most 18 query times in all, or ask for fewer quantiles."
    )}


def test_a_large_answer_is_built_off_the_event_loop(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over _INLINE_NUMBERS, the answer is built and serialised in a worker thread."""
    import threading

    import service.routes as routes
    from service.schemas import PredictResponse

    threads: list[str] = []
    dump = PredictResponse.model_dump_json

    def spy(self: PredictResponse, **kwargs: Any) -> str:
        threads.append(threading.current_thread().name)
        return dump(self, **kwargs)

    monkeypatch.setattr(PredictResponse, "model_dump_json", spy)
    monkeypatch.setattr(routes, "_INLINE_NUMBERS", 50)
    small = {"series": [S(query_times=[0.5] * 5)], "num_samples": 1}  # 5 x 2 x 5 = 50
    large = {"series": [S(query_times=[0.5] * 6)], "num_samples": 1}  # 60
    assert client.post("/v1/predict", json=small).status_code == 200
    assert client.post("/v1/predict", json=large).status_code == 200
    loop_thread, worker = threads
    assert worker != loop_thread


def test_the_most_points_allowed_can_be_read_by_default(client: TestClient) -> None:
    """10,000 observations (LATENT_ODE_MAX_POINTS_PER_SERIES) used to be told to "send a shorter
    window" by the encoder-step limit, which counted one step per observation against 10,000."""
    n = 10_000
    series = {"times": [k / 1000 for k in range(n)], "values": [[70.0, None]] * n,
              "query_times": [10.5]}
    response = client.post("/v1/predict", json={"series": [series], "num_samples": 2})
    assert response.status_code == 200, response.text[:500]
    _numbers_are_finite(_finite_json(response.text))
