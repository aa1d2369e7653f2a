"""Who may ask and what is recorded: the optional API key, request ids, JSON access logs, bounded
metric labels, credentials and server paths kept out of answers (TestClient)."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.middleware import RateLimitedLogFilter
from service.model_store import probe_request
from service.redaction import redact, split_credentials
from tests.service.service_helpers import ADMIN_KEY, make_forecaster

OK = {"times": [0, 1, 2], "values": [[70, 37], [71, None], [None, 37.2]], "query_times": [1.5]}
API_KEY = "test-api-key"
WRONG_KEY = {
    "detail": "missing or wrong API key; send the key from LATENT_ODE_API_KEY as "
    "`Authorization: Bearer <key>`."
}


def test_made_up_methods_share_one_metrics_label(client: TestClient) -> None:
    for i in range(30):
        client.request(f"MADEUP{i}", "/v1/predict")
        client.request(f"X{i}", f"/nowhere/{i}")
    text = client.get("/metrics").text
    assert "MADEUP" not in text and 'method="X' not in text
    assert 'latent_ode_http_requests_total{method="other",route="/v1/predict",status="405"} 30.0' \
        in text
    assert 'latent_ode_http_requests_total{method="other",route="unmatched",status="404"} 30.0' \
        in text


def test_every_answer_has_a_request_id_and_a_json_access_line(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="service.access"):
        mine = client.post("/v1/predict", json={"series": [OK]}, headers={"X-Request-ID": "abc-1"})
        new = client.get("/nowhere")
        bad = client.get("/livez", headers={"X-Request-ID": "no spaces\tor tabs"})
    assert mine.headers["x-request-id"] == "abc-1"
    assert len(new.headers["x-request-id"]) == 32 and new.status_code == 404
    assert bad.headers["x-request-id"] != "no spaces\tor tabs"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "service.access"]
    assert [(line["request_id"], line["method"], line["path"], line["status"]) for line in lines] \
        == [("abc-1", "POST", "/v1/predict", 200),
            (new.headers["x-request-id"], "GET", "/nowhere", 404),
            (bad.headers["x-request-id"], "GET", "/livez", 200)]
    assert all(line["duration_ms"] >= 0 for line in lines)


def test_no_api_key_by_default(client: TestClient) -> None:
    assert client.post("/v1/predict", json={"series": [OK]}).status_code == 200
    assert client.get("/openapi.json").status_code == 200


def test_the_api_key_guards_every_page_but_the_probes_and_admin(make_settings: Any) -> None:
    bearer = {"Authorization": f"Bearer {API_KEY}"}
    with TestClient(create_app(make_settings(api_key=API_KEY))) as client:
        refused = {
            path: client.request(method, path, json=body, headers=headers)
            for method, path, body, headers in [
                ("POST", "/v1/predict", {"series": [OK]}, {}),
                ("GET", "/v1/model", None, {"Authorization": "Bearer wrong"}),
                ("GET", "/metrics", None, {"Authorization": API_KEY}),  # no scheme
                ("GET", "/docs", None, {"X-API-Key": API_KEY}),  # the admin header
                ("GET", "/openapi.json", None, {}),
            ]
        }
        allowed = [
            client.post("/v1/predict", json={"series": [OK]}, headers=bearer),
            client.get("/v1/model", headers=bearer),
            client.get("/metrics", headers={"Authorization": f"bearer {API_KEY}"}),
            client.get("/livez"),
            client.get("/readyz"),
        ]
        admin = client.post("/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY})
    for path, response in refused.items():
        assert response.status_code == 401, path
        assert response.json() == WRONG_KEY, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert "x-request-id" in response.headers
    assert [r.status_code for r in allowed] == [200] * 5
    assert admin.status_code == 200, admin.text


def test_the_model_page_shows_no_server_path_and_no_credentials(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    metadata = {"source": "file:///srv/private/icu/export-2024.csv",
                "data": {"uri": "https://alice:s3cret@data.example/x.csv"},
                "metrics": {"val_mse": 0.25}}
    store = client.app.state.service.store  # type: ignore[attr-defined]
    served = dataclasses.replace(store.require(), forecaster=make_forecaster(metadata=metadata))
    monkeypatch.setattr(store, "_current", served)
    body = client.get("/v1/model").json()
    assert body["metadata"]["source"] == "export-2024.csv"
    assert body["metadata"]["data"]["uri"] == "https://alice:***@data.example/x.csv"
    assert "s3cret" not in json.dumps(body) and "/srv/private" not in json.dumps(body)


def test_credentials_in_the_tracking_uri_never_reach_an_answer(make_settings: Any) -> None:
    from tests.conftest import free_port

    uri = f"http://alice:s3cret@127.0.0.1:{free_port()}"
    with TestClient(create_app(make_settings(tracking_uri=uri))) as client:
        answers = [client.get("/readyz"), client.post("/v1/predict", json={"series": [OK]}),
                   client.get("/v1/model"),
                   client.post("/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY})]
    for response in answers:
        assert response.status_code == 503
        assert "s3cret" not in response.text
    assert "http://alice:***@127.0.0.1" in answers[0].json()["detail"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see https://alice:s3cret@host:5000/x and http://h/", "see https://alice:***@host:5000/x "
         "and http://h/"),
        ("token https://tok3n@host", "token https://***@host"),
        ("postgresql://u:p%40ss@db/mlflow", "postgresql://u:***@db/mlflow"),
        ("no url here: a@b", "no url here: a@b"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_split_credentials_and_the_probe_request() -> None:
    assert split_credentials("https://a%40b:p%3Aw@host:8443/mlflow") == (
        "https://host:8443/mlflow", ("a@b", "p:w")
    )
    assert split_credentials("http://host:5000") == ("http://host:5000", None)
    request = probe_request("http://alice:s3cret@127.0.0.1:5000/")
    assert request.full_url == "http://127.0.0.1:5000/health"
    assert request.get_header("Authorization") == "Basic YWxpY2U6czNjcmV0"  # alice:s3cret
    assert not probe_request("http://127.0.0.1:5000").has_header("Authorization")


def test_a_flooding_log_line_is_let_through_once_per_interval() -> None:
    flood = RateLimitedLogFilter("socket.accept() out of system resource", interval_s=60)

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, (), None)

    kept = [flood.filter(record("socket.accept() out of system resource\nEMFILE"))
            for _ in range(2048)]
    assert kept.count(True) == 1
    assert flood.filter(record("something else")) is True
    flood._last -= 61  # the interval has passed
    later = record("socket.accept() out of system resource")
    assert flood.filter(later) is True
    assert later.getMessage().endswith("(2047 alike dropped in the last 60 s)")


def test_log_lines_and_tracebacks_are_redacted() -> None:
    from service.redaction import RedactingFilter

    try:
        raise ConnectionError("GET https://alice:s3cret@mlflow:5000/api failed")
    except ConnectionError as exc:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "to %s: %s",
                                   ("https://bob:hunter2@h", "boom"), (type(exc), exc, None))
    assert RedactingFilter().filter(record) is True
    text = logging.Formatter().format(record)
    assert "to https://bob:***@h: boom" in text
    assert "https://alice:***@mlflow:5000/api failed" in text
    assert "s3cret" not in text and "hunter2" not in text
