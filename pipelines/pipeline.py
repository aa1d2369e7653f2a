"""The MLflow-tracked steps and the whole pipeline: ingest -> train -> evaluate -> register.

Each ``*_stage`` function runs one step core from :mod:`pipelines.steps` inside its own MLflow
run (nested under the active run when there is one) and logs what the step produced:

=========  =====================================================================================
ingest     params (flattened config), ``config.json``, dataset inputs (train/val/test), the
           split as artifacts ``data/`` (long-format Parquet + ``split.json``), series counts
train      params, ``config.json``, environment tags, dataset inputs (train/val), every training
           metric per step/epoch (the losses also as ``loss/train`` and ``loss/val``), the chart
           ``plots/loss_curves.png``, checkpoints ``checkpoints/`` (uploaded after each epoch), the
           forecaster ``forecaster/`` (``Forecaster.save``) and the pyfunc model ``model`` (input
           schema and example); tag ``latent_ode.data_run_id``
evaluate   params, dataset inputs (val/test), held-out metrics ``val/...`` and ``test/...``
           (``<split>/<regime>/<stat>``, see ``docs/pipelines.md``), PNG plots ``plots/``
           (forecasts and interpolations of test series, per-channel skill, error and coverage
           against the horizon); tag of the train run
register   params, the metrics the decision compared, a registry version of the train run's
           ``model`` with a description (data, headline metrics with units, baselines) and, when
           its validation skill is not negative and it is better (or forced), the ``champion``
           alias; tags with the decision
=========  =====================================================================================

:func:`run_pipeline` runs the four under one parent run named ``pipeline <data> <date time>``,
after the data and the config were checked (a mistake opens no run). Later steps read earlier
steps' outputs from the runs' artifacts, so each step can also run on its own (see
``pipelines.cli``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
from mlflow.entities import Run, RunStatus

from formats.longformat import to_frame
from formats.model_artifact import FORECASTER_ARTIFACT
from latent_ode import Forecaster
from latent_ode.errors import ConfigError
from pipelines import tracking
from pipelines.backtest import BACKTEST_TABLE, backtest_frame
from pipelines.config import PipelineConfig
from pipelines.steps.evaluate import evaluate
from pipelines.steps.ingest import SPLITS, IngestResult, ingest, load_split, save_split
from pipelines.steps.register import COMPARABLE, SKILL_METRICS, RegisterResult, register
from pipelines.steps.train import TrainStepResult, broadcast_from_rank0, train

__all__ = [
    "PipelineResult",
    "StageRun",
    "config_hash",
    "data_name",
    "evaluate_stage",
    "find_resumable_train_run",
    "ingest_stage",
    "load_data_from_run",
    "load_forecaster_from_run",
    "register_stage",
    "run_pipeline",
    "train_stage",
    "train_worker",
]

logger = logging.getLogger(__name__)

DATA_ARTIFACT = "data"
CHECKPOINT_ARTIFACT = "checkpoints"
PLOTS_ARTIFACT = "plots"
DERIVED_SETTINGS_ARTIFACT = "derived_settings.txt"
_FINISHED = RunStatus.to_string(RunStatus.FINISHED)


@dataclass(frozen=True)
class StageRun:
    """What a stage produced and the id of its MLflow run."""

    run_id: str
    value: Any


@dataclass(frozen=True)
class PipelineResult:
    """Run ids of the parent and of every step, the metrics, the registration outcome and the
    trained forecaster."""

    parent_run_id: str
    step_run_ids: dict[str, str]
    metrics: dict[str, float]
    register: RegisterResult
    forecaster: Forecaster


def config_hash(cfg: PipelineConfig) -> str:
    """A short digest of the config: runs with the same hash can resume each other."""
    text = json.dumps(cfg.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def data_name(cfg: PipelineConfig) -> str:
    """The data's short name: the registered data set, or the data file's stem."""
    return cfg.data.dataset or Path(cfg.data.path or "data").stem


def _tags(cfg: PipelineConfig, step: str) -> dict[str, str]:
    return {tracking.TAG_KIND: "step", tracking.TAG_STEP: step,
            tracking.TAG_CONFIG_HASH: config_hash(cfg)}


def _log_config(cfg: PipelineConfig, run: mlflow.ActiveRun) -> None:
    """Params (those the run does not have yet) and ``config.json``."""
    tracking.log_config(cfg.to_dict(), logged=run.data.params)


def _log_inputs(cfg: PipelineConfig, data: IngestResult, splits: tuple[str, ...]) -> None:
    """The splits as dataset inputs of the active run (same names and digests on every run)."""
    tracking.log_split_inputs({s: to_frame(data.table(s)) for s in splits}, data.source,
                              name=data_name(cfg))


def ingest_stage(
    cfg: PipelineConfig, *, out_dir: Path | None = None, data: IngestResult | None = None
) -> StageRun:
    """Run :func:`~pipelines.steps.ingest.ingest` in an MLflow run; ``value`` is the IngestResult.

    The data are read and checked before the run opens, so a bad file or source leaves no run.

    Args:
        cfg: the pipeline config.
        out_dir: also keep the split in this local folder (else only as run artifacts).
        data: the result of ``ingest(cfg)`` when the caller already has it (checked early).
    """
    data = data if data is not None else ingest(cfg)
    with tracking.start_run("ingest", tags=_tags(cfg, "ingest")) as run:
        _log_config(cfg, run)
        with tempfile.TemporaryDirectory(prefix="latent-ode-ingest-") as tmp:
            folder = save_split(data, out_dir if out_dir is not None else Path(tmp) / "data")
            mlflow.log_artifacts(str(folder), DATA_ARTIFACT)
        _log_inputs(cfg, data, SPLITS)
        mlflow.log_metrics({f"n_series_{s}": len(data.split(s)) for s in SPLITS}
                           | {"n_channels": len(data.channels)})
        return StageRun(run.info.run_id, data)


def load_data_from_run(run_id: str) -> IngestResult:
    """The split that ingest run ``run_id`` logged as artifacts ``data/``."""
    with tempfile.TemporaryDirectory(prefix="latent-ode-data-") as tmp:
        return load_split(tracking.download_artifacts(run_id, DATA_ARTIFACT, tmp))


def load_forecaster_from_run(run_id: str, *, device: str = "cpu") -> Forecaster:
    """The forecaster that train run ``run_id`` logged as artifacts ``forecaster/``."""
    with tempfile.TemporaryDirectory(prefix="latent-ode-fc-") as tmp:
        return Forecaster.load(tracking.download_artifacts(run_id, FORECASTER_ARTIFACT, tmp),
                               device=device)


def default_checkpoint_dir(run_id: str) -> Path:
    """Local checkpoints of train run ``run_id``: ``./runs/<run_id>/checkpoints``."""
    return Path("runs") / run_id / "checkpoints"


class _CheckpointUploader:
    """Uploads the checkpoint folder as run artifacts whenever its files changed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seen: dict[str, float] = {}

    def __call__(self, _event: Any = None) -> None:
        if not self.directory.is_dir():
            return
        now = {str(p): p.stat().st_mtime for p in self.directory.rglob("*") if p.is_file()}
        if now and now != self._seen:
            mlflow.log_artifacts(str(self.directory), CHECKPOINT_ARTIFACT)
            self._seen = now


def _restore_checkpoints(run_id: str, directory: Path) -> None:
    """Fill an empty local checkpoint folder from the run's ``checkpoints/`` artifacts.

    When neither exists (the run died before its first checkpoint), training starts afresh in
    the same run.
    """
    if directory.is_dir() and any(directory.iterdir()):
        logger.info("resuming from the local checkpoints in %s", directory)
        return
    if not tracking.list_artifacts(run_id, CHECKPOINT_ARTIFACT):
        logger.warning("train run %s has no checkpoint (not in %s, not logged); training it "
                       "again from the start", run_id, directory)
        return
    with tempfile.TemporaryDirectory(prefix="latent-ode-ckpt-") as tmp:
        got = tracking.download_artifacts(run_id, CHECKPOINT_ARTIFACT, tmp)
        directory.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(got, directory, dirs_exist_ok=True)
    logger.info("resuming from the checkpoints logged with run %s", run_id)


def train_stage(
    cfg: PipelineConfig,
    data: IngestResult,
    *,
    device: str,
    data_run_id: str | None = None,
    run_id: str | None = None,
    checkpoint_dir: Path | None = None,
) -> StageRun:
    """Run :func:`~pipelines.steps.train.train` in an MLflow run; ``value`` is the TrainStepResult.

    Args:
        cfg: the pipeline config.
        data: the ingested split.
        device: torch device string.
        data_run_id: the ingest run the data came from (recorded as a tag).
        run_id: an unfinished train run to resume from its last checkpoint.
        checkpoint_dir: local checkpoint folder (default ``./runs/<run_id>/checkpoints``).
    """
    resume = run_id is not None
    cfg.model_config_for(data.channels)  # a config that does not fit the data opens no run
    tags = _tags(cfg, "train") | tracking.environment_tags(device)
    if data_run_id:
        tags[tracking.TAG_DATA_RUN] = data_run_id
    with tracking.start_run("train", tags=tags, run_id=run_id) as run:
        rid = run.info.run_id
        _log_config(cfg, run)
        if not resume:
            _log_inputs(cfg, data, ("train", "val"))
        ckpt = checkpoint_dir or default_checkpoint_dir(rid)
        if resume:
            _restore_checkpoints(rid, ckpt)
        # Under torchrun the other ranks wait in train_worker for the folder and the resume flag.
        broadcast_from_rank0((str(ckpt), resume))
        uploader = _CheckpointUploader(ckpt)
        result: TrainStepResult = train(
            cfg, data, device=device,
            callbacks=[tracking.MetricsLogger(on_epoch=uploader)],
            checkpoint_dir=ckpt, resume=resume,
        )
        uploader()
        lib = result.result
        mlflow.log_metrics(
            {f"best_{k}": v for k, v in result.metrics.items()}
            | {"train_steps": lib.steps, "train_epochs": lib.epochs, "best_step": lib.best_step,
               "train_elapsed_s": lib.elapsed_s},
            step=lib.steps,
        )
        mlflow.set_tag("stopped", lib.stopped)
        _log_loss_curves(rid)
        with tempfile.TemporaryDirectory(prefix="latent-ode-fc-") as tmp:
            folder = result.forecaster.save(Path(tmp) / FORECASTER_ARTIFACT)
            mlflow.log_artifacts(str(folder), FORECASTER_ARTIFACT)
            tracking.log_pyfunc_model(folder, metadata={"metrics": result.metrics})
        return StageRun(rid, result)


def _log_loss_curves(run_id: str) -> None:
    """``plots/loss_curves.png``: training and validation loss on one chart, read back from the
    run's metric history (so a resumed run draws its whole history)."""
    from matplotlib.figure import Figure

    curves = {name: tracking.metric_history(run_id, name) for name in tracking.LOSS_CURVES}
    if not any(curves.values()):
        return
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    for (name, points), style in zip(curves.items(), ("-", "o-"), strict=True):
        if points:
            ax.plot(*zip(*points, strict=True), style, label=name, lw=1.2, ms=4)
    ax.set_xlabel("optimisation step")
    ax.set_ylabel("loss (negative ELBO per value)")
    ax.set_title("training and validation loss")
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    mlflow.log_figure(fig, f"{PLOTS_ARTIFACT}/loss_curves.png")


def train_worker(cfg: PipelineConfig, data: IngestResult, *, device: str) -> TrainStepResult:
    """A rank > 0 process of multi-process training: trains along, logs nothing.

    Rank 0 runs :func:`train_stage` (the MLflow run); this receives its checkpoint folder and
    resume flag, then calls the same :func:`~pipelines.steps.train.train`, which shards batches
    and averages gradients with rank 0 (``latent_ode.fit``'s distributed data parallel).
    """
    ckpt, resume = broadcast_from_rank0(None)
    return train(cfg, data, device=device, checkpoint_dir=Path(ckpt), resume=resume)


def evaluate_stage(
    cfg: PipelineConfig, forecaster: Forecaster, data: IngestResult, *, train_run_id: str | None
) -> StageRun:
    """Run :func:`~pipelines.steps.evaluate.evaluate` in an MLflow run; ``value`` is the metrics."""
    tags = _tags(cfg, "evaluate")
    if train_run_id:
        tags[tracking.TAG_TRAIN_RUN] = train_run_id
    with tracking.start_run("evaluate", tags=tags) as run:
        _log_config(cfg, run)
        _log_inputs(cfg, data, ("val", "test"))
        result = evaluate(cfg, forecaster, data)
        mlflow.log_metrics(result.metrics)
        for name, fig in result.figures:
            mlflow.log_figure(fig, f"{PLOTS_ARTIFACT}/{name}")
            plt.close(fig)
        for split, bt in result.backtests.items():
            mlflow.log_table(backtest_frame(bt), artifact_file=f"{split}_{BACKTEST_TABLE}")
        return StageRun(run.info.run_id, result.metrics)


def register_stage(
    cfg: PipelineConfig,
    forecaster: Forecaster,
    metrics: dict[str, float],
    *,
    force: bool = False,
    train_run_id: str | None = None,
) -> StageRun:
    """Run :func:`~pipelines.steps.register.register` in an MLflow run; ``value`` is the RegisterResult.

    The version's source is the model that train run ``train_run_id`` logged (a train run from
    before that: a model logged in the register run). The register run logs the metrics the
    decision compares (``register.metric``, :data:`COMPARABLE`, :data:`SKILL_METRICS`), which
    the next registration reads as the champion's; the test metrics stay on the evaluate run.
    The version and the train run get :func:`model_description` as their description.

    Raises:
        ConfigError: ``metrics`` lacks ``register.metric`` (raised before the run opens).
    """
    tags = _tags(cfg, "register")
    identity = None
    model_uri = None
    if cfg.registry.metric not in metrics:  # checked before the run opens: no FAILED run left
        raise ConfigError(
            f"`register.metric` is {cfg.registry.metric!r}, which this run did not produce; "
            f"choose one of {sorted(metrics)}.")
    if train_run_id:
        tags[tracking.TAG_TRAIN_RUN] = train_run_id
        identity = {tracking.TAG_TRAIN_RUN: train_run_id,
                    tracking.TAG_CONFIG_HASH: config_hash(cfg),
                    tracking.TAG_DATA_DIGEST: tracking.data_digest(train_run_id)}
        model_uri = tracking.logged_model_uri(train_run_id)
    compared = (cfg.registry.metric, *COMPARABLE, *SKILL_METRICS)
    with tracking.start_run("register", tags=tags) as run:
        _log_config(cfg, run)
        mlflow.log_metrics({k: v for k, v in metrics.items() if k in compared})
        registry = tracking.MlflowRegistry(cfg.registry.model_name, cfg.registry.alias,
                                           model_uri=model_uri)
        with tempfile.TemporaryDirectory(prefix="latent-ode-fc-") as tmp:
            folder = forecaster.save(Path(tmp) / FORECASTER_ARTIFACT)
            result = register(cfg, folder, metrics, registry, force=force, identity=identity)
        if result.completed_run_id and result.completed_run_id != run.info.run_id:
            tracking.mark_killed(result.completed_run_id)
        if not result.matched:
            text = model_description(cfg, forecaster, metrics)
            registry.describe_version(result.version, text)
            if train_run_id:
                tracking.set_description(train_run_id, text)
        mlflow.set_tags({
            "registered_model": result.model_name, "registered_version": result.version,
            "promoted": str(result.promoted).lower(), "promotion_reason": result.reason,
            "matched_existing_version": str(result.matched).lower(),
        })
        return StageRun(run.info.run_id, result)


_HEADLINE = (("forecast", "LOCF"), ("interp", "linear interpolation"))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def model_description(cfg: PipelineConfig, forecaster: Forecaster,
                      metrics: dict[str, float]) -> str:
    """The Markdown description of a model version: the data, the headline test metrics with
    their units, and the baselines they are measured against."""
    channels = list(forecaster.channels)
    shown = ", ".join(f"`{c}`" for c in channels[:8]) + (", ..." if len(channels) > 8 else "")
    lines = [
        f"Latent ODE forecaster trained on **{data_name(cfg)}** "
        f"({forecaster.metadata.get('source', 'unknown source')}): {len(channels)} channel(s) "
        f"{shown}; times in {forecaster.time_unit}.",
        "",
        "Held-out test split (errors in each channel's own units; MSE on the normalised scale; "
        "skill = 1 - MSE / baseline MSE, 0 = the baseline, 1 = perfect):",
        "",
        "| regime | baseline | MAE (units) | baseline MAE (units) | MSE (normalised) | skill | "
        "90% interval coverage (fraction) |",
        "|---|---|---|---|---|---|---|",
    ]
    for regime, baseline in _HEADLINE:
        def m(stat: str, regime: str = regime) -> str:
            return _fmt(metrics.get(f"test/{regime}/{stat}"))
        lines.append(f"| {regime} | {baseline} | {m('mae_units')} | {m('baseline_mae_units')} | "
                     f"{m('mse')} | {m('skill')} | {m('coverage_90')} |")
    lines += ["", f"Validation loss (negative ELBO per value) of the kept weights: "
                  f"{_fmt(metrics.get('val_loss'))}. Per-channel and per-horizon figures are on "
                  "the evaluate run."]
    return "\n".join(lines)


class _StepCounter:
    """``step k/N`` log lines with the elapsed time and an estimate of the time left, and a
    tqdm bar over the steps on a terminal (log lines pass above it through the CLI's
    ``logging_redirect_tqdm``).

    The estimate: the training budget (``train.max_time_s``) for a train step still to come,
    the mean duration of the finished other steps for each other step.
    """

    def __init__(self, steps: tuple[str, ...], *, train_budget_s: float | None) -> None:
        self.steps = steps
        self.train_budget_s = train_budget_s
        self.start = time.monotonic()
        self.durations: dict[str, float] = {}
        self._bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=len(steps), unit="step", desc="pipeline", position=0,
                             bar_format="{desc}: {n_fmt}/{total_fmt} steps |{bar}| {postfix}")

    def _left(self, after: int) -> str:
        others = [d for s, d in self.durations.items() if s != "train"]
        left = 0.0
        for step in self.steps[after:]:
            if step == "train":
                if self.train_budget_s is None:
                    return "time left unknown without train.max_time_s"
                left += self.train_budget_s
            elif others:
                left += sum(others) / len(others)
        return f"about {_clock(left)} left"

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        k = self.steps.index(name)
        logger.info("step %d/%d: %s (elapsed %s, %s)", k + 1, len(self.steps), name,
                    _clock(time.monotonic() - self.start), self._left(k))
        if self._bar is not None:
            self._bar.set_description_str(f"pipeline: {name}")
        t0 = time.monotonic()
        yield
        self.durations[name] = time.monotonic() - t0
        if self._bar is not None:
            self._bar.set_postfix_str(self._left(k + 1), refresh=False)
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def _newest_unfinished(cfg: PipelineConfig, tag: str, value: str) -> Run | None:
    """The newest unfinished run of this config tagged ``tag = value``, if any."""
    runs = tracking.find_runs(
        f"tags.`{tag}` = '{value}' and tags.`{tracking.TAG_CONFIG_HASH}` = '{config_hash(cfg)}'",
        experiment=cfg.mlflow.experiment,
    )
    return next((r for r in runs if r.info.status != _FINISHED), None)


def find_resumable_train_run(cfg: PipelineConfig) -> Run | None:
    """The newest unfinished train run of this config in the config's experiment, if any."""
    return _newest_unfinished(cfg, tracking.TAG_STEP, "train")


def _find_resumable_parent(cfg: PipelineConfig) -> Run | None:
    return _newest_unfinished(cfg, tracking.TAG_KIND, "pipeline")


def _children(parent_id: str, experiment: str) -> dict[str, Run]:
    """The newest child run of each step under ``parent_id``."""
    runs = tracking.find_runs(f"tags.`mlflow.parentRunId` = '{parent_id}'", experiment=experiment)
    out: dict[str, Run] = {}
    for r in runs:  # newest first
        out.setdefault(r.data.tags.get(tracking.TAG_STEP, ""), r)
    return out


def _mark_dead_steps(parent_id: str, experiment: str) -> None:
    """Mark KILLED the step runs of ``parent_id`` left RUNNING by a process that died.

    The newest unfinished train run is not marked: it is reopened and continues from its last
    checkpoint (and ends FINISHED or FAILED). Any other step that was running starts again in a
    new run.
    """
    runs = tracking.find_runs(f"tags.`mlflow.parentRunId` = '{parent_id}'", experiment=experiment)
    resumed_train = next((r for r in runs if r.data.tags.get(tracking.TAG_STEP) == "train"), None)
    for r in runs:
        if r.info.status != "RUNNING" or (
                resumed_train is not None and r.info.run_id == resumed_train.info.run_id):
            continue
        tracking.mark_killed(r.info.run_id)


def run_pipeline(
    cfg: PipelineConfig,
    *,
    device: str,
    resume: bool = False,
    force: bool = False,
    config_source: str | None = None,
    derived_settings: str | None = None,
) -> PipelineResult:
    """Run ingest -> train -> evaluate -> register as one parent run with a nested run per step.

    Args:
        cfg: the pipeline config.
        device: torch device string for training and evaluation.
        resume: continue the newest unfinished pipeline run of the same config: finished steps
            are reused from their runs' artifacts, an unfinished train step continues from its
            last checkpoint. Without such a run, a new one starts.
        force: let the new version take the champion alias regardless of its metric.
        config_source: the config file, recorded as a tag.
        derived_settings: the readable account of settings derived from the data
            (:func:`pipelines.autoconfig.describe`), logged as ``derived_settings.txt``.

    Raises:
        DataError, ConfigError, SolverError, MlflowException: any step's failure; the parent run
            is then marked FAILED and nothing is registered (register runs last).
    """
    tracking.set_experiment(cfg.mlflow.experiment)
    parent = _find_resumable_parent(cfg) if resume else None
    if resume and parent is None:
        logger.info("--resume: no unfinished pipeline run of this config; starting a new one")
    done: dict[str, Run] = {}
    if parent is not None:
        done = _children(parent.info.run_id, cfg.mlflow.experiment)
        logger.info("resuming pipeline run %s (steps found: %s)", parent.info.run_id,
                    ", ".join(f"{k}={v.info.status}" for k, v in done.items()) or "none")
        _mark_dead_steps(parent.info.run_id, cfg.mlflow.experiment)

    def finished(step: str) -> Run | None:
        r = done.get(step)
        return r if r is not None and r.info.status == _FINISHED else None

    # Read and check the data before any run opens: a mistyped file, a bad source option or a
    # model config that does not fit the data leaves nothing behind in the tracking store.
    ingested: IngestResult | None = None
    if finished("ingest") is None:
        ingested = ingest(cfg)
        cfg.model_config_for(ingested.channels)
    tags = {tracking.TAG_KIND: "pipeline", tracking.TAG_CONFIG_HASH: config_hash(cfg)}
    if config_source:
        tags["config_file"] = config_source
    tags |= tracking.environment_tags(device)
    run_name = f"pipeline {data_name(cfg)} {datetime.now().strftime('%Y-%m-%d %H:%M')}"
    counter = _StepCounter(("ingest", "train", "evaluate", "register"),
                           train_budget_s=cfg.train.max_time_s)
    try:
        with tracking.start_run(run_name, tags=tags,
                                run_id=parent.info.run_id if parent else None) as run:
            _log_config(cfg, run)
            if derived_settings is not None:
                mlflow.log_text(derived_settings, DERIVED_SETTINGS_ARTIFACT)
            ids: dict[str, str] = {}

            with counter.step("ingest"):
                if (r := finished("ingest")) is not None:
                    data, ids["ingest"] = load_data_from_run(r.info.run_id), r.info.run_id
                    logger.info("ingest: reusing finished run %s", r.info.run_id)
                else:
                    st = ingest_stage(cfg, data=ingested)
                    data, ids["ingest"] = st.value, st.run_id

            with counter.step("train"):
                if (r := finished("train")) is not None:
                    forecaster = load_forecaster_from_run(r.info.run_id, device=device)
                    train_metrics = dict(forecaster.metadata.get("metrics", {}))
                    ids["train"] = r.info.run_id
                    logger.info("train: reusing finished run %s", r.info.run_id)
                else:
                    unfinished = done.get("train")
                    st = train_stage(cfg, data, device=device, data_run_id=ids["ingest"],
                                     run_id=unfinished.info.run_id if unfinished else None)
                    forecaster, train_metrics = st.value.forecaster, st.value.metrics
                    ids["train"] = st.run_id

            with counter.step("evaluate"):
                if (r := finished("evaluate")) is not None:
                    eval_metrics, ids["evaluate"] = dict(r.data.metrics), r.info.run_id
                    logger.info("evaluate: reusing finished run %s", r.info.run_id)
                else:
                    st = evaluate_stage(cfg, forecaster, data, train_run_id=ids["train"])
                    eval_metrics, ids["evaluate"] = st.value, st.run_id

            metrics = train_metrics | eval_metrics
            with counter.step("register"):
                st = register_stage(cfg, forecaster, metrics, force=force,
                                    train_run_id=ids["train"])
                ids["register"] = st.run_id
            mlflow.set_tags({"registered_version": st.value.version,
                             "promoted": str(st.value.promoted).lower(),
                             tracking.TAG_TRAIN_RUN: ids["train"],
                             tracking.TAG_EVALUATE_RUN: ids["evaluate"]})
            mlflow.set_tag(tracking.TAG_DESCRIPTION,
                           _parent_description(run.info.experiment_id, ids, metrics, st.value))
            return PipelineResult(run.info.run_id, ids, metrics, st.value, forecaster)
    finally:
        counter.close()


def _parent_description(experiment_id: str, ids: dict[str, str], metrics: dict[str, float],
                        reg: RegisterResult) -> str:
    """The parent run's description: the headline test metrics and links to the step runs (the
    metrics themselves are logged once, on the evaluate run)."""
    def link(step: str) -> str:
        return f"[{step}](#/experiments/{experiment_id}/runs/{ids[step]})"

    pooled = ", ".join(f"{k} = {_fmt(metrics.get(k))}" for k in (
        "test/forecast/skill", "test/interp/skill", "test/forecast/coverage_90"))
    return "\n".join([
        f"Test metrics (logged on the {link('evaluate')} run, with its plots): {pooled}.",
        "",
        f"Training curves and the logged model: the {link('train')} run. Data: the "
        f"{link('ingest')} run. Registration: the {link('register')} run, {reg.model_name} "
        f"version {reg.version} ({'promoted to' if reg.promoted else 'not promoted to'} "
        f"`champion`).",
    ])
