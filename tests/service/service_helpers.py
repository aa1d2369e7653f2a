"""Builders shared by the service tests: a real (small, untrained) forecaster in a real MLflow
store, and request bodies.

The forecaster is ``latent_ode.Forecaster.create`` with deterministic initial weights; answers
are deterministic given the seed, which is all these tests need. It is logged as the project's
pyfunc model and registered in a SQLite MLflow store (one per session; creating one costs ~8 s).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

CHANNELS = ["hr", "temp"]
MODEL_NAME = "latent-ode-test"
ADMIN_KEY = "test-admin-key"

_counter = itertools.count()


def make_series(n: int = 16, *, seed: int = 0) -> list[Any]:
    """Two-channel series in hours on [0, 10], irregular times, ~30% of values missing."""
    from latent_ode import Series

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        t = np.unique(np.round(np.sort(rng.uniform(0.0, 10.0, size=30)), 3))
        values = np.stack(
            [70.0 + 10.0 * np.sin(0.6 * t + i), 37.0 + 0.5 * np.cos(0.4 * t + i)], axis=1
        )
        drop = rng.uniform(size=values.shape) < 0.3
        drop[drop.all(axis=1), 0] = False
        values[drop] = np.nan
        out.append(Series(times=t, values=values, id=f"s{i}"))
    return out


def make_forecaster(*, seed: int = 0, metadata: dict[str, Any] | None = None) -> Any:
    """A real, untrained Forecaster with weights initialised from ``seed``."""
    from latent_ode import DynamicsConfig, EncoderConfig, Forecaster, ModelConfig, Normaliser

    config = ModelConfig(
        input_dim=len(CHANNELS), latent_dim=4, encoder=EncoderConfig(hidden=8, units=16),
        dynamics=DynamicsConfig(units=16),
    )
    return Forecaster.create(
        config,
        Normaliser.fit(make_series(), kind="standard"),
        channels=CHANNELS,
        time_unit="hours",
        metadata=metadata if metadata is not None else {"metrics": {"val_mse": 0.25}},
        seed=seed,
    )


def register_version(
    tracking_uri: str, forecaster: Any, workdir: Path, *, name: str = MODEL_NAME,
    champion: bool = True,
) -> str:
    """Log ``forecaster`` as the project's pyfunc model, register it, and alias it champion.

    Returns:
        The new version.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from formats.model_artifact import FORECASTER_ARTIFACT
    from pipelines.pyfunc import LatentODEPyfunc, model_signature

    directory = workdir / f"saved-{next(_counter)}" / FORECASTER_ARTIFACT
    forecaster.save(directory)
    client = MlflowClient(tracking_uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        experiment = client.get_experiment_by_name("service-tests")
        if experiment is not None:
            experiment_id = experiment.experiment_id
        elif tracking_uri.startswith("http"):  # the server stores artifacts itself
            experiment_id = client.create_experiment("service-tests")
        else:  # a local store's default (./mlruns) would write into the checkout
            experiment_id = client.create_experiment(
                "service-tests", artifact_location=(workdir / "artifacts").as_uri()
            )
        with mlflow.start_run(experiment_id=experiment_id):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=LatentODEPyfunc(),
                artifacts={FORECASTER_ARTIFACT: str(directory)},
                signature=model_signature(),  # as the pipelines log it: params pass through
                registered_model_name=name,
                pip_requirements=["latent-ode"],
            )
    finally:
        mlflow.set_tracking_uri(previous)
    version = str(info.registered_model_version)
    if champion:
        client.set_registered_model_alias(name, "champion", version)
    return version


def series_json(series: Any, query_times: Any, **extra: Any) -> dict[str, Any]:
    """A request series from a library Series (NaN → null)."""
    return {
        "id": series.id or None,
        "times": [float(t) for t in series.times],
        "values": [[None if np.isnan(v) else float(v) for v in row] for row in series.values],
        "query_times": [float(q) for q in query_times],
        **extra,
    }
