"""Settings derived from the data (pipelines.autoconfig) and ``pipeline run --data-file``'s
command line: each rule, the config over the derived settings, the error paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from formats.longformat import SeriesTable, write_long
from latent_ode import Series
from latent_ode.errors import ConfigError, DataError
from pipelines import autoconfig
from pipelines.autoconfig import DataSummary, derive_config, describe, merge_config, summarise
from pipelines.cli import _pipeline_config, build_parser, main


def summary(n_series: int = 300, d: int = 7, *, max_span: float = 48.0, median_gap: float = 6.0,
            ) -> DataSummary:
    return DataSummary(n_series=n_series, channels=[f"c{i}" for i in range(d)],
                       time_unit="hours", n_times=6 * n_series, n_values=20 * n_series,
                       max_span=max_span, median_gap=median_gap, median_points=6.0)


def make_series(n: int, *, seed: int = 0, d: int = 2) -> list[Series]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        k = 4 + i % 3
        times = np.cumsum(rng.uniform(1.0, 3.0, size=k))
        out.append(Series(times=times, values=rng.normal(size=(k, d)), id=f"s{i}"))
    return out


# ------------------------------------------------------------------------------- summarise
def test_summarise_measures_counts_spans_and_gaps() -> None:
    s = [
        Series(times=np.array([0.0, 1.0, 3.0]), values=np.array([[1.0, np.nan], [2.0, 3.0],
                                                                 [np.nan, 4.0]]), id="a"),
        Series(times=np.array([5.0, 15.0]), values=np.array([[1.0, 1.0], [2.0, np.nan]]), id="b"),
        Series(times=np.array([2.0]), values=np.array([[1.0, 2.0]]), id="c"),
    ]
    got = summarise(s, channels=["x", "y"], time_unit="days")
    assert got == DataSummary(n_series=3, channels=["x", "y"], time_unit="days", n_times=6,
                              n_values=9, max_span=10.0, median_gap=2.0, median_points=2.0)


@pytest.mark.parametrize("n", [1, 2])
def test_summarise_refuses_fewer_than_three_series(n: int) -> None:
    with pytest.raises(DataError, match=rf"the data file has {n} series; --data-file needs at "
                                        r"least 3 \(one each to train, validate and test on\)"):
        summarise(make_series(n), channels=["a", "b"], time_unit="hours")


def test_a_single_point_per_series_has_no_gap() -> None:
    s = [Series(times=np.array([float(i)]), values=np.ones((1, 1)), id=str(i)) for i in range(3)]
    got = summarise(s, channels=["a"], time_unit="hours")
    assert (got.median_gap, got.max_span) == (0.0, 0.0)
    assert derive_config(got, path="x.csv").model.encoder.max_step == 0.02  # the reference's


# ---------------------------------------------------------------------------- derive_config
def test_small_data_get_a_small_anchored_model_with_standard_normalisation() -> None:
    cfg = derive_config(summary(300, 7), path="data/labs.csv", max_time_s=60.0, seed=3)
    assert cfg.data.path == "data/labs.csv" and cfg.data.dataset is None
    assert cfg.data.normalisation == "standard" and cfg.data.time_unit == "hours"
    assert (cfg.data.split.train, cfg.data.split.val, cfg.data.split.test) == (0.7, 0.15, 0.15)
    assert cfg.data.split.seed == 3 and cfg.train.seed == 3
    assert cfg.model.decoder.anchor is True and cfg.model.obs_std == 0.3
    assert cfg.model.latent_dim == 5  # sqrt(210 train series) / 3, and >= ceil(7 / 2) = 4
    assert (cfg.model.encoder.hidden, cfg.model.encoder.units, cfg.model.dynamics.units) == \
        (10, 16, 16)
    assert cfg.train.max_time_s == 60.0 and cfg.train.patience == 10
    assert cfg.train.task == "both" and cfg.train.val_metric == "val_error_ratio"
    assert cfg.registry.model_name == "latent-ode-labs" == cfg.mlflow.experiment


def test_the_model_grows_with_the_data_up_to_the_papers_size() -> None:
    small = derive_config(summary(300), path="f.csv").model
    mid = derive_config(summary(3000), path="f.csv").model
    large = derive_config(summary(100_000), path="f.csv").model
    assert small.latent_dim < mid.latent_dim < large.latent_dim == 20
    assert small.encoder.hidden < mid.encoder.hidden < large.encoder.hidden == 40
    assert small.encoder.units < mid.encoder.units < large.encoder.units == 100


def test_the_latent_state_has_room_for_every_channel() -> None:
    assert derive_config(summary(50, d=30), path="f.csv").model.latent_dim == 15


def test_large_data_keep_ten_percent_for_validation_and_test() -> None:
    split = derive_config(summary(5000), path="f.csv").data.split
    assert (split.train, split.val, split.test) == (0.8, 0.1, 0.1)


@pytest.mark.parametrize(("gap", "span", "step"), [(6.0, 48.0, 0.0625), (0.001, 48.0, 0.005),
                                                   (40.0, 48.0, 0.1)])
def test_the_encoder_step_is_half_the_median_gap_within_bounds(gap: float, span: float,
                                                               step: float) -> None:
    cfg = derive_config(summary(max_span=span, median_gap=gap), path="f.csv")
    assert cfg.model.encoder.max_step == pytest.approx(step)


def test_few_series_train_in_one_batch_and_the_kl_warms_up_over_ten_epochs() -> None:
    cfg = derive_config(summary(20), path="f.csv")  # 20 - 2 * 3 = 14 training series
    assert cfg.train.batch_size == 14
    assert cfg.train.kl_warmup_delay == 10
    assert cfg.train.kl_warmup_rate ** 10 == pytest.approx(0.01, rel=1e-3)
    assert cfg.train.kl_scale == pytest.approx(1 / cfg.model.latent_dim, rel=1e-4)


def test_the_model_name_comes_from_the_file_stem() -> None:
    assert derive_config(summary(), path="/x/My Clinic_2024.parquet").registry.model_name == \
        "latent-ode-my-clinic-2024"
    assert derive_config(summary(), path="___.csv").registry.model_name == "latent-ode-data"


# ----------------------------------------------------------------------------- merge_config
def test_the_config_wins_where_it_sets_a_key() -> None:
    derived = derive_config(summary(), path="mine.csv", max_time_s=60.0)
    merged = merge_config(derived, {"model": {"latent_dim": 12, "encoder": {"hidden": 7}},
                                    "train": {"lr": 0.003}}, source="'c.toml'")
    assert (merged.model.latent_dim, merged.model.encoder.hidden, merged.train.lr) == (12, 7, 0.003)
    # what the file does not set stays derived
    assert merged.model.encoder.units == derived.model.encoder.units
    assert merged.model.decoder.anchor is True and merged.train.max_time_s == 60.0


def test_the_data_file_replaces_the_configs_data_source(caplog: pytest.LogCaptureFixture) -> None:
    derived = derive_config(summary(), path="mine.csv")
    with caplog.at_level("INFO", logger="pipelines.autoconfig"):
        merged = merge_config(derived, {"data": {"dataset": "periodic", "n_series": 10,
                                                 "normalisation": "minmax"}}, source="'c.toml'")
    assert merged.data.path == "mine.csv" and merged.data.dataset is None
    assert merged.data.normalisation == "minmax"
    assert "'c.toml': ignoring [data] dataset, n_series: --data-file gives the data" in caplog.text


def test_a_bad_key_in_the_config_names_it_and_the_file() -> None:
    derived = derive_config(summary(), path="mine.csv")
    with pytest.raises(ConfigError, match=r"invalid pipeline config 'c.toml' over the settings "
                                          r"derived from the data: .*train.lr"):
        merge_config(derived, {"train": {"lr": "fast"}}, source="'c.toml'")


def test_describe_states_every_derived_setting() -> None:
    s = summary(300, 3)
    text = describe(s, derive_config(s, path="labs.csv", max_time_s=90.0),
                    overridden_by="c.toml")
    assert text.splitlines()[0] == "settings derived from labs.csv (keys set in c.toml win):"
    for part in ("300 series, 3 channels (c0, c1, c2)", "longest span 48, median gap 6",
                 "encoder step 0.0625", "by series 0.7/0.15/0.15", "normalisation standard",
                 "latent 5, encoder hidden 10, units 16, baseline anchor on", "budget 90 s",
                 "early stopping on val_error_ratio (patience 10)", "blend towards the baselines off",
                 "experiment 'latent-ode-labs'"):
        assert part in text, part


# ----------------------------------------------------------------------- the command line
def write_file(path: Path, n: int) -> Path:
    return write_long(SeriesTable(series=make_series(n), channels=["a", "b"], time_unit="hours"),
                      path)


def parse(*argv: str):  # noqa: ANN202 - an argparse Namespace
    return build_parser().parse_args(["pipeline", "run", *argv])


def test_data_file_alone_derives_everything_and_max_time_sets_the_budget(tmp_path: Path) -> None:
    path = write_file(tmp_path / "mine.parquet", 40)
    cfg, block, source = _pipeline_config(parse("--data-file", str(path), "--max-time", "42"))
    assert cfg.data.path == str(path) and cfg.train.max_time_s == 42.0
    assert cfg.model.decoder.anchor is True
    assert block is not None and block.startswith(f"settings derived from {path}:")
    assert "40 series, 2 channels (a, b)" in block
    assert source == f"--data-file {path}"
    default, _, _ = _pipeline_config(parse("--data-file", str(path)))
    assert default.train.max_time_s == autoconfig.DEFAULT_MAX_TIME_S == 600.0


def test_a_partial_config_over_a_data_file_wins_but_not_over_max_time(tmp_path: Path) -> None:
    path = write_file(tmp_path / "mine.csv", 40)
    toml = tmp_path / "over.toml"
    toml.write_text("[model]\nlatent_dim = 9\n[train]\nmax_time_s = 5.0\nlr = 0.002\n")
    cfg, block, _ = _pipeline_config(parse("--data-file", str(path), "--config", str(toml)))
    assert (cfg.model.latent_dim, cfg.train.lr, cfg.train.max_time_s) == (9, 0.002, 5.0)
    assert block is not None and f"(keys set in {toml} win)" in block and "latent 9," in block
    cfg, _, _ = _pipeline_config(parse("--data-file", str(path), "--config", str(toml),
                                       "--max-time", "30"))
    assert cfg.train.max_time_s == 30.0


def test_max_time_also_applies_to_a_config_alone(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[data]\ndataset = "periodic"\n[train]\nmax_time_s = 5.0\n')
    cfg, block, source = _pipeline_config(parse("--config", str(toml), "--max-time", "7"))
    assert (cfg.train.max_time_s, block, source) == (7.0, None, str(toml))


def run_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(["pipeline", "run", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_missing_data_file_is_one_line_and_exit_2(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    err = run_error(["--data-file", str(tmp_path / "nope.csv")], capsys)
    assert err == f"error: data file {str(tmp_path / 'nope.csv')!r} does not exist; check the path."


def test_an_unreadable_data_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not a parquet file")
    err = run_error(["--data-file", str(path)], capsys)
    assert err.startswith(f"error: cannot read {str(path)!r} as parquet (ArrowInvalid")
    assert err.endswith("check that it is a parquet file in the long format of "
                        "docs/pipelines.md.")


@pytest.mark.parametrize(("name", "content", "message"), [
    ("empty.csv", b"", "{path}, line 1: the file is empty (0 bytes); a long-format file starts "
                       "with a header line such as 'series_id,time,HR'."),
    ("binary.csv", b"\xff\xfe\x00binary", "{path}, line 1, column 1 (byte 0): the byte b'\\xff' "
                                         "is not UTF-8 text; save the file as UTF-8."),
])
def test_an_empty_or_non_utf8_csv_names_the_place(
    tmp_path: Path, capsys: pytest.CaptureFixture, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    err = run_error(["--data-file", str(path)], capsys)
    assert err == "error: " + message.format(path=path)


def test_a_data_file_with_one_series_is_one_line_and_exit_2(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    path = write_file(tmp_path / "one.csv", 1)
    err = run_error(["--data-file", str(path)], capsys)
    assert err.startswith("error: the data file has 1 series; --data-file needs at least 3")


def test_neither_config_nor_data_file_is_one_line_and_exit_2(
        capsys: pytest.CaptureFixture) -> None:
    err = run_error([], capsys)
    assert err == ("error: `pipeline run` needs --config CONFIG (a pipeline TOML) or --data-file "
                   "FILE (a long-format CSV/Parquet file); got neither.")


def test_time_unit_without_a_data_file_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('[data]\ndataset = "periodic"\n')
    err = run_error(["--config", str(toml), "--time-unit", "days"], capsys)
    assert err == ("error: --time-unit only goes with --data-file; with --config, set "
                   "`time_unit` in its [data] section.")


def test_a_missing_config_with_a_data_file_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_file(tmp_path / "mine.csv", 5)
    err = run_error(["--data-file", str(path), "--config", str(tmp_path / "no.toml")], capsys)
    assert err.startswith(f"error: config file {str(tmp_path / 'no.toml')!r} does not exist")


@pytest.mark.parametrize("value", ["0", "-5", "soon", "inf", "nan"])
def test_max_time_must_be_positive(value: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        parse("--data-file", "x.csv", "--max-time", value)
    assert exc.value.code == 2
    assert f"must be a positive number of seconds; got {value!r}" in capsys.readouterr().err

