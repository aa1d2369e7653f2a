"""POST /v1/predict against a real Forecaster: answers equal the library's, in the user's units."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from formats.longformat import datetimes_to_float
from latent_ode import Series, SolverConfig
from service.app import create_app
from tests.service.service_helpers import CHANNELS, make_series, register_version, series_json

# Tolerances, in one place. Same batch: the service runs exactly the library's computation.
# Across batch compositions the library promises answers within solver tolerance (float32
# arithmetic differs in the last bits with the batch shape), so compare at the solver's rtol/atol.
TOL = {
    "same_batch": {"rtol": 1e-6, "atol": 1e-6},
    # One series next to others whose solve failed: only float32 rounding of the batched products
    # differs (tests/latent_ode/conftest.py's float32 entry).
    "beside_a_failure": {"rtol": 1e-5, "atol": 1e-5},
    "across_batches": {"rtol": 1e-3, "atol": 1e-4},
}
DEFAULT_SOLVER = SolverConfig(rtol=1e-3, atol=1e-4, max_steps=2000)


def _library(forecaster: Any, series: list[Series], queries: list[np.ndarray], *,
             quantiles: tuple[float, ...] = (0.05, 0.5, 0.95), num_samples: int = 32,
             seed: int = 0) -> list[Any]:
    return forecaster.predict(series, queries, num_samples=num_samples, quantiles=quantiles,
                              seed=seed, solver=DEFAULT_SOLVER)


def _assert_matches(answer: dict[str, Any], expected: Any, tol: dict[str, float]) -> None:
    np.testing.assert_allclose(np.array(answer["mean"]), expected.mean, **tol)
    np.testing.assert_allclose(np.array(answer["std"]), expected.std, **tol)
    for q in answer["quantiles"]:
        np.testing.assert_allclose(np.array(q["values"]), expected.quantiles[q["quantile"]], **tol)
    assert answer["mode"] == expected.mode


def test_answers_equal_library_predict(client: TestClient, registry: Any) -> None:
    series = make_series(3, seed=5)
    queries = [np.array([9.5, -1.0, 3.25, 3.25, 14.0]), np.array([0.5]), np.linspace(-3, 15, 7)]
    body = {"series": [series_json(s, q) for s, q in zip(series, queries, strict=True)]}
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    out = response.json()
    assert out["model"] == {"name": "latent-ode-test", "version": "1"}
    assert out["channels"] == CHANNELS
    assert out["time_unit"] == "hours"
    assert out["num_samples"] == 32
    expected = _library(registry.forecaster, series, queries)
    for answer, s, q, exp in zip(out["series"], series, queries, expected, strict=True):
        assert answer["id"] == s.id
        assert answer["query_times"] == [float(x) for x in q]  # the order asked, duplicates kept
        _assert_matches(answer, exp, TOL["same_batch"])
        assert answer["solver"]["method"] == "dopri5"
        assert answer["solver"]["rtol"] == pytest.approx(1e-3)
        assert answer["solver"]["atol"] == pytest.approx(1e-4)
        assert answer["solver"]["nfe"] > 0


def test_modes_duplicates_and_order(client: TestClient) -> None:
    (s,) = make_series(1, seed=2)
    first, last = float(s.times[0]), float(s.times[-1])
    queries = [last + 1.0, first - 0.5, (first + last) / 2, first, last, first - 0.5]
    response = client.post("/v1/predict", json={"series": [series_json(s, queries)]})
    assert response.status_code == 200, response.text
    answer = response.json()["series"][0]
    assert answer["mode"] == [
        "extrapolation", "backcast", "interpolation", "interpolation", "interpolation", "backcast",
    ]
    assert answer["mean"][1] == answer["mean"][5]  # a duplicate query gets the same answer


def test_quantiles_in_order_asked_and_monotone(client: TestClient) -> None:
    (s,) = make_series(1, seed=3)
    levels = [0.9, 0.1, 0.5, 0.25]
    body = {"series": [series_json(s, np.linspace(-1, 12, 9))], "quantiles": levels}
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()["series"][0]
    assert [q["quantile"] for q in answer["quantiles"]] == levels
    by_level = {q["quantile"]: np.array(q["values"]) for q in answer["quantiles"]}
    ordered = [by_level[lv] for lv in sorted(levels)]
    for lower, upper in zip(ordered, ordered[1:], strict=False):
        assert (lower <= upper + 1e-9).all()
    mean = np.array(answer["mean"])
    assert (by_level[0.1] < mean).all() and (mean < by_level[0.9]).all()


def test_answers_are_in_user_units(client: TestClient) -> None:
    """hr lives around 70 and temp around 37: the normalised scale (around 0) must not leak."""
    (s,) = make_series(1, seed=4)
    response = client.post("/v1/predict", json={"series": [series_json(s, [2.0, 5.0, 8.0])]})
    mean = np.array(response.json()["series"][0]["mean"])
    std = np.array(response.json()["series"][0]["std"])
    assert np.all(np.abs(mean[:, 0] - 70.0) < 20.0), mean
    assert np.all(np.abs(mean[:, 1] - 37.0) < 2.0), mean
    assert np.all(std[:, 0] > std[:, 1])  # hr varies ~20x more than temp in the training data


def test_channels_subset_in_any_order(client: TestClient, registry: Any) -> None:
    times = [0.0, 1.5, 4.0]
    only_temp = {"times": times, "values": [[37.1], [37.3], [36.9]], "channels": ["temp"],
                 "query_times": [2.0, 6.0]}
    reversed_ = {"times": times, "values": [[37.1, 71.0], [None, 72.0], [36.9, None]],
                 "channels": ["temp", "hr"], "query_times": [2.0, 6.0]}
    response = client.post("/v1/predict", json={"series": [only_temp, reversed_]})
    assert response.status_code == 200, response.text
    nan = np.nan
    expected = _library(
        registry.forecaster,
        [Series(times=np.array(times), values=np.array([[nan, 37.1], [nan, 37.3], [nan, 36.9]])),
         Series(times=np.array(times), values=np.array([[71.0, 37.1], [72.0, nan], [nan, 36.9]]))],
        [np.array([2.0, 6.0])] * 2,
    )
    for answer, exp in zip(response.json()["series"], expected, strict=True):
        assert np.array(answer["mean"]).shape == (2, 2)  # always all of the model's channels
        _assert_matches(answer, exp, TOL["same_batch"])


def test_iso_times_equal_numeric_hours_since_epoch(client: TestClient) -> None:
    iso = ["2024-05-01T00:00:00Z", "2024-05-01T01:30:00Z", "2024-05-01T04:00:00+00:00"]
    offset = ["2024-05-01T02:00:00+02:00", "2024-05-01T03:30:00+02:00", "2024-05-01T04:00:00"]
    queries = ["2024-05-01T02:00:00Z", "2024-05-01T07:00:00Z"]
    values = [[70.0, 37.0], [72.0, None], [None, 37.2]]
    numeric = [float(x) for x in datetimes_to_float(iso, "hours")]
    numeric_q = [float(x) for x in datetimes_to_float(queries, "hours")]
    body = {"series": [
        {"times": iso, "values": values, "query_times": queries},
        {"times": offset, "values": values, "query_times": queries},
        {"times": numeric, "values": values, "query_times": numeric_q},
    ]}
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 200, response.text
    a, b, c = response.json()["series"]
    assert a["query_times"] == queries  # echoed as asked
    assert a["mode"] == ["interpolation", "extrapolation"]
    np.testing.assert_allclose(a["mean"], c["mean"], **TOL["same_batch"])
    np.testing.assert_allclose(b["mean"], c["mean"], **TOL["same_batch"])


def test_seed_and_num_samples(client: TestClient) -> None:
    (s,) = make_series(1, seed=6)
    series = [series_json(s, [3.0, 11.0])]
    one = client.post("/v1/predict", json={"series": series, "seed": 1, "num_samples": 8}).json()
    again = client.post("/v1/predict", json={"series": series, "seed": 1, "num_samples": 8}).json()
    other = client.post("/v1/predict", json={"series": series, "seed": 2, "num_samples": 8}).json()
    assert one["num_samples"] == 8
    assert one["series"][0]["mean"] == again["series"][0]["mean"]
    assert one["series"][0]["std"] != other["series"][0]["std"]


def _concurrent(client: TestClient, bodies: list[dict[str, Any]]) -> list[Any]:
    barrier = threading.Barrier(len(bodies))

    def send(body: dict[str, Any]) -> Any:
        barrier.wait()
        return client.post("/v1/predict", json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


def _batch_count(client: TestClient) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("latent_ode_batch_requests_count"):
            return float(line.split()[-1])
    raise AssertionError("latent_ode_batch_requests_count missing from /metrics")


def test_batching_does_not_change_answers(make_settings: Any) -> None:
    settings = make_settings(batch_max_wait_ms=200.0, batch_max_series=64)
    series = make_series(8, seed=7)
    bodies = [{"series": [series_json(s, np.linspace(-2.0, 14.0, 6) + i)]}
              for i, s in enumerate(series)]
    with TestClient(create_app(settings)) as client:
        alone = [client.post("/v1/predict", json=b).json() for b in bodies]
        before = _batch_count(client)
        together = _concurrent(client, bodies)
        calls = _batch_count(client) - before
    assert all(r.status_code == 200 for r in together), [r.text for r in together]
    assert calls < len(bodies), "the concurrent requests were not batched"
    for a, t in zip(alone, together, strict=True):
        t = t.json()
        np.testing.assert_allclose(t["series"][0]["mean"], a["series"][0]["mean"],
                                   **TOL["across_batches"])
        np.testing.assert_allclose(t["series"][0]["std"], a["series"][0]["std"],
                                   **TOL["across_batches"])


def test_solver_budget_fails_only_the_owning_request(make_settings: Any) -> None:
    """With a 4-step budget a query 990 h past the data fails, one 1 h past does not (the
    horizon limit is raised so that the far query reaches the solver)."""
    settings = make_settings(batch_max_wait_ms=200.0, solver_max_steps=4,
                             max_horizon_span_multiple=200.0)
    s0, s1 = make_series(2, seed=8)
    good = {"series": [series_json(s0, [5.0, 11.0])]}
    bad = {"series": [series_json(s1, [5.0]), series_json(s0, [1000.0])]}
    with TestClient(create_app(settings)) as client:
        alone = client.post("/v1/predict", json=good).json()
        responses = _concurrent(client, [good, bad, good])
        metrics = client.get("/metrics").text
    assert [r.status_code for r in responses] == [200, 422, 200]
    for r in (responses[0], responses[2]):
        np.testing.assert_allclose(r.json()["series"][0]["mean"], alone["series"][0]["mean"],
                                   **TOL["across_batches"])
    detail = responses[1].json()["detail"]
    assert detail.startswith("the ODE solver could not answer series[1] ('s0') within its budget "
                             "(max_steps):")
    assert "LATENT_ODE_SOLVER_MAX_STEPS" in detail
    assert "latent_ode_solver_failures_total 1.0" in metrics


@pytest.fixture(scope="module")
def loose_model(registry: Any) -> tuple[str, Any]:
    """A registered model trained, as the `periodic` demo is, at rtol 1e-2 with tsit5."""
    from latent_ode import Forecaster

    base = registry.forecaster
    config = dataclasses.replace(base.model.config,
                                 solver=SolverConfig(method="tsit5", rtol=1e-2, atol=1e-3))
    fc = Forecaster.create(config, base.normaliser, channels=base.channels,
                           time_unit=base.time_unit, seed=3)
    register_version(registry.tracking_uri, fc, registry.workdir, name="latent-ode-loose")
    return "latent-ode-loose", fc


@pytest.mark.parametrize(("overrides", "expected"), [
    ({}, ("tsit5", 1e-2, 1e-3)),
    ({"solver_rtol": 1e-4, "solver_atol": 1e-6}, ("tsit5", 1e-4, 1e-6)),
])
def test_a_model_is_served_at_its_own_solver_settings_unless_overridden(
    make_settings: Any, loose_model: tuple[str, Any], overrides: dict[str, float],
    expected: tuple[str, float, float],
) -> None:
    name, fc = loose_model
    (s,) = make_series(1, seed=4)
    queries = np.array([2.0, 9.0, 12.0])
    with TestClient(create_app(make_settings(model_uri=f"models:/{name}@champion",
                                             **overrides))) as client:
        response = client.post("/v1/predict", json={"series": [series_json(s, queries)]})
    assert response.status_code == 200, response.text
    answer = response.json()["series"][0]
    method, rtol, atol = expected
    assert (answer["solver"]["method"], answer["solver"]["rtol"], answer["solver"]["atol"]) == (
        method, pytest.approx(rtol), pytest.approx(atol))
    # The answer is the library's at those settings.
    (library,) = fc.predict([s], [queries], num_samples=32, quantiles=(0.05, 0.5, 0.95), seed=0,
                            solver=SolverConfig(method=method, rtol=rtol, atol=atol,
                                                max_steps=2000))
    _assert_matches(answer, library, TOL["same_batch"])


def test_a_failing_request_shares_one_solve_with_the_good_one(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two requests in one micro-batch, one with a series past the step budget: the batch is
    solved once; the good request gets its alone-answer, the failing one its 422."""
    import latent_ode.model

    # max_series=2: the batch closes as soon as both one-series requests are in it.
    settings = make_settings(batch_max_wait_ms=2000.0, batch_max_series=2, solver_max_steps=4,
                             max_horizon_span_multiple=200.0)
    s0, s1 = make_series(2, seed=9)
    good = {"series": [series_json(s0, [5.0, 11.0, -0.5])]}
    bad = {"series": [series_json(s1, [1000.0])]}
    solved: list[int] = []
    real_solve = latent_ode.model.solve

    def counting_solve(*args: Any, **kwargs: Any) -> Any:
        solved.append(args[1].shape[0])  # rows solved: samples x series
        return real_solve(*args, **kwargs)

    monkeypatch.setattr(latent_ode.model, "solve", counting_solve)
    with TestClient(create_app(settings)) as client:
        alone = client.post("/v1/predict", json=good)
        before = _batch_count(client)
        solved.clear()
        responses = _concurrent(client, [good, bad])
        batches = _batch_count(client) - before
    assert batches == 1
    assert solved == [32 * 2]  # one solve of both series, no retry without the failing one
    assert [r.status_code for r in responses] == [200, 422], [r.text for r in responses]
    answer, expected = responses[0].json()["series"][0], alone.json()["series"][0]
    assert answer["mode"] == expected["mode"]
    for key in ("mean", "std"):
        np.testing.assert_allclose(answer[key], expected[key], **TOL["beside_a_failure"])
    for q, e in zip(answer["quantiles"], expected["quantiles"], strict=True):
        assert q["quantile"] == e["quantile"]
        np.testing.assert_allclose(q["values"], e["values"], **TOL["beside_a_failure"])
    assert responses[1].json()["detail"].startswith(
        "the ODE solver could not answer series[0] ('s1') within its budget (max_steps): the ODE "
        "solver exceeded its budget (4 steps); raise SolverConfig.max_steps"
    )
