"""PhysioNet/Computing in Cardiology Challenge 2012 ICU records, read straight from the archives.

Source: Silva, Moody, Scott, Celi, Mark, "Predicting In-Hospital Mortality of ICU Patients: The
PhysioNet/Computing in Cardiology Challenge 2012", Computing in Cardiology 2012;39:245-248; the
data set of the PhysioNet experiments of Rubanova, Chen, Duvenaud (NeurIPS 2019). Distributed
under the Open Data Commons Attribution License v1.0.

Each archive (``set-a.tar.gz``, ``set-b.tar.gz``) holds one text file per ICU stay,
``set-x/RECORDID.txt``, with header ``Time,Parameter,Value``; ``Time`` is ``HH:MM`` since ICU
admission. This module turns every stay into one :class:`~latent_ode.data.Series`:

- ``series_id`` = the RecordID (as text), time in hours since admission (``HH + MM / 60``, not
  rounded further);
- one channel per time-varying variable, in the order of :data:`CHANNELS` (the 37 variables of the
  challenge description, Weight included: its first value at 00:00 is the admission weight);
- several measurements of the same variable at the same time are averaged (as the paper's code
  does with ``reduce="average"``); ``-1`` (the challenge's "unknown") and absent values are
  missing (NaN); times at which no variable is observed are left out;
- the static descriptors of :data:`STATIC` come back apart, one row per series.

Values are kept as recorded: the data contain a few implausible entries (e.g. ``Temp`` of
-17.8, i.e. 0 °F) that are left for the user's cleaning step to judge.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import Field

from latent_ode.data import Series
from latent_ode.errors import DataError
from pipelines.longformat import SeriesTable
from pipelines.sources.base import DataSource, Source, SourceData, SourceKind, SourceOptions

__all__ = [
    "CHANNELS",
    "SOURCE",
    "STATIC",
    "PhysionetOptions",
    "PhysionetSource",
    "default_physionet_archives",
    "read_physionet",
]

logger = logging.getLogger(__name__)

#: The 37 time-varying variables, in the channel order of the tables this module returns.
CHANNELS: tuple[str, ...] = (
    "HR", "MAP", "SysABP", "DiasABP", "NISysABP", "NIDiasABP", "NIMAP", "Temp", "GCS",
    "RespRate", "FiO2", "MechVent", "pH", "PaCO2", "PaO2", "HCT", "K", "Platelets",
    "Creatinine", "BUN", "HCO3", "Mg", "Na", "Glucose", "WBC", "SaO2", "Lactate", "Bilirubin",
    "AST", "ALT", "ALP", "Albumin", "TroponinT", "TroponinI", "Cholesterol", "Urine", "Weight",
)  # fmt: skip

#: Static descriptors (recorded at 00:00), returned as columns of the second result.
STATIC: tuple[str, ...] = ("RecordID", "Age", "Gender", "Height", "ICUType")

_HEADER = b"Time,Parameter,Value"
_MEMBER = re.compile(r"(?:^|/)(\d+)\.txt$")
_UNKNOWN = -1.0
_COLUMNS = ["rec", "hh", "mm", "param", "value"]
_MINUTES_PER_HOUR = 60.0
_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_physionet_archives() -> list[Path]:
    """The PhysioNet 2012 archives (sets A and B) in ``../shared/data/physionet2012/`` of the repo."""
    root = _REPO_ROOT.parent / "shared" / "data" / "physionet2012"
    return [root / "set-a.tar.gz", root / "set-b.tar.gz"]


def _iter_records(
    archives: Sequence[Path], limit: int | None
) -> Iterator[tuple[str, str, bytes]]:
    """Yield ``(archive, member, text)`` of each record file, in archive order, up to ``limit``."""
    n = 0
    for archive in archives:
        archive = Path(archive)
        if not archive.is_file():
            raise DataError(
                f"PhysioNet archive {str(archive)!r} does not exist; pass the path of "
                "set-a.tar.gz or set-b.tar.gz."
            )
        try:
            tf = tarfile.open(archive, mode="r:gz")
        except (tarfile.TarError, OSError) as exc:
            raise DataError(
                f"{str(archive)!r} is not a readable .tar.gz archive ({exc}); pass the "
                "challenge's set-a.tar.gz or set-b.tar.gz as downloaded."
            ) from exc
        with tf:
            for member in tf:
                if limit is not None and n >= limit:
                    return
                if not member.isfile() or not _MEMBER.search(member.name):
                    continue
                fh = tf.extractfile(member)
                assert fh is not None  # a regular file always has a payload
                n += 1
                yield archive.name, member.name, fh.read()


def _to_rows(k: int, where: str, text: bytes) -> bytes:
    """Record ``k``'s lines as ``k,HH,MM,Parameter,Value`` (one CSV parse for all records)."""
    head, _, body = text.replace(b"\r\n", b"\n").partition(b"\n")
    if head.strip() != _HEADER:
        raise DataError(
            f"{where}: expected the header {_HEADER.decode()!r} on line 1; got "
            f"{head[:80].decode(errors='replace')!r}. Is this a PhysioNet 2012 record?"
        )
    body = body.strip(b"\n")
    if not body:
        return b""
    prefix = b"%d," % k
    # "HH:MM" -> "HH,MM": the time splits into two integer columns; no value contains ':'.
    return prefix + body.replace(b"\n", b"\n" + prefix).replace(b":", b",")


def _locate_bad_line(blob: bytes, where: list[str]) -> DataError:
    """The error for the first line of ``blob`` that is not ``k,HH,MM,Parameter,Value``."""
    lines = blob.split(b"\n")
    first_line_of: dict[int, int] = {}
    for i, line in enumerate(lines):
        fields = line.split(b",")
        k = int(fields[0])
        first_line_of.setdefault(k, i)
        ok = len(fields) == 5 and fields[1].isdigit() and fields[2].isdigit()
        if ok:
            try:
                float(fields[4])
            except ValueError:
                ok = False
        if not ok:
            # Back to the record's own text: "HH:MM,Parameter,Value", line 1 = header.
            rest = fields[1:]
            if len(rest) == 4:
                rest = [rest[0] + b":" + rest[1], *rest[2:]]
            text = b",".join(rest).decode(errors="replace")
            return DataError(
                f"{where[k]}, line {i - first_line_of[k] + 2}: expected 'HH:MM,Parameter,Value' "
                f"with a numeric value; got {text!r}. The archive may be damaged: download it "
                "again."
            )
    return DataError(
        "the PhysioNet records could not be parsed as 'HH:MM,Parameter,Value' lines; the "
        "archives may be damaged: download them again."
    )


def read_physionet(
    archives: Sequence[Path], *, limit: int | None = None
) -> tuple[SeriesTable, pd.DataFrame]:
    """Convert PhysioNet 2012 archives into a series table and a table of static descriptors.

    Reads the ``.tar.gz`` archives with :mod:`tarfile`, without extracting them to disk.

    Args:
        archives: paths of ``set-a.tar.gz`` and/or ``set-b.tar.gz`` (or any archive with the
            same layout), read in this order.
        limit: read at most this many records (the first ones in archive order); ``None`` reads
            all.

    Returns:
        ``(table, static)``: ``table`` has one series per record with at least one observed
        time-varying value, channels :data:`CHANNELS`, time unit ``hours``; ``static`` is indexed
        by ``series_id`` in the same order, with columns ``RecordID`` (int), ``Age``, ``Gender``,
        ``Height``, ``ICUType`` (float, NaN where unknown) and ``archive`` (the file it came from).

    Raises:
        DataError: an archive is missing or unreadable; a record has an unexpected header, an
            unparseable line, an unknown parameter, a time outside 00:00-48:00 or a RecordID
            seen before; ``limit`` is not positive.
    """
    if limit is not None and limit < 1:
        raise DataError(f"`limit` must be a positive number of records or None; got {limit}.")
    archives = [Path(a) for a in archives]
    if not archives:
        raise DataError("`archives` is empty; pass set-a.tar.gz and/or set-b.tar.gz.")
    start = time.perf_counter()
    chunks: list[bytes] = []
    where: list[str] = []
    origin: list[str] = []
    stems: list[str] = []
    for archive, member, text in _iter_records(archives, limit):
        k = len(where)
        where.append(f"{archive}:{member}")
        origin.append(archive)
        stems.append(_MEMBER.search(member).group(1))  # type: ignore[union-attr]
        chunk = _to_rows(k, where[-1], text)
        if chunk:
            chunks.append(chunk)
    n_records = len(where)
    if n_records == 0:
        raise DataError(
            f"no record files (set-x/RECORDID.txt) found in {[str(a) for a in archives]}; "
            "pass the challenge's set-a.tar.gz or set-b.tar.gz."
        )
    logger.info("read %d records from %d archive(s)", n_records, len(archives))

    blob = b"\n".join(chunks)
    del chunks
    try:
        rows = pd.read_csv(
            io.BytesIO(blob),
            header=None,
            names=_COLUMNS,
            dtype={"rec": np.int64, "hh": np.int64, "mm": np.int64, "param": "category",
                   "value": np.float64},
            engine="c",
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise _locate_bad_line(blob, where) from exc
    rec = rows["rec"].to_numpy()
    minute = rows["hh"].to_numpy() * 60 + rows["mm"].to_numpy()
    value = rows["value"].to_numpy()
    categories = [str(c) for c in rows["param"].cat.categories]
    pcode = rows["param"].cat.codes.to_numpy()

    bad = (minute < 0) | (minute > 48 * 60) | (rows["mm"].to_numpy() >= 60)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{where[rec[i]]}: time {rows['hh'].iloc[i]:02d}:{rows['mm'].iloc[i]:02d} is outside "
            "00:00-48:00; the challenge records cover the first 48 h of a stay."
        )
    unknown = [c for c in categories if c not in CHANNELS and c not in STATIC]
    if unknown:
        i = int(np.argmax(rows["param"].isin(unknown).to_numpy()))
        raise DataError(
            f"{where[rec[i]]}: unknown parameter {unknown[0]!r}; expected one of "
            f"{list(STATIC) + list(CHANNELS)}."
        )

    # Per-category lookups: channel index (-1 = static) and static column (-1 = channel).
    chan_of = np.array([CHANNELS.index(c) if c in CHANNELS else -1 for c in categories])
    stat_of = np.array([STATIC.index(c) if c in STATIC else -1 for c in categories])
    missing = np.isnan(value) | (value == _UNKNOWN)

    static = np.full((n_records, len(STATIC)), np.nan)
    is_static = stat_of[pcode] >= 0
    s_ok = is_static & ~missing
    # Each descriptor is recorded once per record; a repeat would overwrite (last one wins).
    static[rec[s_ok], stat_of[pcode[s_ok]]] = value[s_ok]

    obs = ~is_static & ~missing
    d = len(CHANNELS)
    if not obs.any():
        raise DataError(
            f"none of the {n_records} record(s) read has a time-varying measurement; nothing to "
            "convert."
        )
    key = rec[obs] * (48 * 60 + 1) + minute[obs]
    uniq, row_of = np.unique(key, return_inverse=True)  # rows sorted by (record, time)
    flat = row_of * d + chan_of[pcode[obs]]
    values = np.bincount(flat, weights=value[obs], minlength=len(uniq) * d)
    counts = np.bincount(flat, minlength=len(uniq) * d)
    # Mean of the measurements at the same (record, time, variable); in place: (R * D,) is big.
    with np.errstate(invalid="ignore", divide="ignore"):
        values /= counts
    values[counts == 0] = np.nan
    del counts
    values = values.reshape(len(uniq), d)  # (R, D), R = observation times of all records
    row_rec = uniq // (48 * 60 + 1)
    row_hours = (uniq % (48 * 60 + 1)) / _MINUTES_PER_HOUR

    ids = [
        stems[k] if np.isnan(static[k, 0]) else str(int(static[k, 0])) for k in range(n_records)
    ]
    seen: dict[str, int] = {}
    for k, sid in enumerate(ids):
        if sid in seen:
            raise DataError(
                f"{where[k]}: RecordID {sid} was already read from {where[seen[sid]]}; pass each "
                "archive once."
            )
        seen[sid] = k

    # Rows are sorted by record: each record's rows are one contiguous slice (views, no copies).
    bounds = np.flatnonzero(np.diff(row_rec)) + 1
    starts = np.concatenate([[0], bounds]).astype(int)
    ends = np.concatenate([bounds, [len(uniq)]]).astype(int)
    series: list[Series] = []
    kept: list[int] = []
    for a, b in zip(starts, ends, strict=True):
        k = int(row_rec[a])
        kept.append(k)
        series.append(Series(times=row_hours[a:b], values=values[a:b], id=ids[k]))
    empty = sorted(set(range(n_records)) - set(kept))
    if empty:
        logger.warning(
            "skipped %d record(s) with no time-varying measurement: %s",
            len(empty), ", ".join(ids[k] for k in empty[:20]) + (" ..." if len(empty) > 20 else ""),
        )

    frame = pd.DataFrame(static[kept], columns=list(STATIC))
    frame["RecordID"] = [int(ids[k]) for k in kept]
    frame["archive"] = [origin[k] for k in kept]
    frame.index = pd.Index([ids[k] for k in kept], name="series_id", dtype=str)
    table = SeriesTable(series=series, channels=list(CHANNELS), time_unit="hours")
    logger.info(
        "converted %d records into %d series (%d observation times) in %.1f s",
        n_records, len(series), len(uniq), time.perf_counter() - start,
    )
    return table, frame


class PhysionetOptions(SourceOptions):
    """Options of the ``physionet`` source.

    Attributes:
        archives: the archives to read, in order; ``None`` reads sets A and B from
            :func:`default_physionet_archives`.
        limit: read at most this many stays; ``None`` reads all.
    """

    archives: list[str] | None = None
    limit: int | None = Field(None, gt=0)

    def archive_paths(self) -> list[Path]:
        """The archives to read (the given ones, else the shared sets A and B)."""
        if self.archives is None:
            return default_physionet_archives()
        return [Path(a) for a in self.archives]


class PhysionetSource(Source):
    """The registry's ``physionet`` entry: :func:`read_physionet` (the static table is dropped).

    ``n_series``, ``seed`` and ``time_unit`` do not apply: every stay is read, in hours.
    """

    name: ClassVar[str] = "physionet"
    description: ClassVar[str] = (
        "PhysioNet/CinC 2012 ICU stays read from the challenge archives, 37 channels"
    )
    kind: ClassVar[SourceKind] = "imported"
    options_model = PhysionetOptions

    def _load(
        self,
        options: Any,
        *,
        given: dict[str, object],
        n_series: int,
        seed: int,
        time_unit: str,
    ) -> SourceData:
        archives = [p.resolve() for p in options.archive_paths()]
        table, _static = read_physionet(archives, limit=options.limit)
        joined = ",".join(str(a) for a in archives)
        lineage = DataSource(
            kind="physionet",
            uri=joined,
            tags={"reader": "pipelines.sources.physionet.read_physionet", "archives": joined,
                  "limit": str(options.limit)},
        )
        return SourceData(table=table, lineage=lineage)


SOURCE = PhysionetSource()
