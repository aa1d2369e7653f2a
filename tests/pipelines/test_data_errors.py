"""Bad data files through the real CLI: exit 2 with one ``error:`` line naming the file, the line
and the column; never a traceback (issue 16, item 11). Also: an all-empty channel is named, and
one-time-point series are dropped with a logged count."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipelines.cli import main
from tests.pipelines.test_config import write_config

_REPO = Path(__file__).resolve().parents[2]

# name -> (file bytes, the message the error line must match)
BAD = {
    "empty": (b"", r"data\.csv, line 1: the file is empty \(0 bytes\)"),
    "blank_lines": (b"\n\n", r"data\.csv, line 1: no header line"),
    "not_utf8": (b"series_id,time,HR\na,0,1\na,1,\xff\xfe\n",
                 r"data\.csv, line 3, column 5 \(byte 28\): the byte b'\\xff' is not UTF-8 text; "
                 r"save the file as UTF-8\."),
    "iso_year_1": (b"series_id,time,HR\na,2000-01-01T00:00:00Z,1\na,0001-01-01T00:00:00Z,2\n",
                   r"data\.csv, line 3, column 'time': times must be all numbers \(in hours\) "
                   r"or all ISO-8601 datetimes .* got '0001-01-01T00:00:00Z'"),
    "iso_year_2300": (b"series_id,time,HR\na,2300-01-01T00:00:00Z,1\n",
                      r"data\.csv, line 2, column 'time': .* got '2300-01-01T00:00:00Z'"),
}


def _error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("case", sorted(BAD))
def test_pipeline_run_data_file_errors_exit_2_with_the_place(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, message = BAD[case]
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    assert main(["pipeline", "run", "--data-file", str(path)]) == 2
    err = _error_line(capsys.readouterr().err)
    assert re.search(message, err), err
    assert str(path) in err


def test_the_real_process_exits_2_on_a_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(BAD["not_utf8"][0])
    env = {**os.environ, "PYTHONPATH": str(_REPO), "MLFLOW_TRACKING_URI":
           f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "pipeline", "run",
                           "--data-file", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.search(BAD["not_utf8"][1], _error_line(proc.stderr))


def _file_config(tmp_path: Path, text: str, name: str) -> Path:
    """The tiny config pointed at ``data.csv`` holding ``text``, tracking to a sqlite store."""
    (tmp_path / "data.csv").write_text(text)
    raw = write_config(tmp_path / "c.toml", register={"model_name": name},
                       mlflow={"experiment": name})
    cfg_text = raw.read_text().replace('dataset = "periodic"', 'path = "data.csv"')
    cfg_text = re.sub(r"(?m)^(n_series|seed|options) = .*\n", "", cfg_text, count=3)
    raw.write_text(cfg_text)
    return raw


def _rows(n_series: int, n_times: int, *, empty_channel: bool) -> list[str]:
    rows = []
    for i in range(n_series):
        for t in range(n_times):
            rows.append(f"s{i},{t},{i + 0.5 * t},{'' if empty_channel else i - t}")
    return rows


@pytest.mark.parametrize("command", [["ingest"], ["pipeline", "run"]])
def test_an_all_empty_channel_is_named(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    text = "\n".join(["series_id,time,HR,Temp", *_rows(10, 4, empty_channel=True)]) + "\n"
    cfg = _file_config(tmp_path, text, "test-empty-channel")
    assert main([*command, "--config", str(cfg)]) == 2
    err = _error_line(capsys.readouterr().err)
    assert "error: channel(s) ['Temp'] are never observed in the training series; drop them" \
        in err, err


def test_one_point_series_are_dropped_with_a_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rows = _rows(10, 4, empty_channel=False) + ["lone,0,1.0,2.0", "solo,3,1.5,"]
    cfg = _file_config(tmp_path, "\n".join(["series_id,time,HR,Temp", *rows]) + "\n",
                       "test-one-point")
    with caplog.at_level(logging.WARNING, logger="pipelines.steps.ingest"):
        assert main(["ingest", "--config", str(cfg), "--out", "split"]) == 0
    assert ("ingest: dropped 2 of 12 series with a single time point (nothing to interpolate "
            "or forecast from; e.g. ['lone', 'solo'])") in caplog.text
    assert ": 6 train / 2 val / 2 test series;" in capsys.readouterr().out
    run = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("test-one-point").experiment_id])[0]
    total = sum(run.data.metrics[f"n_series_{s}"] for s in ("train", "val", "test"))
    assert total == 10


def test_only_one_point_series_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    rows = [f"p{i},{i},1.0,2.0" for i in range(5)]
    cfg = _file_config(tmp_path, "\n".join(["series_id,time,HR,Temp", *rows]) + "\n",
                       "test-only-one-point")
    assert main(["ingest", "--config", str(cfg)]) == 2
    err = _error_line(capsys.readouterr().err)
    assert re.search(r"data\.csv: all 5 series have a single time point \(e\.g\. \['p0', 'p1', "
                     r"'p2'\]\); training needs series observed at two or more times\.", err), err
