"""The docker-compose topology run natively on its real database (issue 16 item 15).

Debian's PostgreSQL (a cluster of this test's own, ``initdb`` in a temporary folder, on a free
127.0.0.1 port, with the password of ``.env.example``), ``mlflow server`` started with the
*command of docker-compose.yml's mlflow service* (only the host names, the port and the S3 bucket
swapped for local ones: proxied artifacts on a local folder, since no S3 server is installable
here), the trainer (``latent-ode pipeline run`` on the tiny config) and the api
(``latent-ode serve`` under uvicorn) as subprocesses against it. Then the database is killed
mid-serving (``pg_ctl stop -m immediate``, as a crash): the service keeps answering
``/v1/predict`` from its loaded model, ``/readyz`` stays 200 and says the registry is unreachable,
an admin reload fails fast with 503; the database back, ``/readyz`` says so again.

The PostgreSQL binaries are found under ``/usr/lib/postgresql/*/bin`` (Debian's layout; `.ci/run`
installs the ``postgresql`` package), else on ``PATH``. PostgreSQL refuses to run as root, so as
root (CI) the cluster runs as the ``postgres`` user the package creates, through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, stop_process, wait_for_http
from tests.test_compose import COMPOSE_FILE, argv_of, env_example, interpolated, option_value
from tests.test_end_to_end import ADMIN_KEY, forecast_request, predict, run_trainer
from tests.test_end_to_end import api as e2e_api
from tests.test_quickstart import MODEL_NAME

pytestmark = pytest.mark.integration


def postgres_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<major>/bin`` with ``initdb``, else ``initdb`` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL cluster of this test."""

    bindir: Path
    data: Path
    port: int
    user: str
    password: str
    as_user: list[str]  # the command prefix that runs a binary as the cluster's owner

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
            capture_output=True, text=True, timeout=60, check=False,
        )

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c full_page_writes=off")
        done = self.ctl("-w", "-t", "30", "-l", str(self.data.parent / "postgres.log"),
                        "-o", options, "start")
        assert done.returncode == 0, f"pg_ctl start failed: {done.stderr}\n{self.log()}"

    def stop(self, mode: str = "fast") -> None:
        done = self.ctl("-w", "-m", mode, "stop")
        assert done.returncode == 0, f"pg_ctl stop -m {mode} failed: {done.stderr}"

    def log(self) -> str:
        path = self.data.parent / "postgres.log"
        return path.read_text()[-3000:] if path.exists() else "(no log)"


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    bindir = postgres_bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed; .ci/run installs the Debian package postgresql")
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    as_user: list[str] = []
    owner = None
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        runuser = shutil.which("runuser")
        assert runuser, "running as root needs runuser (util-linux) to start PostgreSQL as postgres"
        as_user, owner = [runuser, "-u", "postgres", "--"], "postgres"
    # Not pytest's tmp_path: its parents are private to root, and the cluster's owner must
    # reach its data directory and socket.
    root = Path(tempfile.mkdtemp(prefix="latent-ode-pg-"))
    password = env_example()["POSTGRES_PASSWORD"]
    user = env_example()["POSTGRES_USER"]
    pwfile = root / "pwfile"
    pwfile.write_text(password)
    if owner:
        shutil.chown(root, owner)
        shutil.chown(pwfile, owner)
    init = subprocess.run(
        [*as_user, str(bindir / "initdb"), "-D", str(root / "data"), "-U", user,
         f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert init.returncode == 0, f"initdb failed: {init.stderr}"
    cluster = Postgres(bindir=bindir, data=root / "data", port=free_port(), user=user,
                       password=password, as_user=as_user)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.ctl("-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def create_database(pg: Postgres, name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user=pg.user, password=pg.password,
                            dbname="postgres")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def compose_mlflow_command(pg: Postgres, port: int, artifacts: Path) -> list[str]:
    """docker-compose.yml's mlflow command (read with .env.example), on this machine: the
    ``postgres`` host is 127.0.0.1:<the cluster's port>, the S3 bucket a local folder."""
    argv = argv_of(interpolated(COMPOSE_FILE)["services"]["mlflow"]["command"])
    store = option_value(argv, "--backend-store-uri")
    assert "@postgres:5432/" in store, store
    local = {
        "--backend-store-uri": store.replace("@postgres:5432/", f"@127.0.0.1:{pg.port}/"),
        "--artifacts-destination": str(artifacts),
        "--host": "127.0.0.1",
        "--port": str(port),
    }
    out = list(argv)
    for option, value in local.items():
        out[out.index(option) + 1] = value
    assert out[:2] == ["mlflow", "server"] and "--serve-artifacts" in out
    # One worker: a 2-core machine runs the whole stack.
    return [sys.executable, "-m", *out, "--workers", "1"]


@contextmanager
def mlflow_on_postgres(pg: Postgres, root: Path) -> Iterator[str]:
    database = option_value(argv_of(interpolated(COMPOSE_FILE)["services"]["mlflow"]["command"]),
                            "--backend-store-uri").rsplit("/", 1)[1]
    create_database(pg, database)
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "mlflow-server.log", "wb") as log:
        proc = subprocess.Popen(compose_mlflow_command(pg, port, root / "artifacts"), cwd=root,
                                stdout=log, stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{uri}/health", timeout=120, proc=proc)
        yield uri
    finally:
        stop_process(proc)


@contextmanager
def api(tracking_uri: str, workdir: Path) -> Iterator[str]:
    """``latent-ode serve`` as compose's api service runs it, asking the registry at every
    /readyz (interval 0) so the test sees the outage at once."""
    with e2e_api(tracking_uri, workdir, LATENT_ODE_MODEL_URI=f"models:/{MODEL_NAME}@champion",
                 LATENT_ODE_REGISTRY_CHECK_INTERVAL_S="0",
                 LATENT_ODE_REGISTRY_TIMEOUT_S="5") as base:
        yield base


def test_the_stack_on_postgresql_keeps_serving_when_the_database_dies(
    postgres: Postgres, tmp_path: Path
) -> None:
    with mlflow_on_postgres(postgres, tmp_path / "mlflow") as uri:
        out = run_trainer(uri, tmp_path / "trainer")
        assert f"registered {MODEL_NAME} version 1, promoted to champion" in out
        request = forecast_request()
        with api(uri, tmp_path / "api") as base:
            assert httpx.get(f"{base}/readyz").json() == {
                "status": "ready", "model": MODEL_NAME, "version": "1", "source": "registry",
                "registry": "reachable"}
            before = predict(base, request, "1")

            postgres.stop("immediate")  # a crash: no shutdown checkpoint, connections cut
            assert httpx.get(f"{uri}/health").status_code == 200  # mlflow itself is still up
            answers = [predict(base, request, "1") for _ in range(5)]
            ready = httpx.get(f"{base}/readyz", timeout=30)
            model = httpx.get(f"{base}/v1/model", timeout=30)
            # MLflow's own client would retry the 503 for minutes; the timeout fails a hang.
            reload = httpx.post(f"{base}/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY},
                                timeout=60)
            after_reload = predict(base, request, "1")

            postgres.start()
            back = httpx.get(f"{base}/readyz", timeout=30).json()
            deadline = time.monotonic() + 30
            while back.get("registry") != "reachable" and time.monotonic() < deadline:
                time.sleep(0.5)
                back = httpx.get(f"{base}/readyz", timeout=30).json()

    # Served from the loaded model: the same forecasts as before the database died.
    assert all(a["series"] == before["series"] for a in [*answers, after_reload])
    assert ready.status_code == 200, ready.text
    body = ready.json()
    detail = body.pop("detail", "")
    assert body == {"status": "ready", "model": MODEL_NAME, "version": "1", "source": "registry",
                    "registry": "unreachable"}
    assert detail.startswith(f"the registry is unreachable (the MLflow registry {uri} answered "
                             "503 (TEMPORARILY_UNAVAILABLE: "), detail
    assert "OperationalError" in detail, detail
    assert detail.endswith(f"serving the loaded model {MODEL_NAME} version 1 (from the registry) "
                           "until it is back"), detail
    assert postgres.password not in detail
    assert model.status_code == 200 and model.json()["version"] == "1"
    # An admin reload cannot reach the registry: 503 with the reason, and the loaded model stays.
    assert reload.status_code == 503, reload.text
    assert reload.json()["detail"].startswith(f"the MLflow registry {uri} answered 503"), reload.text
    assert back == {"status": "ready", "model": MODEL_NAME, "version": "1", "source": "registry",
                    "registry": "reachable"}
