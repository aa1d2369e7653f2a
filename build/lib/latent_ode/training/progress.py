"""The training progress bar: tqdm on a terminal, nothing otherwise (validation results go to
the log either way)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Advance", "progress_bar"]

Advance = Callable[[int, dict[str, float]], None]
"""``advance(steps, metrics)``: move the bar on by ``steps`` and show ``metrics``."""


@contextmanager
def progress_bar(total: int, *, enabled: bool) -> Iterator[Advance]:
    """A bar over ``total`` steps while the block runs.

    Args:
        total: the steps the run will take at most.
        enabled: show it (``TrainConfig.progress``, and only on the reporting process); even
            then only when stderr is a terminal, so that logs stay free of bar redraws.

    Yields:
        The function that advances the bar (a no-op when not shown).
    """
    if not (enabled and sys.stderr.isatty()):
        yield lambda n, m: None
        return
    from tqdm import tqdm  # lazy: only a terminal run needs it

    bar = tqdm(total=total, unit="step", dynamic_ncols=True)
    try:
        yield lambda n, m: (bar.update(n), bar.set_postfix(
            {k: f"{v:.4g}" for k, v in m.items()}, refresh=False))
    finally:
        bar.close()
