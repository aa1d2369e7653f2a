"""``/ui`` and ``/ui/example`` at the route level; the page itself runs in a real browser in
``test_ui_browser.py``."""

from __future__ import annotations

import csv
import fnmatch
import io
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from latent_ode import Normaliser
from service.app import create_app
from service.examples import OBSERVED_SHARE, example_csv, example_request, synthetic_series
from service.ui import STATIC_DIR
from tests.service.service_helpers import CHANNELS, MODEL_NAME, make_forecaster


def test_page_is_served_without_a_key_field_when_no_key_is_set(client: TestClient) -> None:
    response = client.get("/ui")
    assert response.status_code == 200
    assert '<body data-key-required="false">' in response.text
    assert 'id="load-example"' in response.text and 'src="static/ui/ui.js"' in response.text
    for asset in ("/static/ui/ui.js", "/static/ui/ui.css"):
        assert client.get(asset).status_code == 200


def test_with_an_api_key_the_page_and_its_assets_need_it(make_settings: Any) -> None:
    app = create_app(make_settings(api_key="page-key"))
    with TestClient(app) as client:
        for path in ("/ui", "/ui/example", "/static/ui/ui.js", "/docs", "/redoc"):
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert refused.json()["detail"].startswith("missing or wrong API key; send the key "
                                                       "from LATENT_ODE_API_KEY")
        auth = {"Authorization": "Bearer page-key"}
        page = client.get("/ui", headers=auth)
        assert page.status_code == 200
        assert '<body data-key-required="true">' in page.text
        assert client.get("/ui/example", headers=auth).status_code == 200


def test_example_is_a_synthetic_series_for_the_served_model(client: TestClient) -> None:
    response = client.get("/ui/example")
    assert response.status_code == 200
    body = response.json()
    assert body["channels"] == CHANNELS and body["time_unit"] == "hours"
    rows = list(csv.DictReader(io.StringIO(body["csv"])))
    assert list(rows[0]) == ["series_id", "time", *CHANNELS]
    times = [float(r["time"]) for r in rows]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    cells = [r[c] for r in rows for c in CHANNELS]
    assert body["num_observations"] == sum(1 for c in cells if c != "")
    assert any(c == "" for c in cells)  # a gap, as real multichannel data have
    assert all(any(r[c] for c in CHANNELS) for r in rows)  # every row observes something
    assert body["every"] > 0 and body["horizon"] > 0


def test_example_is_not_training_data_and_lies_in_the_models_range(registry: Any) -> None:
    fc = registry.forecaster
    series = synthetic_series(fc)
    span = float(fc.normaliser.time_scale)
    assert series.times[0] == 0.0 and series.times[-1] <= OBSERVED_SHARE * span
    assert series.times[-1] + series.horizon == pytest.approx(span, abs=1e-3)
    z = (series.values - fc.normaliser.loc) / fc.normaliser.scale
    assert np.nanmax(np.abs(z)) < 2.0  # within two of the model's scales of its location
    again = synthetic_series(fc)
    np.testing.assert_array_equal(again.values, series.values)  # reproducible


def test_minmax_example_fills_the_trained_range() -> None:
    fc = make_forecaster()
    normaliser = Normaliser(kind="minmax", loc=np.array([50.0, 36.0]), scale=np.array([100.0, 3.0]),
                            time_scale=48.0)
    fc.normaliser = normaliser
    series = synthetic_series(fc)
    assert np.nanmin(series.values[:, 0]) >= 50.0 and np.nanmax(series.values[:, 0]) <= 150.0
    assert series.every == pytest.approx(48.0 / 50)
    text = example_csv(series, CHANNELS)
    assert text.count("\n") == len(series.times) + 1


def test_one_channel_request_drops_rows_that_observe_nothing(registry: Any) -> None:
    series = synthetic_series(registry.forecaster)
    body = example_request(series, query_times=[1.0], channels=["temp"], all_channels=CHANNELS)
    item = body["series"][0]
    assert item["channels"] == ["temp"]
    assert all(row[0] is not None and math.isfinite(row[0]) for row in item["values"])
    assert len(item["times"]) == int(np.isfinite(series.values[:, 1]).sum())


def test_example_without_a_model_is_503_with_the_reason(make_settings: Any) -> None:
    settings = make_settings(model_uri=f"models:/{MODEL_NAME}@no-such-alias")
    with TestClient(create_app(settings)) as client:
        response = client.get("/ui/example")
        page = client.get("/ui")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("no model is loaded: the registry has no")
    assert page.status_code == 200  # the page still loads and shows the reason itself


def test_ui_routes_stay_out_of_the_api_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not any(p.startswith(("/ui", "/static", "/docs", "/redoc")) for p in paths)


def test_every_static_file_is_package_data() -> None:
    """An installed wheel (and the Docker image, built with ``pip install .``) serves what a
    checkout serves: every file under service/static matches pyproject's package-data."""
    repo = STATIC_DIR.parents[1]
    patterns = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["service"]
    files = [p.relative_to(STATIC_DIR.parent).as_posix() for p in STATIC_DIR.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts]
    assert len(files) >= 10
    # fnmatch's * also crosses "/", setuptools' does not: compare segment counts too.
    missing = [f for f in files if not any(
        fnmatch.fnmatch(f, pat) and f.count("/") == pat.count("/") for pat in patterns)]
    assert missing == [], f"add these to [tool.setuptools.package-data] service: {missing}"
    assert Path(STATIC_DIR / "ui" / "index.html").is_file()
