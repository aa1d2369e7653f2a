"""Driving the service's pages in Debian's chromium through playwright: shared by
``test_ui_browser.py`` and ``bench/ui_screenshots.py`` (which regenerates ``docs/img/``).

Nothing is downloaded: playwright drives ``/usr/bin/chromium`` (``executable_path``), not a
browser of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("LATENT_ODE_CHROMIUM", "/usr/bin/chromium"))
TIMEOUT_MS = 60_000


@dataclass
class PageVisit:
    """What a page asked for: every URL it requested, those that would have left the machine
    (stopped at the network layer), and its console errors."""

    requests: list[str] = field(default_factory=list)
    escaped: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@contextmanager
def browser_page(base: str, width: int = 1280,
                 height: int = 900) -> Iterator[tuple[Any, PageVisit]]:
    """A fresh headless chromium page and the record of what it requests.

    Every request that reaches the network layer for anything but ``base`` is aborted and
    recorded in ``escaped`` (one the page's Content-Security-Policy blocks never gets there).
    """
    from playwright.sync_api import sync_playwright

    visit = PageVisit()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            context = browser.new_context(viewport={"width": width, "height": height},
                                          accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("request", lambda request: visit.requests.append(request.url))

            def guard(route: Any) -> None:
                url = route.request.url
                if url == base or url.startswith(base + "/"):
                    route.continue_()
                else:
                    visit.escaped.append(url)
                    route.abort()

            context.route("**/*", guard)
            page.on("console", lambda msg: visit.console_errors.append(msg.text)
                    if msg.type == "error" else None)
            yield page, visit
        finally:
            browser.close()


def forecast_example(page: Any, base: str) -> dict[str, Any]:
    """Open ``/ui``, load the example, forecast it and wait for the plots.

    Returns:
        Counts read from the page's SVG: ``plots``, ``points`` (observation circles), ``band90``
        and ``band50`` paths (with their ``d``), ``means``, the plotted ``channels`` and the
        ``regions`` labelled.
    """
    page.goto(f"{base}/ui")
    # Selectors, not wait_for_function: the page's Content-Security-Policy forbids the eval()
    # that playwright's polling of a function uses.
    page.wait_for_selector("#model-line:text-matches('^Model ')")
    page.click("#load-example")
    page.wait_for_selector("#example-note:has-text('synthetic series')")
    page.click("#submit")
    page.wait_for_selector("#plots[data-state=done]")
    return page.evaluate("""() => {
        const q = (s) => Array.from(document.querySelectorAll(s));
        return {
            plots: q('svg.plot').length,
            points: q('svg.plot circle.obs').length,
            band90: q('svg.plot path.band90').map((p) => p.getAttribute('d')),
            band50: q('svg.plot path.band50').map((p) => p.getAttribute('d')),
            means: q('svg.plot path.mean').length,
            channels: q('svg.plot').map((s) => s.getAttribute('data-channel')),
            regions: q('svg.plot text.region-label').map((t) => t.textContent),
            status: document.getElementById('status').textContent,
        };
    }""")


def open_swagger(page: Any, base: str) -> int:
    """Open ``/docs`` and wait until Swagger UI has rendered the operations; returns how many."""
    page.goto(f"{base}/docs")
    page.wait_for_selector(".swagger-ui .opblock")
    return int(page.locator(".swagger-ui .opblock").count())


def open_redoc(page: Any, base: str) -> str:
    """Open ``/redoc`` and wait until ReDoc has rendered; returns its first heading."""
    page.goto(f"{base}/redoc")
    page.wait_for_selector(".api-content h1")
    return str(page.locator(".api-content h1").first.text_content())
