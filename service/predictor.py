"""The schema-free adapter between validated request data and :class:`latent_ode.Forecaster`.

Routes hand in the request's series as they were parsed (anything shaped like
:class:`SeriesData`); this module maps channels, converts ISO-8601 times, enforces the request
limits (:class:`Limits`, which the settings satisfy), builds :class:`latent_ode.Series` and query
arrays, and runs ``Forecaster.predict`` once for a batch of requests, handing back the library's
own :class:`latent_ode.Forecast` per series. It imports no HTTP type (the two protocols say what
it reads), and no tensor leaves it: a ``Forecast`` holds numpy arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from formats.times import TIME_UNITS, datetimes_to_float
from latent_ode import (
    DataError,
    Forecast,
    Forecaster,
    LatentODEError,
    Series,
    ShapeError,
    SolverConfig,
    SolverError,
    raise_on_failure,
)
from service.errors import InputError, SolverBudgetError

if TYPE_CHECKING:
    from service.model_store import LoadedModel

__all__ = [
    "Job",
    "Limits",
    "PreparedSeries",
    "SeriesData",
    "prepare_series",
    "resolve_sampling",
    "run_jobs",
]

logger = logging.getLogger(__name__)


class SeriesData(Protocol):
    """One series as the user sent it (already type-checked, not yet checked against the model).

    ``service.schemas.SeriesIn`` has this shape, so the parsed request flows in without a copy.

    Attributes:
        id: the user's identifier, or None.
        times: T observation times: floats in the model's time unit or ISO-8601 strings.
        values: T rows; each row has one entry per name in ``channels`` (None = not observed).
        channels: the names of the columns of ``values``, or None for the model's channels.
        query_times: Q times to answer, floats or ISO-8601 strings.
    """

    @property
    def id(self) -> str | None: ...

    @property
    def times(self) -> Sequence[float | str]: ...

    @property
    def values(self) -> Sequence[Sequence[float | None]]: ...

    @property
    def channels(self) -> Sequence[str] | None: ...

    @property
    def query_times(self) -> Sequence[float | str]: ...


class Limits(Protocol):
    """Per-request bounds; ``service.config.Settings`` has this shape and is passed as is.

    Attributes:
        max_points_per_series: most observation times per series.
        max_series_per_request: most series per request.
        max_query_times_per_series: most query times per series.
        max_horizon_span_multiple: a query may lie at most this many observed spans before the
            first or after the last observation...
        max_horizon_abs: ...or this far (model time unit), whichever allows more.
        max_encoder_steps: most Euler steps the encoder may take for one series (the encoder
            steps through every gap at the model's ``encoder_max_step``).
        default_num_samples: samples when a request names none.
        max_num_samples: most samples a request may ask for.
        seed: seed when a request names none.
    """

    @property
    def max_points_per_series(self) -> int: ...

    @property
    def max_series_per_request(self) -> int: ...

    @property
    def max_query_times_per_series(self) -> int: ...

    @property
    def max_horizon_span_multiple(self) -> float: ...

    @property
    def max_horizon_abs(self) -> float: ...

    @property
    def max_encoder_steps(self) -> int: ...

    @property
    def default_num_samples(self) -> int: ...

    @property
    def max_num_samples(self) -> int: ...

    @property
    def seed(self) -> int: ...


@dataclass(frozen=True)
class PreparedSeries:
    """A request's series, checked and converted to the library's types.

    Attributes:
        series: the observations with all of the model's D channels (NaN = not observed).
        query_times: (Q,) float64 query times in the model's time unit, in the order asked.
        index: position in the request's ``series`` list.
        id: the user's identifier, or None.
    """

    series: Series
    query_times: np.ndarray
    index: int
    id: str | None


@dataclass
class Job:
    """One request's work for the batcher: the model it was checked against and its series.

    Requests with the same model, ``num_samples`` and ``seed`` can share one predict call.
    """

    model: LoadedModel
    series: list[PreparedSeries]
    num_samples: int
    seed: int
    quantiles: tuple[float, ...]

    @property
    def key(self) -> tuple[int, int, int]:
        return (id(self.model), self.num_samples, self.seed)


def _where(index: int, series_id: str | None) -> str:
    """``series[3]`` or ``series[3] ('bed-7')``: how messages name a series of the request."""
    return f"series[{index}]" + (f" ({series_id!r})" if series_id else "")


def resolve_sampling(num_samples: int | None, seed: int | None, limits: Limits) -> tuple[int, int]:
    """The request's sample count and seed with the defaults applied.

    Raises:
        InputError: more samples than allowed.
    """
    n = limits.default_num_samples if num_samples is None else num_samples
    if n > limits.max_num_samples:
        raise InputError(
            f"`num_samples` is {n}; the maximum is {limits.max_num_samples} "
            "(LATENT_ODE_MAX_NUM_SAMPLES); ask for fewer samples."
        )
    return n, limits.seed if seed is None else seed


def _to_float_times(
    raw: Sequence[float | str], *, field: str, time_unit: str
) -> np.ndarray:
    """Numbers pass through; ISO-8601 strings become float ``time_unit`` since the Unix epoch.

    ``field`` names the list in messages, e.g. ``series[0]: `times```.
    """
    kinds = {isinstance(t, str) for t in raw}
    if kinds == {True, False}:
        i = next(k for k, t in enumerate(raw) if isinstance(t, str) != isinstance(raw[0], str))
        raise InputError(
            f"{field} mixes numbers and ISO-8601 strings (index 0 is {raw[0]!r}, index {i} is "
            f"{raw[i]!r}); use one kind for all times of a series."
        )
    if kinds != {True}:
        return np.asarray(raw, dtype=np.float64)
    if time_unit not in TIME_UNITS:
        raise InputError(
            f"{field} holds ISO-8601 strings but this model's time unit {time_unit!r} is not a "
            f"calendar unit ({', '.join(TIME_UNITS)}); send numbers in {time_unit}."
        )
    try:
        return datetimes_to_float(list(raw), time_unit)
    except DataError as exc:
        raise InputError(f"{field}: {exc}") from exc


def _check_count(
    n: int, limit: int, *, field: str, what: tuple[str, str], setting: str, fix: str
) -> None:
    """``field`` names the list in messages; ``what`` is the (singular, plural) counted noun."""
    if n == 0:
        raise InputError(f"{field} is empty; send at least one {what[0]}.")
    if n > limit:
        raise InputError(f"{field} has {n} {what[1]}; the limit is {limit} ({setting}); {fix}.")


def prepare_series(
    inputs: Sequence[SeriesData],
    *,
    channels: Sequence[str],
    time_unit: str,
    time_scale: float,
    encoder_max_step: float,
    limits: Limits,
) -> list[PreparedSeries]:
    """Check a request's series against the model and the limits, and convert them.

    Args:
        inputs: the request's series.
        channels: the model's D channel names, in its order.
        time_unit: the model's time unit.
        time_scale: the model's time normaliser (model time units per normalised unit).
        encoder_max_step: the encoder's longest Euler step in normalised time.
        limits: the request bounds.

    Returns:
        One :class:`PreparedSeries` per input.

    Raises:
        InputError: with the series index, the field, the value received and how to fix it.
    """
    _check_count(
        len(inputs), limits.max_series_per_request, field="`series`", what=("series", "series"),
        setting="LATENT_ODE_MAX_SERIES_PER_REQUEST", fix="split the request",
    )
    position = {name: j for j, name in enumerate(channels)}
    prepared = []
    for i, item in enumerate(inputs):
        where = _where(i, item.id)
        _check_count(
            len(item.times), limits.max_points_per_series, field=f"{where}: `times`",
            what=("observation", "observations"), setting="LATENT_ODE_MAX_POINTS_PER_SERIES",
            fix="send fewer, or split the series",
        )
        _check_count(
            len(item.query_times), limits.max_query_times_per_series,
            field=f"{where}: `query_times`", what=("query time", "query times"),
            setting="LATENT_ODE_MAX_QUERY_TIMES_PER_SERIES", fix="split the queries over requests",
        )
        columns = _columns(item, where, channels, position)
        values = _values(item, where, columns, len(channels))
        times = _to_float_times(item.times, field=f"{where}: `times`", time_unit=time_unit)
        queries = _to_float_times(
            item.query_times, field=f"{where}: `query_times`", time_unit=time_unit
        )
        try:
            # No id here: the library would name the series again in its message.
            series = Series(times=times, values=values)
        except (DataError, ShapeError) as exc:
            raise InputError(f"{where}: {exc}") from exc
        _check_horizon(series, queries, where, limits)
        _check_encoder_work(series, queries, where, time_scale, encoder_max_step, limits)
        prepared.append(PreparedSeries(series=series, query_times=queries, index=i, id=item.id))
    return prepared


def _columns(
    item: SeriesData, where: str, channels: Sequence[str], position: dict[str, int]
) -> list[int]:
    """Model channel index of each column of ``values``."""
    if item.channels is None:
        return list(range(len(channels)))
    if len(item.channels) == 0:
        raise InputError(
            f"{where}: `channels` is empty; name the columns of `values`, or leave `channels` out "
            f"to use the model's channels {list(channels)}."
        )
    columns = []
    seen: set[str] = set()
    for k, name in enumerate(item.channels):
        if name not in position:
            raise InputError(
                f"{where}: `channels[{k}]` is {name!r}, which is not a channel of this model; "
                f"the model's channels are {list(channels)}."
            )
        if name in seen:
            raise InputError(
                f"{where}: `channels[{k}]` repeats {name!r}; name each channel once."
            )
        seen.add(name)
        columns.append(position[name])
    return columns


def _values(item: SeriesData, where: str, columns: list[int], d: int) -> np.ndarray:
    """(T, D) float64 with NaN where not observed, columns in the model's order."""
    if len(item.values) != len(item.times):
        raise InputError(
            f"{where}: `values` has {len(item.values)} rows but `times` has {len(item.times)}; "
            "send one row per observation time."
        )
    width = len(columns)
    named = "`channels`" if item.channels is not None else "the model's channels"
    for r, row in enumerate(item.values):
        if len(row) != width:
            raise InputError(
                f"{where}: `values[{r}]` has {len(row)} columns; expected {width}, one per entry "
                f"of {named} (see GET /v1/model), with null where not observed."
            )
    # numpy turns None (not observed) into NaN for a float dtype; rows are rectangular here.
    raw = np.array(item.values, dtype=np.float64).reshape(len(item.values), width)
    values = np.full((len(item.values), d), np.nan)
    values[:, columns] = raw
    return values


def _check_horizon(series: Series, queries: np.ndarray, where: str, limits: Limits) -> None:
    first, last = float(series.times[0]), float(series.times[-1])
    span = last - first
    allowed = max(limits.max_horizon_span_multiple * span, limits.max_horizon_abs)
    bad = (queries < first - allowed) | (queries > last + allowed)
    if bad.any():
        k = int(np.argmax(bad))
        q = float(queries[k])
        side = "after the last" if q > last else "before the first"
        raise InputError(
            f"{where}: `query_times[{k}]` is {q:g}, {abs(q - (last if q > last else first)):g} "
            f"{side} observation; queries may lie at most {allowed:g} outside the observed window "
            f"[{first:g}, {last:g}] (LATENT_ODE_MAX_HORIZON_SPAN_MULTIPLE = "
            f"{limits.max_horizon_span_multiple:g} x span {span:g}, or LATENT_ODE_MAX_HORIZON_ABS"
            f" = {limits.max_horizon_abs:g}); ask for nearer times."
        )


def _check_encoder_work(
    series: Series,
    queries: np.ndarray,
    where: str,
    time_scale: float,
    max_step: float,
    limits: Limits,
) -> None:
    """Bound the encoder's Euler steps, which grow with the gaps between observations."""
    t0 = min(float(series.times[0]), float(queries.min()))
    gaps = np.append(np.diff(series.times), series.times[0] - t0) / time_scale
    steps = int(np.ceil(gaps[gaps > 0] / max_step).sum()) + len(series.times)
    if steps > limits.max_encoder_steps:
        raise InputError(
            f"{where}: `times` spans {float(series.times[-1] - t0):g} time units, which the "
            f"encoder would need {steps} steps to read; the limit is {limits.max_encoder_steps} "
            "(LATENT_ODE_MAX_ENCODER_STEPS). The model was trained on spans of about "
            f"{time_scale:g}; send a shorter window of observations."
        )


def _failure(job: Job, forecasts: Sequence[Forecast]) -> SolverBudgetError | None:
    """The error for a request with series the library could not answer (None if it has none).

    Named after the request's own series (``series[1] ('s0')``) and the commonest of their
    reasons, with that reason's message from the library.
    """
    try:
        raise_on_failure(forecasts)  # the library's own choice of the reason to name
    except SolverError as exc:
        failing, reason = list(exc.series), exc.reason
    else:
        return None
    names = ", ".join(_where(job.series[k].index, job.series[k].id) for k in failing)
    message = next(forecasts[k].message for k in failing if forecasts[k].status == reason)
    if reason == "max_steps":
        detail = (
            f"the ODE solver could not answer {names} within its budget ({reason}): {message} "
            "The step limit is LATENT_ODE_SOLVER_MAX_STEPS; ask for query times nearer the "
            "observations, or send fewer series in this request."
        )
    else:
        detail = (
            f"the model could not forecast {names} ({reason}): {message} Ask for query times "
            "nearer the observations, or send values and times like those the model was "
            "trained on."
        )
    return SolverBudgetError(detail, series=failing)


def run_jobs(
    forecaster: Forecaster, jobs: Sequence[Job], *, solver: SolverConfig
) -> list[list[Forecast] | Exception]:
    """Answer several requests with one ``Forecaster.predict`` call (blocking; run in a thread).

    All jobs must share ``num_samples`` and ``seed`` (see :attr:`Job.key`). The batch is solved
    once: a series the library could not answer (``Forecast.status``) fails only its own request
    (:class:`SolverBudgetError`), and the other requests keep the answers of that same solve.
    A library error raised for the whole call (inputs that passed this module's checks but not
    the library's, which would be a bug here) cannot be attributed to a series, so then each
    request is answered alone and only the offending one fails.

    Returns:
        Per job, its forecasts (one per series, in order) or the exception to raise for it.
    """
    owners = [(j, k) for j, job in enumerate(jobs) for k in range(len(job.series))]
    levels = sorted({q for job in jobs for q in job.quantiles})
    try:
        forecasts = forecaster.predict(
            [jobs[j].series[k].series for j, k in owners],
            [jobs[j].series[k].query_times for j, k in owners],
            num_samples=jobs[0].num_samples,
            quantiles=levels,
            seed=jobs[0].seed,
            solver=solver,
        )
    except LatentODEError as exc:
        if len(jobs) == 1:
            return [InputError(str(exc))]
        return [run_jobs(forecaster, [job], solver=solver)[0] for job in jobs]
    per_job: list[list[Forecast]] = [[] for _ in jobs]
    for (j, _), fc in zip(owners, forecasts, strict=True):
        per_job[j].append(fc)
    results: list[list[Forecast] | Exception] = []
    for job, answers in zip(jobs, per_job, strict=True):
        error = _failure(job, answers)
        results.append(answers if error is None else error)
    return results
