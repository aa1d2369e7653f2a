"""Several worker processes on one port (LATENT_ODE_WORKERS): real uvicorn workers, a real
MLflow tracking server. An admin reload reaches every worker, /metrics adds the workers up, and
each worker's registry retry takes the registry back."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import MlflowServer, start_mlflow_server, stop_process
from tests.service.service_helpers import ADMIN_KEY, make_forecaster, register_version
from tests.service.test_uvicorn_integration import OK, serve

pytestmark = pytest.mark.integration


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
            out.append((labels, float(m.group(2))))
    return out


def _served(base: str) -> dict[str, tuple[str, str]]:
    """pid -> (version, source) of every live worker, from the aggregated /metrics."""
    text = httpx.get(f"{base}/metrics").text
    return {labels["pid"]: (labels["version"], labels["source"])
            for labels, value in _samples(text, "latent_ode_model_info") if value == 1}


def _wait_for_workers(base: str, n: int, timeout: float = 120) -> dict[str, tuple[str, str]]:
    deadline = time.monotonic() + timeout
    served = _served(base)
    while len(served) < n and time.monotonic() < deadline:
        time.sleep(0.25)
        served = _served(base)
    return served


def test_reload_reaches_every_worker_and_metrics_add_up(
        mlflow_server: MlflowServer, tmp_path: Path) -> None:
    model = "integration-workers"
    v1 = register_version(mlflow_server.uri, make_forecaster(seed=0), tmp_path, name=model)
    with serve(mlflow_server.uri, model, tmp_path / "cache", tmp_path / "service.log",
               workers="2") as base:
        before = _wait_for_workers(base, 2)
        # Fresh connections land on either worker; count what they answered.
        predictions = 20
        for _ in range(predictions):
            r = httpx.post(f"{base}/v1/predict", json={"series": [OK]}, timeout=60)
            assert r.status_code == 200, r.text
        text = httpx.get(f"{base}/metrics").text
        v2 = register_version(mlflow_server.uri, make_forecaster(seed=1), tmp_path, name=model)
        reload = httpx.post(f"{base}/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY},
                            timeout=120)
        after = _served(base)  # at once: the reload answered after every worker loaded v2
        versions = {httpx.get(f"{base}/v1/model").json()["version"] for _ in range(20)}
    assert len(before) == 2 and set(before.values()) == {(v1, "registry")}
    counts = {labels["status"]: value for labels, value in
              _samples(text, "latent_ode_http_requests_total")
              if labels["route"] == "/v1/predict"}
    assert counts == {"200": predictions}  # both workers' requests, added up
    batches = [v for labels, v in _samples(text, "latent_ode_batch_requests_count")]
    assert batches == [predictions]
    assert reload.status_code == 200, reload.text
    assert reload.json()["version"] == v2 and reload.json()["previous_version"] == v1
    assert after.keys() == before.keys()
    assert set(after.values()) == {(v2, "registry")}
    assert versions == {v2}
    log = (tmp_path / "service.log").read_text()
    assert f"follows the reload: now serving {model} version {v2}" in log


def test_each_worker_takes_the_registry_back(tmp_path: Path) -> None:
    """Started from the disk cache with the tracking server down, every worker retries the
    registry on its own and serves its model once it is back."""
    model = "integration-workers-retry"
    server = start_mlflow_server(tmp_path / "mlflow")
    port = int(server.uri.rsplit(":", 1)[1])
    cache, log = tmp_path / "cache", tmp_path / "service.log"
    try:
        version = register_version(server.uri, make_forecaster(seed=0), tmp_path, name=model)
        with serve(server.uri, model, cache, log) as base:  # fills the cache
            assert httpx.get(f"{base}/readyz").json()["source"] == "registry"
    finally:
        stop_process(server.proc)
    with serve(server.uri, model, cache, log, workers="2", registry_retry_initial_s="0.5",
               registry_retry_max_s="1") as base:
        cached = _wait_for_workers(base, 2)
        restarted = start_mlflow_server(tmp_path / "mlflow", port=port)
        try:
            deadline = time.monotonic() + 90
            back = _served(base)
            while (set(back.values()) != {(version, "registry")} or len(back) < 2) \
                    and time.monotonic() < deadline:
                time.sleep(0.25)
                back = _served(base)
        finally:
            stop_process(restarted.proc)
    assert len(cached) == 2 and set(cached.values()) == {(version, "cache")}
    assert back.keys() == cached.keys()
    assert set(back.values()) == {(version, "registry")}
    assert log.read_text().count(f"the registry is back: now serving {model} version {version}") == 2
