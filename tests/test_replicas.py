"""Two api replicas behind the balancer, as docker-compose.yml runs them (issue 18 item 5).

Real processes: two ``latent-ode serve`` (uvicorn, each with its own micro-batcher) sharing one
model cache and one registry, and nginx with docker/nginx/api.conf (bench/_balancer.py swaps the
compose upstream for the two local ports). Requests through the balancer are answered by both
replicas (counted by each replica's own /metrics); one replica killed, the balancer answers every
request through the other.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.conftest import free_port, stop_process, wait_for_http
from tests.service.service_helpers import MODEL_NAME, make_forecaster, register_version
from tests.test_quickstart import latent_ode_command, subprocess_env

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]
OK = {"times": [0, 1, 2], "values": [[70, 37], [71, None], [None, 37.2]], "query_times": [1.5, 4]}
PREDICTED = re.compile(
    r'^latent_ode_http_requests_total\{method="POST",route="/v1/predict",status="200"\} (\S+)$',
    re.MULTILINE,
)


def balancer_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_balancer", REPO / "bench" / "_balancer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextmanager
def replica(tracking_uri: str, cache: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    env = subprocess_env(
        LATENT_ODE_TRACKING_URI=tracking_uri,
        LATENT_ODE_MODEL_URI=f"models:/{MODEL_NAME}@champion",
        LATENT_ODE_MODEL_CACHE_DIR=str(cache),
        LATENT_ODE_DEVICE="cpu",
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*latent_ode_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=log.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/readyz", timeout=180, proc=proc)
        yield f"127.0.0.1:{port}", proc
    finally:
        stop_process(proc)


def predicted(address: str) -> float:
    """How many predictions a replica has answered with 200, from its own /metrics."""
    text = httpx.get(f"http://{address}/metrics", timeout=30).text
    match = PREDICTED.search(text)
    return float(match.group(1)) if match else 0.0


def post_many(base: str, n: int) -> list[int]:
    def one(_: int) -> int:
        return httpx.post(f"{base}/v1/predict", json={"series": [OK]}, timeout=120).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(n)))


def test_native_config_is_the_compose_file_with_local_addresses() -> None:
    balancer = balancer_module()
    conf = balancer.native_api_conf(["127.0.0.1:1111", "127.0.0.1:2222"], 3333)
    original = balancer.API_CONF.read_text()
    assert "server api:8000 max_fails=3 fail_timeout=5s;" in original
    assert "server 127.0.0.1:1111 max_fails=3 fail_timeout=5s;" in conf
    assert "server 127.0.0.1:2222 max_fails=3 fail_timeout=5s;" in conf
    assert "listen 127.0.0.1:3333;" in conf and "api:8000" not in conf
    # Nothing else changes: the directives compose runs are the ones measured here.
    kept = [ln for ln in original.splitlines() if "server api:" not in ln and "listen " not in ln]
    assert kept == [ln for ln in conf.splitlines()
                    if "server 127.0.0.1:" not in ln and "listen " not in ln]


def test_two_replicas_behind_the_balancer_both_answer(tmp_path: Path) -> None:
    balancer = balancer_module()
    if balancer.nginx_binary() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is not installed; .ci/run installs the Debian package nginx")
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_version(tracking_uri, make_forecaster(seed=0), tmp_path)
    cache = tmp_path / "model-cache"  # one cache for both, as compose's model-cache volume
    with ExitStack() as stack:
        (a, proc_a), (b, _) = (
            stack.enter_context(replica(tracking_uri, cache, tmp_path / f"replica-{i}.log"))
            for i in range(2)
        )
        port = free_port()
        conf = balancer.write_nginx_conf([a, b], port, tmp_path / "nginx")
        nginx = balancer.start_nginx(conf, port)
        stack.callback(balancer.stop, nginx)
        base = f"http://127.0.0.1:{port}"

        ready = httpx.get(f"{base}/readyz", timeout=30)
        statuses = post_many(base, 24)
        counts = {a: predicted(a), b: predicted(b)}

        proc_a.send_signal(signal.SIGKILL)  # a replica dies (as a crash, no goodbye)
        proc_a.wait(timeout=30)
        after = post_many(base, 12)
        survivor = predicted(b)

    assert ready.status_code == 200 and ready.json()["model"] == MODEL_NAME
    assert statuses == [200] * 24
    assert sum(counts.values()) == 24, counts
    assert all(n >= 1 for n in counts.values()), f"one replica answered nothing: {counts}"
    assert after == [200] * 12, "the balancer must pass over the dead replica"
    assert survivor == counts[b] + 12
