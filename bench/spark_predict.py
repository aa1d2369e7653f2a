"""Series per second of ``latent-ode spark-predict`` in local mode with 1 and 2 cores, beside
``latent-ode predict`` (one process), measured in one run on the same file.

    python bench/spark_predict.py --model DIR_OR_URI [--series 2000] [--out bench/results/spark_predict.json]

The file: ``--series`` synthetic series of the model's channels (a sinusoid per channel, 20-60
irregular observations with a third of the cells missing, 10 query times each), written once
as Parquet. Spark's start-up is excluded (the session is made before the clock starts); each
Spark run includes reading, the shuffle by series bucket, the forecasts and writing Parquet.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _results import write_results

from pipelines.predict import PredictOptions, load_forecaster, predict_file
from pipelines.spark import SparkPredictOptions, spark_predict, spark_session


def make_file(channels: list[str], n: int, path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(n):
        k = int(rng.integers(20, 61))
        t = np.sort(rng.uniform(0.0, 5.0, k))
        obs = pd.DataFrame({"series_id": f"s{i:06d}", "time": t, "query": False})
        for j, c in enumerate(channels):
            v = np.sin(2 * np.pi * 0.5 * t + j) + 0.05 * rng.standard_normal(k)
            v[rng.random(k) < 1 / 3] = np.nan
            obs[c] = v
        obs.loc[obs[channels].isna().all(axis=1), channels[0]] = 0.0
        q = pd.DataFrame({"series_id": f"s{i:06d}", "time": np.linspace(0.1, 7.0, 10),
                          "query": True})
        parts += [obs, q]
    pd.concat(parts, ignore_index=True).to_parquet(path, index=False)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--series", type=int, default=2000)
    ap.add_argument("--batch-series", type=int, default=256)
    ap.add_argument("--out", type=Path, default=Path("bench/results/spark_predict.json"))
    args = ap.parse_args()
    fc = load_forecaster(args.model)
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        data = make_file(list(fc.channels), args.series, Path(tmp) / "series.parquet")
        runs: dict[str, float] = {}
        t0 = time.perf_counter()
        predict_file(PredictOptions(model=args.model, data_file=data,
                                    out=Path(tmp) / "predict.parquet",
                                    batch_series=args.batch_series), forecaster=fc)
        runs["predict (1 process)"] = time.perf_counter() - t0
        for cores in (1, 2):
            spark = spark_session(f"local[{cores}]", "bench")
            spark.conf.set("spark.sql.shuffle.partitions", str(2 * cores))
            spark.range(1).count()  # start-up outside the clock
            t0 = time.perf_counter()
            spark_predict(spark, fc, SparkPredictOptions(
                data=str(data), out=f"{tmp}/spark{cores}", batch_series=args.batch_series))
            runs[f"spark local[{cores}]"] = time.perf_counter() - t0
            spark.stop()
    rates = {k: args.series / v for k, v in runs.items()}
    base = rates["predict (1 process)"]
    for k, r in rates.items():
        print(f"{k:22s} {r:8.1f} series/s  ({r / base:.2f}x predict)")
    write_results(args.out, {
        "series": args.series, "batch_series": args.batch_series, "seconds": runs,
        "series_per_s": rates, "ratio_to_predict": {k: r / base for k, r in rates.items()},
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
    })


if __name__ == "__main__":
    main()
