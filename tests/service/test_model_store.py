"""Model loading: registry, disk cache when the registry is down, 503 when there is neither."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.config import Settings, get_settings
from service.model_store import ModelRef, parse_model_uri
from tests.conftest import free_port
from tests.service.service_helpers import ADMIN_KEY, MODEL_NAME

OK = {"times": [0, 1, 2], "values": [[70, 37], [71, None], [None, 37.2]], "query_times": [1.5]}


def _dead_tracking_uri() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def registry_down(monkeypatch: pytest.MonkeyPatch) -> Callable[[bool], None]:
    """Make the configured (SQLite) store's registry unreachable, or reachable again: the probe
    fails as it does for an HTTP server that is down."""
    from service.errors import RegistryUnavailableError
    from service.model_store import ModelStore

    real = ModelStore._probe

    def set_down(down: bool) -> None:
        def probe(self: ModelStore, tracking_uri: str) -> None:
            if down:
                raise RegistryUnavailableError(
                    f"the MLflow tracking server {tracking_uri} is unreachable (refused)"
                )
            real(self, tracking_uri)

        monkeypatch.setattr(ModelStore, "_probe", probe)

    return set_down


def test_starts_from_the_disk_cache_when_the_registry_is_down_then_takes_it_back(
    make_settings: Any, registry: Any, registry_down: Callable[[bool], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with TestClient(create_app(make_settings())) as client:  # fills the cache
        expected = client.post("/v1/predict", json={"series": [OK]}).json()
    registry_down(True)
    settings = make_settings(registry_retry_initial_s=0.05, registry_retry_max_s=0.1,
                             registry_check_interval_s=0)
    with caplog.at_level(logging.WARNING, logger="service.model_store"):
        with TestClient(create_app(settings)) as client:
            ready = client.get("/readyz")
            answer = client.post("/v1/predict", json={"series": [OK]}).json()
            model = client.get("/v1/model").json()
            reload = client.post("/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY})
            time.sleep(0.5)  # several retries, all failing
            still = client.get("/readyz").json()
            registry_down(False)
            deadline = time.monotonic() + 20
            back = client.get("/readyz").json()
            while back["source"] != "registry" and time.monotonic() < deadline:
                time.sleep(0.05)
                back = client.get("/readyz").json()
            info = client.get("/metrics").text
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ready", "model": MODEL_NAME, "version": "1", "source": "cache",
        "registry": "unreachable",
        "detail": f"the registry is unreachable (the MLflow tracking server {registry.tracking_uri} "
        f"is unreachable (refused)); serving the loaded model {MODEL_NAME} version 1 (from the "
        "cache) until it is back",
    }
    assert model["source"] == "cache"
    assert answer["series"] == expected["series"]
    assert any("from the disk cache" in r.getMessage() for r in caplog.records)
    assert reload.status_code == 503
    assert reload.json()["detail"].startswith(
        f"the MLflow tracking server {registry.tracking_uri} is unreachable"
    )
    assert still["source"] == "cache"  # the cached model keeps serving while the registry is down
    assert back == {"status": "ready", "model": MODEL_NAME, "version": "1", "source": "registry",
                    "registry": "reachable"}
    assert f'latent_ode_model_info{{name="{MODEL_NAME}",source="registry",version="1"}} 1.0' in info


def test_the_cache_never_serves_another_stores_model(make_settings: Any, tmp_path: Any) -> None:
    """Issue 16 item 1: a cache filled from one store, a service pointed at another (dead, or
    alive and empty): not ready, with the reason, instead of the other store's model."""
    with TestClient(create_app(make_settings())) as client:  # fills the cache from the registry
        assert client.get("/readyz").status_code == 200
    dead = _dead_tracking_uri()
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    with TestClient(create_app(make_settings(tracking_uri=dead))) as client:
        from_dead = client.get("/readyz")
    with TestClient(create_app(make_settings(tracking_uri=empty))) as client:
        from_empty = client.get("/readyz")
    assert from_dead.status_code == from_empty.status_code == 503
    assert (f"the disk cache has no usable model ({dead} never resolved models:/{MODEL_NAME}"
            "@champion for this cache" in from_dead.json()["detail"])
    assert "a cached model of another store, alias or version is not served" in (
        from_dead.json()["detail"]
    )
    # A registry that answers is believed: it has no such model, so nothing is served.
    assert from_empty.json()["detail"].startswith(
        f"no model is loaded: the registry has no models:/{MODEL_NAME}@champion"
    )


def test_the_cache_never_serves_another_alias(
    make_settings: Any, registry_down: Callable[[bool], None]
) -> None:
    with TestClient(create_app(make_settings())) as client:  # caches what @champion resolved to
        assert client.get("/readyz").status_code == 200
    registry_down(True)
    uri = f"models:/{MODEL_NAME}@challenger"
    with TestClient(create_app(make_settings(model_uri=uri))) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert f"never resolved {uri} for this cache" in response.json()["detail"]


def test_a_pinned_version_is_served_from_the_cache_and_an_incomplete_one_is_not(
    make_settings: Any, registry_down: Callable[[bool], None], tmp_path: Any
) -> None:
    pinned = make_settings(model_uri=f"models:/{MODEL_NAME}/1")
    with TestClient(create_app(pinned)) as client:
        assert client.get("/readyz").json()["source"] == "registry"
    registry_down(True)
    with TestClient(create_app(pinned)) as client:
        cached = client.get("/readyz")
    (marker,) = (tmp_path / "cache").rglob(".complete")
    marker.unlink()  # as an interrupted download leaves it
    with TestClient(create_app(pinned)) as client:
        incomplete = client.get("/readyz")
    assert {k: v for k, v in cached.json().items() if k != "detail"} == {
        "status": "ready", "model": MODEL_NAME, "version": "1", "source": "cache",
        "registry": "unreachable"}
    assert incomplete.status_code == 503
    assert (f"version 1 of {MODEL_NAME!r} from " in incomplete.json()["detail"]
            and "is not in the cache or its download is incomplete" in incomplete.json()["detail"])


def test_a_failed_download_leaves_nothing_and_says_why(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import mlflow.artifacts

    def fail(**kwargs: Any) -> str:
        raise OSError("connection reset while downloading")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", fail)
    with TestClient(create_app(make_settings())) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert (f"downloading models:/{MODEL_NAME}/1 failed: connection reset while downloading"
            in response.json()["detail"])
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert leftovers == []  # no partial download, no pointer to one


def test_no_registry_and_no_cache_is_503_not_a_crash(make_settings: Any) -> None:
    dead = _dead_tracking_uri()
    with TestClient(create_app(make_settings(tracking_uri=dead))) as client:
        live = client.get("/livez")
        ready = client.get("/readyz")
        predict = client.post("/v1/predict", json={"series": [OK]})
        model = client.get("/v1/model")
    assert live.status_code == 200
    assert ready.status_code == predict.status_code == model.status_code == 503
    detail = predict.json()["detail"]
    assert detail.startswith(
        f"no model is loaded: the registry failed (the MLflow tracking server {dead} is "
        "unreachable"
    )
    assert "the disk cache has no usable model" in detail
    assert detail.endswith(
        "Start the MLflow tracking server or fix LATENT_ODE_MODEL_URI, then POST "
        "/v1/admin/reload or restart the service."
    )
    assert ready.json() == predict.json()


def test_unknown_alias_is_reported(make_settings: Any) -> None:
    settings = make_settings(model_uri=f"models:/{MODEL_NAME}@no-such-alias")
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert (f"the registry has no models:/{MODEL_NAME}@no-such-alias of model {MODEL_NAME!r}"
            in response.json()["detail"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_503(make_settings: Any) -> None:
    with TestClient(create_app(make_settings(device="cuda"))) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("no model is loaded: the registry failed (")


@pytest.mark.parametrize(
    ("uri", "ref"),
    [
        ("models:/latent-ode@champion", ModelRef("latent-ode", "champion", None)),
        ("models:/latent-ode/3", ModelRef("latent-ode", None, "3")),
    ],
)
def test_parse_model_uri(uri: str, ref: ModelRef) -> None:
    assert parse_model_uri(uri) == ref


@pytest.mark.parametrize("uri", ["runs:/abc/model", "models:/x", "models:/x/latest", "/tmp/m"])
def test_parse_model_uri_rejects_other_forms(uri: str) -> None:
    with pytest.raises(ValueError, match="must be models:/NAME@ALIAS or models:/NAME/VERSION"):
        parse_model_uri(uri)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENT_ODE_MAX_SERIES_PER_REQUEST", "7")
    monkeypatch.setenv("LATENT_ODE_DEVICE", "cuda:1")
    monkeypatch.setenv("LATENT_ODE_ADMIN_KEY", "")
    monkeypatch.setenv("LATENT_ODE_BATCHING_ENABLED", "false")
    get_settings.cache_clear()
    try:
        settings = get_settings()
        assert get_settings() is settings  # cached
    finally:
        get_settings.cache_clear()
    assert settings.max_series_per_request == 7
    assert settings.device == "cuda:1"
    assert settings.admin_key is None  # an empty key disables admin endpoints
    assert settings.batching_enabled is False
    assert settings.model_uri == "models:/latent-ode@champion"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"device": "gpu"}, "LATENT_ODE_DEVICE must be auto, cpu, cuda or cuda:N; got 'gpu'."),
        ({"default_num_samples": 64, "max_num_samples": 32},
         "LATENT_ODE_DEFAULT_NUM_SAMPLES (64) must not exceed LATENT_ODE_MAX_NUM_SAMPLES (32)."),
    ],
)
def test_settings_reject_bad_values(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings(**overrides)


def test_a_download_published_meanwhile_by_another_replica_wins(tmp_path: Any) -> None:
    from service.model_store import ModelStore

    final = tmp_path / "versions" / "3"
    final.parent.mkdir(parents=True)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / ".complete").write_text("3")
        (tmp_path / name / "who").write_text(name)
    ModelStore._publish(tmp_path / "a", final)
    ModelStore._publish(tmp_path / "b", final)  # finished second: discarded, "a" stays
    assert (final / "who").read_text() == "a"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_two_stores_never_share_a_cached_version(make_settings: Any, tmp_path: Any) -> None:
    """Version 1 of `latent-ode` in one store is not version 1 in another: one cache directory
    serving both must load each store's own model."""
    from tests.service.service_helpers import make_forecaster, register_version

    other_store = f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
    (tmp_path / "other").mkdir()
    assert register_version(other_store, make_forecaster(seed=99), tmp_path / "other") == "1"
    with TestClient(create_app(make_settings())) as client:
        first = client.post("/v1/predict", json={"series": [OK]}).json()
    with TestClient(create_app(make_settings(tracking_uri=other_store))) as client:
        second = client.post("/v1/predict", json={"series": [OK]}).json()
        source = client.get("/readyz").json()["source"]
    assert first["model"]["version"] == second["model"]["version"] == "1"
    assert source == "registry"
    assert first["series"][0]["mean"] != second["series"][0]["mean"]


def test_readyz_asks_the_registry_at_most_once_per_interval(
    make_settings: Any, registry: Any,
) -> None:
    """/readyz reports whether the registry answers now; an answer that the alias is gone is an
    answer (reachable); the question is asked again only after the interval."""
    from mlflow.tracking import MlflowClient

    mlflow_client = MlflowClient(registry.tracking_uri)
    mlflow_client.set_registered_model_alias(MODEL_NAME, "readyz-test", "1")
    asked: list[float] = []
    try:
        settings = make_settings(model_uri=f"models:/{MODEL_NAME}@readyz-test",
                                 registry_check_interval_s=3600)
        with TestClient(create_app(settings)) as client:
            real = client.app.state.service.store.check_registry

            def counted() -> str | None:
                asked.append(time.monotonic())
                return real()

            client.app.state.service.store.check_registry = counted
            first = client.get("/readyz").json()
            mlflow_client.delete_registered_model_alias(MODEL_NAME, "readyz-test")
            cached = client.get("/readyz").json()
            client.app.state.service.registry._interval_s = 0  # ask at every call from now on
            gone = client.get("/readyz").json()
    finally:
        try:
            mlflow_client.delete_registered_model_alias(MODEL_NAME, "readyz-test")
        except Exception:  # noqa: BLE001 - already deleted by the test
            pass
    expected = {"status": "ready", "model": MODEL_NAME, "version": "1", "source": "registry",
                "registry": "reachable"}
    assert first == cached == gone == expected
    assert len(asked) == 2  # the first call and the one after the interval was lifted
