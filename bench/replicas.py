"""API replicas behind the balancer, measured natively (issue 18 item 5).

docker-compose.yml runs API_REPLICAS api processes behind nginx (docker/nginx/api.conf). This runs
the same topology on this machine and measures, side by side in one run:

- ``direct-1``: one service process, clients connect to it directly (today's deployment);
- ``balancer-1``: the same kind of process behind nginx (what the balancer itself costs);
- ``balancer-2``: two processes behind nginx, each with its own micro-batcher.

Each is a real ``service.server.run`` process (uvicorn, LATENT_ODE_TORCH_THREADS=1, the
default) serving one model; nginx runs docker/nginx/api.conf with local upstreams
(bench/_balancer.py, one nginx worker). The load driver and request bodies are bench/serve_load.py's
(``drive``, ``make_bodies``: one series of 50 observations, 50 query times, 32 samples per
request). Configurations are measured in turn, ``--rounds`` times, so a change in the machine's
background load hits all of them alike; the figures are the medians over rounds. Beside the
wall-clock series/s, each run records the CPU seconds the service processes and nginx spent
(``/proc/<pid>/stat``), which other jobs on a shared machine disturb far less: CPU milliseconds
per series, of the services and of the balancer. The JSON (bench/results/replicas-<time>.json)
holds every run, the medians, the ratio to ``direct-1`` and a projection, stated as such, of how
the balancer-2 figure grows with more cores.

    PYTHONPATH=$PWD python bench/replicas.py                  # ~3 minutes
    PYTHONPATH=$PWD python bench/replicas.py --seconds 5 --rounds 1 --out /tmp/replicas.json

The load generator shares the cores with the services, so absolute figures are context; the
ratios are what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from _balancer import nginx_binary, start_nginx, stop, wait_ready, write_nginx_conf
from _results import write_results
from serve_load import drive, make_bodies, register_model

CONFIGS = ("direct-1", "balancer-1", "balancer-2")
_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` and their children's threads so far (Linux /proc);
    nginx's workers are children of its master, so they are included through it."""
    total = 0.0
    todo = list(pids)
    while todo:
        pid = todo.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return total


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_replica(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """One service process on a free port; returns it and its ``host:port`` once ready."""
    port = free_port()
    code = f"from service.server import run; run('127.0.0.1', {port})"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=log.parent)
    wait_ready(proc, f"http://127.0.0.1:{port}/readyz", timeout=180, name="a replica", see=log)
    return proc, f"127.0.0.1:{port}"


def projection(direct: float, two: float, cpu_ms_per_series: float,
               cores: list[int]) -> dict[str, Any]:
    """How balancer-2's series/s may grow with cores: a projection, not a measurement.

    ``cpu_bound``: N cores all busy with replicas and nginx, at the CPU cost per series measured
    here (services + balancer): N * 1000 / cpu_ms_per_series. It assumes the load generator runs
    elsewhere, one replica per core, and neither memory bandwidth nor nginx's one worker binding
    (nginx's share is in the cost). ``linear``: N replicas each doing what one of the two did
    here (two / 2 per core), lower because here the load generator shared the cores.
    ``marginal``: every added replica adds what the second one added here (two - direct), the
    pessimistic reading.
    """
    return {
        "note": "projection, not measured: see the docstring of bench/replicas.py:projection",
        "cpu_ms_per_series": cpu_ms_per_series,
        "by_cores": [{"cores": n, "cpu_bound": n * 1000 / cpu_ms_per_series,
                      "linear": n * two / 2, "marginal": direct + (n - 1) * (two - direct)}
                     for n in cores],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-uri", help="serve this model (MLFLOW_TRACKING_URI says where); "
                   "default: serve_load's registered model")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=12.0, help="measured seconds per run")
    p.add_argument("--rounds", type=int, default=3, help="turns over the configurations")
    p.add_argument("--max-requests", type=int, default=50_000)
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default bench/results/replicas-<time>.json)")
    args = p.parse_args()
    if nginx_binary() is None:
        sys.exit("nginx is not installed (Debian: apt-get install nginx)")

    workdir = Path(tempfile.mkdtemp(prefix="replicas-"))
    env = {**os.environ, "LATENT_ODE_MODEL_CACHE_DIR": str(workdir / "cache"),
           "LATENT_ODE_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}
    if args.model_uri:
        env["LATENT_ODE_MODEL_URI"] = args.model_uri
        model = args.model_uri
    else:
        tracking_uri, model = register_model(workdir)
        env["LATENT_ODE_TRACKING_URI"] = tracking_uri
        env["LATENT_ODE_MODEL_URI"] = model
    bodies = make_bodies(256)
    runs: list[dict[str, Any]] = []
    load = {"start": os.getloadavg()}
    with ExitStack() as stack:
        addresses, pids = [], []
        for i in range(3):
            proc, address = start_replica(env, workdir / f"replica-{i}.log")
            stack.callback(stop, proc)
            addresses.append(address)
            pids.append(proc.pid)
        bases = {"direct-1": f"http://{addresses[0]}"}
        service_pids = {"direct-1": pids[:1], "balancer-1": pids[:1], "balancer-2": pids[1:]}
        nginx_pids: dict[str, list[int]] = {"direct-1": []}
        for name, upstreams in (("balancer-1", addresses[:1]), ("balancer-2", addresses[1:])):
            port = free_port()
            conf = write_nginx_conf(upstreams, port, workdir / name)
            nginx = start_nginx(conf, port)
            stack.callback(stop, nginx)
            bases[name] = f"http://127.0.0.1:{port}"
            nginx_pids[name] = [nginx.pid]
        for round_ in range(args.rounds):
            for name in CONFIGS:
                before = cpu_seconds(service_pids[name]), cpu_seconds(nginx_pids[name])
                result = asyncio.run(drive(bases[name], bodies, args.clients, args.seconds,
                                           args.max_requests))
                # Includes the driver's warm-up requests (one per client) in the CPU figures.
                served = result["requests"] + args.clients
                service_cpu = cpu_seconds(service_pids[name]) - before[0]
                nginx_cpu = cpu_seconds(nginx_pids[name]) - before[1]
                result.update(
                    config=name, round=round_, series_per_s=result["rps"],
                    service_cpu_s=service_cpu, balancer_cpu_s=nginx_cpu,
                    service_cpu_ms_per_series=1000 * service_cpu / served,
                    balancer_cpu_ms_per_series=1000 * nginx_cpu / served,
                )
                runs.append(result)
                print(f"round {round_} {name:<10} {args.clients} clients: "
                      f"{result['series_per_s']:7.1f} series/s  p50 {result['p50_ms']:7.1f} ms  "
                      f"CPU ms/series: service {result['service_cpu_ms_per_series']:.2f} "
                      f"balancer {result['balancer_cpu_ms_per_series']:.2f}  "
                      f"errors {result['errors']}", flush=True)
    load["end"] = os.getloadavg()

    medians: dict[str, dict[str, float]] = {}
    for name in CONFIGS:
        mine = [r for r in runs if r["config"] == name]
        medians[name] = {
            "series_per_s": statistics.median(r["series_per_s"] for r in mine),
            "p50_ms": statistics.median(r["p50_ms"] for r in mine),
            "p95_ms": statistics.median(r["p95_ms"] for r in mine),
            "errors": sum(r["errors"] for r in mine),
            "service_cpu_ms_per_series": statistics.median(
                r["service_cpu_ms_per_series"] for r in mine),
            "balancer_cpu_ms_per_series": statistics.median(
                r["balancer_cpu_ms_per_series"] for r in mine),
        }
    direct = medians["direct-1"]["series_per_s"]
    for name in CONFIGS:
        medians[name]["ratio_to_direct_1"] = medians[name]["series_per_s"] / direct
    print()
    print(f"| configuration | series/s at {args.clients} clients | ratio | p50 ms | p95 ms | "
          "service CPU ms/series | balancer CPU ms/series | errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in CONFIGS:
        m = medians[name]
        print(f"| {name} | {m['series_per_s']:.1f} | {m['ratio_to_direct_1']:.2f}x | "
              f"{m['p50_ms']:.1f} | {m['p95_ms']:.1f} | {m['service_cpu_ms_per_series']:.2f} | "
              f"{m['balancer_cpu_ms_per_series']:.2f} | {m['errors']} |")
    two = medians["balancer-2"]
    projected = projection(direct, two["series_per_s"],
                           two["service_cpu_ms_per_series"] + two["balancer_cpu_ms_per_series"],
                           [2, 4, 8, 16])
    print("\nprojection (not measured): series/s on N cores, marginal / linear / CPU-bound")
    for row in projected["by_cores"]:
        print(f"  {row['cores']:>2} cores: {row['marginal']:7.0f} / {row['linear']:7.0f} / "
              f"{row['cpu_bound']:7.0f}")
    out = args.out or Path("bench/results") / f"replicas-{time.strftime('%Y%m%dT%H%M%S')}.json"
    nginx_version = subprocess.run([nginx_binary() or "nginx", "-v"], capture_output=True,
                                   text=True, check=False).stderr.strip()
    write_results(out, {
        "medians": medians, "projection": projected, "runs": runs,
        "clients": args.clients, "seconds_per_run": args.seconds, "rounds": args.rounds,
        "model_uri": model,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "nginx": nginx_version,
                    "loadavg": load},
        "workload": {"observations": 50, "query_times": 50, "num_samples": 32,
                     "series_per_request": 1},
    })


if __name__ == "__main__":
    main()
