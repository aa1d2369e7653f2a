"""``latent-ode quickstart``: the helpers in-process, the command as a real subprocess.

The subprocess tests run the shipped tiny config (seconds of training) in a temporary
directory: once with ``--no-serve`` (store, champion, the printed request against the app), once
serving on a free port (``/readyz``, the printed request over HTTP, Ctrl-C stops it cleanly), and
once on a port that is taken (a clear error before any training).
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from latent_ode import Series
from latent_ode.errors import ConfigError
from pipelines.quickstart import (
    QuickstartOptions,
    check_port_free,
    default_config_path,
    example_request,
    mlflow_ui_command,
    predict_curl,
    serve_command,
)
from tests.conftest import free_port, stop_process, wait_for_http

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / "pipelines" / "configs" / "periodic-tiny.toml"
MODEL_NAME = "latent-ode"
QUANTILES = [0.05, 0.5, 0.95]


# --------------------------------------------------------------------------------- helpers
def latent_ode_command() -> list[str]:
    """The ``latent-ode`` console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("latent-ode")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pipelines.cli"]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test's environment for a subprocess, with one torch thread (as in the test process:
    the tiny models gain nothing from more, and on 2 cores they would contend with each other)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def curl_line(stdout: str) -> str:
    """The one ``curl`` command quickstart printed."""
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip().startswith("curl ")]
    assert len(lines) == 1, f"expected one curl line in the output:\n{stdout}"
    return lines[0]


def parse_curl(line: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """URL, headers and JSON body of a printed ``curl -X POST URL -H ... -d BODY`` line."""
    argv = shlex.split(line)
    assert argv[:4] == ["curl", "-s", "-X", "POST"], argv
    url = argv[4]
    headers = dict(h.split(": ", 1) for h in (argv[i + 1] for i, a in enumerate(argv) if a == "-H"))
    body = argv[argv.index("-d") + 1]
    return url, headers, json.loads(body)


def expected_modes(series: dict[str, Any]) -> list[str]:
    """The mode the API must report for each query time of a request series."""
    first, last = series["times"][0], series["times"][-1]
    return ["backcast" if t < first else "extrapolation" if t > last else "interpolation"
            for t in series["query_times"]]


def check_forecast_answer(answer: dict[str, Any], request: dict[str, Any], *, version: str,
                          channels: list[str]) -> None:
    """Assert the exact shape and content of a ``POST /v1/predict`` answer to ``request``."""
    assert answer["model"] == {"name": MODEL_NAME, "version": version}
    assert answer["channels"] == channels
    assert answer["num_samples"] == request["num_samples"]
    assert len(answer["series"]) == len(request["series"])
    for got, asked in zip(answer["series"], request["series"], strict=True):
        q, d = len(asked["query_times"]), len(channels)
        assert got["id"] == asked["id"]
        assert got["query_times"] == asked["query_times"]
        assert got["mode"] == expected_modes(asked)
        mean, std = np.asarray(got["mean"]), np.asarray(got["std"])
        assert mean.shape == (q, d) and std.shape == (q, d)
        assert np.isfinite(mean).all() and (std >= 0).all()
        assert [e["quantile"] for e in got["quantiles"]] == request.get("quantiles", QUANTILES)
        values = np.stack([np.asarray(e["values"]) for e in got["quantiles"]])
        assert values.shape == (len(got["quantiles"]), q, d)
        assert (np.diff(values, axis=0) >= 0).all(), "quantiles must not decrease"
        assert got["solver"]["nfe"] > 0


def champion_version(db: Path) -> str:
    """The version holding ``champion`` in the SQLite store ``db``."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{db}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return str(client.get_model_version_by_alias(MODEL_NAME, "champion").version)


# ------------------------------------------------------------------------------ in-process
def test_default_config_is_the_shipped_periodic_demo() -> None:
    from pipelines.config import load_config

    path = default_config_path()
    assert path == REPO / "pipelines" / "configs" / "periodic.toml"
    cfg = load_config(path)
    assert cfg.data.dataset == "periodic"
    assert cfg.registry.model_name == MODEL_NAME


def test_example_request_observes_the_first_half_and_asks_inside_and_after() -> None:
    times = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])
    values = np.array([[1.0, np.nan], [2.0, 0.5], [np.nan, 0.7], [3.0, 1.0], [4.0, np.nan],
                       [5.0, 2.0], [6.0, 2.5], [7.0, 3.0], [8.0, 3.5]])
    req = example_request(Series(times=times, values=values, id="s1"), num_samples=8)
    (s,) = req["series"]
    # Observed: up to the middle of the span (2.0); asked: two midpoints inside, two later times.
    assert s["id"] == "s1"
    assert s["times"] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert s["values"] == [[1.0, None], [2.0, 0.5], [None, 0.7], [3.0, 1.0], [4.0, None]]
    assert s["query_times"] == [0.75, 1.75, 3.5, 4.0]
    assert expected_modes(s) == ["interpolation", "interpolation", "extrapolation",
                                 "extrapolation"]
    assert req["num_samples"] == 8 and req["quantiles"] == QUANTILES


def test_example_request_needs_two_observation_times() -> None:
    from latent_ode.errors import DataError

    series = Series(times=np.array([0.0]), values=np.array([[1.0]]), id="one")
    with pytest.raises(DataError, match="series 'one' has 1 observation time"):
        example_request(series)


def test_predict_curl_survives_the_shell() -> None:
    req = {"series": [{"id": "it's", "times": [0.0, 1.0], "values": [[1.0], [None]],
                       "query_times": [2.0]}], "num_samples": 4, "quantiles": [0.5]}
    url, headers, body = parse_curl(predict_curl(req, host="0.0.0.0", port=8123))
    assert url == "http://127.0.0.1:8123/v1/predict"
    assert headers == {"Content-Type": "application/json"}
    assert body == req
    assert parse_curl(predict_curl(req, host="::1", port=9))[0] == "http://[::1]:9/v1/predict"


def test_mlflow_ui_command_names_the_store(tmp_path: Path) -> None:
    db_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert mlflow_ui_command(db_uri, tmp_path) == (
        f"cd {shlex.quote(str(tmp_path))} && mlflow ui --backend-store-uri sqlite:///mlflow.db")
    assert mlflow_ui_command("sqlite:////elsewhere/x.db", tmp_path) == (
        "mlflow ui --backend-store-uri sqlite:////elsewhere/x.db")
    assert mlflow_ui_command("http://mlflow:5000", tmp_path).startswith("open http://mlflow:5000")


def test_serve_command_keeps_the_cache_and_names_a_non_default_model() -> None:
    assert serve_command("models:/latent-ode@champion", host="127.0.0.1", port=8000) == (
        "LATENT_ODE_MODEL_CACHE_DIR=model-cache latent-ode serve --host 127.0.0.1 --port 8000")
    assert serve_command("models:/other@champion", host="0.0.0.0", port=9) == (
        "LATENT_ODE_MODEL_URI=models:/other@champion LATENT_ODE_MODEL_CACHE_DIR=model-cache "
        "latent-ode serve --host 0.0.0.0 --port 9")


def test_a_taken_port_is_reported_with_the_fix() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"port {port} on 127\.0\.0\.1 is already in use.*"
                                              r"pass --port with a free port"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # released: no error


def test_options_check_the_port() -> None:
    with pytest.raises(ConfigError, match="--port must be between 1 and 65535; got 0"):
        QuickstartOptions(workdir=Path("."), port=0)


# ------------------------------------------------------------------------------ subprocess
@pytest.mark.integration
def test_no_serve_trains_registers_and_prints_a_request_the_api_answers(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings

    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.run(
        [*latent_ode_command(), "quickstart", "--no-serve", "--config", str(TINY_CONFIG)],
        cwd=work, env=subprocess_env(), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    db = work / "mlflow.db"
    assert db.is_file()
    assert (work / "data" / "periodic.csv").is_file()
    assert champion_version(db) == "1"
    assert f"cd {shlex.quote(str(work))} && mlflow ui --backend-store-uri sqlite:///mlflow.db" \
        in proc.stdout
    assert ("LATENT_ODE_MODEL_CACHE_DIR=model-cache latent-ode serve --host 127.0.0.1 --port 8000"
            in proc.stdout)

    url, headers, request = parse_curl(curl_line(proc.stdout))
    assert url == "http://127.0.0.1:8000/v1/predict"
    assert headers == {"Content-Type": "application/json"}
    modes = expected_modes(request["series"][0])
    assert modes.count("interpolation") >= 1 and modes.count("extrapolation") >= 1

    settings = Settings(tracking_uri=f"sqlite:///{db}", model_uri=f"models:/{MODEL_NAME}@champion",
                        model_cache_dir=tmp_path / "cache", torch_threads=0)
    with TestClient(create_app(settings)) as client:
        resp = client.post("/v1/predict", content=json.dumps(request), headers=headers)
    assert resp.status_code == 200, resp.text
    check_forecast_answer(resp.json(), request, version="1", channels=["x"])


def _read_lines(stream: Any, into: queue.Queue[str]) -> None:
    """Copy ``stream``'s lines into ``into`` (a thread, so the test can wait with a timeout)."""
    for line in stream:
        into.put(line)
    into.put("")  # end of stream


@pytest.mark.integration
def test_serves_the_champion_and_answers_the_printed_curl(tmp_path: Path) -> None:
    port = free_port()
    work = tmp_path / "work"
    log = open(tmp_path / "quickstart.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [*latent_ode_command(), "quickstart", "--config", str(TINY_CONFIG),
         "--port", str(port), "--workdir", str(work)],
        cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE, stderr=log, text=True,
    )
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
        stdout, deadline = "", time.monotonic() + 600
        while "curl " not in stdout:
            line = lines.get(timeout=max(1.0, deadline - time.monotonic()))
            assert line, f"quickstart ended before printing the curl example:\n{stdout}"
            stdout += line
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/readyz", timeout=120, proc=proc)
        assert httpx.get(f"{base}/readyz").json()["version"] == "1"
        assert (work / "mlflow.db").is_file()
        assert (work / "model-cache").is_dir()

        line = curl_line(stdout)
        url, headers, request = parse_curl(line)
        assert url == f"{base}/v1/predict"
        resp = httpx.post(url, content=json.dumps(request), headers=headers, timeout=60)
        assert resp.status_code == 200, resp.text
        check_forecast_answer(resp.json(), request, version="1", channels=["x"])
        if shutil.which("curl"):  # the exact printed line, through a shell
            shell = subprocess.run(line, shell=True, capture_output=True, text=True, timeout=60)
            assert shell.returncode == 0, shell.stderr
            check_forecast_answer(json.loads(shell.stdout), request, version="1", channels=["x"])

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=60) == 0
    finally:
        stop_process(proc)
        log.close()


@pytest.mark.integration
def test_a_taken_port_stops_quickstart_before_training(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = subprocess.run(
            [*latent_ode_command(), "quickstart", "--config", str(TINY_CONFIG), "--port", str(port)],
            cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=300,
        )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: port {port} on 127.0.0.1 is already in use, so the service cannot start there; "
        f"pass --port with a free port (e.g. --port {port + 1}) or stop the process that holds it."
    )
    assert not (tmp_path / "mlflow.db").exists()


def test_training_uses_one_torch_thread_unless_omp_num_threads_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    from pipelines.steps.train import one_torch_thread_unless_set

    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        one_torch_thread_unless_set()
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        one_torch_thread_unless_set()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)  # as tests/conftest.py sets it for the suite
