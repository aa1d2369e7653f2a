"""The ``latent-ode`` command line: the only place that parses arguments.

Commands (``latent-ode COMMAND --help`` for each)::

    latent-ode data generate --dataset NAME --out FILE [--n-series N --seed S --option K=V ...]
    latent-ode data physionet ARCHIVE... --out FILE [--limit N] [--static-out FILE]
    latent-ode ingest   --config CFG [--out DIR]
    latent-ode train    --config CFG (--data DIR | --data-run RUN) [--resume [--run-id RUN]]
    latent-ode evaluate --config CFG --train-run RUN [--data DIR | --data-run RUN]
    latent-ode register --config CFG --train-run RUN [--evaluate-run RUN] [--force]
    latent-ode pipeline run (--config CFG | --data-file FILE [--config CFG]) [--max-time S]
                            [--resume] [--force]
    latent-ode predict --model URI|DIR --data-file FILE --out FILE [--horizon H --every DT]
                       [--quantiles 0.05,0.5,0.95] [--num-samples N] [--seed S]
    latent-ode spark-predict --model URI|DIR --data PATH --out FOLDER [--master URL] [...]
    latent-ode backtest --model URI (--data-file FILE | --data DIR | --data-run RUN)
                        [--cuts K | --cut-times T ...] [--horizon H] [--out FILE] [--experiment E]
    latent-ode serve [--host HOST] [--port PORT] [--model-uri URI]
    latent-ode quickstart [--config CFG] [--workdir DIR] [--host HOST] [--port PORT] [--no-serve]

Errors a user can fix (bad data, bad config, an unknown run) print one line ``error: ...`` and
exit with code 2; anything else is a bug and shows its traceback. ``latent-ode --version`` prints
the package version.

The console: one log format (``YYYY-MM-DD HH:MM:SS LEVEL logger: message``) for our loggers,
MLflow's and Python warnings alike, plain text (no colour codes); no artifact download bars
(``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false`` unless set); progress bars only on a terminal,
with log lines written above them (``tqdm.contrib.logging.logging_redirect_tqdm``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.config import PipelineConfig
    from pipelines.steps.ingest import IngestResult
    from pipelines.steps.register import RegisterResult

__all__ = ["EXIT_USAGE", "build_parser", "main"]

logger = logging.getLogger(__name__)

EXIT_USAGE = 2
"""Exit code of errors the user can fix (bad data, bad config, unknown run)."""


def _say(text: str) -> None:
    """Final summaries on stdout (logs go to stderr)."""
    print(text)  # noqa: T201 - the CLI is the one place that prints


# --------------------------------------------------------------------------------- handlers
# Each handler imports what its command needs inside the function, on purpose: this module loads
# only the standard library, so `latent-ode --help` and argument errors answer at once, and
# torch, MLflow and the service's web stack load only for the commands that use them. (None of
# these imports dodges a cycle: the layers below never import this module.)
def _settings_device(args: argparse.Namespace) -> str:
    from pipelines.steps.train import training_device

    return training_device(args.device)


def _source_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``--option KEY=VALUE`` pairs as a dict; a VALUE that parses as JSON is taken as such."""
    from latent_ode.errors import ConfigError
    from pipelines.config import decode_value

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"`--option` must be KEY=VALUE, e.g. n_times=50; got {pair!r}.")
        out[key] = decode_value(text)  # plain text (a path, say) where it is not JSON
    return out


def _cmd_data_generate(args: argparse.Namespace) -> None:
    from formats.longformat import write_long
    from pipelines.sources import get_source

    loaded = get_source(args.dataset).load(n_series=args.n_series, seed=args.seed,
                                           time_unit=args.time_unit,
                                           options=_source_options(args.option))
    table = loaded.table
    path = write_long(table, args.out)
    _say(f"wrote {len(table)} {args.dataset} series ({len(table.channels)} channels) to {path}")


def _cmd_data_physionet(args: argparse.Namespace) -> None:
    from formats.longformat import write_long
    from pipelines.sources.physionet import read_physionet

    table, static = read_physionet([Path(a) for a in args.archives], limit=args.limit)
    path = write_long(table, args.out)
    if args.static_out:
        out = Path(args.static_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() in (".parquet", ".pq"):
            static.to_parquet(out)
        else:
            static.to_csv(out)
    _say(f"wrote {len(table)} PhysioNet stays ({len(table.channels)} channels) to {path}")


def _single_process(command: str) -> None:
    """Refuse to run ``command`` once per torchrun process (each would log its own runs)."""
    from latent_ode.errors import ConfigError
    from pipelines.steps.train import world_size

    if world_size() > 1:
        raise ConfigError(
            f"`latent-ode {command}` runs in one process, not under torchrun (WORLD_SIZE="
            f"{world_size()}); for multi-process training run `torchrun --nproc-per-node N -m "
            "pipelines.cli train --config CFG --data-run RUN` (rank 0 logs to MLflow)."
        )


def _load(args: argparse.Namespace) -> PipelineConfig:
    from pipelines import tracking
    from pipelines.config import load_config

    _single_process(args.command)
    cfg = load_config(args.config)
    tracking.set_experiment(cfg.mlflow.experiment)
    return cfg


def _cmd_ingest(args: argparse.Namespace) -> None:
    from pipelines.pipeline import ingest_stage

    cfg = _load(args)
    st = ingest_stage(cfg, out_dir=Path(args.out) if args.out else None)
    data = st.value
    _say(f"ingest run {st.run_id}: {len(data.train)} train / {len(data.val)} val / "
         f"{len(data.test)} test series" + (f"; split written to {args.out}" if args.out else ""))


def _data_for(
    args: argparse.Namespace, *, default_run: str | None = None
) -> tuple[IngestResult, str | None]:
    from latent_ode.errors import ConfigError
    from pipelines.pipeline import load_data_from_run
    from pipelines.steps.ingest import load_split

    if args.data:
        return load_split(args.data), None
    run = args.data_run or default_run  # "" (e.g. from MLproject) means "not given"
    if not run:
        raise ConfigError("no data given; pass --data DIR (from `latent-ode ingest --out DIR`) "
                          "or --data-run RUN_ID (an ingest run).")
    return load_data_from_run(run), run


def _cmd_train(args: argparse.Namespace) -> None:
    from latent_ode.errors import ConfigError
    from pipelines import tracking
    from pipelines.config import load_config
    from pipelines.pipeline import find_resumable_train_run, train_stage, train_worker
    from pipelines.steps.train import one_torch_thread_unless_set, process_group

    cfg = load_config(args.config)
    device = _settings_device(args)
    one_torch_thread_unless_set()
    if args.run_id is not None and not args.resume:
        raise ConfigError("--run-id only goes with --resume (it names the run to continue).")
    with process_group(device) as (rank, world):
        if rank != 0:  # torchrun: only rank 0 talks to MLflow
            data, _ = _data_for(args)
            train_worker(cfg, data, device=device)
            return
        tracking.set_experiment(cfg.mlflow.experiment)
        run_id = args.run_id
        if args.resume and run_id is None:
            found = find_resumable_train_run(cfg)
            if found is None:
                raise ConfigError("--resume: no unfinished train run of this config in experiment "
                                  f"{cfg.mlflow.experiment!r}; pass --run-id or drop --resume.")
            run_id = found.info.run_id
        data, data_run = _data_for(args)
        st = train_stage(cfg, data, device=device, data_run_id=data_run, run_id=run_id,
                         checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None)
    lib = st.value.result
    procs = f" in {world} processes" if world > 1 else ""
    _say(f"train run {st.run_id}: {lib.steps} steps{procs}, stopped by {lib.stopped}; best "
         f"{cfg.train_config().val_metric} = {lib.best_metric:.6g} at step {lib.best_step}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from mlflow import MlflowClient

    from pipelines import tracking
    from pipelines.pipeline import evaluate_stage, load_forecaster_from_run

    cfg = _load(args)
    device = _settings_device(args)
    tags = MlflowClient().get_run(args.train_run).data.tags
    data, _ = _data_for(args, default_run=tags.get(tracking.TAG_DATA_RUN))
    forecaster = load_forecaster_from_run(args.train_run, device=device)
    st = evaluate_stage(cfg, forecaster, data, train_run_id=args.train_run)
    pooled = {k: v for k, v in st.value.items() if k.count("/") == 2}  # not per channel or bin
    _say(f"evaluate run {st.run_id}: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(pooled.items())))


def _cmd_register(args: argparse.Namespace) -> None:
    from mlflow import MlflowClient

    from pipelines.pipeline import load_forecaster_from_run, register_stage

    cfg = _load(args)
    forecaster = load_forecaster_from_run(args.train_run)
    metrics = dict(forecaster.metadata.get("metrics", {}))
    if args.evaluate_run:
        metrics |= MlflowClient().get_run(args.evaluate_run).data.metrics
    st = register_stage(cfg, forecaster, metrics, force=args.force, train_run_id=args.train_run)
    _say(_register_summary(st.value))


def _register_summary(r: RegisterResult) -> str:
    if r.matched:
        return f"matches {r.model_name} version {r.version}, nothing registered: {r.reason}"
    what = "promoted to" if r.promoted else "NOT promoted to"
    done = " (completed an interrupted registration)" if r.completed_run_id else ""
    return f"registered {r.model_name} version {r.version}{done}, {what} champion: {r.reason}"


def _pipeline_config(args: argparse.Namespace) -> tuple[PipelineConfig, str | None, str]:
    """The config of ``pipeline run``, the derived-settings block (with ``--data-file``) and
    what the config came from.

    ``--data-file`` derives every setting from the data (:mod:`pipelines.autoconfig`); a
    ``--config`` given with it wins where it sets a key, and ``--max-time`` wins over both.
    """
    import dataclasses

    from formats.longformat import read_long
    from latent_ode.errors import ConfigError
    from pipelines import autoconfig
    from pipelines.config import load_config, read_toml

    if args.data_file is None:
        if args.config is None:
            raise ConfigError("`pipeline run` needs --config CONFIG (a pipeline TOML) or "
                              "--data-file FILE (a long-format CSV/Parquet file); got neither.")
        if args.time_unit is not None:
            raise ConfigError("--time-unit only goes with --data-file; with --config, set "
                              "`time_unit` in its [data] section.")
        cfg, block, source = load_config(args.config), None, str(args.config)
    else:
        table = read_long(args.data_file, time_unit=args.time_unit or "hours")
        summary = autoconfig.summarise(table.series, channels=table.channels,
                                       time_unit=table.time_unit)
        cfg = autoconfig.derive_config(
            summary, path=args.data_file,
            max_time_s=args.max_time if args.max_time is not None else
            autoconfig.DEFAULT_MAX_TIME_S)
        source = f"--data-file {args.data_file}"
        if args.config is not None:
            cfg = autoconfig.merge_config(cfg, read_toml(args.config),
                                          source=repr(str(args.config)))
            source += f" --config {args.config}"
        block = autoconfig.describe(summary, cfg, overridden_by=(
            str(args.config) if args.config is not None else None))
    if args.max_time is not None:
        cfg = cfg.model_copy(update={"train": dataclasses.replace(cfg.train,
                                                                  max_time_s=args.max_time)})
    return cfg, block, source


def _cmd_pipeline_run(args: argparse.Namespace) -> None:
    from pipelines.pipeline import run_pipeline
    from pipelines.steps.train import one_torch_thread_unless_set

    _single_process("pipeline run")
    one_torch_thread_unless_set()
    cfg, block, source = _pipeline_config(args)
    if block is not None:
        logger.info("%s", block)
        _say(block)
    result = run_pipeline(cfg, device=_settings_device(args), resume=args.resume,
                          force=args.force, config_source=source, derived_settings=block)
    keys = [k for k in ("val_loss", "test/interp/mse", "test/interp/skill", "test/forecast/mse",
                        "test/forecast/skill", "test/forecast/coverage_90")
            if k in result.metrics]
    _say(f"pipeline run {result.parent_run_id} in experiment {cfg.mlflow.experiment!r}: "
         + ", ".join(f"{k}={result.metrics[k]:.4g}" for k in keys))
    _say(_register_summary(result.register))
    _say(f"in the MLflow UI: {_run_address(result.parent_run_id)} (docs/pipelines.md, "
         "\"Browsing the runs in the MLflow UI\")")


def _run_address(run_id: str) -> str:
    """The run's page on the tracking server, or where to find it with ``mlflow ui``."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    exp = mlflow.get_run(run_id).info.experiment_id
    page = f"#/experiments/{exp}/runs/{run_id}"
    if uri.startswith(("http://", "https://")):
        from urllib.parse import urlsplit

        parts = urlsplit(uri)  # never print credentials written into the URI
        host = (parts.hostname or "") if parts.port is None else f"{parts.hostname}:{parts.port}"
        return f"{parts.scheme}://{host}{parts.path.rstrip('/')}/{page}"
    return f"`mlflow ui --backend-store-uri {uri}`, then http://127.0.0.1:5000/{page}"


def _warn_failed(failed: dict[str, str]) -> None:
    """One stderr line per series the solver could not answer (``predict``, ``spark-predict``)."""
    for sid, why in failed.items():
        sys.stderr.write(f"warning: series {sid!r} has no forecast: {_one_line(why)}\n")


def _cmd_spark_predict(args: argparse.Namespace) -> None:
    from pipelines.predict import load_forecaster
    from pipelines.spark import SparkPredictOptions, spark_predict, spark_session

    options = SparkPredictOptions(
        data=args.data, out=args.out, horizon=args.horizon, every=args.every,
        quantiles=args.quantiles, num_samples=args.num_samples, seed=args.seed,
        batch_series=args.batch_series)
    from pyspark.sql import SparkSession

    forecaster = load_forecaster(args.model)
    existing = SparkSession.getActiveSession()  # e.g. a notebook's: used, not stopped
    spark = spark_session(args.master)
    try:
        summary = spark_predict(spark, forecaster, options)
    finally:
        if existing is None:
            spark.stop()
    _warn_failed(summary.failed)
    _say(f"wrote {summary.rows} rows for {summary.series} series to {summary.out}")


def _cmd_predict(args: argparse.Namespace) -> None:
    from pipelines.predict import PredictOptions, predict_file

    options = PredictOptions(
        model=args.model, data_file=args.data_file, out=args.out, horizon=args.horizon,
        every=args.every, quantiles=args.quantiles, num_samples=args.num_samples, seed=args.seed,
        batch_series=args.batch_series, device=_settings_device(args),
    )
    summary = predict_file(options)
    _warn_failed(summary.failed)
    if summary.no_queries:
        shown = ", ".join(repr(s) for s in summary.no_queries[:5])
        more = f" and {len(summary.no_queries) - 5} more" if len(summary.no_queries) > 5 else ""
        sys.stderr.write(f"warning: {len(summary.no_queries)} series had nothing to forecast (no "
                         f"query rows; --horizon adds some): {shown}{more}\n")
    failed = f"; {len(summary.failed)} series failed (see above)" if summary.failed else ""
    _say(f"wrote {summary.rows} rows for {summary.series} series to {summary.out}{failed}")


def _cmd_backtest(args: argparse.Namespace) -> None:
    import mlflow

    from formats.longformat import read_long
    from latent_ode.backtest import BacktestConfig, backtest
    from latent_ode.errors import ConfigError
    from pipelines import tracking
    from pipelines.backtest import (
        align_channels,
        check_output,
        format_table,
        load_forecaster,
        log_backtest,
        training_mean,
        write_result,
    )

    # Every argument is checked before the model loads and before any run opens.
    config = BacktestConfig(cuts=None if args.cut_times else args.cuts,
                            cut_times=tuple(args.cut_times) if args.cut_times else None,
                            horizon=args.horizon, buckets=args.buckets, regime=args.regime,
                            num_samples=args.num_samples, seed=args.seed)
    out = Path(args.out) if args.out else None
    check_output(out)
    if args.time_unit is not None and args.data_file is None:
        raise ConfigError("--time-unit only goes with --data-file; a split keeps its own unit.")
    forecaster = load_forecaster(args.model, device=_settings_device(args))
    unit = forecaster.time_unit
    fallback = training_mean(forecaster)
    if args.data_file is not None:
        table = read_long(args.data_file, time_unit=args.time_unit or unit)
        if table.time_unit != unit:
            logger.warning("the data's times are in %s, the model's in %s: leads and horizons "
                           "are in %s", table.time_unit, unit, table.time_unit)
        unit = table.time_unit
        series = align_channels(table.series, table.channels, forecaster.channels)
        source = str(args.data_file)
    else:
        data, _ = _data_for(args)
        if data.time_unit != forecaster.time_unit:
            raise ConfigError(f"the split's times are in {data.time_unit}, the model's in "
                              f"{forecaster.time_unit}; backtest a split of the model's own data.")
        series = align_channels(data.split(args.split), data.channels, forecaster.channels)
        source = f"the {args.split} split"
    result = backtest(forecaster, series, config, fallback=fallback)
    _say(f"backtest of {args.model} on {source}, times in {unit}:")
    _say(format_table(result, time_unit=unit))
    if out is not None:
        write_result(result, out, time_unit=unit)
        _say(f"wrote the table to {out}")
    if args.experiment:
        tracking.set_experiment(args.experiment)
        with tracking.start_run("backtest", tags={tracking.TAG_KIND: "backtest"}) as run:
            params = {"model": args.model, "data": source, "regime": config.regime,
                      "cuts": config.cuts, "cut_times": config.cut_times,
                      "horizon": config.horizon, "buckets": config.buckets}
            mlflow.log_params({k: str(v) for k, v in params.items()})
            mlflow.log_metrics(result.metrics())
            log_backtest(result, time_unit=unit)
        _say(f"logged backtest run {run.info.run_id} in experiment {args.experiment!r}")


def _cmd_serve(args: argparse.Namespace) -> None:
    from service.config import Settings
    from service.server import run  # the service's dependencies load only for this command

    overrides = {"model_uri": args.model_uri} if args.model_uri else {}
    run(host=args.host, port=args.port, settings=Settings(**overrides))


def _cmd_quickstart(args: argparse.Namespace) -> None:
    from pipelines.quickstart import QuickstartOptions, run_quickstart

    run_quickstart(QuickstartOptions(workdir=args.workdir, config=args.config, host=args.host,
                                     port=args.port, serve=args.serve, device=args.device))


# ---------------------------------------------------------------------------------- parser
def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, metavar="CONFIG",
                   help="pipeline config TOML (e.g. pipelines/configs/periodic.toml); relative "
                        "paths inside it are relative to the current directory")


def _add_forecast_options(p: argparse.ArgumentParser, *, batch_help: str) -> None:
    """The options of :class:`pipelines.predict.ForecastOptions` (``predict``, ``spark-predict``)."""
    p.add_argument("--horizon", type=float, default=None, metavar="H",
                   help="also forecast after each series' last observation, up to H model time "
                        "units later (with --every)")
    p.add_argument("--every", type=float, default=None, metavar="DT",
                   help="step of the --horizon query times (model time units)")
    p.add_argument("--quantiles", default="", metavar="LEVELS",
                   help="comma-separated quantile levels to report, e.g. 0.05,0.5,0.95; "
                        "default none")
    p.add_argument("--num-samples", type=int, default=32, metavar="N",
                   help="latent samples per series; default 32")
    p.add_argument("--seed", type=int, default=0, help="seed of the latent samples; default 0")
    p.add_argument("--batch-series", type=int, default=256, metavar="N",
                   help=f"{batch_help}; default 256")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, metavar="DEVICE",
                   help="auto (CUDA when available), cpu, cuda or cuda:N; default: "
                        "$LATENT_ODE_DEVICE or auto")


def _add_data(p: argparse.ArgumentParser, *, required: bool) -> None:
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--data", metavar="DIR", help="split folder written by `ingest --out DIR`")
    g.add_argument("--data-run", metavar="RUN_ID", help="ingest run whose `data/` artifacts to use")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds; got {text!r}")
    return value


_MODEL_URI = re.compile(r"^models:/[^/@\s]+(@[^/@\s]+|/[0-9]+)$")


def _model_uri(text: str) -> str:
    if not _MODEL_URI.match(text):
        raise argparse.ArgumentTypeError(
            f"must be models:/NAME@ALIAS or models:/NAME/VERSION; got {text!r}")
    return text


def package_version() -> str:
    """The installed ``latent-ode`` package's version (``unknown`` when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("latent-ode")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``latent-ode`` (every command has ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="latent-ode",
        description="Latent ODE forecasting: data, MLflow-tracked pipelines, serving. Runs are "
                    "tracked in $MLFLOW_TRACKING_URI, or in ./mlflow.db when it is unset.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="make long-format data files",
                          description="Generate or import data as long-format CSV/Parquet.")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    from pipelines.sources import SOURCES, source_names

    width = max(map(len, SOURCES))
    gen = data_sub.add_parser(
        "generate", help="generate (or import) a registered data set",
        description="Generate a synthetic data set, or import a real one, from the registry of "
                    "data sources; the format follows the extension of --out (.csv or .parquet).",
        epilog="data sets:\n" + "\n".join(f"  {name:<{width}}  {s.description}"
                                            for name, s in SOURCES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--dataset", required=True, choices=source_names(),
                     help="the data set (listed below)")
    gen.add_argument("--out", required=True, metavar="FILE", help=".csv or .parquet file")
    gen.add_argument("--n-series", type=int, default=1000, metavar="N",
                     help="size of a generated data set; default 1000")
    gen.add_argument("--seed", type=int, default=0, help="seed of a generated data set; default 0")
    gen.add_argument("--time-unit", default="hours",
                     help="unit the synthetic times are declared in (sources without their own "
                          "unit); default hours")
    gen.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                     help="an option of the data set (the keys of [data] options, e.g. "
                          "n_times=50); VALUE is read as JSON when it parses, else as text; "
                          "repeatable")
    gen.set_defaults(func=_cmd_data_generate)
    phy = data_sub.add_parser("physionet", help="import PhysioNet 2012 archives",
                              description="Read PhysioNet/CinC 2012 archives (set-a.tar.gz, "
                                          "set-b.tar.gz) into one long-format file.")
    phy.add_argument("archives", nargs="+", metavar="ARCHIVE", help="set-a.tar.gz, set-b.tar.gz")
    phy.add_argument("--out", required=True, metavar="FILE", help=".csv or .parquet file")
    phy.add_argument("--limit", type=int, default=None, metavar="N",
                     help="read only the first N stays (across the archives, in order)")
    phy.add_argument("--static-out", metavar="FILE",
                     help="also write the static descriptors (Age, Gender, ...) here")
    phy.set_defaults(func=_cmd_data_physionet)

    ing = sub.add_parser("ingest", help="read, split and normalise the data (an MLflow run)",
                         description="Read or generate the config's data, split it by series, "
                                     "fit the normaliser, log the split as artifacts `data/`.")
    _add_config(ing)
    ing.add_argument("--out", metavar="DIR", help="also keep the split in this local folder")
    ing.set_defaults(func=_cmd_ingest)

    tr = sub.add_parser("train", help="train a model (an MLflow run)",
                        description="Train on an ingested split; logs metrics per step/epoch, "
                                    "checkpoints and the forecaster.")
    _add_config(tr)
    _add_data(tr, required=True)
    _add_device(tr)
    tr.add_argument("--checkpoint-dir", metavar="DIR",
                    help="local checkpoint folder; default ./runs/<run_id>/checkpoints")
    tr.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False,
                    help="continue an interrupted train run from its last checkpoint (the "
                         "newest unfinished train run of this config, or --run-id)")
    tr.add_argument("--run-id", metavar="RUN_ID", help="the train run to continue (with --resume)")
    tr.set_defaults(func=_cmd_train)

    ev = sub.add_parser("evaluate", help="evaluate a trained model (an MLflow run)",
                        description="Test-split metrics and forecast plots of a train run's model.")
    _add_config(ev)
    ev.add_argument("--train-run", required=True, metavar="RUN_ID", help="the train run")
    _add_data(ev, required=False)
    _add_device(ev)
    ev.set_defaults(func=_cmd_evaluate)

    rg = sub.add_parser("register", help="register a trained model (an MLflow run)",
                        description="Log a train run's model as a pyfunc model, register a "
                                    "version and move `champion` to it if its metric is better.")
    _add_config(rg)
    rg.add_argument("--train-run", required=True, metavar="RUN_ID", help="the train run")
    rg.add_argument("--evaluate-run", metavar="RUN_ID",
                    help="an evaluate run whose val/... and test/... metrics to add (needed "
                         "for the skill gate, register.require_skill, and when register.metric "
                         "is one of them)")
    rg.add_argument("--force", action=argparse.BooleanOptionalAction, default=False,
                    help="take `champion` regardless of the metric")
    rg.set_defaults(func=_cmd_register)

    pipe = sub.add_parser("pipeline", help="run the whole pipeline",
                          description="ingest -> train -> evaluate -> register.")
    pipe_sub = pipe.add_subparsers(dest="pipeline_command", required=True, metavar="SUBCOMMAND")
    run = pipe_sub.add_parser("run", help="run ingest, train, evaluate, register",
                              description="One parent MLflow run with a nested run per step.")
    run.add_argument("--config", type=Path, metavar="CONFIG",
                     help="pipeline config TOML (e.g. pipelines/configs/periodic.toml); needed "
                          "unless --data-file is given; with --data-file, the keys it sets win "
                          "over the derived ones")
    run.add_argument("--data-file", type=Path, metavar="FILE",
                     help="your own long-format .csv or .parquet file (docs/pipelines.md): every "
                          "setting is derived from the data, printed and logged")
    run.add_argument("--time-unit", default=None,
                     help="with --data-file: unit of its numeric times, and the unit ISO-8601 "
                          "times are converted to (seconds, minutes, hours, days); default hours")
    run.add_argument("--max-time", type=_positive_seconds, default=None, metavar="SECONDS",
                     help="training budget in seconds (wins over the config); default with "
                          "--data-file: 600")
    _add_device(run)
    run.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False,
                     help="continue the newest unfinished pipeline run of this config: reuse "
                          "finished steps, resume training from its last checkpoint")
    run.add_argument("--force", action=argparse.BooleanOptionalAction, default=False,
                     help="take `champion` regardless of the metric")
    run.set_defaults(func=_cmd_pipeline_run)

    pr = sub.add_parser(
        "predict", help="forecast every series of a CSV/Parquet file",
        description="Forecast every series of a file in the frame format (series_id, time, one "
                    "column per channel, optional boolean `query`: rows asking for a forecast) "
                    "into a file with one row per (series, query time): series_id, time, mode, "
                    "<channel>_mean, <channel>_std, <channel>_q<level>. Reads and writes in "
                    "batches of series (the rows of a series must be contiguous). A series the "
                    "solver cannot answer is reported on stderr and has no rows; the exit code "
                    "is 0 unless no series could be answered (2).")
    pr.add_argument("--model", required=True, metavar="URI|DIR",
                    help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model (from "
                         "$MLFLOW_TRACKING_URI, or ./mlflow.db when it is unset) or a local "
                         "folder (a saved forecaster or a downloaded MLflow model)")
    pr.add_argument("--data-file", required=True, type=Path, metavar="FILE",
                    help="input .csv or .parquet in the frame format")
    pr.add_argument("--out", required=True, type=Path, metavar="FILE",
                    help="output .csv or .parquet (written whole or not at all)")
    _add_forecast_options(pr, batch_help="series per model call (memory grows with it)")
    _add_device(pr)
    pr.set_defaults(func=_cmd_predict)

    sp = sub.add_parser(
        "spark-predict", help="forecast a data set larger than one machine on Spark",
        description="What `latent-ode predict` does, on Apache Spark: reads a CSV/Parquet file "
                    "or folder in the frame format, answers whole series per task with the "
                    "model loaded once per worker, and writes a Parquet folder in the output "
                    "frame format (rows in the tasks' order). Needs pyspark and Java 17.")
    sp.add_argument("--model", required=True, metavar="URI|DIR",
                    help="as `latent-ode predict --model`; loaded once on the driver and "
                         "broadcast to the executors")
    sp.add_argument("--data", required=True, metavar="PATH",
                    help="input .csv/.parquet file or folder (any path Spark reads)")
    sp.add_argument("--out", required=True, metavar="FOLDER", help="output Parquet folder "
                    "(replaced if it exists)")
    sp.add_argument("--master", default="local[*]",
                    help="Spark master URL; default local[*] (every core of this machine)")
    _add_forecast_options(sp, batch_help="about how many series a task answers in one model "
                                          "call")
    sp.set_defaults(func=_cmd_spark_predict)
    bt = sub.add_parser(
        "backtest", help="rolling-origin backtest of a model (MAE/RMSE in your units)",
        description="Forecast every series from several cut points (the model sees each series "
                    "up to the cut and forecasts the observations after it, up to the horizon); "
                    "print MAE and RMSE per channel and horizon bucket, in the data's units, "
                    "beside the last observation carried forward. See docs/pipelines.md "
                    "\"Backtesting\".")
    bt.add_argument("--model", required=True, metavar="URI",
                    help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model, or a "
                         "local model folder")
    src = bt.add_mutually_exclusive_group(required=True)
    src.add_argument("--data-file", type=Path, metavar="FILE",
                     help="long-format .csv or .parquet file (docs/pipelines.md)")
    src.add_argument("--data", metavar="DIR", help="split folder written by `ingest --out DIR`")
    src.add_argument("--data-run", metavar="RUN_ID", help="ingest run whose split to use")
    bt.add_argument("--split", choices=("train", "val", "test"), default="test",
                    help="with --data/--data-run: the split to backtest; default test")
    bt.add_argument("--time-unit", default=None,
                    help="with --data-file: unit of its numeric times (and ISO-8601 times are "
                         "converted to it); default: the model's")
    cuts = bt.add_mutually_exclusive_group()
    cuts.add_argument("--cuts", type=int, default=3, metavar="K",
                      help="cut points per series, spread over its span; default 3")
    cuts.add_argument("--cut-times", type=float, nargs="+", metavar="T",
                      help="the same cut times for every series (on the data's time axis)")
    bt.add_argument("--horizon", type=float, default=None, metavar="H",
                    help="score observations at most H after the cut (data time unit); "
                         "default: all after it")
    bt.add_argument("--buckets", type=int, default=5, metavar="N",
                    help="equal horizon buckets; default 5")
    bt.add_argument("--regime", choices=("forecast", "interp"), default="forecast",
                    help="forecast (the model sees the past) or interp (a gap of width "
                         "--horizon after each cut is hidden); default forecast")
    bt.add_argument("--num-samples", type=int, default=16, metavar="S",
                    help="latent samples per forecast; default 16")
    bt.add_argument("--seed", type=int, default=0, help="seed of the latent samples; default 0")
    bt.add_argument("--out", metavar="FILE", help="also write the table as .csv or .json")
    bt.add_argument("--experiment", metavar="NAME",
                    help="also log the table, the chart and per-channel metrics to a run "
                         "`backtest` in this MLflow experiment")
    _add_device(bt)
    bt.set_defaults(func=_cmd_backtest)

    srv = sub.add_parser("serve", help="run the REST service",
                         description="Serve a registered model (default models:/latent-ode@"
                                     "champion) over HTTP.")
    srv.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    srv.add_argument("--port", type=int, default=8000, help="default 8000")
    srv.add_argument("--model-uri", type=_model_uri, default=None, metavar="URI",
                     help="models:/NAME@ALIAS or models:/NAME/VERSION; default: "
                          "$LATENT_ODE_MODEL_URI or models:/latent-ode@champion")
    srv.set_defaults(func=_cmd_serve)

    qs = sub.add_parser("quickstart", help="demo: generate data, train, register, serve",
                        description="In the working directory: generate the periodic demo data, "
                                    "run the pipeline into ./mlflow.db (or $MLFLOW_TRACKING_URI), "
                                    "print an example curl request and the mlflow ui command, then "
                                    "serve the champion until Ctrl-C. See docs/quickstart.md.")
    qs.add_argument("--config", type=Path, default=None, metavar="CONFIG",
                    help="pipeline config TOML; default: the shipped pipelines/configs/periodic.toml")
    qs.add_argument("--workdir", type=Path, default=Path("."), metavar="DIR",
                    help="where the data, mlflow.db, mlruns/ and the model cache go; default: "
                         "the current directory")
    qs.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1")
    qs.add_argument("--port", type=int, default=8000, help="default 8000")
    qs.add_argument("--serve", action=argparse.BooleanOptionalAction, default=True,
                    help="serve the champion after training (--no-serve: train only)")
    _add_device(qs)
    qs.set_defaults(func=_cmd_quickstart)
    return parser


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
_QUIET_LIBRARIES = ("alembic", "sqlalchemy", "huey", "urllib3", "matplotlib", "PIL")


def _configure_logging(verbose: bool, quiet: bool) -> None:
    """One handler and one format for every logger: ours, MLflow's (which otherwise installs its
    own, coloured, with another timestamp format) and Python warnings."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")  # read when mlflow is imported
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Not MLflow's two "View run" lines on stdout per run (five runs per pipeline run): the
    # pipeline's summary gives the parent run's address once.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    logging.basicConfig(level=level, stream=sys.stderr, format=LOG_FORMAT,
                        datefmt=LOG_DATE_FORMAT)
    mlflow_logger = logging.getLogger("mlflow")
    mlflow_logger.handlers = []  # had mlflow been imported already, its handler goes
    mlflow_logger.propagate = True
    mlflow_logger.setLevel(logging.NOTSET)
    for name in _QUIET_LIBRARIES:  # their INFO lines (database migrations) are not ours
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    logging.captureWarnings(True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``latent-ode``: parse, configure logging, dispatch.

    Returns:
        0 on success; 2 for errors the user can fix (their message printed as one line).
    """
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose, args.quiet)
    func: Callable[[argparse.Namespace], None] = args.func
    from mlflow.exceptions import MlflowException
    from tqdm.contrib.logging import logging_redirect_tqdm

    from latent_ode.errors import LatentODEError

    try:
        with logging_redirect_tqdm():
            func(args)
    except (LatentODEError, MlflowException) as exc:
        sys.stderr.write(f"error: {_one_line(str(exc))}\n")
        return EXIT_USAGE
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
