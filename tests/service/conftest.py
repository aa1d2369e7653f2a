"""Fixtures of the service tests: a SQLite MLflow store with a real registered forecaster,
settings pointing at it, and a TestClient with the lifespan run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.service_helpers import ADMIN_KEY, MODEL_NAME, make_forecaster, register_version


@dataclass(frozen=True)
class Registry:
    """A SQLite MLflow store holding ``MODEL_NAME`` version 1 as champion."""

    tracking_uri: str
    workdir: Path
    forecaster: Any  # the same weights as version 1, for comparisons


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    workdir = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    forecaster = make_forecaster()
    register_version(uri, forecaster, workdir)
    return Registry(tracking_uri=uri, workdir=workdir, forecaster=forecaster)


SettingsFactory = Callable[..., Any]


@pytest.fixture
def make_settings(registry: Registry, tmp_path: Path) -> SettingsFactory:
    """Settings pointing at the session registry, with a fresh cache; overrides as kwargs."""
    from service.config import Settings

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "tracking_uri": registry.tracking_uri,
            "model_uri": f"models:/{MODEL_NAME}@champion",
            "model_cache_dir": tmp_path / "cache",
            "torch_threads": 0,  # never change the test process's torch threads
            "admin_key": ADMIN_KEY,
        }
        values.update(overrides)
        return Settings(**values)

    return build


@pytest.fixture(scope="module")
def client(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """A TestClient (lifespan run) on the default settings and the registry's champion."""
    from service.app import create_app
    from service.config import Settings

    settings = Settings(
        tracking_uri=registry.tracking_uri,
        model_uri=f"models:/{MODEL_NAME}@champion",
        model_cache_dir=tmp_path_factory.mktemp("cache"),
        torch_threads=0,
        admin_key=ADMIN_KEY,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client
