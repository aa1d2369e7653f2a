"""``latent-ode predict``: a file of series to a file of forecasts, in batches, with located errors."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from formats.frames import output_columns, predict_frame
from pipelines.cli import EXIT_USAGE, main
from pipelines.predict import PredictOptions, predict_file
from tests.formats.test_frames import input_frame
from tests.service.service_helpers import CHANNELS, MODEL_NAME, make_forecaster, make_series

TOL = {"rtol": 1e-5, "atol": 1e-5}  # batches solve to the solver's tolerance, not bitwise


@pytest.fixture(scope="module")
def forecaster():
    return make_forecaster()


@pytest.fixture(scope="module")
def model_dir(forecaster, tmp_path_factory) -> Path:
    return forecaster.save(tmp_path_factory.mktemp("model") / "forecaster")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    series = make_series(5)
    queries = [np.array([11.0, 0.5, 5.0 + i]) for i in range(5)]
    return input_frame(series, queries)


def read_out(path: Path) -> pd.DataFrame:
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype={"series_id": str})


def run(*args: str | Path) -> int:
    return main(["predict", "--device", "cpu", *map(str, args)])


def test_predict_writes_the_frame_answer(frame, forecaster, model_dir, tmp_path, capsys) -> None:
    data = tmp_path / "series.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "out" / "forecasts.csv"
    assert run("--model", model_dir, "--data-file", data, "--out", out,
               "--quantiles", "0.05,0.5,0.95", "--num-samples", "8", "--seed", "2") == 0
    got = read_out(out)
    expected = predict_frame(forecaster, frame, quantiles=[0.05, 0.5, 0.95], num_samples=8, seed=2)
    assert list(got.columns) == output_columns(CHANNELS, [0.05, 0.5, 0.95])
    pd.testing.assert_frame_equal(got, expected, **TOL)
    assert "wrote 15 rows for 5 series to" in capsys.readouterr().out
    assert not out.with_name("forecasts.csv.partial").exists()


def test_batches_and_chunks_give_the_same_answer(frame, forecaster, tmp_path) -> None:
    data = tmp_path / "series.csv"
    frame.to_csv(data, index=False)
    one = predict_file(PredictOptions(model="-", data_file=data, out=tmp_path / "one.csv",
                                      num_samples=4), forecaster)
    assert (one.series, one.rows) == (5, 15)
    # 2 series per call, 7 rows per chunk: series span chunk boundaries and batches.
    small = predict_file(PredictOptions(model="-", data_file=data, out=tmp_path / "two.csv",
                                        num_samples=4, batch_series=2, chunk_rows=7), forecaster)
    assert (small.series, small.rows) == (5, 15)
    pd.testing.assert_frame_equal(read_out(tmp_path / "two.csv"), read_out(tmp_path / "one.csv"),
                                  **TOL)


def test_parquet_in_and_out(frame, forecaster, model_dir, tmp_path) -> None:
    data = tmp_path / "series.parquet"
    frame.to_parquet(data, index=False, row_group_size=13)
    out = tmp_path / "forecasts.parquet"
    assert run("--model", model_dir, "--data-file", data, "--out", out, "--quantiles", "0.5",
               "--batch-series", "2") == 0
    got = read_out(out)
    assert got["time"].dtype == np.float64 and pd.api.types.is_string_dtype(got["series_id"])
    pd.testing.assert_frame_equal(got, predict_frame(forecaster, frame, quantiles=[0.5]), **TOL)


def test_horizon_adds_queries_after_the_last_observation(frame, forecaster, model_dir,
                                                         tmp_path) -> None:
    data = tmp_path / "series.csv"
    frame[~frame["query"]].drop(columns="query").to_csv(data, index=False)
    out = tmp_path / "forecasts.csv"
    assert run("--model", model_dir, "--data-file", data, "--out", out,
               "--horizon", "3", "--every", "1.5") == 0
    got = read_out(out)
    last = frame[~frame["query"]].groupby("series_id", sort=False)["time"].max()
    expected = np.concatenate([[t + 1.5, t + 3.0] for t in last])
    np.testing.assert_allclose(got["time"], expected)
    assert set(got["mode"]) == {"extrapolation"}


def test_a_file_without_queries_says_so(frame, model_dir, tmp_path, capsys) -> None:
    data = tmp_path / "series.csv"
    frame[~frame["query"]].to_csv(data, index=False)
    out = tmp_path / "forecasts.csv"
    assert run("--model", model_dir, "--data-file", data, "--out", out) == 0
    assert len(read_out(out)) == 0
    captured = capsys.readouterr()
    assert "5 series had nothing to forecast (no query rows; --horizon adds some): 's0'" in \
        captured.err
    assert "wrote 0 rows for 0 series" in captured.out


def test_a_series_the_solver_cannot_answer_is_reported(frame, model_dir, tmp_path, capsys,
                                                       monkeypatch) -> None:
    from latent_ode import Forecaster

    real = Forecaster.predict

    def fail_s1(self, series, *args, **kwargs):
        out = real(self, series, *args, **kwargs)
        return [dataclasses.replace(f, status="max_steps", message="the solver gave up on s1")
                if s.id == "s1" else f for s, f in zip(series, out, strict=True)]

    monkeypatch.setattr(Forecaster, "predict", fail_s1)
    data = tmp_path / "series.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "forecasts.csv"
    assert run("--model", model_dir, "--data-file", data, "--out", out) == 0
    assert "s1" not in set(read_out(out)["series_id"]) and len(read_out(out)) == 12
    captured = capsys.readouterr()
    assert "warning: series 's1' has no forecast: the solver gave up on s1" in captured.err
    assert "; 1 series failed (see above)" in captured.out
    # Nothing answered: exit 2, no output file.
    only = tmp_path / "only.csv"
    frame[frame.series_id == "s1"].to_csv(only, index=False)
    assert run("--model", model_dir, "--data-file", only, "--out", tmp_path / "none.csv") == 2
    assert "error: the solver answered none of the 1 series; the first, 's1': the solver gave up" \
        in capsys.readouterr().err
    assert not (tmp_path / "none.csv").exists()
    assert not (tmp_path / "none.csv.partial").exists()


HEADER = "series_id,time,hr,query\n"


@pytest.mark.parametrize(("text", "message"), [
    (HEADER + "a,0,70,false\na,1,high,false\n",
     r"bad.csv, line 3, column 'hr': a channel value must be a number or empty; got 'high'"),
    (HEADER + "a,0,70,false\nb,0,71,false\na,1,,true\n",
     r"bad.csv, line 4: series 'a' continues after other series' rows; .* Sort the file by "
     r"series_id"),
    ("series_id,time,hr,spo2\na,0,70,99\n",
     r"bad.csv: column\(s\) 'spo2' are not channels of the model; its channels are 'hr', 'temp'"),
    (HEADER + "a,0,70,false\na,,,true\n",
     r"bad.csv, line 3, column 'time': every row needs a time"),
    (HEADER + "a,0,70,false\na,1,,perhaps\n",
     r"bad.csv, line 3, column 'query': must be true or false \(or empty for false\); got "
     r"'perhaps'"),
    (HEADER + "a,0,70,false\na,0,71,false\na,1,,true\n",
     r"bad.csv, line 3: series 'a' has two observation rows at time 0 \(the other at line 2\)"),
    ("", r"bad.csv, line 1: the file is empty \(0 bytes\)"),
    (HEADER + "a,0,7\xff0,false\n", r"bad.csv, line 2, column 6 \(byte 29\): the byte .* is not "
                                    r"UTF-8 text"),
])
def test_bad_data_exits_2_naming_file_line_and_column(text, message, model_dir, tmp_path,
                                                      capsys) -> None:
    raw = text.encode("latin-1") if "\xff" in text else text.encode()
    data = tmp_path / "bad.csv"
    data.write_bytes(raw)
    out = tmp_path / "forecasts.csv"
    assert run("--model", model_dir, "--data-file", data, "--out", out) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert re.search(message, err), err
    assert not out.exists() and not out.with_name("forecasts.csv.partial").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--data-file", "{tmp}/missing.csv", "--out", "{tmp}/o.csv"],
     "error: data file '{tmp}/missing.csv' does not exist; check the path."),
    (["--data-file", "{data}", "--out", "{tmp}/o.json"],
     "error: cannot tell the format of '{tmp}/o.json' from its extension '.json'; use a .csv or "
     ".parquet file."),
    (["--data-file", "{data}", "--out", "{tmp}/o.csv", "--horizon", "2"],
     "error: --horizon and --every go together; give both"),
    (["--data-file", "{data}", "--out", "{tmp}/o.csv", "--quantiles", "0.5,2"],
     "error: `quantiles` must lie strictly between 0 and 1; got '2'."),
    (["--data-file", "{data}", "--out", "{tmp}/o.csv", "--horizon", "1", "--every", "2"],
     "error: `every` (2.0) is longer than `horizon` (1.0)"),
    (["--data-file", "{data}", "--out", "{tmp}/o.csv", "--batch-series", "0"],
     "error: `batch_series` must be at least 1; got 0."),
])
def test_bad_options_exit_2(args, message, frame, model_dir, tmp_path, capsys) -> None:
    data = tmp_path / "series.csv"
    frame.to_csv(data, index=False)
    fill = {"tmp": str(tmp_path), "data": str(data)}
    assert run("--model", model_dir, *[a.format(**fill) for a in args]) == EXIT_USAGE
    assert capsys.readouterr().err.startswith(message.format(**fill))


def test_bad_models_exit_2(frame, tmp_path, capsys, monkeypatch) -> None:
    data = tmp_path / "series.csv"
    frame.to_csv(data, index=False)
    common = ["--data-file", data, "--out", tmp_path / "o.csv"]
    assert run("--model", tmp_path, *common) == EXIT_USAGE
    assert f"error: --model {str(tmp_path)!r} holds neither a saved forecaster (config.json) " \
        "nor an MLflow model (MLmodel)" in capsys.readouterr().err
    assert run("--model", "no-such-thing", *common) == EXIT_USAGE
    assert "error: --model 'no-such-thing' is neither a folder nor a model URI; give " \
        "models:/NAME@ALIAS" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run("--model", "models:/nobody@champion", *common) == EXIT_USAGE
    assert "nobody" in capsys.readouterr().err


def test_cli_pyfunc_and_http_give_the_same_numbers(frame, forecaster, tmp_path,
                                                   monkeypatch) -> None:
    """The registered model through ``latent-ode predict``, the MLflow pyfunc and
    ``POST /v1/predict`` (JSON) answers the same series with the same seed alike."""
    import mlflow

    from tests.service.service_helpers import register_version

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    register_version(uri, forecaster, tmp_path)  # pins the URI it found (this one) in mlflow
    try:
        _compare(frame, tmp_path, uri)
    finally:
        mlflow.set_tracking_uri(None)


def _compare(frame: pd.DataFrame, tmp_path: Path, uri: str) -> None:
    import mlflow
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings

    data, out = tmp_path / "series.csv", tmp_path / "forecasts.csv"
    frame.to_csv(data, index=False)
    model = f"models:/{MODEL_NAME}@champion"
    assert run("--model", model, "--data-file", data, "--out", out, "--quantiles", "0.1,0.9",
               "--num-samples", "16", "--seed", "5") == 0
    cli = read_out(out)

    pyfunc = mlflow.pyfunc.load_model(model).predict(
        frame, params={"quantiles": [0.1, 0.9], "num_samples": 16, "seed": 5})
    pd.testing.assert_frame_equal(pyfunc, cli, **TOL)

    body = {"series": [], "quantiles": [0.1, 0.9], "num_samples": 16, "seed": 5}
    for sid, rows in frame.groupby("series_id", sort=False):
        obs = rows[~rows["query"]]
        body["series"].append({
            "id": sid, "times": obs["time"].tolist(),
            "values": [[None if np.isnan(v) else v for v in row]
                       for row in obs[CHANNELS].to_numpy()],
            "query_times": rows.loc[rows["query"], "time"].tolist()})
    settings = Settings(tracking_uri=uri, model_uri=model, model_cache_dir=tmp_path / "cache",
                        torch_threads=0)
    with TestClient(create_app(settings)) as client:
        answer = client.post("/v1/predict", json=body)
    assert answer.status_code == 200, answer.text
    for item in answer.json()["series"]:
        mine = cli[cli["series_id"] == item["id"]]
        np.testing.assert_allclose(mine["time"], item["query_times"])
        assert list(mine["mode"]) == item["mode"]
        for j, c in enumerate(CHANNELS):
            np.testing.assert_allclose(mine[f"{c}_mean"], np.array(item["mean"])[:, j], **TOL)
            np.testing.assert_allclose(mine[f"{c}_std"], np.array(item["std"])[:, j], **TOL)
            for q in item["quantiles"]:
                np.testing.assert_allclose(mine[f"{c}_q{q['quantile']!r}"],
                                           np.array(q["values"])[:, j], **TOL)
