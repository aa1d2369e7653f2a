"""Load test of the REST service: throughput and latency with micro-batching on and off.

Starts the service as a real uvicorn subprocess on 127.0.0.1 (``service.server.run``), with a
model this script registers itself in a temporary SQLite MLflow store (an untrained forecaster
of the default architecture, 1 channel; or ``--model-uri`` with the ambient
``MLFLOW_TRACKING_URI``). Each request carries one series of 50 irregular observations and 50
query times (backcast, interpolation and extrapolation) and asks for 32 samples. For each
concurrency level (1, 8, 32, 64 clients; httpx async, bounded in time and count) it reports
requests/s, p50/p95/p99 latency and errors with batching on and off (two service processes,
measured back to back per level), prints a table and writes JSON.

Targets on 2 CPU cores: zero errors; with batching, throughput at 64 clients >= 4x the unbatched
figure; p50 for one client < 30 ms. The load generator shares the machine with the service, so
absolute figures are context; the ratios are what to compare.

    python bench/serve_load.py                      # ~2.5 minutes
    python bench/serve_load.py --seconds 5 --out /tmp/load.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _results import write_results

MODEL_NAME = "serve-load"
LEVELS = (1, 8, 32, 64)


def register_model(workdir: Path) -> tuple[str, str]:
    """Register an untrained default-architecture forecaster; returns (tracking URI, model URI)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from formats.model_artifact import FORECASTER_ARTIFACT
    from latent_ode import Forecaster, ModelConfig, Normaliser
    from pipelines.pyfunc import LatentODEPyfunc
    from pipelines.sources.periodic import periodic

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    train = periodic(100, n_times=50, shared_grid=False, seed=0)
    forecaster = Forecaster.create(
        ModelConfig(input_dim=1), Normaliser.fit(train, kind="standard"), channels=["x"],
        time_unit="hours", seed=0,
    )
    directory = workdir / "saved" / FORECASTER_ARTIFACT
    forecaster.save(directory)
    client = MlflowClient(uri)
    experiment = client.create_experiment(
        "serve-load", artifact_location=(workdir / "artifacts").as_uri()
    )
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=LatentODEPyfunc(),
            artifacts={FORECASTER_ARTIFACT: str(directory)},
            registered_model_name=MODEL_NAME, pip_requirements=["latent-ode"],
        )
    client.set_registered_model_alias(MODEL_NAME, "champion", str(info.registered_model_version))
    return uri, f"models:/{MODEL_NAME}@champion"


def make_bodies(n: int, *, seed: int = 1) -> list[bytes]:
    """Request bodies: one series of 50 observations and 50 query times each, 32 samples."""
    from pipelines.sources.periodic import periodic

    series = periodic(n, n_times=50, shared_grid=False, seed=seed)
    queries = np.linspace(-0.5, 7.0, 50)
    bodies = []
    for s in series:
        body = {
            "series": [{
                "id": s.id or None,
                "times": s.times.tolist(),
                "values": [[None if np.isnan(v) else float(v) for v in row] for row in s.values],
                "query_times": queries.tolist(),
            }],
            "num_samples": 32,
        }
        bodies.append(json.dumps(body).encode())
    return bodies


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    code = f"from service.server import run; run('127.0.0.1', {port})"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=log.parent)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc, base
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    proc.kill()
    raise TimeoutError(f"the service did not become ready in 180 s; see {log}")


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


async def drive(base: str, bodies: list[bytes], clients: int, seconds: float,
                max_requests: int) -> dict[str, Any]:
    """``clients`` concurrent loops posting bodies until ``seconds`` pass or ``max_requests``."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    headers = {"content-type": "application/json"}
    # One client (one keep-alive connection) per virtual user: a single shared pool of many
    # connections costs the load generator more CPU per request than the service spends.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    users = [httpx.AsyncClient(base_url=base, limits=limits, timeout=60.0) for _ in range(clients)]
    try:
        await asyncio.gather(*(  # warm-up, not measured: opens every connection
            http.post("/v1/predict", content=bodies[i % len(bodies)], headers=headers)
            for i, http in enumerate(users)
        ))
        deadline = time.perf_counter() + seconds

        async def loop(worker: int) -> None:
            nonlocal sent
            http = users[worker]
            i = worker
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                body = bodies[i % len(bodies)]
                i += clients
                started = time.perf_counter()
                try:
                    r = await http.post("/v1/predict", content=body, headers=headers)
                    key = None if r.status_code == 200 else f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                if key is None:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[key] = errors.get(key, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(loop(w) for w in range(clients)))
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(http.aclose() for http in users))
    ms = sorted(1000 * x for x in latencies)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(round(p / 100 * (len(ms) - 1))))] if ms else float("nan")

    return {
        "clients": clients,
        "requests": len(ms),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "seconds": elapsed,
        "rps": len(ms) / elapsed,
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-uri", help="serve this model (MLFLOW_TRACKING_URI says where)")
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds per level")
    p.add_argument("--max-requests", type=int, default=20_000, help="cap per level")
    p.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    p.add_argument("--batch-max-wait-ms", type=float, default=None,
                   help="LATENT_ODE_BATCH_MAX_WAIT_MS for the batched run (default: settings)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default bench/results/serve_load-<time>.json)")
    args = p.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="serve-load-"))
    env = {**os.environ, "LATENT_ODE_MODEL_CACHE_DIR": str(workdir / "cache")}
    if args.model_uri:
        env["LATENT_ODE_MODEL_URI"] = args.model_uri
    else:
        tracking_uri, model_uri = register_model(workdir)
        env["LATENT_ODE_TRACKING_URI"] = tracking_uri
        env["LATENT_ODE_MODEL_URI"] = model_uri
    bodies = make_bodies(256)
    runs: list[dict[str, Any]] = []
    # Both services run side by side (an idle one costs nothing) and each level is measured on
    # one, then at once on the other, so a change in background load hits both alike.
    services: dict[bool, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for batching in (True, False):
            run_env = {**env, "LATENT_ODE_BATCHING_ENABLED": str(batching).lower()}
            if batching and args.batch_max_wait_ms is not None:
                run_env["LATENT_ODE_BATCH_MAX_WAIT_MS"] = str(args.batch_max_wait_ms)
            services[batching] = start_service(
                run_env, workdir / f"service-batching-{batching}.log"
            )
        for clients in args.levels:
            for batching in (True, False):
                base = services[batching][1]
                result = asyncio.run(drive(base, bodies, clients, args.seconds, args.max_requests))
                result["batching"] = batching
                runs.append(result)
                print(f"batching={'on ' if batching else 'off'} clients={clients:>3}: "
                      f"{result['rps']:7.1f} req/s  p50 {result['p50_ms']:7.1f} ms  "
                      f"errors {result['errors']}", flush=True)
    finally:
        for proc, _ in services.values():
            stop_service(proc)

    def find(batching: bool, clients: int) -> dict[str, Any] | None:
        return next((r for r in runs if r["batching"] == batching and r["clients"] == clients),
                    None)

    print()
    print("| batching | clients | requests | req/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in sorted(runs, key=lambda r: (not r["batching"], r["clients"])):
        print(f"| {'on' if r['batching'] else 'off'} | {r['clients']} | {r['requests']} | "
              f"{r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['errors']} |")
    top = max(args.levels)
    on, off, single = find(True, top), find(False, top), find(True, 1)
    summary: dict[str, Any] = {"errors": sum(r["errors"] for r in runs)}
    if on and off:
        summary[f"throughput_ratio_at_{top}"] = on["rps"] / off["rps"]
        print(f"\nthroughput at {top} clients, batching on / off: "
              f"{summary[f'throughput_ratio_at_{top}']:.2f}x (target >= 4x)")
    if single:
        summary["p50_ms_one_client"] = single["p50_ms"]
        print(f"p50 with one client (batching on): {single['p50_ms']:.1f} ms (target < 30 ms)")
    print(f"errors: {summary['errors']} (target 0)")
    out = args.out or Path("bench/results") / f"serve_load-{time.strftime('%Y%m%dT%H%M%S')}.json"
    write_results(out, {
        "runs": runs, "summary": summary, "seconds_per_level": args.seconds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "workload": {"observations": 50, "query_times": 50, "num_samples": 32,
                     "series_per_request": 1},
    })


if __name__ == "__main__":
    main()
