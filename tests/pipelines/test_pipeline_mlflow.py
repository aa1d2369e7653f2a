"""The whole pipeline against a real MLflow server and against the embedded default store."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipelines.cli import main
from pipelines.config import flatten_params, load_config, parse_config, unflatten_params
from pipelines.pipeline import PipelineResult, run_pipeline
from tests.pipelines.test_config import tiny_config, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _pyfunc_input(series, query: np.ndarray, channels: list[str]) -> pd.DataFrame:
    obs = pd.DataFrame({"series_id": series.id, "time": series.times, "query": False})
    for j, c in enumerate(channels):
        obs[c] = series.values[:, j]
    q = pd.DataFrame({"series_id": series.id, "time": query, "query": True})
    for c in channels:
        q[c] = np.nan
    return pd.concat([obs, q], ignore_index=True)


def _check_pipeline(client: MlflowClient, result: PipelineResult, cfg, name: str) -> None:
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
    )
    steps = {r.data.tags["latent_ode.step"]: r for r in children}
    assert set(steps) == {"ingest", "train", "evaluate", "register"}
    assert {s: r.info.run_id for s, r in steps.items()} == result.step_run_ids
    assert all(r.info.status == "FINISHED" for r in children)
    assert {r.info.run_name for r in children} == set(steps)
    assert re.fullmatch(r"pipeline periodic \d{4}-\d\d-\d\d \d\d:\d\d", parent.info.run_name)

    # Params = flattened config = config.json, and they read back into the same config.
    expected = flatten_params(cfg.to_dict())
    for run in (parent, steps["train"]):
        assert run.data.params == expected
    config_json = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=steps["train"].info.run_id, artifact_path="config.json")).read_text())
    assert config_json == cfg.to_dict()
    assert parse_config(unflatten_params(steps["train"].data.params)) == cfg

    train = steps["train"]
    for tag in ("git_commit", "python_version", "torch_version", "mlflow_version"):
        assert train.data.tags[tag], tag
    assert train.data.tags["device"] == "cpu"
    steps_done = int(train.data.metrics["train_steps"])
    history = client.get_metric_history(train.info.run_id, "train_loss")
    assert [m.step for m in history] == list(range(1, steps_done + 1))  # log_every = 1
    assert len(client.get_metric_history(train.info.run_id, "val_loss")) == 4  # one per epoch
    assert train.data.metrics["best_val_loss"] == pytest.approx(result.metrics["val_loss"])
    arts = {a.path for a in client.list_artifacts(train.info.run_id, "checkpoints")}
    assert arts == {"checkpoints/last.pt"}
    arts = {a.path for a in client.list_artifacts(train.info.run_id, "forecaster")}
    assert arts == {"forecaster/config.json", "forecaster/weights.safetensors"}

    ingest = client.get_run(steps["ingest"].info.run_id)
    inputs = {
        next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset
        for d in ingest.inputs.dataset_inputs
    }
    assert set(inputs) == {"train", "val", "test"}
    assert inputs["train"].name == "periodic-train"
    assert json.loads(inputs["test"].source)["tags"]["generator"] == "periodic"
    assert {a.path for a in client.list_artifacts(ingest.info.run_id, "data")} == {
        "data/train.parquet", "data/val.parquet", "data/test.parquet", "data/split.json"}

    evaluate = steps["evaluate"]
    for split in ("val", "test"):
        for key in ("interp/mse", "interp/skill", "interp/baseline_mse", "forecast/mse",
                    "forecast/skill", "forecast/baseline_mse", "forecast/coverage_90",
                    "interp/mae_units/x", "forecast/skill/x"):
            assert np.isfinite(evaluate.data.metrics[f"{split}/{key}"]), (split, key)
    # Test metrics are logged once, on evaluate; the parent links to it; the register run has
    # the metrics its decision compared.
    assert result.metrics["val/forecast/skill"] == pytest.approx(
        evaluate.data.metrics["val/forecast/skill"])
    assert "val/interp/skill" in steps["register"].data.metrics
    for run in (parent, steps["register"], steps["train"], steps["ingest"]):
        assert not any(k.startswith("test/") for k in run.data.metrics), run.info.run_name
    assert parent.data.tags["latent_ode.evaluate_run_id"] == evaluate.info.run_id
    assert f"runs/{evaluate.info.run_id})" in parent.data.tags["mlflow.note.content"]
    plots = {a.path.removeprefix("plots/")
             for a in client.list_artifacts(evaluate.info.run_id, "plots")}
    charts = {"test_channel_skill.png", "test_horizon_error.png", "test_horizon_coverage.png"}
    assert charts <= plots and all(p.endswith(".png") for p in plots)
    assert len([p for p in plots if p.startswith("series_")]) == cfg.evaluate.num_plots
    assert len([p for p in plots if p.startswith("interp_series_")]) == cfg.evaluate.num_plots
    # The rolling-origin backtest of the test split: metrics, its chart and its table.
    assert "test_backtest_error.png" in plots
    assert evaluate.data.metrics["test/backtest/windows"] == 8 * cfg.evaluate.backtest_cuts
    assert np.isfinite(evaluate.data.metrics["test/backtest/mae_units/x"])
    assert np.isfinite(evaluate.data.metrics["test/backtest/baseline_rmse_units/x"])
    table = mlflow.load_table("test_backtest.json", run_ids=[evaluate.info.run_id])
    assert list(table["bucket"]) == ["h1", "h2", "h3", "h4", "h5", "all"]

    # The version comes from the train run (its curves one click away) and says what it is.
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.run_id == steps["train"].info.run_id
    assert champion.tags["latent_ode.register_run_id"] == steps["register"].info.run_id
    assert str(champion.version) == result.register.version
    assert "| forecast | LOCF |" in champion.description
    assert f"{evaluate.data.metrics['test/forecast/skill']:.4g}" in champion.description


def _check_served_predictions(result: PipelineResult, name: str) -> None:
    """``models:/NAME@champion`` answers like the in-memory forecaster."""
    fc = result.forecaster
    from pipelines.sources.periodic import periodic

    series = periodic(1, n_times=20, seed=123)[0]
    query = np.array([0.3, 2.0, 4.0, 6.5])
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    out = model.predict(_pyfunc_input(series, query, fc.channels))
    expected = fc.predict([series], [query], num_samples=32, seed=0)[0]
    np.testing.assert_allclose(out["time"].to_numpy(), query)
    # Same weights, same seed, same CPU kernels: only float32 reduction order may differ.
    np.testing.assert_allclose(out["x_mean"].to_numpy(), expected.mean[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["x_std"].to_numpy(), expected.std[:, 0], rtol=1e-5, atol=1e-6)
    assert list(out["mode"]) == expected.mode
    # Inference params pass through the pyfunc signature.
    out = model.predict(_pyfunc_input(series, query, fc.channels),
                        params={"num_samples": 8, "seed": 1, "quantiles": [0.9, 0.1]})
    expected = fc.predict([series], [query], num_samples=8, seed=1, quantiles=(0.9, 0.1))[0]
    np.testing.assert_allclose(out["x_mean"].to_numpy(), expected.mean[:, 0], rtol=1e-5, atol=1e-6)
    assert list(out.columns) == ["series_id", "time", "mode", "x_mean", "x_std", "x_q0.9", "x_q0.1"]
    np.testing.assert_allclose(out["x_q0.1"].to_numpy(), expected.quantiles[0.1][:, 0], rtol=1e-5,
                               atol=1e-6)


def test_pipeline_against_a_tracking_server(
    mlflow_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    name = "latent-ode-test-server"
    good = write_config(tmp_path / "good.toml", register={"model_name": name},
                        mlflow={"experiment": "test-server"})
    cfg = load_config(good)
    result = run_pipeline(cfg, device="cpu")
    client = MlflowClient()
    _check_pipeline(client, result, cfg, name)
    assert (result.register.version, result.register.promoted) == ("1", True)
    _check_served_predictions(result, name)

    # A worse model (one tiny step) is registered but does not take `champion`.
    worse = write_config(tmp_path / "worse.toml", register={"model_name": name},
                         mlflow={"experiment": "test-server"},
                         train={"max_steps": 1, "lr": 1e-6, "lr_min": 1e-6})
    caplog.set_level(logging.INFO, logger="pipelines")
    assert main(["pipeline", "run", "--config", str(worse)]) == 0
    versions = {v.version for v in client.search_model_versions(f"name='{name}'")}
    assert versions == {"1", "2"}
    v2 = client.get_model_version(name, "2")
    v2_run = client.get_run(v2.tags["latent_ode.register_run_id"])  # the decision's run
    assert v2_run.data.metrics["val_loss"] > result.metrics["val_loss"]  # it really is worse
    assert v2_run.data.tags["promoted"] == "false"
    assert client.get_model_version_by_alias(name, "champion").version == "1"
    assert any(
        r.levelno == logging.INFO and "version 2 registered, NOT promoted to `champion`: val_loss"
        in r.getMessage() and "is not better than" in r.getMessage() for r in caplog.records
    )

    # --force moves it anyway.
    assert main(["pipeline", "run", "--config", str(worse), "--force"]) == 0
    assert client.get_model_version_by_alias(name, "champion").version == "3"


def test_pipeline_with_the_embedded_default_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(None)
    assert "MLFLOW_TRACKING_URI" not in __import__("os").environ
    name = "latent-ode-test-embedded"
    path = write_config(tmp_path / "c.toml", register={"model_name": name},
                        mlflow={"experiment": "test-embedded"})
    cfg = load_config(path)
    result = run_pipeline(cfg, device="cpu")
    assert (tmp_path / "mlflow.db").is_file()
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    _check_pipeline(MlflowClient(), result, cfg, name)
    _check_served_predictions(result, name)

    # The champion's backtest from the command line, on the ingested test split.
    assert main(["backtest", "--model", f"models:/{name}@champion", "--data-run",
                 result.step_run_ids["ingest"], "--cuts", "2", "--out", "bt.csv"]) == 0
    table = pd.read_csv(tmp_path / "bt.csv").set_index("bucket")
    assert table.loc["all", "count"] == table.drop("all")["count"].sum() > 0
    assert table.loc["all", "model_mae"] > 0 and table.loc["all", "locf_mae"] > 0


def test_register_gate_and_renamed_metrics_in_a_sqlite_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The skill gate and the comparison on a metric both versions carry, through MLflow's own
    registry (SQLite store in tmp_path): champion metrics are read back from the version's run."""
    from latent_ode import EncoderConfig, Forecaster, ModelConfig, Normaliser
    from pipelines.pipeline import register_stage
    from pipelines.sources.periodic import periodic
    from pipelines.tracking import MlflowRegistry

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    name = "latent-ode-gate"
    try:
        mlflow.set_experiment("gate")
        data = periodic(4, n_times=10, seed=0)
        fc = Forecaster.create(ModelConfig(input_dim=1, latent_dim=2,
                                           encoder=EncoderConfig(hidden=4, units=4)),
                               Normaliser.fit(data), channels=["x"], time_unit="s", seed=0)
        cfg = parse_config(tiny_config(register={"model_name": name, "require_skill": True,
                                                 "metric": "val/forecast/mse"}))
        good = {"val/interp/skill": 0.1, "val/forecast/skill": 0.2}

        def reg(metrics: dict[str, float], force: bool = False):
            return register_stage(cfg, fc, metrics, force=force).value

        client = MlflowClient()
        old = reg({"val_loss": 2.0, "val_extrap_mse": 0.5, "val/forecast/mse": 0.3} | good,
                  force=True)
        assert old.promoted
        champ = MlflowRegistry(name).champion("val/forecast/mse")
        assert champ is not None and champ.metrics["val_loss"] == 2.0

        losing = reg({"val_loss": 1.0, "val/forecast/mse": 0.1, "val/interp/skill": -0.2,
                      "val/forecast/skill": 0.3})
        assert not losing.promoted
        assert losing.reason.startswith("val/interp/skill = -0.2 < 0")
        run = client.get_run(client.get_model_version(name, losing.version).run_id)
        assert run.data.tags["promoted"] == "false"
        assert run.data.tags["promotion_reason"] == losing.reason
        assert str(client.get_model_version_by_alias(name, "champion").version) == old.version

        better = reg({"val_loss": 1.5, "val/forecast/mse": 0.2} | good)
        assert better.promoted, better.reason
        assert better.reason == (f"val/forecast/mse 0.2 < 0.3 of current `champion` version "
                                 f"{old.version} (lower is better)")
        assert str(client.get_model_version_by_alias(name, "champion").version) == better.version
    finally:
        mlflow.set_tracking_uri(None)


def test_a_champion_without_the_configured_metric_is_compared_on_val_loss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A champion whose run predates the metric's name: compared on val_loss, which both carry;
    with nothing in common, the alias stays."""
    from latent_ode import EncoderConfig, Forecaster, ModelConfig, Normaliser
    from pipelines.pipeline import register_stage
    from pipelines.sources.periodic import periodic

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    name = "latent-ode-renamed"
    try:
        mlflow.set_experiment("renamed")
        data = periodic(4, n_times=10, seed=0)
        fc = Forecaster.create(ModelConfig(input_dim=1, latent_dim=2,
                                           encoder=EncoderConfig(hidden=4, units=4)),
                               Normaliser.fit(data), channels=["x"], time_unit="s", seed=0)
        old_cfg = parse_config(tiny_config(register={"model_name": name}))  # val_loss, no gate
        new_cfg = parse_config(tiny_config(register={"model_name": name, "require_skill": True,
                                                     "metric": "val/forecast/mse"}))
        good = {"val/interp/skill": 0.1, "val/forecast/skill": 0.2, "val/forecast/mse": 0.1}
        first = register_stage(old_cfg, fc, {"val_loss": 2.0, "test_extrap_mse": 0.4}).value
        assert first.promoted
        worse = register_stage(new_cfg, fc, {"val_loss": 3.0} | good).value
        assert not worse.promoted
        assert worse.reason.endswith(f"(lower is better; compared on val_loss, since version "
                                     f"{first.version} has no val/forecast/mse); use --force to "
                                     "promote anyway")
        better = register_stage(new_cfg, fc, {"val_loss": 1.0} | good).value
        assert better.promoted, better.reason
        assert str(MlflowClient().get_model_version_by_alias(name, "champion").version) == better.version
    finally:
        mlflow.set_tracking_uri(None)
