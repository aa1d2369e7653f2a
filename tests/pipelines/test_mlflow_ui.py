"""What a user sees (issue 17, items 6-8): the console of a pipeline run, the runs and the model
in the MLflow store, and that a mistake leaves no run behind.

Against MLflow's own SQLite store in tmp_path; the pipeline runs as the real command in a child
process, its stderr a pipe (not a terminal), as in CI or a log file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from pipelines.cli import main
from tests.pipelines.test_config import write_config

_REPO = Path(__file__).resolve().parents[2]
_LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
                       r"[\w.]+: \S")


@pytest.fixture
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield MlflowClient()
    mlflow.set_tracking_uri(None)


def _all_runs(client: MlflowClient) -> list:
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, "") if ids else []


def _tiny(tmp_path: Path, **sections) -> Path:
    return write_config(tmp_path / "c.toml", mlflow={"experiment": "mistakes"}, **sections)


def _pointed_at(tmp_path: Path, file: str) -> Path:
    """The tiny config reading ``file`` instead of generating its data."""
    path = _tiny(tmp_path)
    text = path.read_text().replace('dataset = "periodic"', f'path = "{file}"')
    path.write_text(re.sub(r"(?m)^(n_series|seed|options) = .*\n", "", text, count=3))
    return path


# Each mistake: (argv builder, the exit code, a regex the one error line must match).
MISTAKES = {
    "mistyped data file in the config": (
        lambda p: ["pipeline", "run", "--config", str(_pointed_at(p, "dta.csv"))], 2,
        r"^error: data file '.*dta\.csv' does not exist; check the path\.$"),
    "mistyped --data-file": (
        lambda p: ["pipeline", "run", "--data-file", str(p / "dta.csv")], 2,
        r"^error: data file '.*dta\.csv' does not exist; check the path\.$"),
    "bad config key": (
        lambda p: ["pipeline", "run", "--config", str(_tiny(p, model={"latent_dimm": 4}))], 2,
        r"^error: invalid pipeline config .*`model\.latent_dimm` is not a known key"),
    "bad data source option": (
        lambda p: ["pipeline", "run", "--config",
                   str(_tiny(p, data={"options": {"n_timez": 30}}))], 2,
        r"^error: invalid pipeline config .*unknown option `n_timez`; periodic takes n_times"),
    "config that does not fit the data": (
        lambda p: ["pipeline", "run", "--config", str(_tiny(p, model={"input_dim": 3}))], 2,
        r"^error: `model\.input_dim` is 3 but the data have 1 channels \['x'\]"),
    "ingest of a mistyped data file": (
        lambda p: ["ingest", "--config", str(_pointed_at(p, "dta.csv"))], 2,
        r"^error: data file '.*dta\.csv' does not exist"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_mistake_opens_no_run_and_exits_2_with_one_clear_line(
    mistake: str, sqlite_store: MlflowClient, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv, code, message = MISTAKES[mistake]
    assert main(argv(tmp_path)) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [x for x in err.splitlines() if x.startswith("error: ")]
    assert re.search(message, line), line
    assert _all_runs(sqlite_store) == []


@pytest.mark.parametrize("argv", [
    ["pipeline", "run", "--data-file", "x.csv", "--max-time", "-5"],
    ["pipeline", "run", "--config", "c.toml", "--max-tme", "60"],
    ["serve", "--model-uri", "champion"],
])
def test_a_bad_command_line_option_opens_no_run_and_exits_2(
    argv: list[str], sqlite_store: MlflowClient, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: latent-ode") and "error: " in err
    assert _all_runs(sqlite_store) == []


@pytest.mark.integration
@pytest.mark.slow
def test_the_console_and_the_mlflow_store_of_a_tiny_pipeline_run(
    sqlite_store: MlflowClient, tmp_path: Path
) -> None:
    client = sqlite_store
    name = "latent-ode-test-ui"
    cfg = write_config(tmp_path / "c.toml", register={"model_name": name},
                       mlflow={"experiment": "test-ui"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")
           and k != "LATENT_ODE_DEVICE"}
    env |= {"PYTHONPATH": str(_REPO), "OMP_NUM_THREADS": "1",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "pipeline", "run", "--config",
                           str(cfg), "--device", "cpu"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # The console: one log format on stderr, no colour codes, no pickling warning, no download
    # bars, the step counter; the summary on stdout.
    err = proc.stderr
    assert "\x1b[" not in err and "\x1b[" not in proc.stdout
    assert "CloudPickle" not in err and "cloudpickle" not in err.lower()
    assert "Downloading artifacts" not in err and "input example" not in err.lower().replace(
        "validating input example against model signature", "")
    odd = [line for line in err.splitlines() if not _LOG_LINE.match(line)]
    assert odd == [], odd
    for k, step in enumerate(("ingest", "train", "evaluate", "register"), start=1):
        assert re.search(rf"INFO pipelines\.pipeline: step {k}/4: {step} \(elapsed \d+:\d\d, ",
                         err), step
    assert re.search(r"step 3/4: evaluate \(elapsed \d+:\d\d, about \d+:\d\d left\)", err)
    assert proc.stdout.startswith("pipeline run ")

    # The runs: named after what ran.
    exp = client.get_experiment_by_name("test-ui")
    runs = client.search_runs([exp.experiment_id], "")
    [parent] = [r for r in runs if r.data.tags.get("latent_ode.kind") == "pipeline"]
    assert re.fullmatch(r"pipeline periodic \d{4}-\d\d-\d\d \d\d:\d\d", parent.info.run_name)
    steps = {r.info.run_name: r for r in runs if r is not parent}
    assert set(steps) == {"ingest", "train", "evaluate", "register"}
    train, evaluate = steps["train"], steps["evaluate"]

    # Train and validation loss: under one prefix, and drawn on one chart.
    t = client.get_metric_history(train.info.run_id, "loss/train")
    v = client.get_metric_history(train.info.run_id, "loss/val")
    assert len(t) == int(train.data.metrics["train_steps"]) and len(v) == 4
    assert [m.value for m in v] == [m.value for m in
                                    client.get_metric_history(train.info.run_id, "val_loss")]
    arts = {a.path for a in client.list_artifacts(train.info.run_id, "plots")}
    assert arts == {"plots/loss_curves.png"}

    # Dataset inputs on train (train, val) and evaluate (val, test), the same datasets as ingest.
    def inputs(run) -> dict[str, str]:
        got = client.get_run(run.info.run_id).inputs.dataset_inputs
        return {next(t.value for t in d.tags if t.key == "mlflow.data.context"): d.dataset.digest
                for d in got}

    ingested = inputs(steps["ingest"])
    assert inputs(train) == {s: ingested[s] for s in ("train", "val")}
    assert inputs(evaluate) == {s: ingested[s] for s in ("val", "test")}

    # The registered version: from the train run's model, described with units and baselines.
    [version] = client.search_model_versions(f"name='{name}'")
    assert version.run_id == train.info.run_id
    desc = version.description
    assert "trained on **periodic**" in desc and "times in hours" in desc
    assert "| regime | baseline | MAE (units) | baseline MAE (units) |" in desc
    mae = evaluate.data.metrics["test/forecast/mae_units"]
    assert f"| forecast | LOCF | {mae:.4g} |" in desc
    assert client.get_run(train.info.run_id).data.tags["mlflow.note.content"] == desc

    # The model: models-from-code (no pickle), an input schema, a synthetic input example.
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/{name}/1",
                                                         dst_path=str(tmp_path / "model")))
    mlmodel = (model_dir / "MLmodel").read_text()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in mlmodel
    assert "python_model.pkl" not in mlmodel
    assert not list(model_dir.rglob("*.pkl"))
    info = mlflow.models.get_model_info(f"models:/{name}/1")
    assert info.signature.inputs.input_names() == ["series_id", "time", "query", "x"]
    assert [p.name for p in info.signature.params] == ["num_samples", "seed", "quantiles"]
    assert info.saved_input_example_info is not None
    model = mlflow.pyfunc.load_model(f"models:/{name}/1")
    example_frame = mlflow.models.Model.load(model_dir).load_input_example(model_dir)
    assert set(example_frame["series_id"]) == {"example"}  # synthetic, not a training series
    out = model.predict(example_frame)
    assert list(out["time"]) == list(example_frame.loc[example_frame["query"], "time"])
    assert np.isfinite(out["x_mean"]).all()


def test_the_step_counter_logs_k_of_n_the_elapsed_time_and_the_time_left(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The estimate: the training budget for a train step to come, the mean of the finished
    other steps for each other step."""
    import logging

    from pipelines import pipeline

    clock = [100.0]
    monkeypatch.setattr(pipeline.time, "monotonic", lambda: clock[0])
    caplog.set_level(logging.INFO, logger="pipelines.pipeline")
    steps = ("ingest", "train", "evaluate", "register")
    counter = pipeline._StepCounter(steps, train_budget_s=600)
    for step, seconds in zip(steps, (10, 500, 20, 0), strict=True):
        with counter.step(step):
            clock[0] += seconds
    counter.close()
    assert [r.getMessage() for r in caplog.records] == [
        "step 1/4: ingest (elapsed 0:00, about 10:00 left)",
        "step 2/4: train (elapsed 0:10, about 10:20 left)",
        "step 3/4: evaluate (elapsed 8:30, about 0:20 left)",
        "step 4/4: register (elapsed 8:50, about 0:15 left)",
    ]
    caplog.clear()
    with pipeline._StepCounter(steps, train_budget_s=None).step("ingest"):
        pass
    assert caplog.records[0].getMessage() == (
        "step 1/4: ingest (elapsed 0:00, time left unknown without train.max_time_s)")
