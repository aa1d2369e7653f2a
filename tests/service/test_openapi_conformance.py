"""Schemathesis against the app's own OpenAPI schema: no 5xx, every response as documented.

The operations are driven one by one with Hypothesis (``operation.as_strategy()``) rather than
with ``schemathesis.pytest.from_fixture``, whose lazy loader reads a private pytest attribute that
pytest 9 no longer has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from tests.service.service_helpers import ADMIN_KEY, MODEL_NAME

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    ("POST", "/v1/predict"),
    ("GET", "/v1/model"),
    ("GET", "/livez"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/v1/admin/reload"),
]


@pytest.fixture(scope="module")
def api_schema(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The schema of a real app on the registry's champion (schemathesis runs its lifespan)."""
    from service.config import Settings

    cache: Path = tmp_path_factory.mktemp("cache")
    app = create_app(
        Settings(
            tracking_uri=registry.tracking_uri,
            model_uri=f"models:/{MODEL_NAME}@champion",
            model_cache_dir=cache,
            torch_threads=0,
            admin_key=ADMIN_KEY,
            max_points_per_series=200,
            max_query_times_per_series=200,
        )
    )
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def test_every_operation_is_tested(api_schema: Any) -> None:
    found = {(r.ok().method.upper(), r.ok().path) for r in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_operation_conforms_to_the_schema(api_schema: Any, method: str, path: str) -> None:
    operation = api_schema[path][method]

    @given(case=operation.as_strategy())
    @settings(
        max_examples=50,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples on every run: CI stays reproducible
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def run(case: Any) -> None:
        case.call_and_validate(checks=CHECKS)

    run()
