"""The service as a real uvicorn process on 127.0.0.1 against a real MLflow tracking server."""

from __future__ import annotations

import base64
import contextlib
import http.server
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import (
    MlflowServer,
    free_port,
    start_mlflow_server,
    stop_process,
    wait_for_http,
)
from tests.service.service_helpers import ADMIN_KEY, make_forecaster, register_version

pytestmark = pytest.mark.integration

OK = {"times": [0, 1, 2], "values": [[70, 37], [71, None], [None, 37.2]], "query_times": [1.5, 4]}


@contextmanager
def serve(
    tracking_uri: str, model: str, cache: Path, log: Path,
    started: list[subprocess.Popen] | None = None, nofile: int | None = None, **settings: str,
) -> Iterator[str]:
    """Run ``service.server.run`` in a subprocess until the block ends; yields its base URL.

    ``settings`` are extra ``LATENT_ODE_*`` variables (``max_body_bytes="4096"``); ``started``,
    when given, receives the process; ``nofile`` lowers its open-file limit.
    """

    def limit_files() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

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
            stderr=subprocess.STDOUT, preexec_fn=limit_files,
        )
    if started is not None:
        started.append(proc)
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
            # A request that fails below HTTP (refused, reset, timed out) counts as status 0: a
            # dying client thread would only leave a pytest warning behind.
            with httpx.Client(base_url=base, timeout=30) as http:
                while not stop.is_set():
                    try:
                        r = http.post("/v1/predict", json={"series": [OK]})
                    except httpx.HTTPError as exc:
                        with lock:
                            results.append((0, repr(exc)))
                        continue
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
    assert set(statuses) == {200}, [r for r in results if r[0] != 200][:5]
    versions = [v for _, v in results]
    assert versions[0] == v1 and versions[-1] == v2
    assert info["version"] == v2


def test_starts_from_the_cache_with_the_tracking_server_down_and_takes_it_back(
    tmp_path: Path,
) -> None:
    """The same tracking server, down at start-up: its model from the cache (``source: cache``);
    back up: the service notices and takes the registry's alias (issue 16 item 14)."""
    model = "integration-cache"
    server = start_mlflow_server(tmp_path / "mlflow")
    port = int(server.uri.rsplit(":", 1)[1])
    try:
        version = register_version(server.uri, make_forecaster(seed=0), tmp_path, name=model)
        cache = tmp_path / "cache"
        log = tmp_path / "service.log"
        with serve(server.uri, model, cache, log) as base:
            first = httpx.get(f"{base}/readyz").json()
            expected = httpx.post(f"{base}/v1/predict", json={"series": [OK]}).json()
    finally:
        stop_process(server.proc)

    def chunks() -> Iterator[bytes]:  # no Content-Length: uvicorn receives it chunked
        for _ in range(100):
            yield b" " * 1000

    with serve(server.uri, model, cache, log, max_body_bytes="4096",
               registry_retry_initial_s="0.5", registry_retry_max_s="1",
               registry_check_interval_s="0") as base:
        ready = httpx.get(f"{base}/readyz")
        with httpx.Client(base_url=base, timeout=30) as http:
            too_big = http.post("/v1/predict", content=chunks(),
                                headers={"content-type": "application/json"})
            answer: dict[str, Any] = http.post("/v1/predict", json={"series": [OK]}).json()
        restarted = start_mlflow_server(tmp_path / "mlflow", port=port)
        try:
            deadline = time.monotonic() + 60
            back = httpx.get(f"{base}/readyz").json()
            while back["source"] != "registry" and time.monotonic() < deadline:
                time.sleep(0.25)
                back = httpx.get(f"{base}/readyz").json()
        finally:
            stop_process(restarted.proc)
    assert first == {"status": "ready", "model": model, "version": version, "source": "registry",
                     "registry": "reachable"}
    assert ready.status_code == 200
    detail = ready.json().pop("detail", "")
    assert ready.json() == {
        "status": "ready", "model": model, "version": version, "source": "cache",
        "registry": "unreachable", "detail": detail,
    }
    assert detail.startswith(
        f"the registry is unreachable (the MLflow tracking server {server.uri} is unreachable ("
    ), detail
    assert detail.endswith(
        f"serving the loaded model {model} version {version} (from the cache) until it is back"
    ), detail
    assert answer["series"] == expected["series"]  # on the connection the 413 answered
    assert too_big.status_code == 413
    assert too_big.json()["detail"].startswith("the request body is more than 4096 bytes")
    assert back == {"status": "ready", "model": model, "version": version, "source": "registry",
                    "registry": "reachable"}
    text = log.read_text()
    assert f"serving {model} version {version} from the disk cache" in text
    assert f"the MLflow tracking server {server.uri} is unreachable" in text
    assert f"the registry is back: now serving {model} version {version}" in text


def test_a_trickled_body_gets_408(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    """A body sent a byte at a time is cut off at LATENT_ODE_BODY_TIMEOUT_S (issue 16 item 6)."""
    model = "integration-trickle"
    register_version(mlflow_server.uri, make_forecaster(seed=0), tmp_path, name=model)
    with serve(mlflow_server.uri, model, tmp_path / "cache", tmp_path / "service.log",
               body_timeout_s="1") as base:
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/json\r\nContent-Length: 1000\r\n\r\n")
            started = time.monotonic()
            answer = b""
            sock.settimeout(0.2)
            while time.monotonic() - started < 8 and b"\r\n\r\n" not in answer:
                with contextlib.suppress(OSError):
                    sock.sendall(b" ")
                try:
                    answer += sock.recv(65536)
                except TimeoutError:
                    continue
            elapsed = time.monotonic() - started
            sock.settimeout(2)
            with contextlib.suppress(OSError):
                answer += sock.recv(65536)
        fine = httpx.post(f"{base}/v1/predict", json={"series": [OK]}, timeout=30)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert 0.9 < elapsed < 5
    assert (b'"the request body did not arrive within 1 s (LATENT_ODE_BODY_TIMEOUT_S); send it '
            b'at once, or split a large request."') in answer
    assert fine.status_code == 200  # a prompt client is unaffected


def test_requests_cut_off_by_the_shutdown_get_503(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """SIGTERM with a request still running at the end of the grace period: 503 saying the
    service is stopping, not a 500 with a CancelledError traceback (issue 16 item 10)."""
    from service.middleware import STOPPING_DETAIL

    model = "integration-shutdown"
    register_version(mlflow_server.uri, make_forecaster(seed=0), tmp_path, name=model)
    started: list[subprocess.Popen] = []
    log = tmp_path / "service.log"
    answers: list[httpx.Response] = []
    # The first request of a batch waits this long for company: a request that outlives the
    # grace period, deterministically.
    with serve(mlflow_server.uri, model, tmp_path / "cache", log, started,
               batch_max_wait_ms="30000", shutdown_grace_s="1") as base:
        assert httpx.get(f"{base}/readyz").status_code == 200
        thread = threading.Thread(target=lambda: answers.append(
            httpx.post(f"{base}/v1/predict", json={"series": [OK]}, timeout=60)))
        thread.start()
        time.sleep(1.0)
        started[0].send_signal(signal.SIGTERM)
        thread.join(timeout=30)
        code = started[0].wait(timeout=30)
    (answer,) = answers
    assert answer.status_code == 503, answer.text
    assert answer.json() == {"detail": STOPPING_DETAIL}
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it shut down for
    text = log.read_text()
    assert "CancelledError" not in text and "Exception in ASGI application" not in text


@contextmanager
def basic_auth_proxy(upstream: str, user: str, password: str) -> Iterator[str]:
    """A reverse proxy in front of ``upstream`` that answers 401 to any request without the
    right Basic credentials (``/health`` included), as an authenticated MLflow deployment does
    (MLflow's own basic-auth app needs Flask-WTF, which the project does not install)."""
    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Proxy(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("WWW-Authenticate", "Basic")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "authorization", "connection")}
            request = urllib.request.Request(upstream + self.path, data=body, headers=headers,
                                             method=self.command)
            try:
                with urllib.request.urlopen(request, timeout=60) as resp:
                    status, payload, kept = resp.status, resp.read(), resp.headers
            except urllib.error.HTTPError as exc:
                status, payload, kept = exc.code, exc.read(), exc.headers
            self.send_response(status)
            self.send_header("Content-Type", kept.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_serves_behind_a_tracking_server_with_credentials(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """``http://user:password@host``: the model loads behind a server that wants Basic auth (the
    probe took the credentials for part of the host name: "Name or service not known"), and the
    password appears in no answer or log line (issue 16 item 4)."""
    model = "integration-credentials"
    version = register_version(mlflow_server.uri, make_forecaster(seed=0), tmp_path, name=model)
    log = tmp_path / "service.log"
    with basic_auth_proxy(mlflow_server.uri, "alice", "s3cret") as proxy:
        refused = httpx.get(f"{proxy}/health")
        uri = proxy.replace("http://", "http://alice:s3cret@")
        with serve(uri, model, tmp_path / "cache", log) as base:
            ready = httpx.get(f"{base}/readyz")
            info = httpx.get(f"{base}/v1/model")
            answer = httpx.post(f"{base}/v1/predict", json={"series": [OK]})
    assert refused.status_code == 401  # the proxy does check
    # "reachable": /readyz's registry question passed the proxy's Basic auth too.
    assert ready.json() == {"status": "ready", "model": model, "version": version,
                            "source": "registry", "registry": "reachable"}
    assert answer.status_code == 200
    assert "s3cret" not in info.text
    assert "s3cret" not in log.read_text()


def test_the_open_file_limit_does_not_flood_the_log(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    """Idle connections past the open-file limit: asyncio logs every failed accept() (up to the
    backlog each second, 335,025 lines in 30 s in the issue); the service lets one through per
    10 s, and serves again once the connections go (issue 16 item 6)."""
    model = "integration-nofile"
    register_version(mlflow_server.uri, make_forecaster(seed=0), tmp_path, name=model)
    log = tmp_path / "service.log"
    with serve(mlflow_server.uri, model, tmp_path / "cache", log, nofile=256) as base:
        assert httpx.get(f"{base}/readyz").status_code == 200
        port = int(base.rsplit(":", 1)[1])
        before = log.read_text().count("out of system resource")
        idle = []
        try:
            for _ in range(400):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", port))
                idle.append(sock)
            time.sleep(4.0)  # the service's descriptors run out; asyncio retries every second
        finally:
            for sock in idle:
                sock.close()
        time.sleep(1.5)  # asyncio resumes accepting
        after = httpx.get(f"{base}/livez", timeout=30)
        flood = log.read_text().count("out of system resource") - before
    assert after.status_code == 200
    assert 1 <= flood <= 2, flood
