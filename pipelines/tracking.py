"""The thin MLflow layer of the pipelines: runs, params, metrics, artifacts, datasets, registry.

Every MLflow call of the pipelines lives here (and in :mod:`pipelines.pipeline`, which strings
the steps together); the step cores in :mod:`pipelines.steps` never touch MLflow.

The tracking store is whatever MLflow resolves: ``MLFLOW_TRACKING_URI`` when set (e.g. a
tracking server ``http://HOST:PORT``), else MLflow's default embedded store (``mlflow.db`` SQLite
in the working directory, artifacts in ``./mlruns``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import subprocess
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature

from formats.model_artifact import FORECASTER_ARTIFACT
from pipelines.config import flatten_params
from pipelines.pyfunc import model_signature

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.data.dataset_source import DatasetSource
    from mlflow.types.schema import Schema

    from latent_ode import Forecaster, TrainEvent
    from pipelines.steps.ingest import DataSource

__all__ = [
    "CONFIG_ARTIFACT",
    "Champion",
    "RegisteredVersion",
    "MetricsLogger",
    "MlflowRegistry",
    "IDENTITY_TAGS",
    "LOSS_CURVES",
    "MODEL_ARTIFACT",
    "TAG_DESCRIPTION",
    "TAG_EVALUATE_RUN",
    "TAG_REGISTER_RUN",
    "TAG_CONFIG_HASH",
    "TAG_DATA_DIGEST",
    "TAG_KIND",
    "TAG_STEP",
    "download_artifacts",
    "environment_tags",
    "find_runs",
    "git_commit",
    "input_example",
    "input_schema",
    "log_pyfunc_model",
    "logged_model_uri",
    "list_artifacts",
    "log_config",
    "log_split_inputs",
    "data_digest",
    "mark_killed",
    "metric_history",
    "set_description",
    "set_experiment",
    "start_run",
]

logger = logging.getLogger(__name__)

TAG_KIND = "latent_ode.kind"  # "pipeline" for a parent run, "step" for a step run
TAG_STEP = "latent_ode.step"  # ingest | train | evaluate | register
TAG_CONFIG_HASH = "latent_ode.config_hash"
TAG_DATA_RUN = "latent_ode.data_run_id"
TAG_TRAIN_RUN = "latent_ode.train_run_id"
TAG_DATA_DIGEST = "latent_ode.data_digest"
TAG_EVALUATE_RUN = "latent_ode.evaluate_run_id"
TAG_REGISTER_RUN = "latent_ode.register_run_id"
"""On a model version: the register run that created it (its source run is the train run)."""
TAG_DESCRIPTION = "mlflow.note.content"
"""The tag MLflow shows as a run's description (Markdown)."""
IDENTITY_TAGS = (TAG_TRAIN_RUN, TAG_CONFIG_HASH, TAG_DATA_DIGEST)
"""The tags, set when a model version is created, that say which training it holds."""
CONFIG_ARTIFACT = "config.json"
MODEL_ARTIFACT = "model"
"""The name of the logged pyfunc model (``runs:/<train run>/model``)."""
LOSS_CURVES = {"train_loss": "loss/train", "val_loss": "loss/val"}
"""Training metrics also logged under a shared ``loss/`` prefix, so that the MLflow UI shows the
training and validation loss side by side in one section of the run's charts."""
_PYFUNC_CODE = Path(__file__).resolve().parent / "pyfunc_model.py"
_REPO_ROOT = Path(__file__).resolve().parents[1]


def set_experiment(name: str) -> None:
    """Use experiment ``name`` (created if missing) for new runs.

    Under ``mlflow run`` (``MLFLOW_RUN_ID`` set) the run and its experiment are already chosen by
    MLflow, so the config's experiment is not applied.
    """
    if os.environ.get("MLFLOW_RUN_ID"):
        logger.info("MLFLOW_RUN_ID is set (mlflow run): using its experiment, not %r", name)
        return
    mlflow.set_experiment(name)
    logger.info("tracking to %s, experiment %r", mlflow.get_tracking_uri(), name)


@contextmanager
def start_run(
    name: str, *, tags: dict[str, str], run_id: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """Start (or, with ``run_id``, reopen) a run; nested under the active run if there is one.

    The run ends ``FINISHED`` when the block completes and ``FAILED`` when it raises.
    """
    nested = mlflow.active_run() is not None
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else name, nested=nested,
                          tags=tags) as run:
        # A run that is resumed (run_id, or MLFLOW_RUN_ID under `mlflow run`) ignores `tags`.
        mlflow.set_tags(tags)
        logger.info("%s run %s %s", name, run.info.run_id, "reopened" if run_id else "started")
        yield run


def git_commit() -> str:
    """The repository's HEAD commit (with ``-dirty`` when there are uncommitted changes), or ``unknown``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO_ROOT, capture_output=True, text=True,
            check=True, timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO_ROOT,
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def environment_tags(device: str) -> dict[str, str]:
    """Tags describing where a run ran: git commit, Python/torch/MLflow versions, device."""
    import torch

    tags = {
        "git_commit": git_commit(),
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "mlflow_version": mlflow.__version__,
        "device": device,
        "platform": platform.platform(),
        "cpu_count": str(os.cpu_count()),
        "torch_num_threads": str(torch.get_num_threads()),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        tags["cuda_device_name"] = torch.cuda.get_device_name(torch.device(device))
    return tags


def log_config(config: dict[str, Any], *, logged: dict[str, str] | None = None) -> None:
    """Log the nested config dict as flattened params and as the artifact ``config.json``.

    Args:
        config: the nested config dict.
        logged: params the run already has (a reopened run, or ``mlflow run``'s own params);
            only the others are logged, since MLflow refuses to log a param twice.
    """
    params = flatten_params(config)
    logged = logged or {}
    missing = {k: v for k, v in params.items() if k not in logged}
    if missing:
        mlflow.log_params(missing)
    mlflow.log_dict(config, CONFIG_ARTIFACT)


class MetricsLogger:
    """A ``fit`` callback that logs every event's metrics to the active run.

    Step events are logged at their step; epoch events at the step they end on, so all curves
    share the x-axis "optimisation step"; ``epoch`` is logged alongside, and the losses also
    under :data:`LOSS_CURVES`' names (``loss/train``, ``loss/val``).

    Args:
        on_epoch: called after each epoch event (e.g. to upload the latest checkpoint).
    """

    def __init__(self, on_epoch: Callable[[TrainEvent], None] | None = None) -> None:
        self._on_epoch = on_epoch

    def __call__(self, event: TrainEvent) -> None:
        metrics = {k: float(v) for k, v in event.metrics.items()}
        if event.kind == "epoch":
            metrics["epoch"] = float(event.epoch)
        metrics |= {alias: metrics[k] for k, alias in LOSS_CURVES.items() if k in metrics}
        mlflow.log_metrics(metrics, step=int(event.step))
        if event.kind == "epoch" and self._on_epoch is not None:
            self._on_epoch(event)


def log_split_inputs(frames: dict[str, pd.DataFrame], source: DataSource, *, name: str) -> None:
    """Log each split's long-format frame as a dataset input of the active run.

    Args:
        frames: split name -> long-format DataFrame.
        source: a :class:`pipelines.steps.ingest.DataSource`.
        name: dataset name shown in the MLflow UI (``<name>-<split>``).
    """
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    if source.kind == "file":
        # MLflow registers its local-file source class twice (for the URI schemes "" and
        # "file"), so resolving a path warns "can be interpreted in multiple ways" although both
        # readings are the same class. Resolve once, knowing that; log the resolved source.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The specified dataset source can be "
                                    "interpreted in multiple ways", category=UserWarning)
            src: DatasetSource = resolve_dataset_source(source.uri)
    else:
        src = CodeDatasetSource(tags={"kind": source.kind, "uri": source.uri, **source.tags})
    for split, frame in frames.items():
        dataset = mlflow.data.from_pandas(frame, source=src, name=f"{name}-{split}")
        mlflow.log_input(dataset, context=split)


def input_schema(channels: list[str]) -> Schema:
    """The pyfunc input schema: ``series_id`` and ``time`` (numbers or text, so ids like ``17``
    and ISO-8601 times pass), an optional boolean ``query``, one optional number column per
    channel (NaN or absent = not observed)."""
    from mlflow.types.schema import AnyType, ColSpec, Schema

    return Schema([ColSpec(AnyType(), "series_id"), ColSpec(AnyType(), "time"),
                   ColSpec("boolean", "query", required=False),
                   *[ColSpec("double", c, required=False) for c in channels]])


def input_example(forecaster: Forecaster) -> pd.DataFrame:
    """A tiny synthetic input frame for ``forecaster`` (never training data): one series, four
    observations of a sine around each channel's normalisation centre, two query times after."""
    import numpy as np
    import pandas as pd

    norm = forecaster.normaliser
    span = float(norm.time_scale) if np.isfinite(norm.time_scale) else 1.0
    times = np.linspace(0.0, span, 6)
    wave = np.sin(np.linspace(0.0, np.pi, 4))[:, None]  # (4, 1)
    values = np.asarray(norm.loc, float)[None, :] + 0.5 * np.asarray(norm.scale, float)[None, :] * wave
    frame = pd.DataFrame({"series_id": "example", "time": times, "query": [False] * 4 + [True] * 2})
    for j, c in enumerate(forecaster.channels):
        frame[c] = np.concatenate([values[:, j], [np.nan, np.nan]])
    return frame


def log_pyfunc_model(forecaster_dir: Path, *, metadata: dict[str, Any] | None = None) -> str:
    """Log the forecaster in ``forecaster_dir`` as the pyfunc model ``model`` of the active run.

    Models-from-code (:mod:`pipelines.pyfunc_model`), so nothing is pickled; with an input
    schema built from the model's channels, the inference params of
    :func:`pipelines.pyfunc.model_signature`, and an input example (:func:`input_example`).

    Returns:
        The logged model's URI.
    """
    from latent_ode import Forecaster

    fc = Forecaster.load(forecaster_dir)
    signature = ModelSignature(inputs=input_schema(list(fc.channels)),
                               params=model_signature().params)
    info = mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=str(_PYFUNC_CODE),
        artifacts={FORECASTER_ARTIFACT: str(forecaster_dir)},
        signature=signature,
        input_example=(input_example(fc), {"num_samples": 4, "seed": 0}),
        pip_requirements=_pip_requirements(),
        metadata=metadata or {},
    )
    return str(info.model_uri)


def logged_model_uri(run_id: str) -> str | None:
    """The URI of the pyfunc model that run ``run_id`` logged, or ``None`` (a train run logged
    before models were logged from the train run)."""
    experiment = MlflowClient().get_run(run_id).info.experiment_id
    found = mlflow.search_logged_models(
        experiment_ids=[experiment],
        filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_ARTIFACT}'",
        output_format="list")
    return f"models:/{found[0].model_id}" if found else None


def download_artifacts(run_id: str, artifact_path: str, dst: str | Path) -> Path:
    """Download a run's artifact (file or folder) into folder ``dst``; return its local path.

    Raises:
        MlflowException: the run or the artifact does not exist.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
    ))


def list_artifacts(run_id: str, path: str) -> list[str]:
    """Paths of the artifacts under ``path`` of run ``run_id`` (empty if there are none)."""
    return [a.path for a in MlflowClient().list_artifacts(run_id, path)]


def find_runs(filter_string: str, *, experiment: str) -> list[Run]:
    """Runs of experiment ``experiment`` matching ``filter_string``, newest first."""
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], filter_string=filter_string,
                              order_by=["attributes.start_time DESC"])


def data_digest(train_run_id: str) -> str:
    """A digest of the data train run ``train_run_id`` was trained on: of the digests of the
    dataset inputs (train, val, test) of its ingest run; ``unknown`` without one."""
    client = MlflowClient()
    data_run = client.get_run(train_run_id).data.tags.get(TAG_DATA_RUN)
    if not data_run:
        return "unknown"
    inputs = client.get_run(data_run).inputs
    digests = sorted(
        f"{d.dataset.name}:{d.dataset.digest}" for d in (inputs.dataset_inputs if inputs else [])
    )
    if not digests:
        return "unknown"
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16]


def metric_history(run_id: str, name: str) -> list[tuple[int, float]]:
    """``(step, value)`` of every value of metric ``name`` in run ``run_id``, by step."""
    history = MlflowClient().get_metric_history(run_id, name)
    return sorted((int(m.step), float(m.value)) for m in history)


def set_description(run_id: str, text: str) -> None:
    """Set run ``run_id``'s description (Markdown; the run page's "Description")."""
    MlflowClient().set_tag(run_id, TAG_DESCRIPTION, text)


def mark_killed(run_id: str) -> bool:
    """Mark run ``run_id`` KILLED if it is still RUNNING (its process died mid-step).

    Returns:
        Whether the run was marked.
    """
    client = MlflowClient()
    if client.get_run(run_id).info.status != "RUNNING":
        return False
    client.set_terminated(run_id, status="KILLED")
    logger.warning("run %s was left RUNNING by a process that died; marked KILLED", run_id)
    return True


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version found by its identity tags."""

    version: str
    run_id: str
    tags: dict[str, str]


@dataclass(frozen=True)
class Champion:
    """The version that holds the alias, with its run's value of the comparison metric and all
    its run's metrics (a champion registered before a metric was renamed lacks the new name)."""

    version: str
    run_id: str
    metric: float | None
    metrics: dict[str, float] = field(default_factory=dict)


class MlflowRegistry:
    """Model registry operations used by :func:`pipelines.steps.register.register`.

    The version's source is ``model_uri`` (the model the train run logged, so the version links
    to the run with the training curves) or, without one, a model logged in the active run.
    Each version is tagged with the active (register) run, whose metrics are the ones the
    decision compared: :meth:`champion` reads them from there.

    Args:
        name: the registered model name.
        alias: the alias that marks the served version (``champion``).
        model_uri: the logged model to register; ``None`` logs one from the forecaster folder.
    """

    def __init__(self, name: str, alias: str = "champion", *, model_uri: str | None = None) -> None:
        self.name = name
        self.alias = alias
        self.model_uri = model_uri
        self.client = MlflowClient()

    def champion(self, metric: str) -> Champion | None:
        """The current holder of the alias, or ``None`` when there is none."""
        try:
            mv = self.client.get_model_version_by_alias(self.name, self.alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise
        metrics: dict[str, float] = {}
        for run_id in dict.fromkeys([mv.run_id, (mv.tags or {}).get(TAG_REGISTER_RUN)]):
            if run_id:  # the source run, then the register run's compared metrics win
                metrics |= self.client.get_run(run_id).data.metrics
        return Champion(version=str(mv.version), run_id=mv.run_id or "",
                        metric=metrics.get(metric), metrics=metrics)

    def find_version(self, identity: dict[str, str]) -> RegisteredVersion | None:
        """The newest version whose tags hold all of ``identity``, or ``None``."""
        clauses = [f"name = '{self.name}'"] + [
            f"tags.`{k}` = '{v}'" for k, v in sorted(identity.items())
        ]
        found = self.client.search_model_versions(" and ".join(clauses))
        if not found:
            return None
        mv = max(found, key=lambda m: int(m.version))
        tags = dict(mv.tags or {})
        return RegisteredVersion(version=str(mv.version),
                                 run_id=tags.get(TAG_REGISTER_RUN) or mv.run_id or "", tags=tags)

    def log_and_register(self, forecaster_dir: Path, metrics: dict[str, float],
                         tags: dict[str, str] | None = None) -> str:
        """Register ``model_uri`` (or a model logged now in the active run) as a new version.

        Args:
            forecaster_dir: the folder written by ``Forecaster.save`` (logged without a
                ``model_uri``).
            metrics: recorded in the model's metadata when it is logged here.
            tags: set on the version as it is created (its identity), so that a version never
                exists without them; the active run is added as ``latent_ode.register_run_id``.

        Returns:
            The new version number.
        """
        uri = self.model_uri or log_pyfunc_model(forecaster_dir, metadata={"metrics": metrics})
        tags = dict(tags or {})
        if (active := mlflow.active_run()) is not None:
            tags[TAG_REGISTER_RUN] = active.info.run_id
        if not self.exists():  # (mlflow.register_model would print to stderr, unlogged)
            self.client.create_registered_model(self.name)
            logger.info("created registered model %r", self.name)
        # The tags go with the creation: a version never exists without them.
        mv = self.client.create_model_version(self.name, source=uri, tags=tags,
                                              model_id=uri.removeprefix("models:/"))
        logger.info("created version %s of %r from %s", mv.version, self.name, uri)
        return str(mv.version)

    def describe_version(self, version: str, description: str) -> None:
        """Set the version's description (Markdown, shown on its page in the MLflow UI)."""
        self.client.update_model_version(self.name, version, description=description)

    def exists(self) -> bool:
        """Whether the registered model exists."""
        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            return False
        return True

    def set_alias(self, version: str) -> None:
        """Point the alias at ``version``."""
        self.client.set_registered_model_alias(self.name, self.alias, version)

    def tag_version(self, version: str, key: str, value: str) -> None:
        """Set a tag on a model version."""
        self.client.set_model_version_tag(self.name, version, key, value)

    def delete_version(self, version: str, *, drop_model: bool = False) -> None:
        """Delete a version (and the registered model, if it has no other version and ``drop_model``)."""
        logger.warning("removing model version %s of %r after a failure", version, self.name)
        self.client.delete_model_version(self.name, version)
        if drop_model and not self.client.search_model_versions(f"name='{self.name}'"):
            self.client.delete_registered_model(self.name)


def _pip_requirements() -> list[str]:
    """Pinned requirements of the logged model (given, so MLflow does not infer them slowly)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("torch", "numpy", "pandas", "safetensors", "torchode", "torchdiffeq", "mlflow"):
        try:
            reqs.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            continue
    return reqs
