"""``/ui``: a small page to forecast a pasted or uploaded series and see the answer plotted.

The page (``service/static/ui/``: HTML, hand-written JavaScript and CSS, plots drawn as SVG) calls
the service's own ``GET /v1/model`` and ``POST /v1/predict``; every asset it loads comes from
this service (``/static``), none from a CDN. ``GET /ui/example`` gives it a synthetic series
for the served model (``service.examples``), never training data. With ``LATENT_ODE_API_KEY``
set, the page, its assets and the example need the key like every other page, and the page
shows a key field whose value it sends with its API calls.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from service.examples import example_csv, synthetic_series
from service.state import State

__all__ = ["STATIC_DIR", "install_ui"]

STATIC_DIR = Path(__file__).with_name("static")

router = APIRouter(include_in_schema=False)

#: The page's script, styles, icon and API calls all come from this service; the CSV download
#: is a blob: URL.
UI_CSP = "default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"


@lru_cache(maxsize=1)
def _page_template() -> str:
    return (STATIC_DIR / "ui" / "index.html").read_text(encoding="utf-8")


@router.get("/ui", response_class=HTMLResponse)
async def page(state: State) -> HTMLResponse:
    """The page; ``data-key-required`` tells its script to show the API-key field."""
    required = "true" if state.settings.api_key is not None else "false"
    html = _page_template().replace('data-key-required="false"', f'data-key-required="{required}"')
    return HTMLResponse(html, headers={"Cache-Control": "no-cache", "Content-Security-Policy": UI_CSP})


class ExampleResponse(BaseModel):
    """``GET /ui/example``: a synthetic series for the served model and the page's defaults."""

    csv: str
    channels: list[str]
    time_unit: str
    horizon: float
    every: float
    num_observations: int


@router.get("/ui/example", response_model=ExampleResponse)
async def example(state: State) -> ExampleResponse:
    """A synthetic series of the demo's kind in the served model's channels and time scale."""
    fc = state.store.require().forecaster
    series = synthetic_series(fc)
    return ExampleResponse(
        csv=example_csv(series, list(fc.channels)), channels=list(fc.channels),
        time_unit=fc.time_unit, horizon=series.horizon, every=series.every,
        num_observations=series.num_observations,
    )


def install_ui(app: FastAPI) -> None:
    """Serve ``/ui``, ``/ui/example`` and the static assets under ``/static``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
