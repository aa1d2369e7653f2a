"""The MLflow pyfunc flavour of a trained forecaster.

The logged model carries the directory written by :meth:`latent_ode.Forecaster.save`
(``config.json`` + ``weights.safetensors``) as the artifact ``forecaster`` (the layout is
:mod:`formats.model_artifact`'s, which the service reads too); loading reads it with
:meth:`latent_ode.Forecaster.load`, which is strict and never unpickles objects. MLflow itself
still pickles this small wrapper class (it holds no state), which is the pyfunc contract.

``predict`` takes a long-format frame: columns ``series_id``, ``time``, one per channel, and a
boolean ``query`` column. Rows with ``query`` False are observations (NaN = not observed); rows with
``query`` True ask for a forecast at that time. It returns one row per query with
``series_id``, ``time``, ``mode`` and ``<channel>_mean`` / ``<channel>_std`` columns.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModelContext
from mlflow.types import ParamSchema, ParamSpec

from formats.model_artifact import FORECASTER_ARTIFACT
from latent_ode import Forecaster, Series, raise_on_failure

__all__ = ["LatentODEPyfunc", "model_signature"]


def model_signature() -> ModelSignature:
    """The pyfunc signature: the inference params ``num_samples`` and ``seed`` with defaults.

    The input frame's columns depend on the model's channels and its types on the caller (ids
    may be numbers or text), so only the params are declared; without them MLflow would drop
    ``params`` passed to ``predict``.
    """
    return ModelSignature(inputs=None, params=ParamSchema([
        ParamSpec("num_samples", "long", 32),
        ParamSpec("seed", "long", 0),
    ]))


class LatentODEPyfunc(mlflow.pyfunc.PythonModel):
    """Stateless pyfunc wrapper; the forecaster is loaded in :meth:`load_context`."""

    def load_context(self, context: PythonModelContext) -> None:
        self.forecaster = Forecaster.load(context.artifacts[FORECASTER_ARTIFACT])

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict | None = None) -> pd.DataFrame:
        params = params or {}
        fc = self.forecaster
        channels = list(fc.channels)
        missing = [c for c in ["series_id", "time", "query", *channels] if c not in model_input.columns]
        if missing:
            raise ValueError(f"model input lacks the columns {missing}; expected series_id, time, query "
                             f"and the channels {channels}.")
        series, queries, ids = [], [], []
        for sid, group in model_input.groupby("series_id", sort=False):
            is_q = group["query"].astype(bool).to_numpy()
            obs = group[~is_q].sort_values("time")
            series.append(Series(times=obs["time"].to_numpy(np.float64),
                                 values=obs[channels].to_numpy(np.float64), id=str(sid)))
            queries.append(group.loc[is_q, "time"].to_numpy(np.float64))
            ids.append(sid)
        # A batch with a failed series raises (SolverError), as it always has for pyfunc callers.
        forecasts = raise_on_failure(fc.predict(
            series, queries, num_samples=int(params.get("num_samples", 32)),
            seed=int(params.get("seed", 0))))
        frames = []
        for sid, f in zip(ids, forecasts, strict=True):
            frame = pd.DataFrame({"series_id": sid, "time": f.query_times, "mode": f.mode})
            for j, c in enumerate(channels):
                frame[f"{c}_mean"] = f.mean[:, j]
                frame[f"{c}_std"] = f.std[:, j]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)
