"""A request's speed/accuracy knob: ``solver`` presets and explicit values, their bounds, the
echo, and what they do to the solve (function evaluations read from the answer)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from latent_ode import SolverConfig
from tests.service.service_helpers import make_series, series_json

# The served default: the test model's own tolerances (SolverConfig's), the settings' steps.
SERVED = SolverConfig()
HORIZON = 60.0


def _body(solver: Any = None, **extra: Any) -> dict[str, Any]:
    (s,) = make_series(1, seed=2)
    # Far enough ahead that the solve needs steps (the test model's dynamics are gentle).
    body = {"series": [series_json(s, np.linspace(s.times[0], s.times[-1] + HORIZON, 12))],
            "num_samples": 8, "seed": 1, **extra}
    if solver is not None:
        body["solver"] = solver
    return body


def _post(client: TestClient, solver: Any = None, **extra: Any) -> Any:
    return client.post("/v1/predict", json=_body(solver, **extra))


@pytest.mark.parametrize(("solver", "expected"), [
    (None, {"preset": "default", "rtol": SERVED.rtol, "atol": SERVED.atol}),
    ("default", {"preset": "default", "rtol": SERVED.rtol, "atol": SERVED.atol}),
    ("fast", {"preset": "fast", "rtol": SERVED.rtol * 3, "atol": SERVED.atol * 3}),
    ("accurate", {"preset": "accurate", "rtol": SERVED.rtol / 100, "atol": SERVED.atol / 100}),
    ({"preset": "fast"}, {"preset": "fast", "rtol": SERVED.rtol * 3, "atol": SERVED.atol * 3}),
    ({"preset": "fast", "rtol": 0.05}, {"preset": "fast", "rtol": 0.05, "atol": SERVED.atol * 3}),
    ({"rtol": 2e-4, "atol": 3e-6, "max_steps": 500},
     {"preset": "default", "rtol": 2e-4, "atol": 3e-6, "max_steps": 500}),
])
def test_each_preset_and_explicit_values_are_used_and_echoed(
    client: TestClient, solver: Any, expected: dict[str, Any]
) -> None:
    response = _post(client, solver)
    assert response.status_code == 200, response.text
    answer = response.json()
    used = answer["solver"]
    want = {"method": SERVED.method, "max_steps": 2000, **expected}
    assert used == {k: pytest.approx(v) if isinstance(v, float) else v for k, v in want.items()}
    stats = answer["series"][0]["solver"]  # what the solve itself reports
    assert (stats["rtol"], stats["atol"]) == (pytest.approx(used["rtol"]),
                                              pytest.approx(used["atol"]))


def test_looser_tolerances_take_fewer_function_evaluations(client: TestClient) -> None:
    nfe = {}
    # A preset's factor (x3) may not change the step count of this gentle test model: the
    # loosest tolerance the service allows (0.1) must.
    for name, solver in (("loosest", {"rtol": 0.1, "atol": 0.1}), ("fast", "fast"),
                         ("default", "default"), ("accurate", "accurate")):
        response = _post(client, solver)
        assert response.status_code == 200, response.text
        nfe[name] = response.json()["series"][0]["solver"]["nfe"]
    assert nfe["loosest"] < nfe["default"] < nfe["accurate"], nfe
    assert nfe["fast"] <= nfe["default"], nfe


def test_answers_at_a_preset_are_the_librarys_at_those_tolerances(
    client: TestClient, registry: Any
) -> None:
    response = _post(client, "accurate")
    assert response.status_code == 200, response.text
    (s,) = make_series(1, seed=2)
    queries = np.linspace(s.times[0], s.times[-1] + HORIZON, 12)
    solver = SolverConfig(rtol=SERVED.rtol / 100, atol=SERVED.atol / 100, max_steps=2000)
    (library,) = registry.forecaster.predict([s], [queries], num_samples=8, seed=1,
                                             solver=solver)
    np.testing.assert_allclose(response.json()["series"][0]["mean"], library.mean,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("solver", "detail"), [
    ({"rtol": 1e-9}, "`solver.rtol` is 1e-09; the tightest this service allows is 1e-06 "
     "(LATENT_ODE_SOLVER_MIN_RTOL); ask for a looser tolerance, or the preset 'accurate'."),
    ({"preset": "accurate", "atol": 1e-8}, "`solver.atol` is 1e-08; the tightest this service "
     "allows is 1e-07 (LATENT_ODE_SOLVER_MIN_ATOL); ask for a looser tolerance, or the preset "
     "'accurate'."),
    ({"max_steps": 2001}, "`solver.max_steps` is 2001; the most this service allows is 2000 "
     "(LATENT_ODE_SOLVER_MAX_STEPS); ask for fewer steps."),
])
def test_a_solver_beyond_the_settings_bounds_is_422_naming_the_bound(
    client: TestClient, solver: dict[str, Any], detail: str
) -> None:
    response = _post(client, solver)
    assert response.status_code == 422
    assert response.json() == {"detail": detail}


@pytest.mark.parametrize(("solver", "detail"), [
    ("slow", "`solver.preset`: Input should be 'fast', 'default' or 'accurate'; got 'slow'."),
    ({"rtol": 0}, "`solver.rtol`: Input should be greater than 0"),
    ({"rtol": 1.5}, "`solver.rtol`: Input should be less than 1"),
    ({"max_steps": 0}, "`solver.max_steps`: Input should be greater than or equal to 1"),
    ({"max_steps": 10.5}, "`solver.max_steps`: Input should be a valid integer"),
    ({"method": "euler"}, "`solver.method` is not a known field; remove it."),
])
def test_a_malformed_solver_is_422_naming_the_field(
    client: TestClient, solver: Any, detail: str
) -> None:
    response = _post(client, solver)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(detail), response.json()


def test_the_solver_budget_counts_series_samples_and_max_steps(make_settings: Any) -> None:
    from service.app import create_app

    settings = make_settings(max_request_solver_work=8 * 2000)
    series = make_series(2, seed=3)
    body = {"series": [series_json(s, [s.times[-1] + 1.0]) for s in series], "num_samples": 8}
    with TestClient(create_app(settings)) as client:
        refused = client.post("/v1/predict", json=body)
        alone = client.post("/v1/predict", json={**body, "num_samples": 16, "series":
                                                 body["series"][:1]})
        allowed = client.post("/v1/predict", json={**body, "solver": {"max_steps": 1000}})
    assert refused.status_code == 422
    assert refused.json() == {"detail": (
        "this request may take the ODE solver up to 2 series x 8 samples x 2000 steps = 32000 "
        "steps; the budget is 16000 per request (LATENT_ODE_MAX_REQUEST_SOLVER_WORK). Split it "
        "into requests of at most 1 series, or ask for fewer samples or a smaller "
        "`solver.max_steps`.")}
    assert alone.status_code == 422
    assert alone.json()["detail"].endswith(
        "Ask for fewer samples or a smaller `solver.max_steps` (one series alone exceeds it).")
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["solver"]["max_steps"] == 1000


def test_requests_with_different_solvers_are_not_batched_together() -> None:
    from service.predictor import Job

    fast, default = (SolverConfig(rtol=1e-2), SolverConfig())
    jobs = [Job(model=None, series=[], num_samples=8, seed=0, quantiles=(), solver=s)  # type: ignore[arg-type]
            for s in (fast, default, SolverConfig(rtol=1e-2))]
    assert jobs[0].key != jobs[1].key and jobs[0].key == jobs[2].key
