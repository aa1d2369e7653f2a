"""The pipeline steps as typed functions; none of them calls MLflow (see pipelines.pipeline).

- :func:`ingest`: read or generate the series, split by series, fit the normaliser.
- :func:`train`: build and fit a forecaster.
- :func:`evaluate`: test metrics and forecast plots.
- :func:`register`: register a version, promote it to ``champion`` only when it is better.
"""

from pipelines.steps.evaluate import EvaluateResult, evaluate
from pipelines.steps.ingest import IngestResult, ingest, load_split, save_split
from pipelines.steps.register import Decision, RegisterResult, decide_promotion, register
from pipelines.steps.train import TrainStepResult, train

__all__ = [
    "Decision",
    "EvaluateResult",
    "IngestResult",
    "RegisterResult",
    "TrainStepResult",
    "decide_promotion",
    "evaluate",
    "ingest",
    "load_split",
    "register",
    "save_split",
    "train",
]
