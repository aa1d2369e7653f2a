"""The API docs work offline and document the served model (issue 17 item 4).

``/docs``, ``/redoc`` and ``/ui`` reference only same-origin assets, each of which answers 200;
every operation in ``/openapi.json`` has a summary and non-generic examples; the request examples
use the served model's channels and answer 200; the 200 example is the model's real answer and
every error example's ``detail`` is what the service really answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.service.service_helpers import ADMIN_KEY, CHANNELS, MODEL_NAME

_ASSET = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']""")
_URL_IN_SCRIPT = re.compile(r"""url:\s*['"]([^'"]+)['"]""")


def _examples(content: dict[str, Any]) -> list[Any]:
    return [e["value"] for e in content.get("examples", {}).values()]


def _generic(value: Any) -> bool:
    """A placeholder FastAPI would write: "string", 0, or a detail of "string"."""
    if isinstance(value, dict):
        return any(_generic(v) for v in value.values())
    if isinstance(value, list):
        return any(_generic(v) for v in value)
    return value == "string"


@pytest.fixture(scope="module")
def doc(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/ui"])
def test_pages_load_only_same_origin_assets(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    urls = _ASSET.findall(html) + _URL_IN_SCRIPT.findall(html)
    assert urls, "the page references no asset"
    assert "googleapis" not in html and "cdn." not in html
    for url in urls:
        assert not urlsplit(url).netloc, f"{page} loads {url} from elsewhere"
        asset = client.get(urljoin(f"http://testserver{page}", url))
        assert asset.status_code == 200, f"{page}: {url} answered {asset.status_code}"
        assert asset.content


def test_vendored_bundles_are_the_real_ones(client: TestClient) -> None:
    swagger = client.get("/static/vendor/swagger-ui/swagger-ui-bundle.js")
    redoc = client.get("/static/vendor/redoc/redoc.standalone.js")
    assert "SwaggerUIBundle" in swagger.text and len(swagger.content) > 1_000_000
    assert "Redoc" in redoc.text and len(redoc.content) > 1_000_000
    for name in ("swagger-ui/LICENSE", "redoc/LICENSE"):
        assert client.get(f"/static/vendor/{name}").status_code == 200


def test_static_files_outside_the_folder_are_not_served(client: TestClient) -> None:
    response = client.get("/static/../app.py")
    assert response.status_code == 404
    assert client.get("/static/ui/nothing.js").status_code == 404


def test_every_operation_has_a_summary_and_non_generic_examples(doc: dict[str, Any]) -> None:
    assert doc["paths"], "no operation"
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            where = f"{method.upper()} {path}"
            assert operation.get("summary"), f"{where} has no summary"
            body = operation.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                if media == "application/json":
                    assert _examples(content), f"{where}: no request example"
            for status, response in operation["responses"].items():
                contents = response.get("content", {})
                examples = [e for content in contents.values() for e in _examples(content)]
                # Every answer with a body shows one (a binary type such as Parquet has none).
                assert examples or not contents, f"{where} {status}: no example"
                assert not any(_generic(e) for e in examples), f"{where} {status}: generic"
                if "application/json" in contents:
                    assert _examples(contents["application/json"]), f"{where} {status}: no JSON example"


def test_request_examples_use_the_served_channels_and_answer(
    client: TestClient, doc: dict[str, Any]
) -> None:
    examples = doc["paths"]["/v1/predict"]["post"]["requestBody"]["content"][
        "application/json"]["examples"]
    assert set(examples) == {"multichannel", "one-channel"}
    assert examples["multichannel"]["summary"].startswith("Multichannel: all 2")
    assert all(c in examples["multichannel"]["summary"] for c in CHANNELS)
    full = examples["multichannel"]["value"]["series"][0]
    assert all(len(row) == len(CHANNELS) for row in full["values"])
    assert any(None in row for row in full["values"])  # it shows how to send a gap
    assert examples["one-channel"]["value"]["series"][0]["channels"] == [CHANNELS[0]]
    for example in examples.values():
        response = client.post("/v1/predict", json=example["value"])
        assert response.status_code == 200, response.text
        assert set(response.json()["series"][0]["mode"]) == {"interpolation", "extrapolation"}


def test_the_200_example_is_the_models_own_answer(
    client: TestClient, doc: dict[str, Any]
) -> None:
    predict = doc["paths"]["/v1/predict"]["post"]
    request = predict["requestBody"]["content"]["application/json"]["examples"]["multichannel"]
    example = predict["responses"]["200"]["content"]["application/json"]["examples"]["forecast"]
    real = client.post("/v1/predict", json=request["value"]).json()
    expected = example["value"]
    assert real["model"] == expected["model"] and real["channels"] == expected["channels"]
    assert real["series"][0]["mode"] == expected["series"][0]["mode"]
    for key in ("mean", "std"):
        # The same seed and series: equal up to float32 sums over another batch size.
        np.testing.assert_allclose(real["series"][0][key], expected["series"][0][key], rtol=1e-5)
    assert [q["quantile"] for q in real["series"][0]["quantiles"]] == [0.05, 0.5, 0.95]


def _error_example(doc: dict[str, Any], path: str, method: str, status: str, name: str) -> str:
    content = doc["paths"][path][method]["responses"][status]["content"]["application/json"]
    return str(content["examples"][name]["value"]["detail"])


def test_predict_error_examples_are_the_real_details(
    client: TestClient, doc: dict[str, Any]
) -> None:
    request = doc["paths"]["/v1/predict"]["post"]["requestBody"]["content"][
        "application/json"]["examples"]["multichannel"]["value"]
    unsorted = json.loads(json.dumps(request))
    times = unsorted["series"][0]["times"]
    times[1], times[2] = times[2], times[1]
    response = client.post("/v1/predict", json=unsorted)
    assert response.status_code == 422
    assert response.json()["detail"] == _error_example(
        doc, "/v1/predict", "post", "422", "unsorted-times")
    response = client.post("/v1/predict", json={**request, "quantiles": [0.05, 1.5]})
    assert response.status_code == 422
    assert response.json()["detail"] == _error_example(
        doc, "/v1/predict", "post", "422", "bad-quantile")


def test_body_size_example_is_the_real_detail(make_settings: Any) -> None:
    with TestClient(create_app(make_settings(max_body_bytes=1024))) as client:
        doc = client.get("/openapi.json").json()
        response = client.post("/v1/predict", content=b" " * 1025,
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"] == _error_example(doc, "/v1/predict", "post", "413",
                                                       "too-large")


def test_admin_error_examples_are_the_real_details(
    client: TestClient, doc: dict[str, Any], make_settings: Any
) -> None:
    wrong = client.post("/v1/admin/reload", headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == _error_example(doc, "/v1/admin/reload", "post", "401",
                                                    "wrong-key")
    bad = client.post("/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY},
                      json={"version": "latest"})
    assert bad.status_code == 422
    assert bad.json()["detail"] == _error_example(doc, "/v1/admin/reload", "post", "422",
                                                  "bad-version")
    missing = client.post("/v1/admin/reload", headers={"X-API-Key": ADMIN_KEY},
                          json={"version": "99"})
    assert missing.status_code == 404
    assert missing.json()["detail"] == _error_example(doc, "/v1/admin/reload", "post", "404",
                                                      "no-version")
    with TestClient(create_app(make_settings(admin_key=None))) as open_client:
        disabled = open_client.post("/v1/admin/reload")
    assert disabled.status_code == 403
    assert disabled.json()["detail"] == _error_example(doc, "/v1/admin/reload", "post", "403",
                                                       "disabled")


@pytest.fixture
def no_model(make_settings: Any) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(model_uri=f"models:/{MODEL_NAME}@no-such-alias"))) \
            as client:
        yield client


def test_without_a_model_the_example_is_a_labelled_illustration(no_model: TestClient) -> None:
    doc = no_model.get("/openapi.json").json()
    predict = doc["paths"]["/v1/predict"]["post"]
    examples = predict["requestBody"]["content"]["application/json"]["examples"]
    assert list(examples) == ["illustration"]
    assert "no model is loaded" in examples["illustration"]["summary"]
    response = no_model.post("/v1/predict", json=examples["illustration"]["value"])
    assert response.status_code == 503
    assert response.json()["detail"] == _error_example(doc, "/v1/predict", "post", "503",
                                                       "not-ready")
    assert no_model.get("/docs").status_code == 200


def test_the_not_ready_example_reads_like_the_real_one(
    doc: dict[str, Any], no_model: TestClient
) -> None:
    example = _error_example(doc, "/readyz", "get", "503", "not-ready")
    real = no_model.get("/readyz").json()["detail"]
    assert example.startswith("no model is loaded: the registry failed (")
    assert real.startswith("no model is loaded: ")
    assert example.split(". ")[-1] == real.split(". ")[-1]  # the same advice
