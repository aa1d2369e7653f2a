"""``latent-ode predict`` over a file: series/s and peak memory against batch size and file size.

Writes a frame-format CSV of N series (the periodic demo's kind: 50 irregular observations and
10 query rows each, one channel) and forecasts it with an untrained forecaster of the default
architecture (or ``--model``), running ``latent-ode predict`` as a subprocess per setting and
reading its wall time, CPU time (user + system: the figure to compare on a shared machine; it
includes the process start, ~6 s of imports) and peak resident memory (``os.wait4``).
Streaming is working when the peak memory stays flat as the file grows at a fixed
``--batch-series``.

    python bench/predict_file.py                       # ~2 minutes on 2 cores
    python bench/predict_file.py --series 500 --sizes 2000 --out /tmp/predict.json
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from _results import write_results


def write_input(path: Path, n: int, *, seed: int = 1) -> int:
    """N series of 50 observations and 10 queries (5 inside, 5 after the window); rows written."""
    from pipelines.sources.periodic import periodic

    series = periodic(n, n_times=50, shared_grid=False, seed=seed)
    parts = []
    for i, s in enumerate(series):
        sid = f"s{i:06d}"
        obs = pd.DataFrame({"series_id": sid, "time": s.times, "x": s.values[:, 0],
                            "query": False})
        queries = np.concatenate([np.linspace(s.times[0], s.times[-1], 5),
                                  s.times[-1] + np.linspace(0.5, 2.5, 5)])
        parts += [obs, pd.DataFrame({"series_id": sid, "time": queries, "x": np.nan,
                                     "query": True})]
    frame = pd.concat(parts, ignore_index=True)
    frame.to_csv(path, index=False)
    return len(frame)


def save_model(directory: Path) -> Path:
    from latent_ode import Forecaster, ModelConfig, Normaliser
    from pipelines.sources.periodic import periodic

    train = periodic(100, n_times=50, shared_grid=False, seed=0)
    forecaster = Forecaster.create(ModelConfig(input_dim=1), Normaliser.fit(train, kind="standard"),
                                   channels=["x"], time_unit="hours", seed=0)
    return forecaster.save(directory)


def run_predict(model: str, data: Path, out: Path, batch: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "pipelines.cli", "-q", "predict", "--model", model,
           "--data-file", str(data), "--out", str(out), "--batch-series", str(batch),
           "--quantiles", "0.05,0.95", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with {status}")
    return {"seconds": round(seconds, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model URI or folder (default: untrained)")
    parser.add_argument("--series", type=int, default=2000, help="series for the batch sweep")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256, 1024])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000],
                        help="file sizes (series) at --batch-series 256, for the memory check")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "predict_file.json")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = args.model or str(save_model(work / "forecaster"))
        files: dict[int, tuple[Path, int]] = {}
        for n in sorted({args.series, *args.sizes}):
            path = work / f"series-{n}.csv"
            files[n] = (path, write_input(path, n))
        runs = [(args.series, b) for b in args.batches]
        runs += [(n, 256) for n in args.sizes if (n, 256) not in runs]
        for n, batch in runs:
            path, lines = files[n]
            figures = run_predict(model, path, work / "out.csv", batch)
            row = {"series": n, "input_rows": lines, "batch_series": batch, **figures,
                   "series_per_s": round(n / figures["seconds"], 1),
                   "series_per_cpu_s": round(n / figures["cpu_s"], 1)}
            rows.append(row)
            print(row)
    write_results(args.out, {
        "bench": "predict_file", "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "1")},
        "model": args.model or "untrained default architecture, 1 channel",
        "request": "50 observations + 10 queries per series, 32 samples, quantiles 0.05,0.95",
        "runs": rows,
    })


if __name__ == "__main__":
    main()
