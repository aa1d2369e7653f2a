"""``latent-ode quickstart``: demo data -> trained, registered champion -> a running service.

In one working directory (the current one, or ``--workdir``), :func:`run_quickstart`

1. generates the demo data set of the config (default: the shipped ``periodic.toml``) and writes
   it as the long-format file ``data/<dataset>.csv``;
2. runs the whole pipeline (ingest -> train -> evaluate -> register) on that file into MLflow's
   embedded default store (``mlflow.db`` and ``mlruns/`` in the working directory), or into
   ``$MLFLOW_TRACKING_URI`` when the user set it;
3. prints the ``mlflow ui`` command that shows those runs, and a ready-to-paste ``curl`` request
   to ``POST /v1/predict`` built from a real test-split series (query times inside and after its
   observed window);
4. serves the ``champion`` in this process with :func:`service.server.run` until Ctrl-C (unless
   ``serve=False``), with a model cache inside the working directory.

Argument parsing stays in :mod:`pipelines.cli`; this module takes a :class:`QuickstartOptions`.
"""

from __future__ import annotations

import errno
import importlib.resources
import json
import logging
import math
import os
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from formats.longformat import write_long
from latent_ode import Series
from latent_ode.errors import ConfigError, DataError
from pipelines.config import PipelineConfig, load_config, parse_config
from pipelines.sources import get_source
from pipelines.steps.train import one_torch_thread_unless_set, training_device

__all__ = [
    "DATA_DIR",
    "MODEL_CACHE_DIR",
    "QuickstartOptions",
    "QuickstartResult",
    "check_port_free",
    "default_config_path",
    "example_request",
    "mlflow_ui_command",
    "predict_curl",
    "run_quickstart",
    "serve_command",
]

logger = logging.getLogger(__name__)

DATA_DIR = "data"
"""Folder (inside the working directory) that receives the generated demo data."""

MODEL_CACHE_DIR = "model-cache"
"""Folder (inside the working directory) where the service keeps the model versions it loaded.

Kept per working directory on purpose: the service's cache is keyed by model name and version
only, and every fresh quickstart store has its own ``latent-ode`` version 1.
"""

_DEFAULT_QUANTILES = (0.05, 0.5, 0.95)
_EXAMPLE_DECIMALS = 4


@dataclass(frozen=True, kw_only=True)
class QuickstartOptions:
    """What ``latent-ode quickstart`` was asked to do.

    Attributes:
        workdir: directory for the data, the MLflow store and the model cache (created if
            missing); the process works in it while the quickstart runs.
        config: pipeline config TOML; ``None`` means the shipped ``pipelines/configs/periodic.toml``.
            A relative path is taken relative to the directory the command was started in.
        host: interface the service binds.
        port: TCP port of the service (1-65535).
        serve: serve the champion after training (blocking) or stop after printing the hints.
        device: torch device for training (``auto``, ``cpu``, ``cuda``, ``cuda:N``); ``None``
            means ``$LATENT_ODE_DEVICE`` or ``auto``.
    """

    workdir: Path
    config: Path | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    serve: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"--port must be between 1 and 65535; got {self.port}.")
        if not self.host:
            raise ConfigError("--host must not be empty; pass e.g. --host 127.0.0.1.")


@dataclass(frozen=True)
class QuickstartResult:
    """What a quickstart produced (returned once serving stops, or at once with ``serve=False``).

    Attributes:
        workdir: the working directory (absolute).
        tracking_uri: the MLflow store the pipeline logged to.
        data_file: the generated demo data, or ``None`` when the config reads its own data.
        model_uri: ``models:/NAME@champion``.
        registered_version: the version this run registered.
        champion_version: the version that holds ``champion`` afterwards (the one served).
        request: the example ``POST /v1/predict`` body.
        curl: the printed ``curl`` command that sends ``request``.
        ui_command: the printed command that opens the MLflow UI on ``tracking_uri``.
        elapsed_s: wall time of data generation + pipeline, in seconds.
    """

    workdir: Path
    tracking_uri: str
    data_file: Path | None
    model_uri: str
    registered_version: str
    champion_version: str
    request: dict[str, Any]
    curl: str
    ui_command: str
    elapsed_s: float


def default_config_path() -> Path:
    """The shipped demo config ``pipelines/configs/periodic.toml`` (package data), from any cwd.

    Raises:
        ConfigError: the package was installed without its configs.
    """
    resource = importlib.resources.files("pipelines") / "configs" / "periodic.toml"
    path = Path(str(resource))
    if not path.is_file():
        raise ConfigError(
            f"the shipped demo config {path} is missing; reinstall the package "
            "(pip install -c constraints.txt -e .) or pass --config FILE."
        )
    return path


def check_port_free(host: str, port: int) -> None:
    """Fail early, with a clear message, when the service could not bind ``host:port``.

    Binds a throw-away socket with ``SO_REUSEADDR`` (as uvicorn does), so a port that only has
    connections in TIME_WAIT counts as free.

    Raises:
        ConfigError: the port is taken (suggests ``--port``) or the host cannot be bound
            (suggests ``--host``).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is already in use, so the service cannot start there; "
                    f"pass --port with a free port (e.g. --port {port + 1 if port < 65535 else 8001})"
                    " or stop the process that holds it."
                ) from None
            raise ConfigError(
                f"cannot bind {host}:{port} ({exc.strerror or exc}); pass --host with an address of "
                "this machine (e.g. --host 127.0.0.1) and --port with a free port."
            ) from None


def _round_or_exact(values: np.ndarray) -> list[float]:
    """Times rounded for readability, unless rounding would merge or reorder two of them."""
    rounded = np.round(values.astype(float), _EXAMPLE_DECIMALS)
    if len(rounded) > 1 and not np.all(np.diff(rounded) > 0):
        return [float(v) for v in values]
    return [float(v) for v in rounded]


def example_request(
    series: Series, *, num_samples: int = 32, quantiles: tuple[float, ...] = _DEFAULT_QUANTILES
) -> dict[str, Any]:
    """A ``POST /v1/predict`` body built from a real series: observe its first half, ask the rest.

    The observed window is the series' points up to the middle of its time span (at least two).
    Two query times lie inside that window (midpoints between observations: interpolation) and
    two after it (the series' own later times when it has them: extrapolation).

    Args:
        series: a series in the model's channel order (times ``(T,)``, values ``(T, D)``, NaN =
            not observed), e.g. one of the test split.
        num_samples: latent samples asked for.
        quantiles: quantiles asked for.

    Raises:
        DataError: the series has fewer than two rows with an observed channel.
    """
    times, values = series.times, series.values  # a Series has no all-missing rows
    if len(times) < 2:
        raise DataError(
            f"series {series.id!r} has {len(times)} observation time(s); an example request needs "
            "at least two. Pick another series."
        )
    middle = times[0] + 0.5 * (times[-1] - times[0])
    n_obs = max(2, int(np.searchsorted(times, middle, side="right")))
    obs_t, obs_v = times[:n_obs], values[:n_obs]
    obs_times = _round_or_exact(obs_t)
    inside = [(obs_times[i] + obs_times[i + 1]) / 2 for i in (n_obs // 3, (2 * n_obs) // 3)
              if i + 1 < n_obs]
    later = times[n_obs:]
    span = obs_times[-1] - obs_times[0]
    if len(later) >= 2:
        after = [later[len(later) // 2], later[-1]]
    else:
        after = [obs_times[-1] + 0.25 * span, obs_times[-1] + 0.5 * span]
    query = sorted({round(float(t), _EXAMPLE_DECIMALS) for t in [*inside, *after]})
    rows = [[None if math.isnan(v) else round(float(v), _EXAMPLE_DECIMALS) for v in row]
            for row in obs_v]
    return {
        "series": [{"id": series.id or "example", "times": obs_times, "values": rows,
                    "query_times": query}],
        "num_samples": num_samples,
        "quantiles": list(quantiles),
    }


def _base_url(host: str, port: int) -> str:
    """The URL a local client uses to reach a service bound to ``host``."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def predict_curl(request: dict[str, Any], *, host: str, port: int) -> str:
    """One shell line that POSTs ``request`` (compact JSON, shell-quoted) to ``/v1/predict``."""
    body = json.dumps(request, separators=(",", ":"), allow_nan=False)
    return (f"curl -s -X POST {_base_url(host, port)}/v1/predict "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}")


def mlflow_ui_command(tracking_uri: str, workdir: Path) -> str:
    """The command that shows the runs of ``tracking_uri`` in the MLflow UI.

    The embedded store ``<workdir>/mlflow.db`` is named explicitly (``sqlite:///mlflow.db``,
    relative to the directory the UI starts in): ``mlflow ui`` with no store defaults to it too,
    but falls back to ``./mlruns`` when that folder holds an old file store.
    """
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri} in a browser (the tracking server's UI)"
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if db.resolve() == (workdir / "mlflow.db").resolve():
            return f"cd {shlex.quote(str(workdir))} && mlflow ui --backend-store-uri sqlite:///mlflow.db"
    return f"mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}"


def serve_command(model_uri: str, *, host: str, port: int | str) -> str:
    """The ``latent-ode serve`` line that serves ``model_uri`` later from the working directory."""
    cmd = f"LATENT_ODE_MODEL_CACHE_DIR={MODEL_CACHE_DIR} latent-ode serve --host {host} --port {port}"
    if model_uri != "models:/latent-ode@champion":
        cmd = f"LATENT_ODE_MODEL_URI={shlex.quote(model_uri)} {cmd}"
    return cmd


@contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    """Work in ``path`` (MLflow's default store and the pipeline's relative paths follow cwd)."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _prepare_config(config_path: Path, invoked_from: Path) -> tuple[PipelineConfig, Path | None]:
    """Load the config; for a generated data set, write it to ``data/`` and point the config at it.

    Returns:
        The config to run and the data file written (``None`` when the config reads its own data).
    """
    cfg = load_config(config_path)
    raw = cfg.to_dict()
    data = cfg.data
    if data.path is not None:
        path = Path(data.path)
        if not path.is_absolute():  # relative to where the user typed the command
            raw["data"]["path"] = str((invoked_from / path).resolve())
        return parse_config(raw, source=repr(str(config_path))), None
    assert data.dataset is not None  # DataSection guarantees path xor dataset
    source = get_source(data.dataset)
    # Only what the base install generates is written out; the rest is read by ingest itself.
    if source.kind != "generated" or source.extra is not None:
        return cfg, None
    table = source.load(n_series=data.n_series, seed=data.seed, time_unit=data.time_unit,
                        options=data.source_options()).table
    data_file = write_long(table, Path(DATA_DIR) / f"{data.dataset}.csv")
    logger.info("quickstart: generated %d %s series into %s", len(table), data.dataset, data_file)
    raw["data"] |= {"path": str(data_file), "dataset": None, "options": {}}
    return parse_config(raw, source=repr(str(config_path))), data_file.resolve()


def _serve(options: QuickstartOptions, model_uri: str, tracking_uri: str, workdir: Path) -> None:
    """Serve ``model_uri`` from ``tracking_uri`` in this process until Ctrl-C."""
    # The service's web stack loads only when the quickstart serves (not with --no-serve).
    from service.config import get_settings
    from service.server import run

    settings = get_settings().model_copy(update={
        "model_uri": model_uri,
        "tracking_uri": tracking_uri,
        "model_cache_dir": workdir / MODEL_CACHE_DIR,
    })
    later = (f" The model is registered: serve it later from {workdir} with "
             f"`{serve_command(model_uri, host=options.host, port='PORT')}`.")
    try:
        check_port_free(options.host, options.port)  # taken while training ran?
        try:
            run(host=options.host, port=options.port, settings=settings)
        except SystemExit as exc:
            # uvicorn logs a failed bind and exits 1; say what to do if the port was taken since.
            if exc.code not in (0, None):
                check_port_free(options.host, options.port)
            raise
    except ConfigError as exc:
        raise ConfigError(f"{exc}{later}") from None


def run_quickstart(options: QuickstartOptions, *, out: TextIO | None = None) -> QuickstartResult:
    """Generate the demo data, train and register a champion, print the hints, serve it.

    Args:
        options: what to do (see :class:`QuickstartOptions`).
        out: where the user-facing hints go (default: ``sys.stdout``); logs go to logging.

    Returns:
        What was produced, once serving has stopped (Ctrl-C) or, with ``serve=False``, at once.

    Raises:
        ConfigError: a bad config, a taken port (checked before training, so no time is lost),
            an unusable device.
        DataError, SolverError, MlflowException: a pipeline step failed (nothing is registered).
    """
    # MLflow (seconds to import) loads when a quickstart runs, not when its helpers are imported.
    import mlflow

    from pipelines.pipeline import load_data_from_run, run_pipeline
    from pipelines.tracking import MlflowRegistry

    out = out or sys.stdout
    invoked_from = Path.cwd()
    config_path = options.config if options.config is not None else default_config_path()
    if not config_path.is_absolute():
        config_path = invoked_from / config_path
    workdir = (invoked_from / options.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if options.serve:
        check_port_free(options.host, options.port)
    device = training_device(options.device)  # checked before training
    one_torch_thread_unless_set()

    with _working_directory(workdir):
        started = time.monotonic()
        cfg, data_file = _prepare_config(config_path, invoked_from)
        tracking_uri = mlflow.get_tracking_uri()
        logger.info("quickstart in %s: config %s, MLflow store %s, device %s",
                    workdir, config_path, tracking_uri, device)
        result = run_pipeline(cfg, device=device, config_source=str(config_path))
        elapsed = time.monotonic() - started

        name = cfg.registry.model_name
        model_uri = f"models:/{name}@champion"
        champion = MlflowRegistry(name).champion(cfg.registry.metric)
        champion_version = champion.version if champion is not None else result.register.version
        data = load_data_from_run(result.step_run_ids["ingest"])
        request = example_request(data.test[0])
        curl = predict_curl(request, host=options.host, port=options.port)
        ui = mlflow_ui_command(tracking_uri, workdir)

        decision = ("the champion" if result.register.promoted
                    else f"not the champion (version {champion_version} stays champion)")
        lines = [
            "",
            f"Trained {name} version {result.register.version} in {elapsed:.0f} s; it is "
            f"{decision}.",
            f"Working directory: {workdir}",
            f"Runs, metrics and plots are in {tracking_uri}. Browse them with:",
            f"  {ui}",
            "  (MLflow 3 opens in its GenAI view: choose \"Model training\" to see the runs.)",
            "",
        ]
        base = _base_url(options.host, options.port)
        example = (f"A forecast for test series {request['series'][0]['id']!r} (observed over its "
                   "first half; two query times inside that window, two after it):")
        if options.serve:
            lines += [
                f"Serving {model_uri} (version {champion_version}) on {base} ; Ctrl-C stops it.",
                f"{example} once {base}/readyz answers, run",
            ]
        else:
            lines += [
                f"To serve it (from {workdir}): "
                f"{serve_command(model_uri, host=options.host, port=options.port)}",
                f"{example} once it is ready, run",
            ]
        lines += [f"  {curl}", ""]
        out.write("\n".join(lines) + "\n")
        out.flush()

        if options.serve:
            _serve(options, model_uri, tracking_uri, workdir)
        return QuickstartResult(
            workdir=workdir, tracking_uri=tracking_uri, data_file=data_file, model_uri=model_uri,
            registered_version=result.register.version, champion_version=champion_version,
            request=request, curl=curl, ui_command=ui, elapsed_s=elapsed,
        )
