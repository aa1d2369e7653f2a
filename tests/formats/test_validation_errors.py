"""formats.validation_errors: one sentence for pydantic errors, for the service and the pipelines."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from formats.validation_errors import format_location, format_validation_errors


class _Point(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: float
    tags: list[int] = Field(default_factory=list)

    @field_validator("x")
    @classmethod
    def _finite(cls, value: float) -> float:
        if value > 100:
            raise ValueError(f"must be at most 100; got {value}")
        return value


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: list[_Point]
    n: int = Field(1, gt=0)

    @model_validator(mode="after")
    def _enough(self) -> _Body:
        if len(self.points) < self.n:
            raise ValueError("fewer points than `n`.")
        return self


def _errors(raw: Any) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as info:
        _Body.model_validate(raw)
    return [dict(e) for e in info.value.errors()]


@pytest.mark.parametrize(
    ("loc", "text"),
    [(("body", "series", 0, "times", 2), "series[0].times[2]"), (("body",), "body"),
     (("data", "split", "seed"), "data.split.seed"), ((), "")],
)
def test_locations(loc: tuple[str | int, ...], text: str) -> None:
    assert format_location(loc) == text


def test_each_kind_of_error_in_one_sentence() -> None:
    errors = _errors({"points": [{"x": "a", "tags": [1, "b"]}, {"y": 1}], "n": 0, "extra": 1})
    assert format_validation_errors(errors, limit=None) == (
        "`points[0].x`: Input should be a valid number, unable to parse string as a number; "
        "got 'a'; "
        "`points[0].tags[1]`: Input should be a valid integer, unable to parse string as an "
        "integer; got 'b'; "
        "`points[1].x` is required but missing; "
        "`points[1].y` is not a known field; remove it; "
        "`n`: Input should be greater than 0; got 0; "
        "`extra` is not a known field; remove it."
    )


def test_a_message_that_names_the_value_is_not_repeated() -> None:
    errors = _errors({"points": [{"x": 101}]})
    assert format_validation_errors(errors) == "`points[0].x`: must be at most 100; got 101.0."


def test_an_error_of_the_whole_object_has_no_location() -> None:
    errors = _errors({"points": [], "n": 2})
    assert format_validation_errors(errors) == "fewer points than `n`; got {\"points\": [], \"n\": 2}."


def test_noun_hint_and_limit() -> None:
    errors = _errors({"points": [], "a": 1, "b": 2, "c": 3})
    assert format_validation_errors(errors, noun="key", unknown_hint=" or check its spelling",
                                    limit=2) == (
        "`a` is not a known key; remove it or check its spelling; `b` is not a known key; remove "
        "it or check its spelling (and 1 more error)."
    )
