"""The service as a real uvicorn process on 127.0.0.1 against a real MLflow tracking server."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import MlflowServer, free_port, stop_process, wait_for_http
from tests.service.service_helpers import ADMIN_KEY, make_forecaster, register_version

pytestmark = pytest.mark.integration

OK = {"times": [0, 1, 2], "values": [[70, 37], [71, None], [None, 37.2]], "query_times": [1.5, 4]}


@contextmanager
def serve(
    tracking_uri: str, model: str, cache: Path, log: Path, **settings: str
) -> Iterator[str]:
    """Run ``service.server.run`` in a subprocess until the block ends; yields its base URL.

    ``settings`` are extra ``LATENT_ODE_*`` variables (``max_body_bytes="4096"``).
    """
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "LATENT_ODE_MODEL_URI": f"models:/{model}@champion",
        "LATENT_ODE_MODEL_CACHE_DIR": str(cache),
        "LATENT_ODE_ADMIN_KEY": ADMIN_KEY,
        "LATENT_ODE_REGISTRY_TIMEOUT_S": "2",
        **{f"LATENT_ODE_{name.upper()}": value for name, value in settings.items()},
    }
    code = f"from service.server import run; run('127.0.0.1', {port})"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], env=env, cwd=log.parent, stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/livez", timeout=120, proc=proc)
        yield base
    finally:
        stop_process(proc)


def test_reload_under_load_drops_nothing(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    model = "integration-reload"
    v1 = register_version(mlflow_server.uri, make_forecaster(seed=0), tmp_path, name=model)
    with serve(mlflow_server.uri, model, tmp_path / "cache", tmp_path / "service.log") as base:
        assert httpx.get(f"{base}/readyz").json()["version"] == v1
        stop = threading.Event()
        results: list[tuple[int, str | None]] = []
        lock = threading.Lock()

        def client_loop() -> None:
            with httpx.Client(base_url=base, timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/v1/predict", json={"series": [OK]})
                    version = r.json()["model"]["version"] if r.status_code == 200 else None
                    with lock:
                        results.append((r.status_code, version))

        threads = [threading.Thread(target=client_loop) for _ in range(8)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            v2 = register_version(mlflow_server.uri, make_forecaster(seed=1), tmp_path, name=model)
            reload = httpx.post(f"{base}/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY},
                                timeout=60)
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        info = httpx.get(f"{base}/v1/model").json()
    assert reload.status_code == 200, reload.text
    assert reload.json()["version"] == v2 and reload.json()["previous_version"] == v1
    statuses = [s for s, _ in results]
    assert len(statuses) > 20
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
    versions = [v for _, v in results]
    assert versions[0] == v1 and versions[-1] == v2
    assert info["version"] == v2


def test_starts_from_the_cache_with_the_tracking_server_down(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    model = "integration-cache"
    version = register_version(mlflow_server.uri, make_forecaster(seed=0), tmp_path, name=model)
    cache = tmp_path / "cache"
    log = tmp_path / "service.log"
    with serve(mlflow_server.uri, model, cache, log) as base:
        first = httpx.get(f"{base}/readyz").json()
        expected = httpx.post(f"{base}/v1/predict", json={"series": [OK]}).json()
    dead = f"http://127.0.0.1:{free_port()}"

    def chunks() -> Iterator[bytes]:  # no Content-Length: uvicorn receives it chunked
        for _ in range(100):
            yield b" " * 1000

    with serve(dead, model, cache, log, max_body_bytes="4096") as base:
        ready = httpx.get(f"{base}/readyz")
        with httpx.Client(base_url=base, timeout=30) as http:
            too_big = http.post("/v1/predict", content=chunks(),
                                headers={"content-type": "application/json"})
            answer: dict[str, Any] = http.post("/v1/predict", json={"series": [OK]}).json()
    assert first == {"status": "ready", "model": model, "version": version, "source": "registry"}
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "model": model, "version": version,
                            "source": "cache"}
    assert answer["series"] == expected["series"]  # on the connection the 413 answered
    assert too_big.status_code == 413
    assert too_big.json()["detail"].startswith("the request body is more than 4096 bytes")
    text = log.read_text()
    assert f"serving {model} version {version} from the disk cache" in text
    assert f"the MLflow tracking server {dead} is unreachable" in text
