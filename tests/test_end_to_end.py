"""End to end, the docker-compose topology run natively: tracking server + trainer + api.

A real ``mlflow server`` (SQLite backend, served artifacts) on a free 127.0.0.1 port; the trainer
is ``latent-ode pipeline run`` as a subprocess talking to it over HTTP; the api is
``latent-ode serve`` under uvicorn as a subprocess pointed at it. The test trains version 1,
checks the served forecasts, retrains version 2 with ``--force``, hot-reloads it through the
admin endpoint and checks that the service now answers with version 2. Every process it starts
is stopped, also when an assertion fails.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from latent_ode import Series
from pipelines.quickstart import example_request
from pipelines.sources.periodic import periodic
from tests.conftest import (
    MlflowServer,
    free_port,
    start_mlflow_server,
    stop_process,
    wait_for_http,
)
from tests.test_quickstart import (
    MODEL_NAME,
    TINY_CONFIG,
    check_forecast_answer,
    latent_ode_command,
    subprocess_env,
)

pytestmark = pytest.mark.integration

ADMIN_KEY = "e2e-admin-key-0123456789"


@pytest.fixture
def tracking_server(tmp_path: Path) -> Iterator[MlflowServer]:
    """A tracking server of this test only, so the registry's version numbers are its own."""
    server = start_mlflow_server(tmp_path / "mlflow-server")
    try:
        yield server
    finally:
        stop_process(server.proc)


def run_trainer(tracking_uri: str, workdir: Path, *extra: str) -> str:
    """``latent-ode pipeline run`` on the tiny config against the server; returns its stdout."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = subprocess_env(MLFLOW_TRACKING_URI=tracking_uri, LATENT_ODE_DEVICE="cpu")
    proc = subprocess.run(
        [*latent_ode_command(), "pipeline", "run", "--config", str(TINY_CONFIG), *extra],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"trainer failed:\n{proc.stderr[-4000:]}"
    return proc.stdout


@contextmanager
def api(tracking_uri: str, workdir: Path, **settings: str) -> Iterator[str]:
    """``latent-ode serve`` on a free port until the block ends (``settings``: more environment
    variables); yields its base URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = subprocess_env(
        MLFLOW_TRACKING_URI=tracking_uri,
        LATENT_ODE_ADMIN_KEY=ADMIN_KEY,
        LATENT_ODE_MODEL_CACHE_DIR=str(workdir / "model-cache"),
        LATENT_ODE_DEVICE="cpu",
        **settings,
    )
    with open(workdir / "api.log", "wb") as log:
        proc = subprocess.Popen(
            [*latent_ode_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/readyz", timeout=180, proc=proc)
        yield base
    finally:
        stop_process(proc)


def forecast_request() -> dict[str, Any]:
    """Two fresh periodic series: one asked inside and after its window, one before it too."""
    a, b = periodic(2, n_times=30, seed=1234)
    first = example_request(a, num_samples=16, quantiles=(0.1, 0.5, 0.9))["series"][0]
    # The second series is observed from its 6th point on and also asked before that (backcast).
    b_late = Series(times=b.times[5:20], values=b.values[5:20], id="late-start")
    second = example_request(b_late)["series"][0]
    second["query_times"] = [round(float(b.times[2]), 4), *second["query_times"]]
    return {"series": [first, second], "num_samples": 16, "quantiles": [0.1, 0.5, 0.9]}


def check_model_info(base: str, version: str) -> None:
    info = httpx.get(f"{base}/v1/model", timeout=30)
    assert info.status_code == 200, info.text
    body = info.json()
    assert (body["name"], body["version"], body["source"]) == (MODEL_NAME, version, "registry")
    assert body["channels"] == ["x"]
    assert body["time_unit"] == "hours"
    assert body["uri"] == f"models:/{MODEL_NAME}@champion"


def predict(base: str, request: dict[str, Any], version: str) -> dict[str, Any]:
    resp = httpx.post(f"{base}/v1/predict", json=request, timeout=120)
    assert resp.status_code == 200, resp.text
    answer = resp.json()
    check_forecast_answer(answer, request, version=version, channels=["x"])
    return answer


def test_train_serve_retrain_reload(tracking_server: MlflowServer, tmp_path: Path) -> None:
    uri = tracking_server.uri
    out = run_trainer(uri, tmp_path / "trainer")
    assert f"registered {MODEL_NAME} version 1, promoted to champion" in out

    request = forecast_request()
    assert [s["id"] for s in request["series"]] == ["periodic-0", "late-start"]
    with api(uri, tmp_path / "api") as base:
        assert httpx.get(f"{base}/readyz").json() == {
            "status": "ready", "model": MODEL_NAME, "version": "1", "source": "registry",
            "registry": "reachable"}
        check_model_info(base, "1")
        modes = predict(base, request, "1")["series"][1]["mode"]
        assert modes[0] == "backcast" and "interpolation" in modes and "extrapolation" in modes

        # Same config and seed, so no better metric: --force makes version 2 the champion.
        out = run_trainer(uri, tmp_path / "trainer", "--force")
        assert f"registered {MODEL_NAME} version 2, promoted to champion" in out
        check_model_info(base, "1")  # the service does not switch by itself

        denied = httpx.post(f"{base}/v1/admin/reload", headers={"X-API-Key": "wrong"}, timeout=30)
        assert denied.status_code == 401
        assert denied.json()["detail"].startswith("missing or wrong API key")
        reload = httpx.post(f"{base}/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY},
                            timeout=180)
        assert reload.status_code == 200, reload.text
        assert reload.json() == {"name": MODEL_NAME, "version": "2", "previous_version": "1",
                                 "source": "registry"}

        check_model_info(base, "2")
        assert httpx.get(f"{base}/readyz").json()["version"] == "2"
        predict(base, request, "2")
