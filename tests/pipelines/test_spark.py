"""``latent-ode spark-predict`` on a real Spark in local mode: the same answers as ``predict``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from formats.frames import output_columns
from latent_ode.errors import DataError
from pipelines.cli import EXIT_USAGE, main
from tests.formats.test_frames import input_frame
from tests.service.service_helpers import CHANNELS, make_forecaster, make_series

if not os.environ.get("CI"):  # CI installs both and must run these tests
    pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("CI"):
    pytest.skip("Spark needs Java (Debian's openjdk-17-jre-headless); CI installs it",
                allow_module_level=True)

from pipelines.spark import (  # noqa: E402 (after the skip)
    SparkPredictOptions,
    read_output,
    sort_frame,
    spark_predict,
    spark_session,
)

pytestmark = pytest.mark.integration

TOL = {"rtol": 1e-5, "atol": 1e-5}  # batches solve to the solver's tolerance, not bitwise
QUANTILES = "0.05,0.5,0.95"


@pytest.fixture(scope="module")
def spark():
    session = spark_session("local[2]", "latent-ode test")
    session.conf.set("spark.sql.shuffle.partitions", "4")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_forecaster().save(tmp_path_factory.mktemp("model") / "forecaster")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    series = make_series(7)
    queries = [np.array([11.0, 0.5, 5.0 + i]) for i in range(7)]
    path = tmp_path_factory.mktemp("data") / "series.csv"
    input_frame(series, queries).to_csv(path, index=False)
    return path


def cli_predict(model_dir: Path, data: Path, out: Path, *extra: str) -> pd.DataFrame:
    assert main(["predict", "--device", "cpu", "--model", str(model_dir), "--data-file",
                 str(data), "--out", str(out), "--quantiles", QUANTILES, "--num-samples", "8",
                 "--seed", "4", *extra]) == 0
    return pd.read_parquet(out) if out.suffix == ".parquet" else pd.read_csv(
        out, dtype={"series_id": str})


def test_spark_answers_equal_latent_ode_predict(spark, model_dir, data, tmp_path) -> None:
    from pipelines.predict import load_forecaster

    expected = cli_predict(model_dir, data, tmp_path / "predict.csv", "--horizon", "2",
                           "--every", "1")
    summary = spark_predict(spark, load_forecaster(str(model_dir)), SparkPredictOptions(
        data=str(data), out=str(tmp_path / "spark"), quantiles=QUANTILES, num_samples=8, seed=4,
        horizon=2.0, every=1.0, batch_series=3))  # 3 tasks' worth of series
    got = read_output(tmp_path / "spark")
    assert list(got.columns) == output_columns(CHANNELS, [0.05, 0.5, 0.95])
    assert (summary.rows, summary.series, summary.failed) == (len(expected), 7, {})
    pd.testing.assert_frame_equal(sort_frame(got), sort_frame(expected), **TOL)


def test_parquet_input_and_the_cli(spark, model_dir, data, tmp_path, capsys) -> None:
    parquet = tmp_path / "series.parquet"
    pd.read_csv(data, dtype={"series_id": str}).to_parquet(parquet, index=False)
    expected = cli_predict(model_dir, parquet, tmp_path / "predict.parquet")
    # The command uses the session already active (the module's) and leaves it running.
    assert main(["spark-predict", "--master", "local[2]", "--model", str(model_dir), "--data",
                 str(parquet), "--out", str(tmp_path / "out"), "--quantiles", QUANTILES,
                 "--num-samples", "8", "--seed", "4"]) == 0
    assert f"wrote {len(expected)} rows for 7 series to" in capsys.readouterr().out
    pd.testing.assert_frame_equal(sort_frame(read_output(tmp_path / "out")),
                                  sort_frame(expected), **TOL)


def test_a_column_the_model_lacks_is_one_clear_error(model_dir, data, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    frame = pd.read_csv(data, dtype={"series_id": str})
    frame.rename(columns={CHANNELS[0]: "heart_rate"}).to_csv(bad, index=False)
    code = main(["spark-predict", "--master", "local[1]", "--model", str(model_dir), "--data",
                 str(bad), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "heart_rate" in err and "Traceback" not in err and "java" not in err.lower()
    assert not (tmp_path / "out").exists()


def test_a_bad_cell_inside_a_task_names_the_column(spark, model_dir, data, tmp_path,
                                                    monkeypatch) -> None:
    from pipelines import spark as spark_module
    from pipelines.predict import load_forecaster

    monkeypatch.setattr(spark_module, "_CHECK_ROWS", 1)  # the driver sees row 0 only
    frame = pd.read_csv(data, dtype={"series_id": str})
    frame["time"] = frame["time"].astype(object)
    frame.loc[len(frame) - 1, "time"] = "soon"
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    with pytest.raises(DataError, match="'time'"):
        spark_predict(spark, load_forecaster(str(model_dir)), SparkPredictOptions(
            data=str(bad), out=str(tmp_path / "out")))


def test_a_missing_path_is_an_error_before_spark_reads(spark, model_dir, tmp_path) -> None:
    from pipelines.predict import load_forecaster

    with pytest.raises(DataError, match="does not exist"):
        spark_predict(spark, load_forecaster(str(model_dir)), SparkPredictOptions(
            data=str(tmp_path / "nope.csv"), out=str(tmp_path / "out")))
