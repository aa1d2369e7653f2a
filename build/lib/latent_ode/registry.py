"""A registry: the one list, by name, of the implementations of an extension point.

The encoder cells (:data:`latent_ode.cells.CELLS`), latent dynamics
(:data:`latent_ode.dynamics.DYNAMICS`) and decoders (:data:`latent_ode.decoders.DECODERS`) are
each one :class:`Registry`. The config classes take their valid names from it, so adding an
implementation is one function plus one ``@REGISTRY.register("name")`` line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from latent_ode.errors import ConfigError

__all__ = ["Registry"]

B = TypeVar("B", bound=Callable[..., object])


class Registry(Generic[B]):
    """A typed mapping name -> builder, filled by :meth:`register`.

    Args:
        what: what the entries are, for error messages (``"encoder cell"``).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._builders: dict[str, B] = {}

    def register(self, name: str) -> Callable[[B], B]:
        """Decorator that adds a builder under ``name``.

        Raises:
            ValueError: ``name`` is already taken (two entries would silently shadow each other).
        """

        def add(builder: B) -> B:
            if name in self._builders:
                raise ValueError(f"{self.what} {name!r} is registered twice; pick another name.")
            self._builders[name] = builder
            return builder

        return add

    def __getitem__(self, name: str) -> B:
        """The builder registered as ``name``.

        Raises:
            ConfigError: no entry has that name.
        """
        try:
            return self._builders[name]
        except KeyError:
            raise ConfigError(f"unknown {self.what} {name!r}; choose one of "
                              f"{', '.join(repr(n) for n in self.names())}.") from None

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._builders)
