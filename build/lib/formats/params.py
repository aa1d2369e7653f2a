"""Nested dicts flattened to dotted keys: ``{"data": {"split": {"seed": 0}}}`` →
``{"data.split.seed": 0}``.

The pipelines log a config as flattened MLflow params; the service lists a model's metrics under
dotted keys. Both flatten with :func:`flatten`, so a key means the same path in both.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["flatten"]


def flatten(nested: Mapping[str, object], *, prefix: str = "") -> dict[str, object]:
    """Flatten a nested mapping into dotted keys.

    A non-empty mapping is descended into; every other value (lists, ``None``, an empty mapping)
    is a leaf, kept as it is.

    Args:
        nested: the nested mapping; keys are turned into text.
        prefix: put before every key (e.g. ``"metrics."``).

    Returns:
        Dotted key → leaf value, in the mapping's order.
    """
    out: dict[str, object] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, prefix=f"{name}."))
        else:
            out[name] = value
    return out
