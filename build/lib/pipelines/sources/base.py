"""What every data source is: typed options in, a series table with its lineage out.

A source (:class:`Source`) has a registry name, a one-line description, an options model (a
pydantic model that rejects unknown keys: the ``[data] options`` table of a config, or
``--option KEY=VALUE`` on the command line) and :meth:`Source.load`, which returns the series as a
:class:`~pipelines.longformat.SeriesTable` plus where they came from (:class:`DataSource`).
Generators whose keyword arguments *are* their options get the model from their signature
(:func:`options_from_signature`), so each option's type and default live in one place.
"""

from __future__ import annotations

import importlib.util
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from latent_ode.errors import ConfigError
from pipelines.longformat import SeriesTable

__all__ = [
    "DataSource",
    "GeneratedSource",
    "Source",
    "SourceData",
    "SourceKind",
    "SourceOptions",
    "options_from_signature",
    "require_positive",
]

SourceKind = Literal["generated", "imported"]

# Arguments every generator takes from the ``[data]`` section itself, never from ``options``.
_COMMON_ARGUMENTS = ("n_series", "seed")


class SourceOptions(BaseModel):
    """Base of every source's options: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def require_positive(**arguments: float) -> None:
    """Check that every keyword argument is positive.

    Raises:
        ConfigError: naming the first argument that is not, with its value.
    """
    for name, value in arguments.items():
        if not value > 0:
            raise ConfigError(f"`{name}` must be positive; got {value!r}.")


def options_from_signature(func: Callable[..., Any], *, name: str) -> type[SourceOptions]:
    """The options model of a generator: its keyword-only arguments, with their types and defaults.

    ``n_series`` and ``seed`` are left out (they are ``[data]`` keys of their own); an argument
    without a default is a required option.

    Args:
        func: the generator, e.g. ``periodic(n_series, *, n_times=100, ..., seed=0)``.
        name: the model's class name, e.g. ``PeriodicOptions``.

    Returns:
        A :class:`SourceOptions` subclass with one field per keyword-only argument.
    """
    hints = get_type_hints(func)
    fields: dict[str, Any] = {
        p.name: (hints[p.name], ... if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(func).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _COMMON_ARGUMENTS
    }
    return create_model(name, __base__=SourceOptions, **fields)


@dataclass(frozen=True)
class DataSource:
    """Where the series came from, for lineage: a file path or a source with its arguments.

    Attributes:
        kind: ``file``, ``generated`` or ``physionet``.
        uri: absolute file path (``file``), else a short description.
        tags: generator name and arguments, archives, ...
    """

    kind: str
    uri: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceData:
    """What a source returns.

    Attributes:
        table: the series, their channel names and time unit.
        lineage: where they came from (logged with the ingest run and saved in ``split.json``).
    """

    table: SeriesTable
    lineage: DataSource


class Source(ABC):
    """A data source of the registry (:mod:`pipelines.sources.registry`).

    Attributes:
        name: the registry name (``[data] dataset``, ``latent-ode data generate --dataset``).
        description: one line for ``--help`` and the docs.
        kind: ``generated`` (synthetic, sized by ``n_series`` and ``seed``) or ``imported``.
        extra: the optional dependency group the source needs (``pip install -e ".[EXTRA]"``),
            ``None`` when the base install has everything.
        requires: the modules of that extra, imported by :meth:`load` only (see
            :meth:`available`).
        options_model: the options model (see :class:`SourceOptions`).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    kind: ClassVar[SourceKind]
    extra: ClassVar[str | None] = None
    requires: ClassVar[tuple[str, ...]] = ()
    options_model: ClassVar[type[SourceOptions]]

    def available(self) -> bool:
        """Whether the modules in :attr:`requires` are installed (without importing them)."""
        return all(importlib.util.find_spec(module) is not None for module in self.requires)

    def parse_options(self, given: Mapping[str, object]) -> SourceOptions:
        """Validate ``given`` against :attr:`options_model`.

        Raises:
            ConfigError: an unknown option or a value of the wrong type, named, with the
                options the source takes.
        """
        try:
            return self.options_model.model_validate(dict(given))
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"])
                if err["type"] == "extra_forbidden":
                    problems.append(f"unknown option `{key}`")
                else:
                    problems.append(f"`{key}`: {err['msg']} (got {err['input']!r})")
            takes = ", ".join(self.options_model.model_fields) or "no options"
            raise ConfigError(
                f"bad `data.options` for {self.name} {dict(given)}: {'; '.join(problems)}; "
                f"{self.name} takes {takes}."
            ) from None

    def load(
        self,
        *,
        n_series: int,
        seed: int,
        time_unit: str = "hours",
        options: Mapping[str, object] | None = None,
    ) -> SourceData:
        """Make or read the series.

        Args:
            n_series: number of series (generated sources).
            seed: seed of the generator (generated sources); the same seed gives the same data.
            time_unit: the unit generated times are declared in, for sources without their own.
            options: the source's options as written in the config (validated here).

        Returns:
            The series with their lineage.

        Raises:
            ConfigError: a bad option, or a missing optional dependency (named with its extra).
            DataError: the source's input is missing or unreadable.
        """
        given = dict(options or {})
        return self._load(self.parse_options(given), given=given, n_series=n_series, seed=seed,
                          time_unit=time_unit)

    @abstractmethod
    def _load(
        self,
        options: Any,
        *,
        given: dict[str, object],
        n_series: int,
        seed: int,
        time_unit: str,
    ) -> SourceData:
        """:meth:`load` with validated ``options`` (``given``: as written, for the lineage)."""


class GeneratedSource(Source):
    """A synthetic source: :meth:`generate` makes the table; the lineage names the generator."""

    kind: ClassVar[SourceKind] = "generated"

    @abstractmethod
    def generate(self, options: Any, *, n_series: int, seed: int, time_unit: str) -> SeriesTable:
        """The generated table (``options`` is an instance of :attr:`options_model`)."""

    def _load(
        self,
        options: Any,
        *,
        given: dict[str, object],
        n_series: int,
        seed: int,
        time_unit: str,
    ) -> SourceData:
        table = self.generate(options, n_series=n_series, seed=seed, time_unit=time_unit)
        # The tags keep the options as the user wrote them (not every default), so that the
        # lineage of a run reads like its config.
        lineage = DataSource(
            kind="generated",
            uri=f"{self.name}(n_series={n_series}, seed={seed})",
            tags={"generator": self.name, "n_series": str(n_series), "seed": str(seed),
                  **{k: str(v) for k, v in given.items()}},
        )
        return SourceData(table=table, lineage=lineage)
