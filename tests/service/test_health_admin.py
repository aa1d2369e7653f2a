"""GET /livez, /readyz, /v1/model, /metrics and POST /v1/admin/reload (TestClient)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.service.service_helpers import ADMIN_KEY, make_forecaster, register_version

OK = {"times": [0, 1, 2], "values": [[70, 37], [71, None], [None, 37.2]], "query_times": [1.5]}


def test_livez_and_readyz(client: TestClient) -> None:
    assert client.get("/livez").json() == {"status": "alive"}
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready", "model": "latent-ode-test", "version": "1", "source": "registry",
        "registry": "reachable",
    }


def test_model_reports_name_version_channels_unit_and_metrics(client: TestClient) -> None:
    body = client.get("/v1/model").json()
    assert body["name"] == "latent-ode-test"
    assert body["version"] == "1"
    assert body["uri"] == "models:/latent-ode-test@champion"
    assert body["source"] == "registry"
    assert body["channels"] == ["hr", "temp"]
    assert body["time_unit"] == "hours"
    assert body["device"] == "cpu"
    assert body["metrics"] == {"metrics.val_mse": 0.25}
    assert body["metadata"] == {"metrics": {"val_mse": 0.25}}


def test_model_lists_each_metric_once(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline-trained model's metadata holds its validation metrics twice: in the library's
    training record and in the pipeline's ``metrics``; ``metrics`` lists each value once."""
    import dataclasses

    metadata = {
        "source": "file:///data.csv",
        "training": {"best_metric": 0.3, "val_metric": "val_loss", "best_step": 40, "steps": 50,
                     "stopped": "max_steps", "val_loss": 0.3, "val_mse": 0.25},
        "metrics": {"val_loss": 0.3, "val_mse": 0.25, "val_extrap_mse": float("nan")},
    }
    store = client.app.state.service.store  # type: ignore[attr-defined]
    served = dataclasses.replace(store.require(), forecaster=make_forecaster(metadata=metadata))
    monkeypatch.setattr(store, "_current", served)
    body = client.get("/v1/model").json()
    assert body["metrics"] == {"metrics.val_loss": 0.3, "metrics.val_mse": 0.25}
    names = [key.rsplit(".", 1)[-1] for key in body["metrics"]]
    assert len(names) == len(set(names)), body["metrics"]
    # The full record stays available (non-finite numbers as null).
    assert body["metadata"]["training"]["steps"] == 50
    assert body["metadata"]["metrics"]["val_extrap_mse"] is None


def test_metrics_count_requests_batches_and_nfe(client: TestClient) -> None:
    assert client.post("/v1/predict", json={"series": [OK, OK]}).status_code == 200
    assert client.post("/v1/predict", json={"series": []}).status_code == 422
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'latent_ode_http_requests_total{method="POST",route="/v1/predict",status="200"}' in text
    assert 'latent_ode_http_requests_total{method="POST",route="/v1/predict",status="422"}' in text
    assert ('latent_ode_http_request_duration_seconds_count{method="POST",route="/v1/predict",'
            'status="200"}') in text
    assert 'latent_ode_batch_series_bucket{le="2.0"}' in text
    assert "latent_ode_solver_nfe_count" in text
    assert ('latent_ode_model_info{name="latent-ode-test",source="registry",version="1"} 1.0'
            in text)
    series_sum = next(
        float(line.split()[-1]) for line in text.splitlines()
        if line.startswith("latent_ode_batch_series_sum")
    )
    assert series_sum >= 2.0


def test_unknown_paths_share_one_metrics_label(client: TestClient) -> None:
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    text = client.get("/metrics").text
    assert 'route="unmatched",status="404"' in text
    assert "/no/such/path" not in text


# ---------------------------------------------------------------------------- admin reload

RELOAD_MODEL = "reload-test"


@pytest.fixture(scope="module")
def reload_registry(registry: Any) -> str:
    """A second registered model in the session store, so reloads do not disturb other tests."""
    register_version(registry.tracking_uri, make_forecaster(seed=0), registry.workdir,
                     name=RELOAD_MODEL)
    return RELOAD_MODEL


def test_reload_disabled_without_a_key(make_settings: Any) -> None:
    with TestClient(create_app(make_settings(admin_key=None))) as client:
        response = client.post("/v1/admin/reload", headers={"X-API-Key": "anything"})
    assert response.status_code == 403
    assert response.json() == {
        "detail": "admin endpoints are disabled because LATENT_ODE_ADMIN_KEY is not set; set it "
        "and restart the service to enable them."
    }


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
def test_reload_needs_the_right_key(client: TestClient, headers: dict[str, str]) -> None:
    response = client.post("/v1/admin/reload", headers=headers)
    assert response.status_code == 401
    assert response.json() == {
        "detail": "missing or wrong API key; send the key from LATENT_ODE_ADMIN_KEY in the "
        "X-API-Key header."
    }


def test_reload_swaps_in_the_new_champion_and_a_given_version(
    make_settings: Any, registry: Any, reload_registry: str
) -> None:
    settings = make_settings(model_uri=f"models:/{reload_registry}@champion")
    key = {"X-API-Key": ADMIN_KEY}
    with TestClient(create_app(settings)) as client:
        before = client.get("/v1/model").json()["version"]
        version = register_version(
            registry.tracking_uri, make_forecaster(seed=1), registry.workdir, name=reload_registry
        )
        response = client.post("/v1/admin/reload", headers=key)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "name": reload_registry, "version": version, "previous_version": before,
            "source": "registry",
        }
        assert client.get("/v1/model").json()["version"] == version
        assert client.post("/v1/predict", json={"series": [OK]}).json()["model"]["version"] == version
        assert f'version="{version}"' in client.get("/metrics").text

        response = client.post("/v1/admin/reload", headers=key, json={"version": before})
        assert response.status_code == 200, response.text
        assert client.get("/readyz").json()["version"] == before

        response = client.post("/v1/admin/reload", headers=key, json={"version": "999"})
        assert response.status_code == 404
        assert response.json() == {
            "detail": f"the registry has no version 999 of model {reload_registry!r}; register it "
            "or pick an existing version"
        }
        assert client.get("/readyz").json()["version"] == before  # a failed reload changes nothing
        text = client.get("/metrics").text
    assert 'latent_ode_model_reloads_total{outcome="ok"} 2.0' in text
    assert 'latent_ode_model_reloads_total{outcome="failed"} 1.0' in text


def test_reload_version_must_be_a_number(client: TestClient) -> None:
    response = client.post("/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY},
                           json={"version": "abc"})
    assert response.status_code == 422
    assert response.json() == {
        "detail": "`version`: String should match pattern '^[0-9]{1,18}$'; got 'abc'."
    }
