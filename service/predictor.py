"""The schema-free adapter between validated request data and :class:`latent_ode.Forecaster`.

Routes hand in the request's series as they were parsed (anything shaped like
:class:`SeriesData`); this module maps channels, converts ISO-8601 times, enforces the request
limits (:class:`Limits`, which the settings satisfy), builds :class:`latent_ode.Series` and query
arrays, and runs ``Forecaster.predict`` once for a batch of requests, handing back the library's
own :class:`latent_ode.Forecast` per series. It imports no HTTP type (the two protocols say what
it reads), and no tensor leaves it: a ``Forecast`` holds numpy arrays.
"""

from __future__ import annotations

import dataclasses
import functools
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
    Normaliser,
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
    "SOLVER_PRESETS",
    "Job",
    "Limits",
    "SolverRequest",
    "PreparedSeries",
    "SeriesData",
    "check_encoder_budget",
    "check_work_budget",
    "merge_pieces",
    "padding_groups",
    "prepare_series",
    "resolve_sampling",
    "resolve_solver",
    "run_jobs",
    "served_solver",
    "split_job",
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
        max_horizon_abs: ...or this far (model time unit)...
        max_horizon_trained_spans: ...or this many of the model's trained spans (its time
            scale), whichever allows most.
        max_encoder_steps: most Euler steps the encoder may take for one series (the encoder
            steps through every gap at the model's ``encoder_max_step``).
        max_abs_normalised_value: most |value - loc| / scale of an observation.
        max_request_work: most sum over series of Q x samples per request.
        max_request_encoder_steps: most encoder steps per request, summed over series.
        max_answer_values: most numbers in an answer (sum of Q x D x (2 + quantile levels)).
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
    def max_horizon_trained_spans(self) -> float: ...

    @property
    def max_encoder_steps(self) -> int: ...

    @property
    def max_abs_normalised_value(self) -> float: ...

    @property
    def max_request_work(self) -> int: ...

    @property
    def max_request_encoder_steps(self) -> int: ...

    @property
    def max_answer_values(self) -> int: ...

    @property
    def default_num_samples(self) -> int: ...

    @property
    def max_num_samples(self) -> int: ...

    @property
    def seed(self) -> int: ...

    @property
    def solver_max_steps(self) -> int: ...

    @property
    def solver_min_rtol(self) -> float: ...

    @property
    def solver_min_atol(self) -> float: ...

    @property
    def max_request_solver_work(self) -> int: ...


class SolverRequest(Protocol):
    """A request's ``solver`` (``service.schemas.SolverIn`` has this shape): a preset and/or
    explicit values, each None when not given."""

    @property
    def preset(self) -> str | None: ...

    @property
    def rtol(self) -> float | None: ...

    @property
    def atol(self) -> float | None: ...

    @property
    def max_steps(self) -> int | None: ...


#: The named presets: factors on the served tolerances (rtol, atol). ``fast`` loosens them
#: threefold, ``accurate`` tightens them a hundredfold (never past the settings' bounds). On the
#: demo model (bench/solver_knob.py) x3 saves 16% of the function evaluations for 0.2% more
#: MSE; x10 saved 26% for 12% more, past the knee.
SOLVER_PRESETS: dict[str, float] = {"fast": 3.0, "default": 1.0, "accurate": 0.01}


@dataclass(frozen=True)
class PreparedSeries:
    """A request's series, checked and converted to the library's types.

    Attributes:
        series: the observations with all of the model's D channels (NaN = not observed).
        query_times: (Q,) float64 query times in the model's time unit, in the order asked.
        index: position in the request's ``series`` list.
        id: the user's identifier, or None.
        encoder_steps: the encoder steps reading it takes (its share of the request's budget).
        positions: in a piece of a series (:func:`split_job`), the positions in the series'
            own ``query_times`` that the first ``len(positions)`` answers fill (the remaining
            ones are pins, not answers); None: answers every query, in order.
    """

    series: Series
    query_times: np.ndarray
    index: int
    id: str | None
    encoder_steps: int = 0
    positions: np.ndarray | None = None


#: A series' cost beyond its query times, in query times (per sample): its share of the
#: solve and of the encoder. Measured on the default model (2026-11-30, one CPU thread): a
#: request of 1 series x 50 query times x 32 samples costs about what 1 x 110 x 32 costs.
SERIES_OVERHEAD = 64


@dataclass
class Job:
    """One request's work for the batcher: the model it was checked against and its series.

    Requests with the same model, ``num_samples``, ``seed`` and solver settings can share one
    predict call.

    Attributes:
        solver: the solver settings of this request; None: the runner's default.
    """

    model: LoadedModel
    series: list[PreparedSeries]
    num_samples: int
    seed: int
    quantiles: tuple[float, ...]
    solver: SolverConfig | None = None

    @property
    def key(self) -> tuple[int, int, int, SolverConfig | None]:
        return (id(self.model), self.num_samples, self.seed, self.solver)

    @functools.cached_property
    def work(self) -> int:
        """Its cost for the fair queue (computed once): samples x (query times + :data:`SERIES_OVERHEAD`) per
        series, plus the encoder's steps."""
        return sum(series_work(p.query_times.size, p.encoder_steps, self.num_samples)
                   for p in self.series)


def series_work(queries: int, encoder_steps: int, num_samples: int) -> int:
    """One series' cost: ``num_samples x (queries + SERIES_OVERHEAD) + encoder_steps``."""
    return num_samples * (queries + SERIES_OVERHEAD) + encoder_steps


def split_job(job: Job, max_work: int) -> list[Job]:
    """Split a job into pieces of at most ``max_work`` (:attr:`Job.work`) where it can, so that
    the batcher can interleave other requests between them.

    Consecutive series are packed into one piece while it stays within ``max_work``. A series
    that alone exceeds it is answered in slices of its query times (in ascending time order),
    each slice with two *pins*: the series' earliest and latest query times. The library solves
    every series from the earlier of its first observation and its earliest query to its latest
    query, so with the pins every slice is solved over the same span, from the same encoding,
    as the whole series; the answers are those of the whole (up to float rounding), and
    :func:`merge_pieces` drops the pins' rows.

    Args:
        job: a request's job.
        max_work: the most work per piece (a series too costly even for one query time per
            slice still gets slices of one query time).

    Returns:
        The pieces, in order; ``[job]`` when it fits.
    """
    if job.work <= max_work:
        return [job]
    pieces: list[Job] = []
    current: list[PreparedSeries] = []
    total = 0
    for p in job.series:
        cost = series_work(p.query_times.size, p.encoder_steps, job.num_samples)
        if current and total + cost > max_work:
            pieces.append(dataclasses.replace(job, series=current))
            current, total = [], 0
        if cost <= max_work:
            current.append(p)
            total += cost
            continue
        pieces.extend(dataclasses.replace(job, series=[s]) for s in _slices(p, job, max_work))
    if current:
        pieces.append(dataclasses.replace(job, series=current))
    return pieces


def _slices(p: PreparedSeries, job: Job, max_work: int) -> list[PreparedSeries]:
    """One long series as pieces of its query times, each with the two pins."""
    order = np.argsort(p.query_times, kind="stable")
    pins = p.query_times[[order[0], order[-1]]]
    per_slice = max(1, (max_work - p.encoder_steps) // job.num_samples - SERIES_OVERHEAD - 2)
    return [
        dataclasses.replace(p, query_times=np.concatenate([p.query_times[chunk], pins]),
                            positions=chunk)
        for chunk in (order[k:k + per_slice] for k in range(0, order.size, per_slice))
    ]


def merge_pieces(job: Job, pieces: Sequence[Job], answers: Sequence[list[Forecast]]
                 ) -> list[Forecast]:
    """A job's forecasts, one per series in order, from its pieces' (:func:`split_job`).

    A series answered in slices gets its rows back in the order asked; its solver statistics
    are those of its costliest slice (each slice solved the whole span).
    """
    if len(pieces) == 1 and pieces[0] is job:
        return list(answers[0])
    whole: dict[int, Forecast] = {}
    parts: dict[int, list[tuple[np.ndarray, Forecast]]] = {}
    for piece, forecasts in zip(pieces, answers, strict=True):
        for p, forecast in zip(piece.series, forecasts, strict=True):
            if p.positions is None:
                whole[p.index] = forecast
            else:
                parts.setdefault(p.index, []).append((p.positions, forecast))
    out = []
    for p in job.series:
        if p.index in whole:
            out.append(whole[p.index])
        else:
            out.append(_join(p, parts[p.index]))
    return out


def _join(p: PreparedSeries, parts: list[tuple[np.ndarray, Forecast]]) -> Forecast:
    """One series' forecast from its slices' (each slice's first len(positions) rows)."""
    q = p.query_times.size
    first = parts[0][1]
    d = first.mean.shape[1]
    mean, std = np.empty((q, d)), np.empty((q, d))
    quantiles = {level: np.empty((q, d)) for level in first.quantiles}
    mode: list[str] = [""] * q
    for positions, fc in parts:
        n = positions.size
        mean[positions] = fc.mean[:n]
        std[positions] = fc.std[:n]
        for level, values in quantiles.items():
            values[positions] = fc.quantiles[level][:n]
        for k, position in enumerate(positions.tolist()):
            mode[position] = fc.mode[k]
    stats = max((fc.stats for _, fc in parts), key=lambda s: s.nfe)
    return Forecast(query_times=p.query_times.copy(), mode=mode, mean=mean, std=std,
                    quantiles=quantiles, stats=stats)


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


def served_solver(own: SolverConfig, *, rtol: float | None, atol: float | None,
                  max_steps: int) -> SolverConfig:
    """The solver settings a model is served with by default: its own method and tolerances
    (those it was trained and evaluated at) unless the settings name others (``rtol``,
    ``atol``: None keeps the model's), and the service's step limit."""
    return dataclasses.replace(
        own,
        rtol=rtol if rtol is not None else own.rtol,
        atol=atol if atol is not None else own.atol,
        max_steps=max_steps,
    )


def resolve_solver(requested: SolverRequest | None, served: SolverConfig, *, series: int,
                   num_samples: int, limits: Limits) -> tuple[SolverConfig, str | None]:
    """A request's solver settings: the served ones, a preset of them, explicit values, bounded.

    The preset (``SOLVER_PRESETS``) scales the served tolerances, clamped to the settings'
    tightest (``solver_min_rtol``, ``solver_min_atol``) and to 0.1 at the loose end; explicit
    ``rtol``, ``atol`` and ``max_steps`` replace the preset's. The request's worst-case solver
    work, series x samples x max_steps, must fit ``max_request_solver_work``.

    Args:
        requested: the request's ``solver`` (None: the served settings).
        served: the service's settings for this model (its own tolerances unless the settings
            override them, and ``solver_max_steps``).
        series: the request's number of series.
        num_samples: its samples.
        limits: the bounds.

    Returns:
        The settings to solve with, and the preset's name (None when none was named).

    Raises:
        InputError: a tolerance tighter or a step limit larger than the settings allow, or a
            solver budget exceeded; the message names the bound and its setting.
    """
    preset = requested.preset if requested is not None else None
    factor = SOLVER_PRESETS[preset or "default"]
    rtol = min(max(served.rtol * factor, limits.solver_min_rtol), max(served.rtol, 0.1))
    atol = min(max(served.atol * factor, limits.solver_min_atol), max(served.atol, 0.1))
    max_steps = served.max_steps
    if requested is not None:
        for name, value, bound in (("rtol", requested.rtol, limits.solver_min_rtol),
                                   ("atol", requested.atol, limits.solver_min_atol)):
            if value is not None and value < bound:
                raise InputError(
                    f"`solver.{name}` is {value:g}; the tightest this service allows is "
                    f"{bound:g} (LATENT_ODE_SOLVER_MIN_{name.upper()}); ask for a looser "
                    "tolerance, or the preset 'accurate'."
                )
        if requested.max_steps is not None and requested.max_steps > limits.solver_max_steps:
            raise InputError(
                f"`solver.max_steps` is {requested.max_steps}; the most this service allows is "
                f"{limits.solver_max_steps} (LATENT_ODE_SOLVER_MAX_STEPS); ask for fewer steps."
            )
        rtol = requested.rtol if requested.rtol is not None else rtol
        atol = requested.atol if requested.atol is not None else atol
        max_steps = requested.max_steps if requested.max_steps is not None else max_steps
    work = series * num_samples * max_steps
    if work > limits.max_request_solver_work:
        per_request = limits.max_request_solver_work // (num_samples * max_steps)
        fix = (f"Split it into requests of at most {per_request} series, or ask for fewer "
               "samples or a smaller `solver.max_steps`." if per_request >= 1 else
               "Ask for fewer samples or a smaller `solver.max_steps` (one series alone "
               "exceeds it).")
        raise InputError(
            f"this request may take the ODE solver up to {series} series x {num_samples} "
            f"samples x {max_steps} steps = {work} steps; the budget is "
            f"{limits.max_request_solver_work} per request (LATENT_ODE_MAX_REQUEST_SOLVER_WORK). "
            + fix
        )
    config = dataclasses.replace(served, rtol=rtol, atol=atol, max_steps=max_steps)
    return config, preset


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


class _Shown:
    """How messages show a series' times: as sent (an ISO string stays a string), not as the
    float time units the predictor computes with."""

    def __init__(self, times: Sequence[float | str], queries: Sequence[float | str]) -> None:
        self.times, self.queries = times, queries

    @staticmethod
    def _one(value: float | str) -> str:
        return repr(value) if isinstance(value, str) else str(float(value))

    def time(self, k: int) -> str:
        return self._one(self.times[k])

    def query(self, k: int) -> str:
        return self._one(self.queries[k])


def _check_increasing(times: np.ndarray, where: str, shown: _Shown) -> None:
    """``times`` strictly increasing, named as sent (the library would show floats)."""
    steps = np.diff(times)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0)) + 1
        what = "a duplicate of" if steps[i - 1] == 0 else "after"
        raise InputError(
            f"{where}: `times` must be strictly increasing; got {shown.time(i)} {what} "
            f"{shown.time(i - 1)} at index {i}. Sort the observations and merge duplicate times."
        )


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
    normaliser: Normaliser | None = None,
) -> list[PreparedSeries]:
    """Check a request's series against the model and the limits, and convert them.

    Args:
        inputs: the request's series.
        channels: the model's D channel names, in its order.
        time_unit: the model's time unit.
        time_scale: the model's time normaliser (model time units per normalised unit: the
            longest span it was trained on).
        encoder_max_step: the encoder's longest Euler step in normalised time.
        limits: the request bounds.
        normaliser: the model's normaliser; when given, values beyond
            ``limits.max_abs_normalised_value`` of its scales are refused.

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
            fix="send fewer, or split the series into consecutive windows of at most "
            f"{limits.max_points_per_series} observations",
        )
        _check_count(
            len(item.query_times), limits.max_query_times_per_series,
            field=f"{where}: `query_times`", what=("query time", "query times"),
            setting="LATENT_ODE_MAX_QUERY_TIMES_PER_SERIES", fix="split the queries over requests",
        )
        columns = _columns(item, where, channels, position)
        values = _values(item, where, columns, len(channels))
        if normaliser is not None:
            _check_magnitude(values, where, channels, normaliser, limits)
        times = _to_float_times(item.times, field=f"{where}: `times`", time_unit=time_unit)
        queries = _to_float_times(
            item.query_times, field=f"{where}: `query_times`", time_unit=time_unit
        )
        shown = _Shown(item.times, item.query_times)
        _check_increasing(times, where, shown)
        try:
            # No id here: the library would name the series again in its message.
            series = Series(times=times, values=values)
        except (DataError, ShapeError) as exc:
            raise InputError(f"{where}: {exc}") from exc
        _check_horizon(series, queries, where, shown, limits, time_scale)
        steps = _check_encoder_work(series, queries, where, time_scale, encoder_max_step, limits)
        prepared.append(PreparedSeries(series=series, query_times=queries, index=i, id=item.id,
                                       encoder_steps=steps))
    return prepared


def check_work_budget(
    queries: int, *, num_samples: int, num_quantiles: int, num_channels: int, limits: Limits,
) -> int:
    """Bound a request's total work and answer size, which the per-series limits do not (their
    product). Needs only counts, so it runs before anything is converted.

    Two budgets, each refused with the request's figures and how to split: the decoder's work
    (query times x samples, summed over series) and the answer's size (query times x channels x
    (mean, std and each quantile level)).

    Args:
        queries: the request's query times, summed over its series.
        num_samples: its samples.
        num_quantiles: its distinct quantile levels.
        num_channels: the model's D.
        limits: the budgets.

    Returns:
        The number of values the answer will hold.

    Raises:
        InputError: a budget is exceeded.
    """
    work = queries * num_samples
    if work > limits.max_request_work:
        per_request = max(1, limits.max_request_work // num_samples)
        raise InputError(
            f"this request asks for {queries} query times x {num_samples} samples = {work} "
            f"units of work; the budget is {limits.max_request_work} per request "
            f"(LATENT_ODE_MAX_REQUEST_WORK). Split it into requests of at most {per_request} "
            f"query times in all at {num_samples} samples, or ask for fewer samples."
        )
    numbers = queries * num_channels * (2 + num_quantiles)
    if numbers > limits.max_answer_values:
        per_request = max(1, limits.max_answer_values // (num_channels * (2 + num_quantiles)))
        raise InputError(
            f"the answer to this request would hold {numbers} numbers ({queries} query times x "
            f"{num_channels} channels x (mean, std and {num_quantiles} quantile levels)); the "
            f"limit is {limits.max_answer_values} (LATENT_ODE_MAX_ANSWER_VALUES). Split it into "
            f"requests of at most {per_request} query times in all, or ask for fewer quantiles."
        )
    return numbers


def check_encoder_budget(prepared: Sequence[PreparedSeries], limits: Limits) -> None:
    """Bound the encoder's steps over all of a request's series (known once they are prepared).

    Raises:
        InputError: the budget is exceeded, with the request's figure and how to split.
    """
    steps = sum(p.encoder_steps for p in prepared)
    if steps > limits.max_request_encoder_steps:
        raise InputError(
            f"reading this request's {len(prepared)} series takes the encoder {steps} steps; the "
            f"budget is {limits.max_request_encoder_steps} per request "
            "(LATENT_ODE_MAX_REQUEST_ENCODER_STEPS). Split the series over several requests "
            "(each series' steps: one per observation plus one per encoder step of its gaps)."
        )


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


def _check_magnitude(
    values: np.ndarray, where: str, channels: Sequence[str], normaliser: Normaliser,
    limits: Limits,
) -> None:
    """Refuse observations too far from anything the model saw: it computes in float32, where
    1e308 overflows, and long before that its answer means nothing."""
    with np.errstate(over="ignore", invalid="ignore"):
        z = np.abs((values - normaliser.loc) / normaliser.scale)
    bad = z > limits.max_abs_normalised_value  # NaN (not observed) compares False
    if bad.any():
        r, c = (int(k) for k in np.argwhere(bad)[0])
        low = normaliser.loc[c] - limits.max_abs_normalised_value * normaliser.scale[c]
        high = normaliser.loc[c] + limits.max_abs_normalised_value * normaliser.scale[c]
        raise InputError(
            f"{where}: `values[{r}]` has {values[r, c]:g} for channel {channels[c]!r}, which is "
            f"{z[r, c]:.3g} of the model's scales ({normaliser.scale[c]:g}) from its location "
            f"({normaliser.loc[c]:g}); values of this channel must lie in [{low:.6g}, "
            f"{high:.6g}] (LATENT_ODE_MAX_ABS_NORMALISED_VALUE = "
            f"{limits.max_abs_normalised_value:g}). Check the value and its unit."
        )


def _check_horizon(
    series: Series, queries: np.ndarray, where: str, shown: _Shown, limits: Limits,
    time_scale: float,
) -> None:
    first, last = float(series.times[0]), float(series.times[-1])
    span = last - first
    allowed = max(
        limits.max_horizon_span_multiple * span,
        limits.max_horizon_trained_spans * time_scale,
        limits.max_horizon_abs,
    )
    bad = (queries < first - allowed) | (queries > last + allowed)
    if bad.any():
        k = int(np.argmax(bad))
        q = float(queries[k])
        side = "after the last" if q > last else "before the first"
        raise InputError(
            f"{where}: `query_times[{k}]` is {shown.query(k)}, "
            f"{abs(q - (last if q > last else first)):g} {side} observation; queries may lie at "
            f"most {allowed:g} outside the observed window [{shown.time(0)}, "
            f"{shown.time(len(shown.times) - 1)}], the largest of LATENT_ODE_MAX_HORIZON_SPAN_"
            f"MULTIPLE = {limits.max_horizon_span_multiple:g} x span {span:g}, "
            f"LATENT_ODE_MAX_HORIZON_TRAINED_SPANS = {limits.max_horizon_trained_spans:g} x the "
            f"model's trained span {time_scale:g}, and LATENT_ODE_MAX_HORIZON_ABS = "
            f"{limits.max_horizon_abs:g}; ask for nearer times."
        )


def _count(x: float) -> str:
    """A step count: exact while float64 holds it exactly, else in scientific notation."""
    return str(int(x)) if x < 2**53 else f"{x:.3g}"


def _check_encoder_work(
    series: Series,
    queries: np.ndarray,
    where: str,
    time_scale: float,
    max_step: float,
    limits: Limits,
) -> int:
    """Bound the encoder's Euler steps, which grow with the gaps between observations.

    Counted in float64 with overflow allowed (a time of 1e308 makes an infinite count, which is
    refused like any other), so no time can overflow the count itself.

    Returns:
        The steps reading the series takes.
    """
    t0 = min(float(series.times[0]), float(queries.min()))
    with np.errstate(over="ignore", invalid="ignore"):
        gaps = np.append(np.diff(series.times), series.times[0] - t0) / time_scale
        gap_steps = float(np.ceil(gaps[gaps > 0] / max_step).sum())
    n = len(series.times)
    steps = gap_steps + n
    if not steps <= limits.max_encoder_steps:
        per_step = max_step * time_scale
        raise InputError(
            f"{where}: reading this series takes the encoder {_count(steps)} steps ({n} "
            f"observations plus {_count(gap_steps)} steps of at most {per_step:g} time units "
            f"through the gaps between them, over {float(series.times[-1]) - t0:g} time units); the limit is "
            f"{limits.max_encoder_steps} (LATENT_ODE_MAX_ENCODER_STEPS). Split the series into "
            "consecutive windows that each need fewer steps (fewer observations, a shorter "
            f"span: the model was trained on spans of about {time_scale:g})."
        )
    return int(steps)


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


def padding_groups(sizes: Sequence[int]) -> list[list[int]]:
    """Split a batch's series into predict calls that pad little.

    The library pads every series of a call to the call's most query times (and steps its
    encoder over the longest series), so one series with 10,000 query times in a batch of 64
    would make the 63 others cost as much as it: one client's large requests would cut everyone
    else's throughput. Sorted by size, a group closes when padding would more than double its
    work; equal-sized series (the common case) stay in one call.

    Args:
        sizes: per series, its padded work (query times plus encoder steps).

    Returns:
        Groups of indices into ``sizes``, each group in ascending size.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    total = 0
    for i in sorted(range(len(sizes)), key=sizes.__getitem__):
        if current and sizes[i] * (len(current) + 1) > 2 * (total + sizes[i]):
            groups.append(current)
            current, total = [], 0
        current.append(i)
        total += sizes[i]
    if current:
        groups.append(current)
    return groups


def run_jobs(
    forecaster: Forecaster, jobs: Sequence[Job], *, solver: SolverConfig
) -> list[list[Forecast] | Exception]:
    """Answer several requests with as few ``Forecaster.predict`` calls as padding allows
    (blocking; run in a thread).

    All jobs must share ``num_samples``, ``seed`` and solver settings (see :attr:`Job.key`);
    ``solver`` is used where the jobs name none (:attr:`Job.solver`). Series of very
    different sizes go to separate calls (:func:`padding_groups`); the library answers each
    series independently of its batch, so this changes no answer. The batch is solved
    once: a series the library could not answer (``Forecast.status``) fails only its own request
    (:class:`SolverBudgetError`), and the other requests keep the answers of that same solve.
    A library error raised for the whole call (inputs that passed this module's checks but not
    the library's, which would be a bug here) cannot be attributed to a series, so then each
    request is answered alone and only the offending one fails.

    Returns:
        Per job, its forecasts (one per series, in order) or the exception to raise for it.
    """
    if jobs[0].solver is not None:
        solver = jobs[0].solver
    owners = [(j, k) for j, job in enumerate(jobs) for k in range(len(job.series))]
    levels = sorted({q for job in jobs for q in job.quantiles})
    prepared = [jobs[j].series[k] for j, k in owners]
    forecasts: list[Forecast] = [None] * len(owners)  # type: ignore[list-item]
    try:
        for group in padding_groups([p.query_times.size + p.encoder_steps for p in prepared]):
            answers = forecaster.predict(
                [prepared[i].series for i in group],
                [prepared[i].query_times for i in group],
                num_samples=jobs[0].num_samples,
                quantiles=levels,
                seed=jobs[0].seed,
                solver=solver,
            )
            for i, answer in zip(group, answers, strict=True):
                forecasts[i] = answer
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
