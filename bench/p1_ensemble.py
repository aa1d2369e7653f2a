"""P1 of an ensemble: the mean of several saved models' predictive means, beside each member.

An ablation for docs/benchmarks.md: does averaging seeds (a deep ensemble of Latent ODEs) move
P1? Same stays, scaling and tasks as ``bench/physionet_p1.py`` (split seed 42, interpolation seed
0); each member answers with ``--num-samples`` latent samples; only the means are pooled, so no
coverage is reported.

    python bench/physionet_p1.py --seed N --max-steps 1200 --save-model /tmp/p1_seedN  # N = 0, 1, 2
    python bench/p1_ensemble.py /tmp/p1_seed0 /tmp/p1_seed1 /tmp/p1_seed2 \\
        --out bench/results/physionet_p1_ablation/ensemble_of_seeds.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import physionet_p1 as p1  # noqa: E402  (a sibling script)


def _pooled(data: p1.P1Data, tasks: list[p1.Task], means: list[list[np.ndarray]]
            ) -> dict[str, float]:
    """P1's pooled MSE and MAE of the mean of the given members' (Q, D) means per task."""
    pv = p1.PerVariable(len(data.channels))
    for i, t in enumerate(tasks):
        pv.add(data.scaling.scale(np.mean([m[i] for m in means], axis=0)),
               data.scaling.scale(t.target))
    return pv.pooled()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path, help="saved forecasters (Forecaster.save)")
    ap.add_argument("--archives", nargs="+", type=Path, default=p1.DEFAULT_ARCHIVES)
    ap.add_argument("--num-samples", type=int, default=8)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import torch

    from latent_ode import Forecaster

    torch.set_num_threads(1)
    data = p1.load_p1(args.archives)
    members = [Forecaster.load(m) for m in args.models]
    out: dict = {"date": time.strftime("%Y-%m-%d"), "models": [str(m) for m in args.models],
                 "num_samples": args.num_samples}
    for name, ts in (("forecast", data.forecast_tasks), ("interp", data.interp_tasks)):
        means = [[m for m, _ in p1.predict(fc, ts, args.batch, args.num_samples)]
                 for fc in members]
        scores = {f"first_{k}_members": _pooled(data, ts, means[:k])
                  for k in range(1, len(members) + 1)}
        scores |= {f"member_{j}": _pooled(data, ts, [means[j]]) for j in range(len(members))}
        out[name] = scores
        for key, s in scores.items():
            print(f"{name:8s} {key:16s} MSE {s['mse'] * 1e3:.3f}e-3  MAE {s['mae'] * 1e2:.3f}e-2")
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
