"""Reliability of the REST service under load: a short load, a soak, slow clients, a noisy neighbour.

Starts the service as a real uvicorn subprocess on 127.0.0.1 (``service.server.run``) with an
untrained forecaster of the default architecture that it registers in a temporary SQLite MLflow
store (as ``bench/serve_load.py`` does, whose helpers it reuses), then measures, in order:

- **load**: 64 clients for ``--load-seconds`` (default 20), each posting one series of 50
  observations and 50 query times with 32 samples: requests/s, p50/p99 latency, errors.
- **soak**: 16 clients for ``--soak-seconds`` (default 60), the server's resident memory
  (``/proc/<pid>/status`` VmRSS) sampled every 5 s: its growth from the first to the last sample.
- **slow clients**: ``--slow-clients`` sockets (default 16) each trickle a body one byte every
  0.5 s; each must get its 408 about ``LATENT_ODE_BODY_TIMEOUT_S`` (3 s here) after it began,
  while 8 normal clients run: their requests/s against 8 clients alone.
- **noisy neighbour**: 8 normal clients alone, then again while one client keeps sending large
  but allowed requests (one series, 10,000 query times, 16 samples: 160,000 of the 200,000 work
  budget); the normal clients' requests/s with the neighbour as a ratio of alone, and their p99.

Each phase is bounded in time, so the whole run takes about ``load + soak + 50`` seconds plus
start-up (~2.5 minutes by default). The load generator shares the machine with the service:
absolute figures are context, errors and ratios are what to compare. Prints the figures and
writes JSON (default ``bench/results/service_reliability.json``).

    python bench/service_reliability.py
    python bench/service_reliability.py --load-seconds 5 --soak-seconds 15 --out /tmp/r.json
    python bench/service_reliability.py --phases noisy   # 8 clients alone, then beside the noisy one
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _results import write_results
from serve_load import drive, make_bodies, register_model, start_service, stop_service

BODY_TIMEOUT_S = 3.0
NORMAL_CLIENTS = 8


def rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def noisy_body(query_times: int = 10_000, num_samples: int = 16) -> bytes:
    """One series of 50 observations asking for ``query_times`` forecasts: large but allowed."""
    from pipelines.sources.periodic import periodic

    (s,) = periodic(1, n_times=50, shared_grid=False, seed=7)
    return json.dumps({
        "series": [{
            "times": s.times.tolist(),
            "values": [[None if np.isnan(v) else float(v) for v in row] for row in s.values],
            "query_times": np.linspace(0.0, 7.0, query_times).tolist(),
        }],
        "num_samples": num_samples,
    }).encode()


def trickle(port: int, result: list[dict[str, Any]], give_up_s: float) -> None:
    """Send a predict request whose body arrives one byte every 0.5 s; record the answer."""
    body = b'{"series": [' + b" " * 4000 + b"]}"
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    started = time.monotonic()
    status, sent = None, 0
    with socket.create_connection(("127.0.0.1", port), timeout=give_up_s) as sock:
        sock.sendall(head)
        sock.settimeout(0.5)
        while time.monotonic() - started < give_up_s and sent < len(body):
            try:
                reply = sock.recv(4096)
            except TimeoutError:
                reply = None
            if reply is not None:  # an answer (or the server closed the connection)
                status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else None
                break
            try:
                sock.sendall(body[sent:sent + 1])
            except OSError:
                break
            sent += 1
    result.append({"status": status, "seconds": time.monotonic() - started, "bytes_sent": sent})


def phase(name: str, figures: dict[str, Any]) -> dict[str, Any]:
    keys = ("clients", "requests", "errors", "rps", "p50_ms", "p99_ms")
    print(f"{name:<28} " + "  ".join(
        f"{k}={figures[k]:.1f}" if isinstance(figures[k], float) else f"{k}={figures[k]}"
        for k in keys), flush=True)
    return {k: figures[k] for k in (*keys, "error_kinds", "seconds")}


async def with_background(base: str, bodies: list[bytes], seconds: float,
                          background: Any) -> dict[str, Any]:
    """Normal clients for ``seconds`` while ``background`` (a coroutine) runs alongside."""
    task = asyncio.create_task(background)
    try:
        return await drive(base, bodies, NORMAL_CLIENTS, seconds, 1_000_000)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def noisy_loop(base: str, body: bytes, stats: dict[str, Any]) -> None:
    """One client posting ``body`` back to back until cancelled."""
    import httpx

    async with httpx.AsyncClient(base_url=base, timeout=120.0) as http:
        while True:
            started = time.perf_counter()
            r = await http.post("/v1/predict", content=body,
                                headers={"content-type": "application/json"})
            stats["statuses"].append(r.status_code)
            stats["seconds"].append(time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load-seconds", type=float, default=20.0)
    p.add_argument("--soak-seconds", type=float, default=60.0)
    p.add_argument("--phase-seconds", type=float, default=10.0,
                   help="seconds of each slow-client and noisy-neighbour measurement")
    p.add_argument("--slow-clients", type=int, default=16)
    p.add_argument("--phases", default="load,soak,slow,noisy",
                   help="comma-separated subset of load, soak, slow, noisy (the 8 clients alone, "
                   "the reference of slow and noisy, always run)")
    p.add_argument("--out", type=Path, default=Path("bench/results/service_reliability.json"))
    args = p.parse_args()
    phases = set(args.phases.split(","))

    workdir = Path(tempfile.mkdtemp(prefix="service-reliability-"))
    tracking_uri, model_uri = register_model(workdir)
    env = {**os.environ, "LATENT_ODE_MODEL_CACHE_DIR": str(workdir / "cache"),
           "LATENT_ODE_TRACKING_URI": tracking_uri, "LATENT_ODE_MODEL_URI": model_uri,
           "LATENT_ODE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    bodies = make_bodies(256)
    proc, base = start_service(env, workdir / "service.log")
    port = int(base.rsplit(":", 1)[1])
    out: dict[str, Any] = {}
    try:
        if "load" in phases:
            out["load"] = phase("load, 64 clients", asyncio.run(
                drive(base, bodies, 64, args.load_seconds, 1_000_000)))
        if "soak" in phases:
            out["soak"] = soak_phase(proc, base, bodies, args.soak_seconds)

        # Normal clients alone: the reference of both checks below.
        alone = phase(f"{NORMAL_CLIENTS} clients alone", asyncio.run(
            drive(base, bodies, NORMAL_CLIENTS, args.phase_seconds, 1_000_000)))
        out["alone"] = alone

        if "slow" in phases:
            out["slow_clients"] = slow_phase(port, base, bodies, args, alone)
        if "noisy" in phases:
            out["noisy_neighbour"] = noisy_phase(base, bodies, args, alone)
    finally:
        stop_service(proc)

    out["errors"] = sum(out[k]["errors"] for k in ("load", "soak", "alone") if k in out) + sum(
        out[k]["normal_clients"]["errors"] for k in ("slow_clients", "noisy_neighbour")
        if k in out)
    print(f"\nerrors of normal requests over all phases: {out['errors']} (target 0)")
    write_results(args.out, {
        **out,
        "settings": {"body_timeout_s": BODY_TIMEOUT_S, "load_seconds": args.load_seconds,
                     "soak_seconds": args.soak_seconds, "phase_seconds": args.phase_seconds,
                     "phases": sorted(phases)},
        "workload": {"observations": 50, "query_times": 50, "num_samples": 32,
                     "series_per_request": 1},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    })


def soak_phase(proc: Any, base: str, bodies: list[bytes], seconds: float) -> dict[str, Any]:
    """16 clients for ``seconds``, the server's resident memory sampled every 5 s."""
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            samples.append((round(time.monotonic() - t0, 1), round(rss_mib(proc.pid), 1)))
            stop.wait(5.0)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        soak = asyncio.run(drive(base, bodies, 16, seconds, 10_000_000))
    finally:
        stop.set()
        sampler.join()
    samples.append((round(soak["seconds"], 1), round(rss_mib(proc.pid), 1)))
    out = phase("soak, 16 clients", soak)
    rss = [m for _, m in samples]
    out |= {"rss_mib": samples, "rss_growth_mib": rss[-1] - rss[0], "rss_max_mib": max(rss)}
    print(f"{'':<28} rss MiB first {rss[0]:.1f}, last {rss[-1]:.1f}, max {max(rss):.1f} "
          f"({len(rss)} samples)", flush=True)
    return out


def slow_phase(port: int, base: str, bodies: list[bytes], args: argparse.Namespace,
               alone: dict[str, Any]) -> dict[str, Any]:
    """Normal clients while ``--slow-clients`` sockets trickle their bodies."""
    trickled: list[dict[str, Any]] = []

    async def slow_clients() -> None:
        threads = [threading.Thread(target=trickle, args=(port, trickled, 4 * BODY_TIMEOUT_S))
                   for _ in range(args.slow_clients)]
        for t in threads:
            t.start()
        await asyncio.to_thread(lambda: [t.join() for t in threads])

    beside_slow = phase(f"{NORMAL_CLIENTS} clients + slow clients", asyncio.run(
        with_background(base, bodies, args.phase_seconds, slow_clients())))
    seconds = [t["seconds"] for t in trickled]
    out = {
        "trickling_clients": args.slow_clients, "body_timeout_s": BODY_TIMEOUT_S,
        "statuses": sorted({str(t["status"]) for t in trickled}),
        "answered_408": sum(t["status"] == 408 for t in trickled),
        "seconds_to_answer_max": max(seconds) if seconds else None,
        "normal_clients": beside_slow,
        "normal_rps_ratio": beside_slow["rps"] / alone["rps"],
    }
    print(f"{'':<28} trickled bodies: {out['answered_408']}/{args.slow_clients} got 408, the "
          f"last after {out['seconds_to_answer_max']:.1f} s; normal clients at "
          f"{out['normal_rps_ratio']:.2f}x their rps alone", flush=True)
    return out


def noisy_phase(base: str, bodies: list[bytes], args: argparse.Namespace,
                alone: dict[str, Any]) -> dict[str, Any]:
    """Normal clients while one client keeps sending large requests within the budget."""
    noisy: dict[str, list[Any]] = {"statuses": [], "seconds": []}
    beside_noisy = phase(f"{NORMAL_CLIENTS} clients + noisy client", asyncio.run(
        with_background(base, bodies, args.phase_seconds,
                        noisy_loop(base, noisy_body(), noisy))))
    out = {
        "noisy_request": {"series": 1, "query_times": 10_000, "num_samples": 16},
        "noisy_requests_answered": len(noisy["seconds"]),
        "noisy_statuses": sorted({str(s) for s in noisy["statuses"]}),
        "noisy_p50_s": float(np.median(noisy["seconds"])) if noisy["seconds"] else None,
        "normal_clients": beside_noisy,
        "normal_rps_ratio": beside_noisy["rps"] / alone["rps"],
        "normal_p99_ratio": beside_noisy["p99_ms"] / alone["p99_ms"],
    }
    print(f"{'':<28} normal clients at {out['normal_rps_ratio']:.2f}x their rps alone (p99 "
          f"{out['normal_p99_ratio']:.2f}x); the noisy client got {len(noisy['seconds'])} "
          f"answers {out['noisy_statuses']}", flush=True)
    return out


if __name__ == "__main__":
    main()
