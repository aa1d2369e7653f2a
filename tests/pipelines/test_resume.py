"""A killed training run resumes from its last checkpoint and ends like an uninterrupted one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from pipelines.cli import main
from pipelines.config import load_config
from pipelines.pipeline import load_forecaster_from_run
from pipelines.steps.ingest import ingest, save_split
from tests.conftest import stop_process
from tests.pipelines.test_config import write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCHS = 6
STEPS = EPOCHS * 3  # 24 training series, batch 8


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_after_checkpoint(proc: subprocess.Popen, pattern: str, cwd: Path) -> Path:
    """SIGKILL ``proc`` as soon as a checkpoint matching ``pattern`` exists; return it."""
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            found = sorted(cwd.glob(pattern))
            if found:
                proc.kill()
                proc.wait(timeout=30)
                return found[0]
            if proc.poll() is not None:
                pytest.fail(f"training ended before a checkpoint appeared: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
        pytest.fail("no checkpoint appeared within 180 s")
    finally:
        stop_process(proc)
    raise AssertionError("unreachable")


def _checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["loop"]["step"])


def _train_runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`latent_ode.step` = 'train'",
                              order_by=["attributes.start_time ASC"])


def _assert_same_model(client: MlflowClient, a: str, b: str) -> None:
    ra, rb = client.get_run(a).data.metrics, client.get_run(b).data.metrics
    assert ra["train_steps"] == rb["train_steps"] == STEPS
    for key in ("best_val_loss", "best_val_mse", "best_step"):
        # Exact resume: same batches, noise and optimiser state; only float reduction order
        # could differ between processes.
        assert ra[key] == pytest.approx(rb[key], rel=1e-5), key
    wa = load_forecaster_from_run(a).model.state_dict()
    wb = load_forecaster_from_run(b).model.state_dict()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6)


def test_killed_train_run_resumes_exactly(mlflow_env: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    experiment = "test-resume-train"
    cfg_path = write_config(tmp_path / "c.toml", mlflow={"experiment": experiment},
                            train={"max_epochs": EPOCHS, "checkpoint_every": 3, "patience": None})
    save_split(ingest(load_config(cfg_path)), tmp_path / "data")
    common = ["train", "--config", str(cfg_path), "--data", str(tmp_path / "data")]

    proc = _start([*common, "--checkpoint-dir", "ck-killed"], tmp_path)
    ckpt = _kill_after_checkpoint(proc, "ck-killed/last.pt", tmp_path)
    assert proc.returncode == -9
    assert _checkpoint_step(ckpt) < STEPS  # it really was interrupted

    client = MlflowClient()
    [killed] = _train_runs(client, experiment)
    assert killed.info.status == "RUNNING"
    assert main([*common, "--checkpoint-dir", "ck-killed", "--resume"]) == 0
    assert main([*common, "--checkpoint-dir", "ck-straight"]) == 0
    resumed, straight = _train_runs(client, experiment)
    assert resumed.info.run_id == killed.info.run_id  # the same run was continued
    assert client.get_run(resumed.info.run_id).info.status == "FINISHED"
    _assert_same_model(client, resumed.info.run_id, straight.info.run_id)


def test_resume_without_an_unfinished_run_is_a_clear_error(
    mlflow_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg_path = write_config(tmp_path / "c.toml", mlflow={"experiment": "test-resume-none"})
    save_split(ingest(load_config(cfg_path)), tmp_path / "data")
    code = main(["train", "--config", str(cfg_path), "--data", str(tmp_path / "data"),
                 "--resume"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error: ")] == [
        "error: --resume: no unfinished train run of this config in experiment "
        "'test-resume-none'; pass --run-id or drop --resume."
    ]


def test_killed_pipeline_resumes_its_train_step(mlflow_env: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    experiment = "test-resume-pipeline"
    cfg_path = write_config(tmp_path / "c.toml", mlflow={"experiment": experiment},
                            register={"model_name": "latent-ode-test-resume"},
                            train={"max_epochs": EPOCHS, "checkpoint_every": 3, "patience": None})
    proc = _start(["pipeline", "run", "--config", str(cfg_path)], tmp_path)
    ckpt = _kill_after_checkpoint(proc, "runs/*/checkpoints/last.pt", tmp_path)
    assert _checkpoint_step(ckpt) < STEPS
    train_run_id = ckpt.parts[-3]

    assert main(["pipeline", "run", "--config", str(cfg_path), "--resume"]) == 0
    client = MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    parents = client.search_runs([exp.experiment_id], "tags.`latent_ode.kind` = 'pipeline'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs(
        [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    steps = sorted(r.data.tags["latent_ode.step"] for r in children)
    assert steps == ["evaluate", "ingest", "register", "train"]  # ingest and train not repeated
    train = next(r for r in children if r.data.tags["latent_ode.step"] == "train")
    assert train.info.run_id == train_run_id
    assert train.data.metrics["train_steps"] == STEPS
    assert client.get_model_version_by_alias("latent-ode-test-resume", "champion").version in (1, "1")
