"""Screenshots of the MLflow UI for the docs: a tiny pipeline's parent run and its train run's charts.

Docs tooling, not a benchmark: starts a real ``mlflow server`` (SQLite store and served artifacts
in a temporary folder), runs a short pipeline against it (``latent-ode pipeline run`` on the
periodic demo, a few more epochs than ``periodic-tiny.toml`` so the loss curves have a shape), then
drives Debian's chromium through playwright and saves

- ``docs/img/mlflow-runs.png``: the experiment's runs, "Model training" view (the pipeline run
  with its four step runs nested under it);
- ``docs/img/mlflow-run.png``: the parent run's page (its description links the step runs);
- ``docs/img/mlflow-train-charts.png``: the train run's "Model metrics" charts (the ``loss/``
  section: training and validation loss side by side);
- ``docs/img/mlflow-train-loss-chart.png``: the train run's artifact ``plots/loss_curves.png``
  (both losses on one chart).

Usage (from the repository root; about a minute on a laptop)::

    python bench/mlflow_screenshot.py [--out-dir docs/img] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "latent-ode-demo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def _config(folder: Path) -> Path:
    """``periodic-tiny.toml`` with 12 epochs, a demo model name and experiment."""
    text = (_REPO / "pipelines" / "configs" / "periodic-tiny.toml").read_text()
    for old, new in (("max_epochs = 4", "max_epochs = 12"),
                     ('model_name = "latent-ode"', 'model_name = "latent-ode-demo"'),
                     ('experiment = "latent-ode-tiny"', f'experiment = "{EXPERIMENT}"')):
        if old not in text:
            raise SystemExit(f"periodic-tiny.toml no longer has {old!r}; update this script")
        text = text.replace(old, new)
    path = folder / "demo.toml"
    path.write_text(text)
    return path


def _shoot(uri: str, exp_id: str, parent: str, train: str, out_dir: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 950})

        def close_assistant() -> None:
            close = page.locator("button[aria-label=Close]")  # the "MLflow Assistant" panel
            if close.count():
                close.first.click()
                time.sleep(0.5)

        def shot(url: str, wait_text: str, name: str, prepare=None) -> None:
            page.goto(url)
            page.get_by_text(wait_text, exact=False).first.wait_for(timeout=90_000)
            time.sleep(3.0)  # the UI keeps polling (never network-idle); charts animate in
            close_assistant()
            if prepare is not None:
                prepare()
            page.screenshot(path=str(out_dir / name))
            print(f"wrote {out_dir / name}")  # noqa: T201 - a script's report

        page.goto(f"{uri}/#/experiments/{exp_id}/runs")
        page.wait_for_load_state("load")
        time.sleep(5.0)
        for label in ("Model training", "Machine learning"):  # MLflow 3 opens in its GenAI view
            toggle = page.get_by_text(label, exact=True)
            if toggle.count():
                toggle.first.click()
                break

        def unfold_parent() -> None:  # the button left of the run name shows the step runs
            name = page.get_by_text("pipeline periodic").first
            name.locator("xpath=ancestor::span[@role='presentation'][1]//button").first.click()
            page.get_by_text("evaluate", exact=True).first.wait_for(timeout=30_000)
            time.sleep(1.0)

        shot(f"{uri}/#/experiments/{exp_id}/runs", "pipeline periodic", "mlflow-runs.png",
             unfold_parent)
        shot(f"{uri}/#/experiments/{exp_id}/runs/{parent}", "Test metrics", "mlflow-run.png")
        shot(f"{uri}/#/experiments/{exp_id}/runs/{train}/model-metrics", "loss/train",
             "mlflow-train-charts.png")
        shot(f"{uri}/#/experiments/{exp_id}/runs/{train}/artifacts/plots/loss_curves.png",
             "loss_curves.png", "mlflow-train-loss-chart.png")
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=_REPO / "docs" / "img")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the store here (default: a temporary folder); a store that "
                             "has the demo run already is photographed without a new run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="latent-ode-mlflow-shot-") as tmp:
        root = args.workdir.resolve() if args.workdir else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        uri = f"http://127.0.0.1:{port}"
        log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, cwd=root)
        try:
            _wait(f"{uri}/health", server)
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=uri)
            if client.get_experiment_by_name(EXPERIMENT) is None:
                env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(_REPO),
                       "OMP_NUM_THREADS": "1"}
                subprocess.run([sys.executable, "-m", "pipelines.cli", "pipeline", "run",
                                "--config", str(_config(root)), "--device", "cpu"], cwd=root,
                               env=env, check=True)
            exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
            by_name = {r.info.run_name: r.info.run_id for r in client.search_runs([exp_id])}
            parent = next(v for k, v in by_name.items() if k.startswith("pipeline "))
            _shoot(uri, exp_id, parent, by_name["train"], args.out_dir, args.chromium)
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
