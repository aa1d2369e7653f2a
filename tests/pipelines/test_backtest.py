"""``latent-ode backtest``: the table, the files, the MLflow run and every user error, with a
real (small, untrained) forecaster saved to a folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from formats.longformat import SeriesTable, write_long
from latent_ode import DataError, Series
from latent_ode.backtest import BacktestConfig, backtest
from pipelines.backtest import (
    align_channels,
    backtest_frame,
    format_table,
    load_forecaster,
    plot_backtest,
    plt,
    training_mean,
)
from pipelines.cli import main
from tests.pipelines.test_cli import _error_line
from tests.service.service_helpers import CHANNELS, make_forecaster, make_series


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved forecaster folder (channels hr, temp; hours)."""
    return make_forecaster().save(tmp_path_factory.mktemp("model") / "forecaster")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    table = SeriesTable(series=make_series(4), channels=CHANNELS, time_unit="hours")
    return write_long(table, tmp_path_factory.mktemp("data") / "series.csv")


def test_the_table_printed_and_written_is_the_library_result(
    model_dir: Path, data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "bt.csv"
    argv = ["backtest", "--model", str(model_dir), "--data-file", str(data_file), "--cuts", "2",
            "--horizon", "4", "--buckets", "2", "--num-samples", "4", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "forecast backtest: 8 windows of 4 series" in printed
    assert "channel  lead (hours)" in printed and "LOCF MAE" in printed
    assert "hr       0-2 " in printed and "temp     all " in printed

    fc = load_forecaster(str(model_dir))
    expected = backtest(fc, make_series(4), BacktestConfig(cuts=2, horizon=4.0, buckets=2,
                                                           num_samples=4),
                        fallback=training_mean(fc))
    table = pd.read_csv(out)
    pd.testing.assert_frame_equal(table, backtest_frame(expected), check_dtype=False)
    assert list(table.columns) == ["channel", "bucket", "lead_from", "lead_to", "count",
                                   "model_mae", "model_rmse", "locf_mae", "locf_rmse"]
    assert list(table["bucket"]) == ["h1", "h2", "all"] * 2

    as_json = tmp_path / "bt.json"
    assert main([*argv[:-1], str(as_json)]) == 0
    doc = json.loads(as_json.read_text())
    assert (doc["regime"], doc["time_unit"], doc["windows"]) == ("forecast", "hours", 8)
    assert doc["bucket_edges"] == [0.0, 2.0, 4.0]
    assert doc["rows"][0]["model_mae"] == pytest.approx(table["model_mae"][0])


def test_a_constant_file_has_zero_locf_error_in_the_written_table(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # Only `hr` in the file (the model's `temp` is then unobserved and scores nothing).
    (tmp_path / "flat.csv").write_text(
        "series_id,time,hr\n" + "".join(f"a,{t},72.5\n" for t in (0, 0.5, 1.2, 2, 3.3, 4)))
    out = tmp_path / "flat.csv.out.csv"
    assert main(["backtest", "--model", str(model_dir), "--data-file", str(tmp_path / "flat.csv"),
                 "--cuts", "3", "--out", str(out)]) == 0
    table = pd.read_csv(out).set_index(["channel", "bucket"])
    assert table.loc[("hr", "all"), "locf_mae"] == 0.0
    # Cuts at 1, 2, 3: targets 1.2, 2, 3.3, 4; then 3.3, 4; then 3.3, 4.
    assert table.loc[("hr", "all"), "count"] == 4 + 2 + 2
    assert table.loc[("temp", "all"), "count"] == 0
    assert np.isnan(table.loc[("temp", "all"), "model_mae"])
    assert re.search(r"^temp\s+all\s+0\s+-\s+-", capsys.readouterr().out, re.MULTILINE)


def test_experiment_logs_metrics_the_table_and_the_chart(
    model_dir: Path, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(None)  # the embedded store, ./mlflow.db
    try:
        assert main(["backtest", "--model", str(model_dir), "--data-file", str(data_file),
                     "--cuts", "1", "--num-samples", "2", "--experiment", "bt-test"]) == 0
        run_id = capsys.readouterr().out.split("logged backtest run ")[1].split()[0]
        run = MlflowClient().get_run(run_id)
        assert run.info.run_name == "backtest" and run.info.status == "FINISHED"
        assert run.data.params["cuts"] == "1" and run.data.params["regime"] == "forecast"
        metrics = run.data.metrics
        assert metrics["backtest/windows"] == 4
        assert metrics["backtest/mae_units/hr"] > 0 and "backtest/baseline_rmse_units/temp" in metrics
        arts = {a.path for a in MlflowClient().list_artifacts(run_id)}
        assert "backtest.json" in arts
        plots = {a.path for a in MlflowClient().list_artifacts(run_id, "plots")}
        assert plots == {"plots/backtest_error.png"}
        logged = mlflow.load_table("backtest.json", run_ids=[run_id])
        assert len(logged) == 2 * 6 and set(logged["channel"]) == {"hr", "temp"}
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.parametrize(("args", "message"), [
    (["--cuts", "0"], "`cuts` must be a positive integer; got 0."),
    (["--regime", "interp"], "the `interp` regime needs a `horizon`"),
    (["--horizon", "-2"], "`horizon` must be a positive, finite time; got -2.0."),
    (["--out", "table.xlsx"], "--out must end in .csv or .json; got 'table.xlsx'."),
    (["--cut-times", "99"], "no window to score"),
])
def test_bad_arguments_are_one_line_and_exit_2(
    model_dir: Path, data_file: Path, args: list[str], message: str,
    capsys: pytest.CaptureFixture
) -> None:
    assert main(["backtest", "--model", str(model_dir), "--data-file", str(data_file),
                 *args]) == 2
    assert message in _error_line(capsys.readouterr().err)


def test_bad_models_and_data_are_one_line_and_exit_2(
    model_dir: Path, data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    def error(*argv: str) -> str:
        assert main(["backtest", *argv]) == 2
        return _error_line(capsys.readouterr().err)

    assert "--model 'nowhere' is neither a model URI" in error(
        "--model", "nowhere", "--data-file", str(data_file))
    assert f"--model {str(tmp_path)!r} holds no forecaster" in error(
        "--model", str(tmp_path), "--data-file", str(data_file))
    (tmp_path / "extra.csv").write_text("series_id,time,hr,spo2\na,0,70,98\na,1,71,97\n")
    assert "the data have channels the model lacks: ['spo2']" in error(
        "--model", str(model_dir), "--data-file", str(tmp_path / "extra.csv"))
    assert "--time-unit only goes with --data-file" in error(
        "--model", str(model_dir), "--data", str(tmp_path), "--time-unit", "days")
    assert "is not an ingested data folder" in error(
        "--model", str(model_dir), "--data", str(tmp_path))


def test_an_unknown_registered_model_is_one_line_and_exit_2(
    data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    mlflow.set_tracking_uri(None)
    assert main(["backtest", "--model", "models:/no-such-model@champion",
                 "--data-file", str(data_file)]) == 2
    assert "no-such-model" in _error_line(capsys.readouterr().err)


def test_conflicting_cut_options_are_refused_by_the_parser(
    model_dir: Path, data_file: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "--model", str(model_dir), "--data-file", str(data_file),
              "--cuts", "2", "--cut-times", "1", "2"])
    assert exc.value.code == 2
    assert "argument --cut-times: not allowed with argument --cuts" in capsys.readouterr().err


def test_align_channels_puts_the_data_in_the_model_order() -> None:
    s = Series(times=np.array([0.0, 1.0]), values=np.array([[37.0], [37.5]]), id="a")
    (out,) = align_channels([s], ["temp"], ["hr", "temp"])
    np.testing.assert_array_equal(out.values, [[np.nan, 37.0], [np.nan, 37.5]])
    with pytest.raises(DataError, match=r"channels the model lacks: \['bp'\]"):
        align_channels([s], ["bp"], ["hr", "temp"])


def test_the_chart_draws_the_model_beside_locf_per_channel(model_dir: Path) -> None:
    fc = load_forecaster(str(model_dir))
    result = backtest(fc, make_series(3), BacktestConfig(cuts=1, num_samples=2))
    fig = plot_backtest(result, time_unit="hours")
    try:
        visible = [ax for ax in fig.axes if ax.get_visible()]
        assert {ax.get_title().split(" ")[0] for ax in visible} == {"hr", "temp"}
        for ax in visible:
            assert [line.get_label() for line in ax.get_lines()] == ["model", "LOCF"]
            assert ax.get_ylabel().endswith("units)")
            assert ax.get_legend() is None  # one legend for the figure, below the panels
        (legend,) = fig.legends
        assert [t.get_text() for t in legend.get_texts()] == ["model", "LOCF"]
    finally:
        plt.close(fig)
    assert "forecast backtest: 3 windows of 3 series" in format_table(result, time_unit="hours")


def test_backtest_has_help(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["backtest", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: latent-ode backtest")
    assert "--cut-times" in out and "--horizon" in out and "--experiment" in out
