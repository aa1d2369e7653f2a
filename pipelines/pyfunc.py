"""The MLflow pyfunc flavour of a trained forecaster.

The logged model carries the directory written by :meth:`latent_ode.Forecaster.save`
(``config.json`` + ``weights.safetensors``) as the artifact ``forecaster`` (the layout is
:mod:`formats.model_artifact`'s, which the service reads too); loading reads it with
:meth:`latent_ode.Forecaster.load`, which is strict and never unpickles objects. The train step
logs it as a models-from-code pyfunc (:mod:`pipelines.pyfunc_model` calls ``set_model``), so
nothing is pickled at all.

``predict`` takes and returns the frame format of :mod:`formats.frames` (docs/service.md
"Frame format"): observation rows and ``query`` rows in; one row per query out, with
``series_id``, ``time``, ``mode``, ``<channel>_mean`` / ``<channel>_std`` and, when the param
``quantiles`` asks, ``<channel>_q<level>`` columns.
"""

from __future__ import annotations

import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModelContext
from mlflow.types import ParamSchema, ParamSpec

from formats.frames import parse_quantiles, predict_frame
from formats.model_artifact import FORECASTER_ARTIFACT
from latent_ode import Forecaster

__all__ = ["LatentODEPyfunc", "model_signature"]


def model_signature() -> ModelSignature:
    """The pyfunc signature: the inference params ``num_samples``, ``seed`` and ``quantiles``.

    The input frame's columns depend on the model's channels and its types on the caller (ids
    may be numbers or text), so only the params are declared; without them MLflow would drop
    ``params`` passed to ``predict``. ``quantiles`` is a list of levels (MLflow checks a param
    against one type; called directly, :meth:`LatentODEPyfunc.predict` also takes a
    comma-separated string), none by default.
    """
    return ModelSignature(inputs=None, params=ParamSchema([
        ParamSpec("num_samples", "long", 32),
        ParamSpec("seed", "long", 0),
        ParamSpec("quantiles", "double", [], shape=(-1,)),
    ]))


class LatentODEPyfunc(mlflow.pyfunc.PythonModel):
    """Stateless pyfunc wrapper; the forecaster is loaded in :meth:`load_context`."""

    def load_context(self, context: PythonModelContext) -> None:
        self.forecaster = Forecaster.load(context.artifacts[FORECASTER_ARTIFACT])

    def predict(self, context: PythonModelContext, model_input: pd.DataFrame,
                params: dict | None = None) -> pd.DataFrame:
        """The output frame for ``model_input``; a batch with a failed series raises
        (``SolverError``), as it always has for pyfunc callers."""
        params = params or {}
        return predict_frame(self.forecaster, model_input,
                             quantiles=parse_quantiles(params.get("quantiles")),
                             num_samples=int(params.get("num_samples", 32)),
                             seed=int(params.get("seed", 0)))
