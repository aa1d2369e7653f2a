"""Ingest: read (or generate) the series, split them by series, fit the normaliser.

The series come from the config's ``[data] path`` (a long-format file) or from the registered
source named by ``[data] dataset`` (:mod:`pipelines.sources.registry`).

The core, :func:`ingest`, needs no tracking server; :func:`save_split` / :func:`load_split` write
and read the result as a folder, which the ``ingest`` step logs as the run artifacts ``data/`` so
that ``train`` and ``evaluate`` can run on their own later::

    data/
      train.parquet  val.parquet  test.parquet   # long format (pipelines.longformat)
      split.json                                 # channels, time unit, normaliser, source, ids
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latent_ode import Normaliser, Series
from latent_ode.errors import ConfigError, DataError
from pipelines.config import PipelineConfig
from pipelines.longformat import SeriesTable, read_long, write_long
from pipelines.sources import DataSource, get_source

__all__ = [
    "SPLITS",
    "DataSource",
    "IngestResult",
    "ingest",
    "load_split",
    "save_split",
    "split_by_series",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class IngestResult:
    """The split data set, ready for training.

    Attributes:
        train, val, test: the series of each split (disjoint by series).
        channels: the D channel names.
        time_unit: the unit of every series' times.
        normaliser: fitted on ``train`` only.
        source: where the series came from.
    """

    train: list[Series]
    val: list[Series]
    test: list[Series]
    channels: list[str]
    time_unit: str
    normaliser: Normaliser
    source: DataSource

    def split(self, name: str) -> list[Series]:
        """The series of the split called ``name`` (train, val or test)."""
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def table(self, name: str) -> SeriesTable:
        """The split ``name`` as a :class:`SeriesTable`."""
        return SeriesTable(series=self.split(name), channels=self.channels, time_unit=self.time_unit)


def _load_table(cfg: PipelineConfig) -> tuple[SeriesTable, DataSource]:
    data = cfg.data
    if data.path is not None:
        path = Path(data.path).resolve()
        table = read_long(path, time_unit=data.time_unit, channels=data.channels)
        return table, DataSource(kind="file", uri=str(path))
    assert data.dataset is not None  # DataSection guarantees path xor dataset
    loaded = get_source(data.dataset).load(
        n_series=data.n_series, seed=data.seed, time_unit=data.time_unit,
        options=data.source_options(),
    )
    table = loaded.table
    if data.channels is not None:
        table = _select_channels(table, data.channels)
    return table, loaded.lineage


def _select_channels(table: SeriesTable, channels: list[str]) -> SeriesTable:
    absent = [c for c in channels if c not in table.channels]
    if absent:
        raise ConfigError(
            f"`data.channels` names {absent}, which the data set does not have; it has "
            f"{table.channels}."
        )
    idx = [table.channels.index(c) for c in channels]
    series = []
    for s in table.series:
        values = s.values[:, idx]
        keep = ~np.isnan(values).all(axis=1)
        if keep.any():
            series.append(Series(times=s.times[keep], values=values[keep], id=s.id))
    return SeriesTable(series=series, channels=list(channels), time_unit=table.time_unit)


def _drop_single_points(table: SeriesTable, *, where: str) -> SeriesTable:
    """The table without its one-time-point series, with their number logged.

    A series observed at one time has no second point to interpolate or forecast, so it adds
    nothing to training or to the held-out metrics; it is dropped rather than refused, since
    such series are common (a patient seen once) and the rest of the data is still usable.

    Raises:
        DataError: every series has a single time point.
    """
    keep = [s for s in table.series if len(s.times) >= 2]
    dropped = len(table.series) - len(keep)
    if not dropped:
        return table
    first = [s.id for s in table.series if len(s.times) < 2][:3]
    if not keep:
        raise DataError(
            f"{where}: all {dropped} series have a single time point (e.g. {first}); training "
            "needs series observed at two or more times."
        )
    logger.warning("ingest: dropped %d of %d series with a single time point (nothing to "
                   "interpolate or forecast from; e.g. %s) from %s", dropped, len(table.series),
                   first, where)
    return SeriesTable(series=keep, channels=table.channels, time_unit=table.time_unit)


def split_by_series(
    series: list[Series], *, train: float, val: float, test: float, seed: int
) -> tuple[list[Series], list[Series], list[Series]]:
    """Shuffle whole series with ``seed`` and cut them into train/val/test.

    The validation and test sizes are ``round(n * fraction)``, at least one each; training gets
    the rest. Within each split the series keep their original order.

    Raises:
        DataError: too few series for three non-empty splits.
    """
    n = len(series)
    n_val = max(1, round(n * val))
    n_test = max(1, round(n * test))
    if n - n_val - n_test < 1:
        raise DataError(
            f"the data have {n} series, too few for a train/val/test split of "
            f"{train}/{val}/{test} with at least one series in each; add series or change "
            "[data.split]."
        )
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.split(perm, [n - n_val - n_test, n - n_test])
    return tuple([series[i] for i in np.sort(p)] for p in parts)  # type: ignore[return-value]


def ingest(cfg: PipelineConfig) -> IngestResult:
    """Read or generate the data, split it by series and fit the normaliser on the train split.

    Raises:
        DataError: a bad data file (the message names the problem and the row) or too few series.
        ConfigError: a channel or generator option the data set does not have.
    """
    table, source = _load_table(cfg)
    table = _drop_single_points(table, where=source.uri)
    split = cfg.data.split
    train, val, test = split_by_series(
        table.series, train=split.train, val=split.val, test=split.test, seed=split.seed
    )
    normaliser = Normaliser.fit(train, kind=cfg.data.normalisation, channels=table.channels)
    logger.info(
        "ingest: %d series (%d train, %d val, %d test), %d channels, normalisation %s, from %s",
        len(table), len(train), len(val), len(test), len(table.channels),
        cfg.data.normalisation, source.uri,
    )
    return IngestResult(
        train=train, val=val, test=test, channels=list(table.channels),
        time_unit=table.time_unit, normaliser=normaliser, source=source,
    )


def save_split(result: IngestResult, directory: str | Path) -> Path:
    """Write the split as three long-format Parquet files plus ``split.json``.

    Returns:
        ``directory``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        write_long(result.table(name), directory / f"{name}.parquet")
    meta = {
        "channels": result.channels,
        "time_unit": result.time_unit,
        "normaliser": result.normaliser.to_dict(),
        "source": {"kind": result.source.kind, "uri": result.source.uri, "tags": result.source.tags},
        "series_ids": {name: [s.id for s in result.split(name)] for name in SPLITS},
    }
    (directory / _SPLIT_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return directory


def load_split(directory: str | Path) -> IngestResult:
    """Read a folder written by :func:`save_split`.

    Raises:
        DataError: the folder lacks ``split.json`` or one of the split files.
    """
    directory = Path(directory)
    meta_path = directory / _SPLIT_FILE
    if not meta_path.is_file():
        raise DataError(
            f"{str(directory)!r} is not an ingested data folder (no {_SPLIT_FILE}); pass the "
            "folder written by `latent-ode ingest --out DIR` or an ingest run id."
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    splits = {}
    for name in SPLITS:
        table = read_long(
            directory / f"{name}.parquet", time_unit=meta["time_unit"], channels=meta["channels"]
        )
        splits[name] = table.series
    src = meta["source"]
    return IngestResult(
        **splits, channels=list(meta["channels"]), time_unit=meta["time_unit"],
        normaliser=Normaliser.from_dict(meta["normaliser"]),
        source=DataSource(kind=src["kind"], uri=src["uri"], tags=dict(src.get("tags", {}))),
    )
