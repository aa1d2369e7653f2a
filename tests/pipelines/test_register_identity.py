"""A registration killed mid-step is completed on resume, never duplicated (issue 16, item 9).

Against MLflow's own registry (a SQLite store in tmp_path). The kill is real: a child process
runs the pipeline and ends with ``os._exit`` right after the model version was created, before
the alias decision is recorded, so nothing of the process' own cleanup runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipelines.cli import main
from tests.pipelines.test_config import write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_REPO = Path(__file__).resolve().parents[2]
NAME = "latent-ode-test-identity"
EXPERIMENT = "test-register-identity"

# The pipeline, killed (os._exit: no cleanup, like SIGKILL) at the first version tag, i.e. after
# the version was created and before the alias decision was recorded.
_KILLED = textwrap.dedent("""
    import os, sys
    from pipelines import tracking
    def die(*args, **kwargs):
        os._exit(137)
    tracking.MlflowRegistry.tag_version = die
    from pipelines.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _runs(client: MlflowClient) -> list:
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([exp.experiment_id], "")


def test_a_register_killed_mid_step_is_completed_on_resume_not_duplicated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = write_config(tmp_path / "c.toml", register={"model_name": NAME, "require_skill": False},
                       mlflow={"experiment": EXPERIMENT})
    env = {**os.environ, "PYTHONPATH": str(_REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _KILLED, "pipeline", "run", "--config", str(cfg)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 137, proc.stderr[-3000:]

    client = MlflowClient()
    [orphan] = client.search_model_versions(f"name='{NAME}'")
    tags = orphan.tags
    train_run = tags["latent_ode.train_run_id"]
    # The identity was set with the version, so even the orphan says what it holds.
    assert set(tags) >= {"latent_ode.train_run_id", "latent_ode.config_hash",
                         "latent_ode.data_digest"}
    assert len(tags["latent_ode.data_digest"]) == 16 and tags["latent_ode.data_digest"] != "unknown"
    assert "latent_ode.registration" not in tags and "val_loss" not in tags
    stuck = {r.info.run_id: r for r in _runs(client) if r.info.status == "RUNNING"}
    kinds = sorted(r.data.tags.get("latent_ode.step", "pipeline") for r in stuck.values())
    assert kinds == ["pipeline", "register"]
    dead_register = next(r.info.run_id for r in stuck.values()
                         if r.data.tags.get("latent_ode.step") == "register")

    assert main(["pipeline", "run", "--config", str(cfg), "--resume"]) == 0
    out = capsys.readouterr().out
    assert (f"registered {NAME} version 1 (completed an interrupted registration), promoted to "
            "champion: no current `champion`") in out, out
    versions = client.search_model_versions(f"name='{NAME}'")
    assert [str(v.version) for v in versions] == ["1"]
    done = versions[0].tags
    assert done["latent_ode.registration"] == "complete"
    assert done["promoted"] == "true" and float(done["val_loss"]) > 0
    assert done["latent_ode.train_run_id"] == train_run
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "1"
    assert client.get_run(dead_register).info.status == "KILLED"
    statuses = {r.info.run_id: r.info.status for r in _runs(client)}
    assert "RUNNING" not in statuses.values(), statuses
    parents = [r for r in _runs(client) if r.data.tags.get("latent_ode.kind") == "pipeline"]
    assert [p.info.status for p in parents] == ["FINISHED"]

    # The same train run registered again (`register`, identical inputs): a match, no duplicate.
    assert main(["register", "--config", str(cfg), "--train-run", train_run]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"matches {NAME} version 1, nothing registered: identical to version 1 "
                          "(same train run, config hash and data digest), registered before; "
                          "nothing new registered. Its decision then: no current `champion`")
    assert len(client.search_model_versions(f"name='{NAME}'")) == 1


@pytest.fixture
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("identity")
    yield MlflowClient()
    mlflow.set_tracking_uri(None)


def _tiny_forecaster():
    from latent_ode import EncoderConfig, Forecaster, ModelConfig, Normaliser
    from pipelines.sources.periodic import periodic

    data = periodic(4, n_times=10, seed=0)
    return Forecaster.create(ModelConfig(input_dim=1, latent_dim=2,
                                         encoder=EncoderConfig(hidden=4, units=4)),
                             Normaliser.fit(data), channels=["x"], time_unit="s", seed=0)


def test_identity_on_a_real_store_rollback_match_and_an_orphan_holding_the_alias(
    sqlite_store: MlflowClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.config import parse_config
    from pipelines.pipeline import register_stage
    from pipelines.tracking import MlflowRegistry
    from tests.pipelines.test_config import tiny_config

    client = sqlite_store
    name = "latent-ode-identity-unit"
    cfg = parse_config(tiny_config(register={"model_name": name, "require_skill": False}))
    train_run = client.create_run(client.get_experiment_by_name("identity").experiment_id)
    client.set_terminated(train_run.info.run_id)
    fc, metrics = _tiny_forecaster(), {"val_loss": 1.0}

    def reg(run_id: str = train_run.info.run_id, force: bool = False):
        return register_stage(cfg, fc, metrics, train_run_id=run_id, force=force).value

    # A failure in the process (not a kill) still rolls back: no version, no registered model.
    def boom(self, version: str) -> None:
        raise RuntimeError("registry went away")

    with monkeypatch.context() as m:
        m.setattr(MlflowRegistry, "set_alias", boom)
        with pytest.raises(RuntimeError, match="registry went away"):
            reg()
    assert client.search_registered_models(f"name='{name}'") == []

    first = reg()
    assert (first.version, first.promoted, first.matched) == ("1", True, False)
    tags = client.get_model_version(name, "1").tags
    assert tags["latent_ode.data_digest"] == "unknown"  # a train run without an ingest run
    assert tags["latent_ode.config_hash"] and tags["latent_ode.registration"] == "complete"

    again = reg()
    assert again.matched and again.version == "1" and again.promoted
    assert len(client.search_model_versions(f"name='{name}'")) == 1

    # Killed after the alias moved, before the registration was marked complete.
    client.delete_model_version_tag(name, "1", "latent_ode.registration")
    completed = reg()
    assert not completed.matched and completed.version == "1" and completed.promoted
    assert completed.reason == ("took `champion` before its registration was interrupted; "
                                "keeps it")
    assert client.get_model_version(name, "1").tags["latent_ode.registration"] == "complete"
    assert len(client.search_model_versions(f"name='{name}'")) == 1

    # Another training, worse: registered, not promoted; registered again with --force, that
    # same version takes the alias (no third version).
    other = client.create_run(client.get_experiment_by_name("identity").experiment_id)
    client.set_terminated(other.info.run_id)
    metrics["val_loss"] = 2.0
    worse = reg(other.info.run_id)
    assert (worse.version, worse.promoted) == ("2", False)
    forced = reg(other.info.run_id, force=True)
    assert (forced.version, forced.promoted, forced.matched) == ("2", True, False)
    assert forced.completed_run_id is None
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert client.get_model_version(name, "2").tags["promoted"] == "true"
    assert len(client.search_model_versions(f"name='{name}'")) == 2
