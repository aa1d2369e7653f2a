"""The ``/ui`` page and the API docs in a real browser against a real uvicorn (issue 17 items 3
and 4): Debian's chromium driven headless by playwright.

Skipped only where chromium (or playwright) is missing and ``CI`` is not set; in CI a missing
browser fails the test. The screenshots go to a temporary folder; ``python
bench/ui_screenshots.py`` regenerates ``docs/img/ui.png`` and ``docs/img/swagger.png`` with a
trained model.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.browser import CHROMIUM, browser_page, forecast_example, open_redoc, open_swagger
from tests.service.service_helpers import CHANNELS, MODEL_NAME
from tests.service.test_uvicorn_integration import serve

pytestmark = pytest.mark.integration


def _require_browser() -> None:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} is absent (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("playwright is not installed (pip install -e '.[dev]')")
    if missing and not os.environ.get("CI"):
        pytest.skip("; ".join(missing) + "; CI installs both and runs this test")
    # In CI nothing is skipped: a missing browser fails the test where it is launched.


@pytest.fixture(scope="module")
def base(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _require_browser()
    workdir = tmp_path_factory.mktemp("ui-browser")
    with serve(registry.tracking_uri, MODEL_NAME, workdir / "cache", workdir / "service.log") as url:
        yield url


def test_page_forecasts_the_example_and_plots_points_and_bands(base: str, tmp_path: Path) -> None:
    example = httpx.get(f"{base}/ui/example").json()
    with browser_page(base) as (page, visit):
        seen = forecast_example(page, base)
        page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
        with page.expect_download() as download:
            page.click("#download")
        answer_csv = Path(download.value.path()).read_text()
    assert seen["channels"] == CHANNELS and seen["plots"] == len(CHANNELS)
    assert seen["points"] == example["num_observations"]
    assert len(seen["band90"]) == len(seen["band50"]) == seen["means"] == len(CHANNELS)
    assert all(d.startswith("M") and d.endswith("Z") and d.count("L") > 10 for d in seen["band90"])
    assert {"interpolation", "extrapolation"} <= set(seen["regions"])
    assert seen["status"].startswith(f"Forecast by {MODEL_NAME} version 1")
    assert visit.escaped == [], "the page loaded something from elsewhere"
    assert visit.console_errors == []
    assert all(u.startswith(base) or u.startswith("blob:") for u in visit.requests)
    assert (tmp_path / "ui.png").stat().st_size > 10_000

    # The download: the frame format's columns, one row per query time.
    rows = list(csv.reader(io.StringIO(answer_csv)))
    levels = ["0.05", "0.25", "0.75", "0.95"]
    expected = ["series_id", "time", "mode"]
    for channel in CHANNELS:
        expected += [f"{channel}_mean", f"{channel}_std", *(f"{channel}_q{lv}" for lv in levels)]
    assert rows[0] == expected
    times = [float(r[1]) for r in rows[1:]]
    assert times == sorted(times) and len(times) > 20
    assert {r[2] for r in rows[1:]} == {"interpolation", "extrapolation"}
    assert all(r[0] == "example-1" for r in rows[1:])


def test_page_shows_the_apis_error_detail_for_an_uploaded_file(base: str) -> None:
    with browser_page(base) as (page, _):
        page.goto(f"{base}/ui")
        page.set_input_files("#file", files=[{  # an uploaded file, read into the text box
            "name": "unsorted.csv", "mimeType": "text/csv",
            "buffer": b"series_id,time,hr\na,0,70\na,2,71\na,1,72\n"}])
        page.wait_for_selector("#status:has-text('Loaded unsorted.csv.')")
        page.click("#submit")
        page.wait_for_selector("#error:not([hidden])")
        shown = page.text_content("#error")
        page.fill("#data", "series_id,time,hr\na,0,seventy\n")
        page.click("#submit")
        page.wait_for_selector("#error:has-text('line 2')")
        local = page.text_content("#error")
    assert shown.startswith("422 Unprocessable")
    assert "`times` must be strictly increasing; got 1.0 after 2.0" in shown
    assert local == "line 2, column hr: expected a number or an empty cell; got 'seventy'."


def test_page_takes_a_json_body_with_its_own_query_times(base: str) -> None:
    body = {"series": [{"id": "bed-7", "times": [0, 1, 2], "values": [[70, 37], [71, None],
                                                                      [72, 37.2]],
                        "query_times": [0.5, 3, 4]}]}
    with browser_page(base) as (page, _):
        page.goto(f"{base}/ui")
        page.fill("#data", json.dumps(body))
        page.check("input[name=mode][value=data]")
        page.click("#submit")
        page.wait_for_selector("#plots[data-state=done]")
        points = page.locator("svg.plot circle.obs").count()
        plots = page.locator("svg.plot").count()
        status = page.text_content("#status")
    assert (points, plots) == (5, 2)  # 3 heart rates and 2 temperatures; one plot per channel
    assert status.endswith("for 1 series.")


def test_page_forecasts_iso_times_over_a_horizon(base: str) -> None:
    data = ("series_id,time,hr\nward-3,2024-05-01T00:00:00Z,70\nward-3,2024-05-01T01:00:00Z,71\n"
            "ward-3,2024-05-01T02:30:00Z,72\n")
    with browser_page(base) as (page, _):
        page.goto(f"{base}/ui")
        page.wait_for_selector("#model-line:text-matches('^Model ')")  # the time unit is known
        page.fill("#data", data)
        page.fill("#horizon", "2")
        page.fill("#every", "0.5")
        page.click("#submit")
        page.wait_for_selector("#plots[data-state=done]")
        points = page.locator("svg.plot circle.obs").count()
        ticks = page.locator("svg.plot .axis text").all_text_contents()
        with page.expect_download() as download:
            page.click("#download")
        rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    assert points == 3  # the hr plot's three; temp was not observed
    assert any(t.startswith("2024-05-01 0") for t in ticks)
    times = [r[1] for r in rows[1:]]
    # Every half hour from the first observation to 2 hours after the last, as ISO strings.
    assert times[0] == "2024-05-01T00:00:00.000Z" and times[-1] == "2024-05-01T04:30:00.000Z"
    assert len(times) == 10 and rows[-1][2] == "extrapolation"


def test_swagger_ui_and_redoc_render_offline(base: str, tmp_path: Path) -> None:
    with browser_page(base) as (page, visit):
        operations = open_swagger(page, base)
        page.screenshot(path=str(tmp_path / "swagger.png"))
        title = open_redoc(page, base)
    assert operations == 6  # every operation of /openapi.json
    assert title.startswith("latent-ode")
    assert visit.escaped == [], "the docs loaded something from elsewhere"
