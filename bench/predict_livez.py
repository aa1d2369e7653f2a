"""Does a big request stall the service? /livez latency during the largest requests the budget
allows, the time to refuse one over it, and small-request throughput beside a noisy neighbour.

Starts the service as a uvicorn subprocess on 127.0.0.1 with an untrained default-architecture
model registered in a temporary SQLite MLflow store (as ``serve_load.py`` does), then:

1. ``/livez`` polled every 20 ms, alone and while one request of 1 series x 6,000 query times x
   32 samples (192,000 units: inside the default budget of 200,000) is answered: the worst and
   median latency;
2. the time to refuse 64 series x 5,000 query times x 32 samples (issue 16's 256 x 10,000 x 32
   does not fit in the default body limit): a 422 from the work budget;
3. small requests (1 series x 50 query times x 32 samples) from 8 clients for ``--seconds``,
   alone, beside one client that keeps sending 6,000-query requests, and beside one that keeps
   sending 10,000-query requests (over the budget): the small clients' requests per second.

Prints the figures; nothing is asserted (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serve_load import make_bodies, register_model, start_service, stop_service


def big_body(series: int, queries: int, samples: int = 32) -> bytes:
    times = np.linspace(0.0, 6.0, 50)
    one = {
        "times": times.tolist(),
        "values": np.sin(times)[:, None].tolist(),
        "query_times": np.round(np.linspace(-0.5, 7.0, queries), 3).tolist(),
    }
    return json.dumps({"series": [one] * series, "num_samples": samples}).encode()


def poll_livez(base: str, stop: threading.Event) -> list[float]:
    latencies = []
    with httpx.Client(base_url=base, timeout=60) as client:
        while not stop.is_set():
            t = time.perf_counter()
            client.get("/livez").raise_for_status()
            latencies.append(time.perf_counter() - t)
            time.sleep(0.02)
    return latencies


def livez_during(base: str, body: bytes | None, seconds: float) -> dict[str, Any]:
    stop = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        result["latencies"] = poll_livez(base, stop)

    poller = threading.Thread(target=run)
    poller.start()
    t = time.perf_counter()
    if body is None:
        time.sleep(seconds)
        status = None
    else:
        with httpx.Client(base_url=base, timeout=600) as client:
            response = client.post("/v1/predict", content=body,
                                   headers={"Content-Type": "application/json"})
            status = response.status_code
            result["bytes"] = len(response.content)
    elapsed = time.perf_counter() - t
    stop.set()
    poller.join()
    lat = result["latencies"]
    return {"status": status, "request_s": elapsed, "livez_polls": len(lat),
            "livez_p50_ms": 1e3 * statistics.median(lat), "livez_max_ms": 1e3 * max(lat),
            "answer_bytes": result.get("bytes")}


async def small_clients(base: str, bodies: list[bytes], clients: int, seconds: float,
                        noisy: bytes | None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    done = {"small": 0, "noisy": 0, "errors": 0}
    deadline = time.monotonic() + seconds

    async def small(k: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=120) as client:
            i = k
            while time.monotonic() < deadline:
                r = await client.post("/v1/predict", content=bodies[i % len(bodies)],
                                      headers=headers)
                done["small" if r.status_code == 200 else "errors"] += 1
                i += clients

    async def loud() -> None:
        assert noisy is not None
        async with httpx.AsyncClient(base_url=base, timeout=600) as client:
            while time.monotonic() < deadline:
                r = await client.post("/v1/predict", content=noisy, headers=headers)
                done["noisy" if r.status_code == 200 else "errors"] += 1

    tasks = [small(k) for k in range(clients)] + ([loud()] if noisy is not None else [])
    await asyncio.gather(*tasks)
    return {**done, "small_rps": done["small"] / seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="seconds per throughput run")
    p.add_argument("--clients", type=int, default=8, help="small-request clients")
    args = p.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="predict-livez-"))
    tracking_uri, model_uri = register_model(workdir)
    env = {**os.environ, "LATENT_ODE_MODEL_CACHE_DIR": str(workdir / "cache"),
           "LATENT_ODE_TRACKING_URI": tracking_uri, "LATENT_ODE_MODEL_URI": model_uri}
    proc, base = start_service(env, workdir / "service.log")
    try:
        idle = livez_during(base, None, 3.0)
        big = livez_during(base, big_body(1, 6_000), 0)
        refused = livez_during(base, big_body(64, 5_000), 0)
        bodies = make_bodies(64)
        alone = asyncio.run(small_clients(base, bodies, args.clients, args.seconds, None))
        beside = asyncio.run(small_clients(base, bodies, args.clients, args.seconds,
                                           big_body(1, 6_000)))
        refused_beside = asyncio.run(small_clients(base, bodies, args.clients, args.seconds,
                                                   big_body(1, 10_000)))
    finally:
        stop_service(proc)
    print("| case | status | request s | /livez p50 ms | /livez max ms | answer bytes |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in (("idle", idle), ("1 x 6,000 x 32", big), ("64 x 5,000 x 32", refused)):
        print(f"| {name} | {r['status'] or '-'} | {r['request_s']:.2f} | {r['livez_p50_ms']:.1f} "
              f"| {r['livez_max_ms']:.1f} | {r['answer_bytes'] or '-'} |")
    print()
    print(f"small clients ({args.clients}) alone: {alone['small_rps']:.1f} req/s "
          f"(errors {alone['errors']})")
    for name, r in (("6,000", beside), ("10,000 (over the budget: refused)", refused_beside)):
        print(f"beside one client sending 1 x {name} x 32: {r['small_rps']:.1f} req/s "
              f"({r['noisy']} large answered, {r['errors']} refused or failed); ratio "
              f"{r['small_rps'] / max(alone['small_rps'], 1e-9):.2f}")


if __name__ == "__main__":
    main()
