"""Fixtures shared by the whole suite: free ports, a real MLflow tracking server, a GPU probe."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, *, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200, the process dies, or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout} s (last error: {last})")


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server`` subprocess."""

    uri: str
    root: Path
    proc: subprocess.Popen


def start_mlflow_server(root: Path, port: int | None = None) -> MlflowServer:
    """Start a real ``mlflow server`` (SQLite backend, served artifacts) on ``port`` (default: a
    free local port); the same root and port restart a stopped server."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log = open(root / "mlflow-server.log", "wb")  # noqa: SIM115 - closed with the process
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--serve-artifacts", "--workers", "1",
    ]
    # Its own process group, so that stop_process ends the server's uvicorn child with it.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root,
                            start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", timeout=90, proc=proc)
    except Exception:
        proc.kill()
        raise
    return MlflowServer(uri=uri, root=root, proc=proc)


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    """Terminate a subprocess, killing it if it does not stop in ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    _end_group(proc)


def _end_group(proc: subprocess.Popen) -> None:
    """Kill what is left of the process group ``proc`` leads (started with
    ``start_new_session``): a server's workers must not outlive the test."""
    try:  # no group has this id unless proc led one (a pid is not reused while its group lives)
        os.killpg(proc.pid, 9)
    except (ProcessLookupError, PermissionError):
        pass


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread: the models under test are small, and on a 2-core CI machine extra
    threads only contend with the subprocesses (MLflow server, uvicorn) the suite starts."""
    import torch

    torch.set_num_threads(1)
    # `mlflow server` starts a job runner with a pool of worker processes (about 1.4 GB per
    # server) for GenAI jobs this project never submits; the servers the suite starts go without.
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real MLflow tracking server for the whole session, stopped at the end."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        stop_process(server.proc)


@pytest.fixture
def mlflow_env(monkeypatch: pytest.MonkeyPatch, mlflow_server: MlflowServer) -> str:
    """Point this test's MLflow client at the session's tracking server."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    mlflow.set_tracking_uri(mlflow_server.uri)
    yield mlflow_server.uri
    mlflow.set_tracking_uri(None)


@pytest.fixture
def cuda_device() -> str:
    """``"cuda"`` when a GPU is present; skips the test otherwise (probed here, not at import)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("CUDA is not available")
    return "cuda"


@pytest.fixture(autouse=True)
def _no_ambient_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never write to the developer's own MLflow store by accident."""
    if "MLFLOW_TRACKING_URI" in os.environ:
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
