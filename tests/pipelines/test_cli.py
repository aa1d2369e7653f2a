"""The ``latent-ode`` command line: help, data commands, one-line errors, steps run on their own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
from mlflow import MlflowClient

from formats.longformat import read_long
from pipelines.cli import build_parser, main
from tests.pipelines.test_config import write_config

PHYSIONET_A = Path(__file__).resolve().parents[3] / "shared" / "data" / "physionet2012" / "set-a.tar.gz"


@pytest.mark.parametrize(
    "argv",
    [[], ["data"], ["data", "generate"], ["data", "physionet"], ["ingest"], ["train"],
     ["evaluate"], ["register"], ["pipeline"], ["pipeline", "run"], ["serve"], ["quickstart"]],
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: latent-ode {' '.join(argv)}".rstrip())


def _fake_service(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    fake = types.ModuleType("service.server")
    fake.run = lambda host, port, settings: calls.append(  # type: ignore[attr-defined]
        (host, port, settings.model_uri))
    monkeypatch.setitem(sys.modules, "service.server", fake)
    return calls


def test_serve_calls_the_service_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LATENT_ODE_MODEL_URI", raising=False)
    calls = _fake_service(monkeypatch)
    assert main(["serve", "--host", "0.0.0.0", "--port", "8123"]) == 0
    assert calls == [("0.0.0.0", 8123, "models:/latent-ode@champion")]


def test_serve_model_uri_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENT_ODE_MODEL_URI", "models:/from-env@champion")
    calls = _fake_service(monkeypatch)
    assert main(["serve"]) == 0
    assert main(["serve", "--model-uri", "models:/mine/3"]) == 0
    assert main(["serve", "--model-uri", "models:/mine@staging"]) == 0
    assert [c[2] for c in calls] == ["models:/from-env@champion", "models:/mine/3",
                                     "models:/mine@staging"]


@pytest.mark.parametrize("uri", ["runs:/abc/model", "models:/", "models:/a/b/c", "mine@x"])
def test_serve_refuses_a_malformed_model_uri(uri: str, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:
    calls = _fake_service(monkeypatch)
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--model-uri", uri])
    assert exc.value.code == 2 and calls == []
    assert (f"argument --model-uri: must be models:/NAME@ALIAS or models:/NAME/VERSION; got "
            f"{uri!r}") in capsys.readouterr().err


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture) -> None:
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == f"latent-ode {pyproject['project']['version']}\n"


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_data_generate_writes_a_long_format_file(tmp_path: Path, suffix: str,
                                                 capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / f"spirals.{suffix}"
    assert main(["data", "generate", "--dataset", "spirals", "--out", str(out),
                 "--n-series", "6", "--seed", "3"]) == 0
    table = read_long(out)
    assert len(table) == 6 and table.channels == ["x", "y"]
    assert f"wrote 6 spirals series (2 channels) to {out}" in capsys.readouterr().out


@pytest.mark.skipif(not PHYSIONET_A.is_file(), reason="PhysioNet archives not present")
def test_data_physionet_imports_the_archives(tmp_path: Path) -> None:
    out = tmp_path / "icu.parquet"
    static = tmp_path / "static.csv"
    assert main(["data", "physionet", str(PHYSIONET_A), "--out", str(out), "--limit", "5",
                 "--static-out", str(static)]) == 0
    table = read_long(out)
    assert len(table) == 5 and len(table.channels) == 37
    assert static.read_text().count("\n") == 6  # header + 5 stays


def _error_line(err: str) -> str:
    """The one ``error: ...`` line (MLflow may log other lines to stderr); no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_bad_config_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_config(tmp_path / "c.toml", data={"normalization": "minmax"})
    assert main(["pipeline", "run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("error: invalid pipeline config ")
    assert "`data.normalization` is not a known key" in err


# The four ways a data file goes wrong: missing column, text in a numeric column, unsorted times,
# a series with no observation. read_long names the problem and the line.
BAD_FILES = {
    "missing_column": ("series_id,x\na,1.0\n",
                       r"the column 'time' is missing; found 'series_id', 'x'"),
    "text_in_numeric": ("series_id,time,x\na,0.0,1.0\na,1.0,abc\n",
                        r", line 3, column 'x': a channel value must be a number or empty; "
                        r"got 'abc'"),
    "unsorted_times": ("series_id,time,x\na,0.0,1.0\na,2.0,1.5\na,1.0,2.0\n",
                       r", line 4: times of series 'a' must increase; got 1\.0 after 2\.0 "
                       r"\(at line 3\)"),
    "no_observations": ("series_id,time,x\na,0.0,1.0\nb,0.0,\nb,1.0,\n",
                        r"series 'b' \(first row at line 3\) has no observed value"),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_data_files_stop_with_the_row_and_register_nothing(
    case: str, mlflow_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    text, message = BAD_FILES[case]
    (tmp_path / "bad.csv").write_text(text)
    name = f"latent-ode-test-bad-{case}"
    raw = write_config(tmp_path / "c.toml", register={"model_name": name},
                       mlflow={"experiment": "test-bad-data"})
    # Point the tiny config at the file instead of the generator.
    cfg_text = raw.read_text().replace('dataset = "periodic"', 'path = "bad.csv"')
    cfg_text = re.sub(r"(?m)^(n_series|seed|options) = .*\n", "", cfg_text, count=3)
    raw.write_text(cfg_text)

    assert main(["pipeline", "run", "--config", str(raw)]) == 2
    err = _error_line(capsys.readouterr().err)
    assert re.search(message, err), err
    assert str(tmp_path / "bad.csv") in err
    client = MlflowClient()
    assert client.search_model_versions(f"name='{name}'") == []
    exp = client.get_experiment_by_name("test-bad-data")
    # The data are checked before any run opens: nothing is left behind.
    assert exp is None or client.search_runs([exp.experiment_id], "") == []


@pytest.mark.integration
@pytest.mark.slow
def test_steps_run_on_their_own(mlflow_env: str, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    name = "latent-ode-test-steps"
    cfg = str(write_config(tmp_path / "c.toml", register={"model_name": name},
                           mlflow={"experiment": "test-steps"}))

    def run(*argv: str) -> str:
        assert main(list(argv)) == 0
        return capsys.readouterr().out

    out = run("ingest", "--config", cfg, "--out", "split")
    ingest_id = re.search(r"ingest run (\w+): 24 train / 8 val / 8 test series", out).group(1)
    assert (tmp_path / "split" / "split.json").is_file()
    train_id = re.search(r"train run (\w+): 12 steps", run(
        "train", "--config", cfg, "--data-run", ingest_id)).group(1)
    assert (tmp_path / "runs" / train_id / "checkpoints" / "last.pt").is_file()
    # evaluate finds the data through the train run's tag, or takes the local folder.
    eval_id = re.search(r"evaluate run (\w+): .*test/interp/mse=", run(
        "evaluate", "--config", cfg, "--train-run", train_id)).group(1)
    out = run("evaluate", "--config", cfg, "--train-run", train_id, "--data", "split")
    assert "test/forecast/mse=" in out and "val/forecast/skill=" in out
    out = run("register", "--config", cfg, "--train-run", train_id, "--evaluate-run", eval_id)
    assert out.startswith(f"registered {name} version 1, promoted to champion: no current")

    client = MlflowClient()
    assert client.get_run(train_id).data.tags["latent_ode.data_run_id"] == ingest_id
    # The version's source is the train run's model; its register run holds the compared
    # metrics (from the evaluate run's val/...), not the test metrics (only on evaluate).
    version = client.get_model_version(name, "1")
    assert version.run_id == train_id
    reg_run = client.get_run(version.tags["latent_ode.register_run_id"])
    assert "val/forecast/skill" in reg_run.data.metrics and "val_loss" in reg_run.data.metrics
    assert not any(k.startswith("test/") for k in reg_run.data.metrics)
    assert "test/interp/mse" in client.get_run(eval_id).data.metrics


def test_an_unknown_run_is_one_line_and_exit_2(mlflow_env: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    cfg = str(write_config(tmp_path / "c.toml", mlflow={"experiment": "test-unknown-run"}))
    assert main(["register", "--config", cfg, "--train-run", "0123456789abcdef"]) == 2
    err = _error_line(capsys.readouterr().err)
    assert "0123456789abcdef" in err


def test_pipeline_run_refuses_torchrun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    path = write_config(tmp_path / "c.toml")
    assert main(["pipeline", "run", "--config", str(path)]) == 2
    assert capsys.readouterr().err.startswith(
        "error: `latent-ode pipeline run` runs in one process, not under torchrun (WORLD_SIZE=2); "
        "for multi-process training run `torchrun --nproc-per-node N -m pipelines.cli train")


@pytest.mark.integration
@pytest.mark.slow
def test_train_under_torchrun_trains_together_and_logs_once(
    mlflow_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipelines.config import load_config
    from pipelines.steps.ingest import ingest, save_split

    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path / "c.toml", mlflow={"experiment": "test-torchrun"})
    save_split(ingest(load_config(cfg)), tmp_path / "split")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "pipelines.cli", "train", "--config", str(cfg), "--data", "split",
         "--checkpoint-dir", "ckpt"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train run " in proc.stdout and " in 2 processes" in proc.stdout
    assert "rank 1 of 2" in proc.stderr  # the second process really trained along
    client = MlflowClient()
    exp = client.get_experiment_by_name("test-torchrun")
    [run] = client.search_runs([exp.experiment_id])  # rank 1 logged no run of its own
    assert run.info.status == "FINISHED"
    steps = int(run.data.metrics["train_steps"])
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == list(range(1, steps + 1))  # logged once per step
    assert (tmp_path / "ckpt" / "last.pt").is_file()


@pytest.mark.parametrize(("uri", "address"), [
    ("https://user:secret@mlflow.example:8443/base/",
     "https://mlflow.example:8443/base/#/experiments/7/runs/r1"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000/#/experiments/7/runs/r1"),
    ("sqlite:///work/mlflow.db", "`mlflow ui --backend-store-uri sqlite:///work/mlflow.db`, then "
                                 "http://127.0.0.1:5000/#/experiments/7/runs/r1"),
])
def test_the_run_address_in_the_summary_never_shows_credentials(
    uri: str, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from pipelines.cli import _run_address

    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: uri)
    monkeypatch.setattr(mlflow, "get_run", lambda run_id: types.SimpleNamespace(
        info=types.SimpleNamespace(experiment_id="7")))
    assert _run_address("r1") == address
