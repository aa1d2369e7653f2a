"""Serving speed: series/s through HTTP and at the library level, today's settings side by side.

By default it serves the demo's TRAINED model (``pipelines/configs/periodic.toml`` through
``latent-ode quickstart --no-serve``, trained once, about 80-240 s, and cached in
``bench/.cache/demo``); ``--model-uri`` serves another (``MLFLOW_TRACKING_URI`` says where) and
``--untrained`` the old untrained default (which flatters the figures: its solves take few steps).

Workload (seeded): 256 series of the demo's kind (noisy sinusoids on irregular times), each
with 5-200 observations and 1-50 query times between 0.5 h before the window and 2 h after it,
32 samples, one series per request (:func:`make_workload`).

Measured in one run, configurations alternating per level so a change in background load hits
all alike:

- library level: ``Forecaster.predict`` on batches of 1, 16 and 64 series of the mix, no HTTP,
  with the fused inference fields (``latent_ode.fused``) on and off;
- HTTP: real uvicorn services on 127.0.0.1 driven by ``clients`` keep-alive connections (1, 16,
  64): ``baseline`` (today's main: one process, fields not fused), ``fused-1w`` (one process,
  fused) and ``fused-2w`` (``LATENT_ODE_WORKERS=2``, one process per core, fused), each with
  micro-batching on. Series/s, p50/p95/p99 latency and errors per level.

The load generator (a minimal asyncio HTTP/1.1 client, far cheaper per request than httpx)
shares the 2 cores with the service; the ratios are what to compare. ``--profile`` adds a
cProfile of one request's ``Forecaster.predict`` grouped by phase; ``--memory-minutes M`` adds
a run of M minutes at 64 clients on ``fused-2w`` with the services' resident memory sampled.

    python bench/serve_load.py                          # ~4 minutes after the model is cached
    python bench/serve_load.py --seconds 5 --out /tmp/load.json
    python bench/serve_load.py --memory-minutes 10 --levels 64 --configs fused-2w
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from _results import write_results

MODEL_NAME = "serve-load"
LEVELS = (1, 16, 64)
BATCHES = (1, 16, 64)
DEMO_DIR = Path(__file__).resolve().parent / ".cache" / "demo"
#: name -> (extra service environment, whether the fused fields are on)
CONFIGS: dict[str, tuple[dict[str, str], bool]] = {
    "baseline": ({"LATENT_ODE_WORKERS": "1"}, False),
    "fused-1w": ({"LATENT_ODE_WORKERS": "1"}, True),
    "fused-2w": ({"LATENT_ODE_WORKERS": "2"}, True),
}


def demo_model(directory: Path = DEMO_DIR) -> tuple[str, str]:
    """The demo's trained model, trained once into ``directory`` (``latent-ode quickstart
    --no-serve``); returns (tracking URI, model URI)."""
    db = directory / "mlflow.db"
    if not (directory / "trained").exists():
        directory.mkdir(parents=True, exist_ok=True)
        print(f"training the demo model once into {directory} (a few minutes)", flush=True)
        with open(directory / "quickstart.log", "ab") as log:
            subprocess.run([sys.executable, "-m", "pipelines.cli", "quickstart", "--no-serve"],
                           cwd=directory, stdout=log, stderr=subprocess.STDOUT, check=True,
                           env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}"})
        (directory / "trained").touch()
    return f"sqlite:///{db}", "models:/latent-ode@champion"


def load_forecaster(tracking_uri: str, model_uri: str, workdir: Path) -> Any:
    """The forecaster a service would serve, for the library-level figures."""
    import mlflow

    from formats.model_artifact import FORECASTER_ARTIFACT
    from latent_ode import Forecaster

    mlflow.set_tracking_uri(tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(workdir / "lib")))
    found = next(local.rglob(f"{FORECASTER_ARTIFACT}/config.json"))
    return Forecaster.load(found.parent)


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


def make_workload(n: int = 256, *, seed: int = 1) -> tuple[list[Any], list[np.ndarray]]:
    """``n`` series with 5-200 observations each (log-uniform) and 1-50 sorted query times on
    [-0.5, 7] hours (the demo's window is [0, 5]): backcast, interpolation and extrapolation."""
    from latent_ode.data import Series
    from pipelines.sources.periodic import periodic

    rng = np.random.default_rng(seed)
    series, queries = [], []
    for s in periodic(n, n_times=200, shared_grid=False, seed=seed):
        k = int(np.exp(rng.uniform(np.log(5), np.log(200.5))))
        keep = np.sort(rng.choice(200, size=k, replace=False))
        series.append(Series(times=s.times[keep], values=s.values[keep], id=s.id))
        queries.append(np.sort(rng.uniform(-0.5, 7.0, int(rng.integers(1, 51)))))
    return series, queries


def make_bodies(n: int = 256, *, seed: int = 1, num_samples: int = 32) -> list[bytes]:
    """Request bodies of :func:`make_workload`: one series each, ``num_samples`` samples."""
    series, queries = make_workload(n, seed=seed)
    bodies = []
    for s, q in zip(series, queries, strict=True):
        body = {
            "series": [{
                "id": s.id or None,
                "times": s.times.tolist(),
                "values": [[None if np.isnan(v) else float(v) for v in row] for row in s.values],
                "query_times": q.tolist(),
            }],
            "num_samples": num_samples,
        }
        bodies.append(json.dumps(body).encode())
    return bodies


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_service(env: dict[str, str], log: Path, *, fused: bool = True, workers: int = 1,
                  cwd: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``service.server.run`` in a subprocess, ready once all ``workers`` serve a model."""
    port = free_port()
    code = f"from service.server import run; run('127.0.0.1', {port})"
    if not fused:
        code = "import latent_ode.fused as f; f.ENABLED = False; " + code
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=cwd or log.parent)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{base}/metrics", timeout=2) as r:
                text = r.read().decode()
            served = [line for line in text.splitlines()
                      if line.startswith("latent_ode_model_info{") and line.endswith(" 1.0")]
            if len(served) >= workers:
                return proc, base
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    proc.kill()
    raise TimeoutError(f"the service did not become ready in 300 s; see {log}")


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def process_tree_rss_mib(pid: int) -> dict[int, float]:
    """Resident memory (MiB) of ``pid`` and its descendants (the workers), from /proc."""
    out: dict[int, float] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[p] = int(line.split()[1]) / 1024
            for task in Path(f"/proc/{p}").joinpath("task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


class _Connection:
    """One keep-alive HTTP/1.1 connection posting JSON: a few lines of asyncio, so that the
    load generator costs the shared cores far less per request than the service does."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json"
                f"\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        try:
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {k.strip().lower(): v.strip() for k, v in
                       (line.split(":", 1) for line in lines[1:] if ":" in line)}
            payload = await self.reader.readexactly(int(headers.get("content-length", "0")))
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.close()
            raise
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except ConnectionError:
                pass
        self.reader = self.writer = None


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = sorted(1000 * x for x in seconds)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(round(p / 100 * (len(ms) - 1))))] if ms else float("nan")

    return {"p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "mean_ms": statistics.fmean(ms) if ms else float("nan")}


async def drive(base: str, bodies: list[bytes], clients: int, seconds: float,
                max_requests: int, *, series_per_request: int = 1) -> dict[str, Any]:
    """``clients`` concurrent keep-alive connections posting ``bodies`` to /v1/predict until
    ``seconds`` pass or ``max_requests`` were sent; throughput, latency and errors."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    users = [_Connection(host, int(port)) for _ in range(clients)]
    try:
        # Warm-up, not measured: opens every connection.
        await asyncio.gather(*(u.post("/v1/predict", bodies[i % len(bodies)])
                               for i, u in enumerate(users)))
        deadline = time.perf_counter() + seconds

        async def loop(worker: int) -> None:
            nonlocal sent
            user = users[worker]
            i = worker
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                body = bodies[i % len(bodies)]
                i += clients
                started = time.perf_counter()
                try:
                    status, _ = await user.post("/v1/predict", body)
                    key = None if status == 200 else f"HTTP {status}"
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    key = type(exc).__name__
                if key is None:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors[key] = errors.get(key, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(loop(w) for w in range(clients)))
        elapsed = time.perf_counter() - started
    finally:
        await asyncio.gather(*(u.close() for u in users))
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "series_per_s": series_per_request * len(latencies) / elapsed,
        **_percentiles(latencies),
    }


# ------------------------------------------------------------------------------- library level
def library_level(forecaster: Any, series: list[Any], queries: list[np.ndarray], batch: int,
                  seconds: float) -> dict[str, Any]:
    """``Forecaster.predict`` on consecutive batches of ``batch`` series of the mix (no HTTP)
    for about ``seconds``: series/s and per-call latency."""
    calls: list[float] = []
    nfe: list[int] = []
    i = 0
    forecaster.predict(series[:batch], queries[:batch], num_samples=32)  # warm-up
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(calls) < 3:
        idx = [(i + k) % len(series) for k in range(batch)]
        i += batch
        started = time.perf_counter()
        out = forecaster.predict([series[k] for k in idx], [queries[k] for k in idx],
                                 num_samples=32)
        calls.append(time.perf_counter() - started)
        nfe.append(out[0].stats.nfe)
    return {"batch": batch, "calls": len(calls), "series_per_s": batch * len(calls) / sum(calls),
            "median_nfe": float(np.median(nfe)), **_percentiles(calls)}


def profile_one_request(forecaster: Any, series: Any, queries: np.ndarray,
                        repeats: int = 50) -> dict[str, Any]:
    """cProfile of ``Forecaster.predict`` for one series (32 samples), ``repeats`` times:
    per phase, the time inside it (cumulative) per request; and the top functions."""
    forecaster.predict([series], [queries], num_samples=32)
    prof = cProfile.Profile()
    started = time.perf_counter()
    prof.enable()
    for _ in range(repeats):
        forecaster.predict([series], [queries], num_samples=32)
    prof.disable()
    total = (time.perf_counter() - started) / repeats
    stats = pstats.Stats(prof)
    cumulative: dict[str, float] = {}
    own: list[tuple[float, str]] = []
    for (file, line, name), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{Path(file).name}:{line}({name})"
        own.append((tt / repeats, where))
        if name == "forward" and file.endswith("encoder.py"):
            cumulative["encoder"] = ct / repeats
        elif name == "solve" and file.endswith("adjoints.py"):
            cumulative["solve (torchode)"] = ct / repeats
        elif name == "step" and file.endswith("runge_kutta.py"):
            cumulative["solve: Runge-Kutta steps"] = ct / repeats
        elif name == "__call__" and file.endswith("fused.py"):
            cumulative.setdefault("vector field (fused) calls", 0.0)
            cumulative["vector field (fused) calls"] += tt / repeats
        elif name == "forward" and file.endswith("dynamics.py"):
            cumulative.setdefault("vector field (module) calls", 0.0)
            cumulative["vector field (module) calls"] += ct / repeats
        elif name == "mixture_quantiles":
            cumulative["quantiles"] = ct / repeats
        elif name == "predict" and file.endswith("forecaster.py"):
            cumulative["predict (all)"] = ct / repeats
    own.sort(reverse=True)
    return {"wall_ms_per_request": 1000 * total,
            "phases_ms": {k: 1000 * v for k, v in cumulative.items()},
            "top_own_time_ms": [(where, 1000 * t) for t, where in own[:12]],
            "observations": int(series.times.size), "query_times": int(queries.size)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-uri", help="serve this model (MLFLOW_TRACKING_URI says where)")
    p.add_argument("--untrained", action="store_true",
                   help="an untrained default-architecture model (the old default)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    p.add_argument("--library-seconds", type=float, default=4.0,
                   help="measured seconds per library batch size and setting")
    p.add_argument("--max-requests", type=int, default=100_000, help="cap per level")
    p.add_argument("--levels", type=int, nargs="+", default=list(LEVELS))
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--profile", action="store_true", help="profile one request (library)")
    p.add_argument("--memory-minutes", type=float, default=0.0,
                   help="then run 64 clients this long on the last config, sampling RSS")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default bench/results/serve_load-<time>.json)")
    args = p.parse_args()

    import torch

    torch.set_num_threads(1)
    workdir = Path(tempfile.mkdtemp(prefix="serve-load-"))
    env = {**os.environ, "LATENT_ODE_MODEL_CACHE_DIR": str(workdir / "cache")}
    service_cwd = workdir
    if args.model_uri:
        tracking_uri, model_uri = os.environ.get("MLFLOW_TRACKING_URI", ""), args.model_uri
        model_kind = args.model_uri
    elif args.untrained:
        tracking_uri, model_uri = register_model(workdir)
        model_kind = "untrained default architecture"
    else:
        tracking_uri, model_uri = demo_model()
        service_cwd = DEMO_DIR  # its artifact locations are relative to it
        model_kind = "demo (pipelines/configs/periodic.toml, trained)"
    env["LATENT_ODE_TRACKING_URI"] = tracking_uri
    env["LATENT_ODE_MODEL_URI"] = model_uri
    series, queries = make_workload(256)
    bodies = make_bodies(256)
    out: dict[str, Any] = {
        "model": model_kind,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "torch": torch.__version__,
                    "load_average_start": os.getloadavg()},
        "workload": {"observations": "5-200 (log-uniform)", "query_times": "1-50",
                     "query_window_hours": [-0.5, 7.0], "num_samples": 32,
                     "series_per_request": 1, "distinct_requests": len(bodies)},
        "seconds_per_level": args.seconds,
    }

    # Library level, fused on and off alternating.
    import latent_ode.fused as fused

    cwd = Path.cwd()
    os.chdir(service_cwd)
    try:
        forecaster = load_forecaster(tracking_uri, model_uri, workdir)
    finally:
        os.chdir(cwd)
    library: list[dict[str, Any]] = []
    for batch in args.batches:
        for on in (False, True):
            fused.ENABLED = on
            r = library_level(forecaster, series, queries, batch, args.library_seconds)
            r["fused"] = on
            library.append(r)
            print(f"library fused={'on ' if on else 'off'} batch={batch:>3}: "
                  f"{r['series_per_s']:7.1f} series/s  p50 {r['p50_ms']:7.1f} ms per call  "
                  f"nfe {r['median_nfe']:.0f}", flush=True)
    fused.ENABLED = True
    out["library"] = library
    if args.profile:
        typical = min(range(len(series)), key=lambda k: abs(series[k].times.size - 50)
                      + abs(queries[k].size - 25))
        for on in (False, True):
            fused.ENABLED = on
            out[f"profile_{'fused' if on else 'baseline'}"] = prof = profile_one_request(
                forecaster, series[typical], queries[typical])
            print(f"profile (fused={on}): {prof['wall_ms_per_request']:.1f} ms per request; "
                  + ", ".join(f"{k} {v:.2f} ms" for k, v in prof["phases_ms"].items()),
                  flush=True)
        fused.ENABLED = True

    # HTTP: every configuration up at once (an idle one costs nothing), levels alternating.
    runs: list[dict[str, Any]] = []
    services: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    memory: dict[str, Any] | None = None
    try:
        for name in args.configs:
            extra, on = CONFIGS[name]
            services[name] = start_service({**env, **extra}, workdir / f"service-{name}.log",
                                           fused=on, workers=int(extra["LATENT_ODE_WORKERS"]),
                                           cwd=service_cwd)
        for clients in args.levels:
            for name in args.configs:
                result = asyncio.run(drive(services[name][1], bodies, clients, args.seconds,
                                           args.max_requests))
                result["config"] = name
                runs.append(result)
                print(f"{name:>9} clients={clients:>3}: {result['series_per_s']:7.1f} series/s  "
                      f"p50 {result['p50_ms']:6.1f} ms  p95 {result['p95_ms']:6.1f} ms  "
                      f"errors {result['errors']}", flush=True)
        if args.memory_minutes > 0:
            name = args.configs[-1]
            proc, base = services[name]
            samples = []
            seconds = 60 * args.memory_minutes
            asyncio.run(drive(base, bodies, 64, 20, args.max_requests * 10))  # settle
            started = time.monotonic()
            chunk = max(seconds / 20, 5.0)
            soak: list[dict[str, Any]] = []
            while time.monotonic() - started < seconds:
                rss = process_tree_rss_mib(proc.pid)
                samples.append((round(time.monotonic() - started, 1), round(sum(rss.values()), 1),
                                {str(k): round(v, 1) for k, v in rss.items()}))
                soak.append(asyncio.run(drive(base, bodies, 64, chunk, 10**9)))
            rss = process_tree_rss_mib(proc.pid)
            samples.append((round(time.monotonic() - started, 1), round(sum(rss.values()), 1),
                            {str(k): round(v, 1) for k, v in rss.items()}))
            first, last = samples[0][1], samples[-1][1]
            memory = {"config": name, "clients": 64, "minutes": args.memory_minutes,
                      "rss_mib_start": first, "rss_mib_end": last,
                      "growth": (last - first) / first, "samples": samples,
                      "requests": sum(r["requests"] for r in soak),
                      "errors": sum(r["errors"] for r in soak),
                      "error_kinds": {k: sum(r["error_kinds"].get(k, 0) for r in soak)
                                      for k in {k for r in soak for k in r["error_kinds"]}},
                      "series_per_s": sum(r["requests"] for r in soak)
                      / sum(r["seconds"] for r in soak)}
            print(f"memory over {args.memory_minutes:g} min at 64 clients ({name}): "
                  f"{first:.0f} -> {last:.0f} MiB ({100 * memory['growth']:+.1f}%), "
                  f"errors {memory['errors']}", flush=True)
    finally:
        for proc, _ in services.values():
            stop_service(proc)

    def find(name: str, clients: int) -> dict[str, Any] | None:
        return next((r for r in runs if r["config"] == name and r["clients"] == clients), None)

    print()
    print("| config | clients | series/s | p50 ms | p95 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        print(f"| {r['config']} | {r['clients']} | {r['series_per_s']:.1f} | {r['p50_ms']:.1f} | "
              f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |")
    summary: dict[str, Any] = {"errors": sum(r["errors"] for r in runs)}
    top, best = max(args.levels), args.configs[-1]
    base_top, best_top = find("baseline", top), find(best, top)
    if best_top:
        summary[f"series_per_s_at_{top}"] = best_top["series_per_s"]
    if base_top and best_top:
        summary[f"ratio_to_baseline_at_{top}"] = best_top["series_per_s"] / base_top["series_per_s"]
    one = find(best, 1)
    if one:
        summary["p50_ms_one_client"] = one["p50_ms"]
    lib = {(r["batch"], r["fused"]): r for r in library}
    for batch in args.batches:
        if (batch, True) in lib and (batch, False) in lib:
            summary[f"library_fused_ratio_batch_{batch}"] = (
                lib[(batch, True)]["series_per_s"] / lib[(batch, False)]["series_per_s"])
    for key, value in summary.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")
    out.update({"runs": runs, "summary": summary, "memory": memory,
                "load_average_end": os.getloadavg()})
    path = args.out or Path("bench/results") / f"serve_load-{time.strftime('%Y%m%dT%H%M%S')}.json"
    write_results(path, out)


if __name__ == "__main__":
    main()
