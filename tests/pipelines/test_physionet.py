"""PhysioNet 2012 reader: real records against their raw text; synthetic archives for errors."""

from __future__ import annotations

import io
import logging
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from formats.longformat import read_long, write_long
from latent_ode.errors import DataError
from pipelines.sources.physionet import CHANNELS, STATIC, read_physionet

REPO_ROOT = Path(__file__).resolve().parents[2]
ARCHIVE_DIR = REPO_ROOT.parent / "shared" / "data" / "physionet2012"
SET_A = ARCHIVE_DIR / "set-a.tar.gz"
SET_B = ARCHIVE_DIR / "set-b.tar.gz"

needs_archives = pytest.mark.skipif(
    not (SET_A.is_file() and SET_B.is_file()),
    reason=f"PhysioNet 2012 archives not found in {ARCHIVE_DIR} (expected set-a.tar.gz and "
    "set-b.tar.gz in ../shared/data/physionet2012/ relative to the repository root)",
)


def make_archive(path: Path, records: dict[str, str], folder: str = "set-x") -> Path:
    """A .tar.gz with one ``folder/NAME.txt`` per record, like the challenge's archives."""
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo(folder)
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
        for name, text in records.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{folder}/{name}.txt")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def raw_records(archive: Path, n: int) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """The first ``n`` records of an archive as (member name, [(time, parameter, value)])."""
    out = []
    with tarfile.open(archive, "r:gz") as tf:
        for member in tf:
            if member.isfile():
                fh = tf.extractfile(member)
                assert fh is not None
                lines = fh.read().decode().splitlines()
                out.append((member.name, [tuple(line.split(",")) for line in lines[1:]]))
                if len(out) == n:
                    break
    return out


def reference_series(lines: list[tuple[str, str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Plain-Python reading of one record, independent of the vectorised implementation."""
    sums: dict[float, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for t, param, value in lines:
        hh, mm = t.split(":")
        if param in STATIC or float(value) == -1:
            continue
        sums[int(hh) + int(mm) / 60][param].append(float(value))
    times = np.array(sorted(sums))
    values = np.full((len(times), len(CHANNELS)), np.nan)
    for i, t in enumerate(times):
        for param, vs in sums[t].items():
            values[i, CHANNELS.index(param)] = sum(vs) / len(vs)
    return times, values


# ----------------------------------------------------------------------------- real archives


@needs_archives
def test_known_values_of_first_record_of_set_a() -> None:
    # set-a/135014.txt begins: 00:00 Age 83, Gender 1, Height 170.2, ICUType 4, Weight 70;
    # 00:24 FiO2 0.5, GCS 10, MechVent 1, Urine 900 and Urine 420; ... ends 47:24 SysABP 120,
    # Temp 37.3, Weight 75.
    table, static = read_physionet([SET_A], limit=3)
    assert table.ids[0] == "135014"
    assert table.channels == list(CHANNELS) and len(CHANNELS) == 37
    assert table.time_unit == "hours"
    row = static.loc["135014"]
    assert (row["RecordID"], row["Age"], row["Gender"], row["Height"], row["ICUType"]) == (
        135014, 83.0, 1.0, 170.2, 4.0)
    assert row["archive"] == "set-a.tar.gz"
    s = table.series[0]
    ch = {name: j for j, name in enumerate(CHANNELS)}
    assert s.times[0] == 0.0 and s.values[0, ch["Weight"]] == 70.0
    assert np.isnan(np.delete(s.values[0], ch["Weight"])).all()
    assert s.times[1] == 24 / 60
    assert s.values[1, ch["Urine"]] == (900 + 420) / 2  # same variable, same time: averaged
    assert (s.values[1, ch["FiO2"]], s.values[1, ch["GCS"]], s.values[1, ch["MechVent"]]) == (
        0.5, 10.0, 1.0)
    assert s.times[-1] == 47 + 24 / 60
    assert (s.values[-1, ch["SysABP"]], s.values[-1, ch["Temp"]], s.values[-1, ch["Weight"]]) == (
        120.0, 37.3, 75.0)
    # set-a/139184.txt has Height -1 (unknown).
    assert np.isnan(static.loc["139184", "Height"])


@needs_archives
def test_first_records_match_a_plain_reading_of_the_raw_text() -> None:
    n = 25
    table, static = read_physionet([SET_A], limit=n)
    raw = raw_records(SET_A, n)
    assert len(table) == n
    for s, (member, lines) in zip(table.series, raw, strict=True):
        assert member == f"set-a/{s.id}.txt"
        times, values = reference_series(lines)
        np.testing.assert_allclose(s.times, times, rtol=0, atol=1e-12)
        # Averages of a few floats: the order of summation may differ in the last bit.
        np.testing.assert_allclose(s.values, values, rtol=1e-12, atol=0)
        assert np.array_equal(np.isnan(s.values), np.isnan(values))
        descriptors = {p: float(v) for _, p, v in lines if p in STATIC}
        for name in ("Age", "Gender", "Height", "ICUType"):
            expected = np.nan if descriptors[name] == -1 else descriptors[name]
            np.testing.assert_array_equal(static.loc[s.id, name], expected)


@needs_archives
def test_limit_counts_across_archives_in_order() -> None:
    table, static = read_physionet([SET_B, SET_A], limit=2)
    assert len(table) == 2
    assert list(static.index) == table.ids
    assert set(static["archive"]) == {"set-b.tar.gz"}


@needs_archives
def test_physionet_table_round_trips_through_parquet(tmp_path: Path) -> None:
    table, _ = read_physionet([SET_A], limit=10)
    back = read_long(write_long(table, tmp_path / "physionet.parquet"), time_unit="hours")
    assert back.ids == table.ids and back.channels == table.channels
    for a, b in zip(back.series, table.series, strict=True):
        np.testing.assert_array_equal(a.times, b.times)
        np.testing.assert_array_equal(a.values, b.values)


# ----------------------------------------------------------------------------- synthetic archives

GOOD = (
    "Time,Parameter,Value\n"
    "00:00,RecordID,{rid}\n00:00,Age,50\n00:00,Gender,-1\n00:00,Height,-1\n00:00,ICUType,2\n"
    "00:00,Weight,-1\n"
    "00:30,HR,80\n00:30,HR,90\n00:30,Temp,-1\n"
    "48:00,Weight,81.5\n"
)


def test_synthetic_record_averages_drops_unknowns_and_keeps_static_apart(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "a.tar.gz", {"1": GOOD.format(rid=1)})
    table, static = read_physionet([archive])
    (s,) = table.series
    hr, weight = CHANNELS.index("HR"), CHANNELS.index("Weight")
    np.testing.assert_array_equal(s.times, [0.5, 48.0])  # 00:00 had only -1: no row
    assert s.values[0, hr] == 85.0
    assert s.values[1, weight] == 81.5
    assert int(np.isfinite(s.values).sum()) == 2  # Temp -1 is missing
    assert static.loc["1"].drop("archive").tolist()[:2] == [1, 50.0]
    assert np.isnan(static.loc["1", "Gender"]) and np.isnan(static.loc["1", "Height"])


def test_record_without_measurements_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archive = make_archive(
        tmp_path / "a.tar.gz",
        {"1": GOOD.format(rid=1), "2": "Time,Parameter,Value\n00:00,RecordID,2\n00:00,Age,40\n"},
    )
    with caplog.at_level(logging.WARNING, logger="pipelines.sources.physionet"):
        table, static = read_physionet([archive])
    assert table.ids == ["1"] and list(static.index) == ["1"]
    assert "skipped 1 record(s) with no time-varying measurement: 2" in caplog.text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Time;Parameter;Value\n00:00,HR,1\n",
         r"a\.tar\.gz:set-x/1\.txt: expected the header 'Time,Parameter,Value' on line 1; got "
         r"'Time;Parameter;Value'"),
        ("Time,Parameter,Value\n00:10,Heartrate,80\n",
         r"a\.tar\.gz:set-x/1\.txt: unknown parameter 'Heartrate'; expected one of"),
        ("Time,Parameter,Value\n49:10,HR,80\n",
         r"a\.tar\.gz:set-x/1\.txt: time 49:10 is outside 00:00-48:00"),
        ("Time,Parameter,Value\n01:00,HR,80\n01:10,HR,eighty\n",
         r"a\.tar\.gz:set-x/1\.txt, line 3: expected 'HH:MM,Parameter,Value' with a numeric "
         r"value; got '01:10,HR,eighty'"),
        ("Time,Parameter,Value\n01:00,HR,80\n1h10,HR,80\n",
         r"a\.tar\.gz:set-x/1\.txt, line 3: expected 'HH:MM,Parameter,Value' .*got '1h10,HR,80'"),
    ],
    ids=["header", "parameter", "time", "value", "time-format"],
)
def test_bad_record_errors(tmp_path: Path, text: str, message: str) -> None:
    archive = make_archive(tmp_path / "a.tar.gz", {"1": text})
    with pytest.raises(DataError, match=message):
        read_physionet([archive])


def test_same_record_twice_is_an_error(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "a.tar.gz", {"1": GOOD.format(rid=1)})
    with pytest.raises(DataError, match=r"a\.tar\.gz:set-x/1\.txt: RecordID 1 was already read "
                       r"from a\.tar\.gz:set-x/1\.txt; pass each archive once"):
        read_physionet([archive, archive])


def test_archive_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"PhysioNet archive '.*missing\.tar\.gz' does not exist"):
        read_physionet([tmp_path / "missing.tar.gz"])
    not_tar = tmp_path / "x.tar.gz"
    not_tar.write_text("hello")
    with pytest.raises(DataError, match=r"'.*x\.tar\.gz' is not a readable \.tar\.gz archive"):
        read_physionet([not_tar])
    empty = make_archive(tmp_path / "e.tar.gz", {})
    with pytest.raises(DataError, match=r"no record files \(set-x/RECORDID\.txt\) found"):
        read_physionet([empty])
    with pytest.raises(DataError, match=r"`archives` is empty"):
        read_physionet([])
    with pytest.raises(DataError, match=r"`limit` must be a positive number of records or None; "
                       r"got 0"):
        read_physionet([empty], limit=0)


def test_no_measurement_in_any_record(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "a.tar.gz",
                           {"2": "Time,Parameter,Value\n00:00,RecordID,2\n00:00,Weight,-1\n"})
    with pytest.raises(DataError, match=r"none of the 1 record\(s\) read has a time-varying "
                       r"measurement"):
        read_physionet([archive])
