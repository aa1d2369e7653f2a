"""Regenerate the screenshots the docs show: ``docs/img/ui.png`` (the ``/ui`` page forecasting
its example) and ``docs/img/swagger.png`` (``/docs`` rendered offline).

By default it trains the demo model (``pipelines/configs/periodic.toml``, the quickstart's, with a
shorter training budget) into a temporary SQLite MLflow store, serves it with uvicorn on
127.0.0.1 and drives Debian's chromium through playwright, the same steps as
``tests/service/test_ui_browser.py``. ``--tracking-uri`` and ``--model`` use a model that is
already registered instead.

    python bench/ui_screenshots.py                       # about 5 minutes on 2 cores
    python bench/ui_screenshots.py --max-time 60 --out /tmp/img --workdir /tmp/ui-demo
    python bench/ui_screenshots.py --tracking-uri sqlite:///mlflow.db --model latent-ode
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the shared browser steps live beside the tests

from tests.service.browser import (  # noqa: E402
    browser_page,
    forecast_example,
    open_swagger,
)
from tests.service.test_uvicorn_integration import serve  # noqa: E402


def train_demo(workdir: Path, max_time: float) -> str:
    """Run the demo pipeline into ``workdir``'s SQLite store; returns its tracking URI."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    command = [sys.executable, "-m", "pipelines.cli", "pipeline", "run", "--config",
               str(REPO / "pipelines" / "configs" / "periodic.toml"), "--max-time", str(max_time)]
    started = time.perf_counter()
    subprocess.run(command, cwd=workdir, env=env, check=True)
    print(f"trained and registered the demo model in {time.perf_counter() - started:.0f} s")
    return uri


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", help="an MLflow store holding --model (default: train)")
    parser.add_argument("--model", default="latent-ode", help="registered model (alias champion)")
    parser.add_argument("--max-time", type=float, default=240.0,
                        help="training budget in seconds (the config's own)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img")
    parser.add_argument("--workdir", type=Path, help="keep the trained store here and reuse it "
                        "when it exists (default: a temporary folder)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if args.tracking_uri is None and (workdir / "mlflow.db").exists():
            args.tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
        uri = args.tracking_uri or train_demo(workdir, args.max_time)
        with serve(uri, args.model, workdir / "cache", workdir / "service.log") as base:
            with browser_page(base, width=1280, height=900) as (page, visit):
                seen = forecast_example(page, base)
                page.screenshot(path=str(args.out / "ui.png"), full_page=True)
                print(f"ui.png: {seen['plots']} plot(s), {seen['points']} observed points")
                operations = open_swagger(page, base)
                page.click(".opblock-summary-path[data-path='/v1/predict']")
                page.wait_for_selector(".opblock.is-open .examples-select, .opblock.is-open .body-param")
                page.screenshot(path=str(args.out / "swagger.png"), full_page=False)
                print(f"swagger.png: {operations} operations")
            if visit.escaped:
                raise SystemExit(f"the pages tried to load from elsewhere: {visit.escaped}")
    print(f"wrote {args.out / 'ui.png'} and {args.out / 'swagger.png'}")


if __name__ == "__main__":
    main()
