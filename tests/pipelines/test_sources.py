"""The data-source registry: one contract every source passes, and names read from the registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from formats.longformat import read_long, write_long
from latent_ode import collate
from latent_ode.errors import ConfigError
from pipelines.cli import build_parser, main
from pipelines.config import parse_config
from pipelines.sources import SOURCES, SourceData, get_source, source_names
from pipelines.sources.base import options_from_signature
from tests.pipelines.test_config import tiny_config
from tests.pipelines.test_physionet import make_archive

N_SERIES = 4

# Small sizes, so that the contract runs in seconds; a source not listed runs at its defaults.
TINY_OPTIONS: dict[str, dict[str, object]] = {
    "periodic": {"n_times": 12},
    "spirals": {"n_times": 10, "n_total": 60},
    "hopper": {"n_steps": 8},
}

# Two synthetic PhysioNet stays: repeated and unknown (-1) values, a static descriptor.
_STAYS = {
    "140001": "Time,Parameter,Value\n00:00,RecordID,140001\n00:00,Age,54\n00:07,HR,80\n"
              "00:07,HR,84\n00:07,Temp,-1\n01:30,Temp,36.6\n02:00,GCS,15\n",
    "140002": "Time,Parameter,Value\n00:00,RecordID,140002\n00:15,MAP,70\n00:45,HR,91\n",
}


@pytest.fixture(scope="module")
def tiny_options(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    archive = make_archive(tmp_path_factory.mktemp("physionet") / "set-x.tar.gz", _STAYS)
    return {**TINY_OPTIONS, "physionet": {"archives": [str(archive)]}}


def _load(name: str, options: dict[str, dict[str, object]], *, seed: int) -> SourceData:
    source = get_source(name)
    if not source.available():
        pytest.skip(f"{name} needs the `{source.extra}` extra ({', '.join(source.requires)})")
    return source.load(n_series=N_SERIES, seed=seed, time_unit="hours",
                       options=options.get(name, {}))


def _arrays(data: SourceData) -> list[tuple[str, np.ndarray, np.ndarray]]:
    return [(s.id, s.times, s.values) for s in data.table.series]


@pytest.mark.parametrize("name", source_names())
def test_every_source_keeps_the_contract(name: str, tiny_options, tmp_path: Path) -> None:
    source = SOURCES[name]
    assert source.name == name
    assert source.description.strip() and "\n" not in source.description
    assert source.kind in ("generated", "imported")

    data = _load(name, tiny_options, seed=3)
    table = data.table
    assert len(table) >= 1
    if source.kind == "generated":
        assert len(table) == N_SERIES
    assert table.channels and all(isinstance(c, str) and c for c in table.channels)
    assert len(set(table.channels)) == len(table.channels)
    assert len(set(table.ids)) == len(table) and all(table.ids)
    for s in table.series:
        assert s.values.shape == (len(s.times), len(table.channels))
        assert np.isfinite(s.times).all() and (np.diff(s.times) > 0).all()  # sorted, no repeats
        observed = ~np.isnan(s.values)
        np.testing.assert_array_equal(s.mask, observed)
        assert observed.any(axis=1).all()  # every time has an observation
        assert np.isfinite(s.values[observed]).all()
    # The library's batch mask is the sources' NaN pattern, series by series.
    obs = collate(table.series)
    for b, s in enumerate(table.series):
        np.testing.assert_array_equal(obs.mask[b, : len(s.times)].numpy(), ~np.isnan(s.values))
    assert data.lineage.kind and data.lineage.uri
    assert all(isinstance(v, str) for v in data.lineage.tags.values())

    # Deterministic for a seed, and the long format carries it without loss.
    again = _load(name, tiny_options, seed=3)
    assert again.table.channels == table.channels and again.table.time_unit == table.time_unit
    for (i1, t1, v1), (i2, t2, v2) in zip(_arrays(data), _arrays(again), strict=True):
        assert i1 == i2
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(v1, v2)
    back = read_long(write_long(table, tmp_path / f"{name}.parquet"))
    assert back.ids == table.ids and back.channels == table.channels
    for s, r in zip(table.series, back.series, strict=True):
        np.testing.assert_allclose(r.times, s.times, rtol=1e-12)
        np.testing.assert_array_equal(r.values, s.values)
    if source.kind == "generated":
        other = _load(name, tiny_options, seed=4)
        assert not all(np.array_equal(v1, v2) for (_, _, v1), (_, _, v2)
                       in zip(_arrays(data), _arrays(other), strict=True))


@pytest.mark.parametrize("name", source_names())
def test_every_source_names_an_unknown_option(name: str) -> None:
    takes = ", ".join(SOURCES[name].options_model.model_fields) or "no options"
    with pytest.raises(ConfigError, match=rf"bad `data\.options` for {name} \{{'bogus': 1\}}: "
                                          rf"unknown option `bogus`; {name} takes {takes}\."):
        SOURCES[name].load(n_series=1, seed=0, options={"bogus": 1})


def test_a_bad_option_value_is_named_with_its_type() -> None:
    with pytest.raises(ConfigError, match=r"bad `data\.options` for periodic \{'n_times': 'many'\}: "
                                          r"`n_times`: Input should be a valid integer"):
        get_source("periodic").load(n_series=1, seed=0, options={"n_times": "many"})


def test_get_source_lists_the_registered_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown data source 'nope'; choose one of "
                                          + ", ".join(SOURCES) + r"\."):
        get_source("nope")


def test_config_accepts_exactly_the_registered_names() -> None:
    for name in SOURCES:
        cfg = parse_config(tiny_config(data={"dataset": name, "options": {}}))
        assert cfg.data.dataset == name
    with pytest.raises(ConfigError, match=r"`data\.dataset`: unknown data source; choose one of "
                                          + ", ".join(SOURCES) + r"; got 'nope'\."):
        parse_config(tiny_config(data={"dataset": "nope", "options": {}}))


def test_config_checks_the_options_of_the_chosen_source() -> None:
    # The tiny config's periodic options, under another source.
    with pytest.raises(ConfigError, match=r"`data`: bad `data\.options` for hopper \{'n_times': "
                                          r"30\}: unknown option `n_times`; hopper takes n_steps;"):
        parse_config(tiny_config(data={"dataset": "hopper"}))
    with pytest.raises(ConfigError, match=r"`limit` only applies to dataset = 'physionet'; got "
                                          r"dataset='periodic'"):
        parse_config(tiny_config(data={"limit": 5}))
    with pytest.raises(ConfigError, match=r"`limit` is given twice"):
        parse_config(tiny_config(data={"dataset": "physionet", "limit": 5,
                                       "options": {"limit": 6}}))
    physionet = parse_config(tiny_config(data={"dataset": "physionet", "limit": 5, "options": {}}))
    assert physionet.data.source_options() == {"limit": 5}


def test_cli_generate_offers_exactly_the_registered_names(
    capsys: pytest.CaptureFixture,
) -> None:
    for name in SOURCES:
        args = build_parser().parse_args(["data", "generate", "--dataset", name, "--out", "x.csv"])
        assert args.dataset == name
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["data", "generate", "--dataset", "nope", "--out", "x.csv"])
    assert exc.value.code == 2
    choices = ", ".join(repr(n) for n in SOURCES)
    assert f"invalid choice: 'nope' (choose from {choices})" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["data", "generate", "--help"])
    help_text = capsys.readouterr().out
    for name, source in SOURCES.items():
        assert f"  {name} " in help_text and source.description[:40] in help_text


def test_cli_generate_passes_the_source_options(tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "p.csv"
    assert main(["data", "generate", "--dataset", "periodic", "--out", str(out), "--n-series",
                 "3", "--option", "n_times=7", "--option", "shared_grid=false"]) == 0
    table = read_long(out)
    assert [len(s.times) for s in table.series] == [7, 7, 7]
    assert not np.array_equal(table.series[0].times, table.series[1].times)  # own grids
    assert main(["data", "generate", "--dataset", "periodic", "--out", str(out),
                 "--option", "n_times"]) == 2
    assert "error: `--option` must be KEY=VALUE, e.g. n_times=50; got 'n_times'." in (
        capsys.readouterr().err)


def test_lineage_names_the_source_and_the_options_as_written(tiny_options) -> None:
    generated = get_source("periodic").load(n_series=2, seed=5, options={"t_max": 2, "n_times": 9})
    assert generated.lineage.kind == "generated"
    assert generated.lineage.uri == "periodic(n_series=2, seed=5)"
    # t_max stays "2" as written (not the model's 2.0), defaults are not listed.
    assert generated.lineage.tags == {"generator": "periodic", "n_series": "2", "seed": "5",
                                      "t_max": "2", "n_times": "9"}
    archive = str(Path(tiny_options["physionet"]["archives"][0]).resolve())  # type: ignore[index]
    imported = get_source("physionet").load(n_series=1, seed=0, options=tiny_options["physionet"])
    assert imported.lineage.kind == "physionet" and imported.lineage.uri == archive
    assert imported.lineage.tags == {"reader": "pipelines.sources.physionet.read_physionet",
                                     "archives": archive, "limit": "None"}
    assert imported.table.ids == ["140001", "140002"] and imported.table.time_unit == "hours"


def test_options_from_a_signature_keep_types_defaults_and_required_ones() -> None:
    def make(n_series: int, *, width: float, steps: int = 3, seed: int = 0) -> None:
        """A generator with one required option."""

    model = options_from_signature(make, name="MakeOptions")
    assert list(model.model_fields) == ["width", "steps"]  # n_series and seed are [data] keys
    assert model(width=2).model_dump() == {"width": 2.0, "steps": 3}
    with pytest.raises(ValidationError, match=r"width\n  Field required"):
        model()
    with pytest.raises(ValidationError, match=r"steps\n  Input should be a valid integer"):
        model(width=1.0, steps="x")
