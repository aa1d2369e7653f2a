"""Pydantic validation errors as one readable sentence: where, what is wrong, what was sent.

The service answers a bad request body with it (``detail`` of a 422) and the pipelines report a
bad config file with it, so both speak the same way. It reads pydantic's error dicts
(``ValidationError.errors()``) and needs no pydantic import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["format_location", "format_validation_errors"]


def format_location(loc: Sequence[str | int]) -> str:
    """A pydantic error location as a path: ``("body", "series", 0, "times", 2)`` →
    ``series[0].times[2]``.

    Args:
        loc: the error's ``loc``. A leading ``"body"`` (FastAPI's name for the request body) is
            dropped unless it is all there is.

    Returns:
        The path; empty for an error of the whole object (an empty ``loc``).
    """
    parts = list(loc)
    if len(parts) > 1 and parts[0] == "body":
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _shorten(value: object, limit: int = 80) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_validation_errors(
    errors: Sequence[Mapping[str, Any]],
    *,
    noun: str = "field",
    unknown_hint: str = "",
    limit: int | None = 5,
) -> str:
    """One clause per pydantic error, joined into one sentence.

    A clause names the location in backticks, says what is wrong and shows the value received
    (shortened to 80 characters), unless the validator's own message already says what it got.

    Args:
        errors: ``ValidationError.errors()`` (or ``RequestValidationError.errors()``).
        noun: what an unknown name is called in the message: ``field`` (JSON) or ``key`` (TOML).
        unknown_hint: appended to "remove it" for an unknown name, e.g. where the names are
            documented.
        limit: at most this many clauses, then "(and N more errors)"; ``None`` for all.

    Returns:
        The sentence, ending with a full stop.
    """
    shown = errors if limit is None else errors[:limit]
    parts: list[str] = []
    for err in shown:
        kind = err.get("type", "")
        loc = format_location(err.get("loc", ()))
        if kind == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "invalid JSON")
            parts.append(
                f"the request body is not valid JSON ({reason} at character {err['loc'][-1]}); "
                "send a JSON object like the example in the OpenAPI docs (/docs)"
            )
            continue
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ").rstrip(".")
        if kind == "missing":
            parts.append(f"`{loc}` is required but missing")
        elif kind == "extra_forbidden":
            parts.append(f"`{loc}` is not a known {noun}; remove it{unknown_hint}")
        else:
            where = f"`{loc}`: " if loc else ""
            # A validator that follows the house style already names the value it received.
            got = "" if "got " in msg else f"; got {_shorten(err.get('input'))}"
            parts.append(f"{where}{msg}{got}")
    more = len(errors) - len(shown)
    tail = f" (and {more} more error{'s' if more > 1 else ''})" if more > 0 else ""
    return "; ".join(parts) + tail + "."
